// Package ownload keeps account of the load the sidecar itself puts on a
// collection's tables, so that the load the healer judges is the
// application's.
//
// PostgreSQL 15 counts table statistics per relation, not per session: the
// rows a remediation moves and the rows it reads to verify the move land in
// the same pg_stat_user_tables counters as the application's. Left in, the
// healer's own moves read as a new hotspot on the shards it has just moved
// rows into or out of, and each next attempt is aimed at load it made
// itself (bench/RESULTS.md, scorecard run 11: thirty outcomes in fifteen
// minutes on a collection with no fault).
//
// The counts are exact, not estimated: a metered transaction reads its own
// not yet flushed counters (the pg_stat_get_xact_* functions) just before
// it commits, asks for its statistics to be flushed at once
// (pg_stat_force_next_flush), and the ledger adds the counts once the
// commit, and so the flush, is done. A collector's reading of pg_stat that
// overlapped a metered commit is taken again, so it sees either both the
// flushed counters and the ledger's share of them, or neither.
package ownload

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Counts is what a relation's statistics counters gained from the
// sidecar's own work, in the terms the partitions collector reads them.
type Counts struct {
	// Writes is rows inserted + updated + deleted.
	Writes int64
	// Scans is sequential scans of the table plus scans of its indexes.
	Scans int64
	// SeqRead is rows returned by sequential scans (seq_tup_read).
	SeqRead int64
	// IdxFetch is heap rows fetched through an index (idx_tup_fetch).
	IdxFetch int64
	// IdxRead is index entries returned by the table's indexes.
	IdxRead int64
}

// Add returns the sum of c and o.
func (c Counts) Add(o Counts) Counts {
	return Counts{Writes: c.Writes + o.Writes, Scans: c.Scans + o.Scans, SeqRead: c.SeqRead + o.SeqRead,
		IdxFetch: c.IdxFetch + o.IdxFetch, IdxRead: c.IdxRead + o.IdxRead}
}

// Ledger is the running total of the sidecar's own counts per relation
// oid. It lives as long as the daemon (the collectors are rebuilt when the
// collections change; their baselines restart with them). A nil *Ledger
// records nothing and observes nothing.
//
// No lock is held across a database call (a blocked statistics query must
// not hold up a commit, nor the reverse): a commit is marked in flight
// while it runs, and an observation that overlapped one is retried.
type Ledger struct {
	mu       sync.Mutex
	total    map[int64]Counts
	inFlight int    // commits running
	version  uint64 // commits finished
}

// New returns an empty ledger.
func New() *Ledger { return &Ledger{total: map[int64]Counts{}} }

// Commit runs commit and, if it succeeds, adds own. commit must commit the
// transaction own was read in (Pending, which also asks for the forced
// statistics flush that happens before the commit returns).
func (l *Ledger) Commit(own map[int64]Counts, commit func() error) error {
	if l == nil {
		return commit()
	}
	l.mu.Lock()
	l.inFlight++
	l.mu.Unlock()
	err := commit()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	l.version++
	if err != nil {
		return err
	}
	for rel, c := range own {
		l.total[rel] = l.total[rel].Add(c)
	}
	return nil
}

// observeAttempts bounds the retries of an observation that overlapped a
// commit; a metered commit takes milliseconds, so a second attempt
// almost always finds none.
const observeAttempts = 3

// Observe runs read (a query of the statistics counters; it must start
// afresh each call) and returns the ledger's totals that are exactly the
// sidecar's share of what read saw: no metered commit ran while it read.
// When every attempt overlapped a commit it returns the totals after the
// last one, which is off by at most the batches of that moment.
func (l *Ledger) Observe(read func() error) (map[int64]Counts, error) {
	if l == nil {
		return nil, read()
	}
	var snap map[int64]Counts
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		v, busy := l.version, l.inFlight > 0
		snap = maps.Clone(l.total)
		l.mu.Unlock()
		if err := read(); err != nil {
			return nil, err
		}
		l.mu.Lock()
		clean := !busy && l.inFlight == 0 && l.version == v
		if !clean && attempt+1 == observeAttempts {
			snap = maps.Clone(l.total)
		}
		l.mu.Unlock()
		if clean || attempt+1 == observeAttempts {
			return snap, nil
		}
	}
}

// pendingSQL reads the session's counts not yet flushed to the shared
// statistics, per relation, in the terms of the partitions collector's
// query (collect.Partitions), summed over the indexes as the
// pg_stat_all_tables view sums them. The xact functions return the session's
// pending counts: everything since its last flush, including the current
// transaction.
const pendingSQL = `
SELECT r.oid::bigint,
       pg_stat_get_xact_tuples_inserted(r.oid) + pg_stat_get_xact_tuples_updated(r.oid) + pg_stat_get_xact_tuples_deleted(r.oid),
       pg_stat_get_xact_numscans(r.oid)
         + coalesce((SELECT sum(pg_stat_get_xact_numscans(x.indexrelid)) FROM pg_index x WHERE x.indrelid = r.oid), 0)::bigint,
       pg_stat_get_xact_tuples_returned(r.oid),
       pg_stat_get_xact_tuples_fetched(r.oid)
         + coalesce((SELECT sum(pg_stat_get_xact_tuples_fetched(x.indexrelid)) FROM pg_index x WHERE x.indrelid = r.oid), 0)::bigint,
       coalesce((SELECT sum(pg_stat_get_xact_tuples_returned(x.indexrelid)) FROM pg_index x WHERE x.indrelid = r.oid), 0)::bigint
FROM unnest($1::oid[]) r(oid)`

// Pending returns the session's not yet flushed counts of relids and asks
// for them to be flushed as soon as the transaction ends. Call it inside
// the transaction to be metered, as its last statement before the commit,
// and commit through Ledger.Commit. The session must have flushed before
// the metered work began (a previous metered commit, or Flush), else its
// earlier work is counted too.
func Pending(ctx context.Context, tx pgx.Tx, relids []int64) (map[int64]Counts, error) {
	rows, err := tx.Query(ctx, pendingSQL, relids)
	if err != nil {
		return nil, fmt.Errorf("ownload: pending counts: %w", err)
	}
	out := map[int64]Counts{}
	var rel int64
	var c Counts
	if _, err := pgx.ForEachRow(rows, []any{&rel, &c.Writes, &c.Scans, &c.SeqRead, &c.IdxFetch, &c.IdxRead}, func() error {
		if c != (Counts{}) {
			out[rel] = c
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("ownload: pending counts: %w", err)
	}
	// Without the forced flush the counts would reach the shared
	// statistics up to 10 s later (an idle backend's flush interval),
	// after the ledger had already counted them: the collector would see
	// the sidecar's share before the load it is a share of.
	if _, err := tx.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return nil, fmt.Errorf("ownload: request a statistics flush: %w", err)
	}
	return out, nil
}

// Flush flushes the session's pending statistics now, so that metering
// can start from nothing pending. It must run outside a transaction block.
func Flush(ctx context.Context, conn *pgx.Conn) error {
	// The flush happens when the backend goes idle after this statement,
	// before it reports ready, so it is done when Exec returns.
	if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return fmt.Errorf("ownload: flush statistics: %w", err)
	}
	return nil
}

// InTx runs f in a transaction of conn and commits it, recording in l
// what the transaction read and wrote of relids. It flushes the session's
// pending statistics first, so only f's work is counted. With a nil l it
// is a plain transaction.
func (l *Ledger) InTx(ctx context.Context, conn *pgx.Conn, opts pgx.TxOptions, relids []int64, f func(pgx.Tx) error) error {
	if l == nil {
		return pgx.BeginTxFunc(ctx, conn, opts, f)
	}
	if err := Flush(ctx, conn); err != nil {
		return err
	}
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	// After a commit the rollback is a no-op.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	// Parallel workers count their reads in their own sessions, which
	// flush when they exit: Pending would not see them (a parallel count
	// of a 650,000-row collection read as a hotspot in a scorecard run).
	if _, err := tx.Exec(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
		return fmt.Errorf("ownload: keep the metered work in this session: %w", err)
	}
	if err := f(tx); err != nil {
		return err
	}
	own, err := Pending(ctx, tx, relids)
	if err != nil {
		return err
	}
	return l.Commit(own, func() error { return tx.Commit(ctx) })
}
