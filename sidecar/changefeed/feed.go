// Package changefeed follows a database's logical replication stream
// (pgoutput) for the registered collections' tables and turns it into
// per-partition, per-shard and per-IVF-list insert/delete rates, without
// polling the tables.
//
// The Feed owns a publication pair and a permanent logical slot. It confirms
// what it processed through standby status updates and records the same LSN
// in ruvector.changefeed_state, so that a restarted feed resumes where the
// last one stopped (no loss, no double counting) and the slot never pins
// WAL.
package changefeed

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"
)

// DefaultPublication is the publication's default name. The inserts-only
// companion (for tables without a replica identity) is its name + "_ins".
const DefaultPublication = "ruvector_healing_feed"

// Config tunes a Feed. Zero values take the defaults.
type Config struct {
	// DSN reaches the database holding the collections (keyword/value or
	// URL). The role needs REPLICATION, ownership of the collection tables
	// (to publish them) and CREATE on the database (for the publication).
	DSN string
	// Publication defaults to DefaultPublication.
	Publication string
	// SlotName defaults to "ruvector_healing_feed_<database oid>": stable
	// across restarts, distinct per database (slots are cluster-wide).
	SlotName string
	// StatusInterval is the longest time between standby status updates
	// (default 10 s). The server's wal_sender_timeout (60 s by default)
	// must be longer.
	StatusInterval time.Duration
	// PersistInterval bounds how often an LSN advanced only by keepalives
	// is written to ruvector.changefeed_state (default 1 min). Processed
	// transactions are persisted at the next status update. Without the
	// bound our own writes would move the WAL, advance the keepalive
	// position and cause another write, forever.
	PersistInterval time.Duration
	// SyncInterval is how often the publications are matched to the
	// registered collections again, to pick up new partitions and
	// collections (default 1 min; also done at every connect).
	SyncInterval time.Duration
	// MaxWindow is the longest window Rates can answer (default 5 min);
	// it sizes the per-second ring.
	MaxWindow time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (250 ms, 15 s).
	MinBackoff, MaxBackoff time.Duration
	Log                    zerolog.Logger
}

var (
	slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	// The publication name also names the "_ins" companion, and both go
	// unquoted into publication_names, so keep them plain lowercase.
	pubNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,58}$`)
)

// Feed follows the change stream. Create it with New, run it with Run;
// Rates, Totals and Stats may be called from any goroutine.
type Feed struct {
	cfg       Config
	pubFull   string
	pubInsert string

	running atomic.Bool

	mu       sync.Mutex
	slot     string // resolved at the first connect when not configured
	dec      *decoder
	ring     ring
	totals   tally
	stats    Stats
	sessions int64
}

// New validates cfg and returns a Feed that is not yet connected.
func New(cfg Config) (*Feed, error) {
	// An empty DSN is valid: pgx then reads the standard PG* variables,
	// as every other connection of the sidecar does.
	if _, err := pgconn.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("changefeed: DSN: %w", err)
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if !pubNameRE.MatchString(cfg.Publication) {
		return nil, fmt.Errorf("changefeed: publication name %q: use 1-59 lowercase letters, digits and _", cfg.Publication)
	}
	if cfg.SlotName != "" && !slotNameRE.MatchString(cfg.SlotName) {
		return nil, fmt.Errorf("changefeed: slot name %q: use 1-63 lowercase letters, digits and _", cfg.SlotName)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.StatusInterval, 10*time.Second)
	def(&cfg.PersistInterval, time.Minute)
	def(&cfg.SyncInterval, time.Minute)
	def(&cfg.MaxWindow, 5*time.Minute)
	def(&cfg.MinBackoff, 250*time.Millisecond)
	def(&cfg.MaxBackoff, 15*time.Second)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	f := &Feed{
		cfg:       cfg,
		pubFull:   cfg.Publication,
		pubInsert: cfg.Publication + "_ins",
		slot:      cfg.SlotName,
		dec:       newDecoder(),
		ring:      newRing(cfg.MaxWindow),
		totals:    newTally(),
	}
	f.stats.SlotName = cfg.SlotName
	f.stats.Publications = []string{f.pubFull, f.pubInsert}
	return f, nil
}

// SlotName is the replication slot; empty until the first connect resolved
// the default name.
func (f *Feed) SlotName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slot
}

// Stats returns the counters.
func (f *Feed) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statsLocked()
}

func (f *Feed) statsLocked() Stats {
	s := f.stats
	s.Publications = append([]string(nil), s.Publications...)
	s.Changes = f.dec.changes
	return s
}

// Rates returns changes per second over the last window (clamped to
// [1 s, MaxWindow]): the changes committed in that window divided by its
// length. Changes are placed by their server commit time, so a backlog
// replayed after downtime lands in the seconds it was committed, not in a
// burst now.
func (f *Feed) Rates(window time.Duration) Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	secs := int64(window / time.Second)
	if secs < 1 {
		secs = 1
	}
	if n := int64(len(f.ring.buckets)); secs > n {
		secs = n
	}
	sum := f.ring.sum(now.Unix(), secs)
	per := func(n int64) float64 { return float64(n) / float64(secs) }

	s := Snapshot{
		At:                            now,
		Window:                        time.Duration(secs) * time.Second,
		Relations:                     map[uint32]RelationRates{},
		Lists:                         map[ListKey]Rates{},
		Shards:                        map[ShardKey]Rates{},
		UnattributedListDeletesPerSec: map[uint32]float64{},
		Stats:                         f.statsLocked(),
	}
	// Every published relation appears, idle ones with zero rates, so a
	// consumer can tell "no writes" from "not watched".
	for id, m := range f.dec.meta {
		s.Relations[id] = RelationRates{RelID: id, Namespace: m.namespace, Name: m.name,
			CollectionRelID: m.root, Shard: m.shard, DeletesObserved: m.deletes}
	}
	for id, c := range sum.rels {
		r, ok := s.Relations[id]
		if !ok {
			r = RelationRates{RelID: id, Shard: -1}
			if ri := f.dec.rels[id]; ri != nil {
				r.Namespace, r.Name = ri.namespace, ri.name
			}
		}
		r.InsertsPerSec, r.DeletesPerSec, r.UpdatesPerSec = per(c.Inserts), per(c.Deletes), per(c.Updates)
		r.Truncates = c.Truncates
		s.Relations[id] = r
	}
	for k, c := range sum.lists {
		s.Lists[k] = Rates{InsertsPerSec: per(c.Inserts), DeletesPerSec: per(c.Deletes)}
	}
	for k, c := range sum.shards {
		s.Shards[k] = Rates{InsertsPerSec: per(c.Inserts), DeletesPerSec: per(c.Deletes)}
	}
	for k, n := range sum.unattributedListDeletes {
		s.UnattributedListDeletesPerSec[k] = per(n)
	}
	return s
}

// Totals returns the cumulative counts since New.
func (f *Feed) Totals() Totals {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := newTally()
	t.merge(&f.totals)
	return Totals{Relations: t.rels, Lists: t.lists, Shards: t.shards, UnattributedListDeletes: t.unattributedListDeletes}
}

// connectReplication opens a walsender connection bound to the database
// (replication=database), which logical decoding needs.
func (f *Feed) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(f.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "ruvector_healing_changefeed"
	}
	rc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connect: %w", err)
	}
	return rc, nil
}

// resolveSlot fixes the slot name on first use.
func (f *Feed) resolveSlot(ctx context.Context, conn *pgx.Conn) (string, error) {
	f.mu.Lock()
	slot := f.slot
	f.mu.Unlock()
	if slot != "" {
		return slot, nil
	}
	var oid uint32
	if err := conn.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&oid); err != nil {
		return "", fmt.Errorf("database oid: %w", err)
	}
	slot = fmt.Sprintf("ruvector_healing_feed_%d", oid)
	f.mu.Lock()
	f.slot, f.stats.SlotName = slot, slot
	f.mu.Unlock()
	return slot, nil
}

// prepare makes everything the stream needs exist (state table,
// publications, slot) and returns where to start: the furthest of what this
// Feed processed, what was persisted, and what the slot confirmed. Starting
// past the slot's confirmed_flush_lsn is allowed; the server then skips the
// transactions that committed before it.
func (f *Feed) prepare(ctx context.Context, conn *pgx.Conn, rc *pgconn.PgConn) (pglogrepl.LSN, error) {
	if err := ensureStateTable(ctx, conn); err != nil {
		return 0, err
	}
	slot, err := f.resolveSlot(ctx, conn)
	if err != nil {
		return 0, err
	}
	leaves, err := syncPublications(ctx, conn, f.pubFull, f.pubInsert)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.dec.meta = leaves
	f.mu.Unlock()

	sys, err := pglogrepl.IdentifySystem(ctx, rc)
	if err != nil {
		return 0, fmt.Errorf("identify system: %w", err)
	}
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return 0, fmt.Errorf("current database: %w", err)
	}
	if sys.DBName != db {
		return 0, fmt.Errorf("replication connection is on database %q, the catalog connection on %q", sys.DBName, db)
	}

	si, err := readSlot(ctx, conn, slot)
	if err != nil {
		return 0, err
	}
	if si.exists && si.lost && si.plugin == "pgoutput" && si.database == db {
		// The changes it held are gone for good; a new slot at least
		// restores the feed (and stops the retry loop). The gap is logged
		// and counted as an error.
		f.cfg.Log.Error().Str("slot", slot).Msg("changefeed: slot lost its WAL (max_slot_wal_keep_size); recreating it, changes since its confirmed LSN are not counted")
		if err := pglogrepl.DropReplicationSlot(ctx, rc, slot, pglogrepl.DropReplicationSlotOptions{Wait: true}); err != nil {
			return 0, fmt.Errorf("drop lost slot %q: %w", slot, err)
		}
		f.mu.Lock()
		f.stats.Errors++
		f.stats.SlotsRecreated++
		f.stats.LastError, f.stats.LastErrorAt = "slot "+slot+" lost its WAL and was recreated", time.Now()
		f.mu.Unlock()
		si = slotInfo{}
		// The persisted LSN belongs to the lost slot; the new one starts
		// where it is created.
		if _, err := conn.Exec(ctx, `DELETE FROM ruvector.changefeed_state WHERE slot_name = $1`, slot); err != nil {
			return 0, fmt.Errorf("forget state of lost slot: %w", err)
		}
	}
	switch {
	case !si.exists:
		if err := createSlot(ctx, rc, slot); err != nil {
			return 0, err
		}
		if si, err = readSlot(ctx, conn, slot); err != nil {
			return 0, err
		}
	case si.plugin != "pgoutput" || si.database != db || si.temporary:
		return 0, fmt.Errorf("replication slot %q exists but is not a permanent pgoutput slot of database %q (plugin %q, database %q, temporary %v)",
			slot, db, si.plugin, si.database, si.temporary)
	}
	persisted, err := readPersisted(ctx, conn, slot)
	if err != nil {
		return 0, err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.SystemID, f.stats.Timeline = sys.SystemID, sys.Timeline
	if persisted > f.stats.PersistedLSN {
		f.stats.PersistedLSN = persisted
	}
	start := max(f.stats.ConfirmedLSN, persisted, si.confirmedFlush)
	f.stats.ConfirmedLSN = start
	f.stats.StartLSN = start
	return start, nil
}

// Setup creates the state table, the publications and the slot without
// streaming. Changes committed after Setup returns are counted by the next
// Run; the sidecar's install step and tests use it.
func (f *Feed) Setup(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, f.cfg.DSN)
	if err != nil {
		return fmt.Errorf("changefeed setup: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rc, err := f.connectReplication(ctx)
	if err != nil {
		return fmt.Errorf("changefeed setup: %w", err)
	}
	defer rc.Close(context.WithoutCancel(ctx))
	if _, err := f.prepare(ctx, conn, rc); err != nil {
		return fmt.Errorf("changefeed setup: %w", err)
	}
	return nil
}

// Drop removes the slot, both publications and the persisted state (and
// the state table once no feed has a row in it). The Feed must not be
// running; Drop waits for a slot still held by a walsender that is exiting.
func (f *Feed) Drop(ctx context.Context) error {
	if f.running.Load() {
		return errors.New("changefeed drop: the feed is running")
	}
	conn, err := pgx.Connect(ctx, f.cfg.DSN)
	if err != nil {
		return fmt.Errorf("changefeed drop: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	slot, err := f.resolveSlot(ctx, conn)
	if err != nil {
		return fmt.Errorf("changefeed drop: %w", err)
	}
	si, err := readSlot(ctx, conn, slot)
	if err != nil {
		return fmt.Errorf("changefeed drop: %w", err)
	}
	if si.exists {
		rc, err := f.connectReplication(ctx)
		if err != nil {
			return fmt.Errorf("changefeed drop: %w", err)
		}
		err = pglogrepl.DropReplicationSlot(ctx, rc, slot, pglogrepl.DropReplicationSlotOptions{Wait: true})
		rc.Close(context.WithoutCancel(ctx))
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "42704") {
			return fmt.Errorf("changefeed drop: drop slot %q: %w", slot, err)
		}
	}
	for _, p := range []string{f.pubFull, f.pubInsert} {
		if _, err := conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{p}.Sanitize()); err != nil {
			return fmt.Errorf("changefeed drop: drop publication %s: %w", p, err)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('ruvector.changefeed_state') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("changefeed drop: %w", err)
	}
	if exists {
		if _, err := conn.Exec(ctx, `DELETE FROM ruvector.changefeed_state WHERE slot_name = $1`, slot); err != nil {
			return fmt.Errorf("changefeed drop: forget state: %w", err)
		}
	}
	return nil
}

// Run streams until ctx is canceled, reconnecting with exponential backoff
// after errors (a server restart, a dropped connection). On cancel it
// confirms and persists what it processed, then returns nil. Only one Run
// may be active per Feed.
func (f *Feed) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("changefeed: Run is already active")
	}
	defer f.running.Store(false)
	backoff := f.cfg.MinBackoff
	for {
		f.mu.Lock()
		if f.sessions > 0 {
			f.stats.Reconnects++
		}
		f.sessions++
		f.mu.Unlock()

		streamed, err := f.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if streamed {
			// The server was reachable and the stream worked: the next
			// failure is a new incident, not a continuation of this one.
			backoff = f.cfg.MinBackoff
		}
		f.mu.Lock()
		f.stats.Errors++
		f.stats.LastError, f.stats.LastErrorAt = err.Error(), time.Now()
		f.mu.Unlock()
		f.cfg.Log.Warn().Err(err).Dur("retry_in", backoff).Msg("changefeed: stream ended, reconnecting")

		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
}

// session is one connection's life: prepare, stream, and either an error
// or (on cancel) a clean finish. streamed reports whether START_REPLICATION
// succeeded.
func (f *Feed) session(ctx context.Context) (streamed bool, err error) {
	conn, err := pgx.Connect(ctx, f.cfg.DSN)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rc, err := f.connectReplication(ctx)
	if err != nil {
		return false, err
	}
	defer rc.Close(context.WithoutCancel(ctx))

	start, err := f.prepare(ctx, conn, rc)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	slot := f.slot
	// A transaction cut off by the previous connection comes again in full.
	f.dec.reset()
	f.mu.Unlock()

	err = pglogrepl.StartReplication(ctx, rc, slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		// Version 2 without 'streaming': PG 15 then sends each committed
		// transaction whole, at commit, which is what counting at commit
		// needs; aborted transactions are never sent.
		PluginArgs: []string{
			"proto_version '2'",
			fmt.Sprintf("publication_names '%s,%s'", f.pubFull, f.pubInsert),
		},
	})
	if err != nil {
		return false, fmt.Errorf("start replication on slot %q at %s: %w", slot, start, err)
	}
	f.cfg.Log.Info().Str("slot", slot).Stringer("start_lsn", start).Msg("changefeed: streaming")
	f.mu.Lock()
	f.stats.Connected = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.stats.Connected = false
		f.mu.Unlock()
	}()

	s := &stream{f: f, conn: conn, rc: rc, slot: slot, lastPersist: time.Now(), lastSync: time.Now()}
	return true, s.loop(ctx)
}

// stream is the state of one streaming session.
type stream struct {
	f    *Feed
	conn *pgx.Conn
	rc   *pgconn.PgConn
	slot string

	lastPersist time.Time
	lastSync    time.Time
	// committedSincePersist: a transaction was processed since the last
	// persist, so the next status update also persists.
	committedSincePersist bool
}

func (s *stream) loop(ctx context.Context) error {
	f := s.f
	nextStatus := time.Now() // confirm the start position at once
	for {
		if ctx.Err() != nil {
			return s.finish(ctx)
		}
		if !time.Now().Before(nextStatus) {
			if err := s.status(ctx, false); err != nil {
				return s.failed(ctx, err)
			}
			nextStatus = time.Now().Add(f.cfg.StatusInterval)
		}
		if time.Since(s.lastSync) >= f.cfg.SyncInterval {
			if err := s.sync(ctx); err != nil {
				return s.failed(ctx, err)
			}
		}

		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		raw, err := s.rc.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return s.finish(ctx)
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			reply, err := s.handle(msg.Data)
			if err != nil {
				return err
			}
			if reply {
				// The server asks for a reply when it nears
				// wal_sender_timeout: answer now, not at the next tick.
				if err := s.status(ctx, false); err != nil {
					return s.failed(ctx, err)
				}
				nextStatus = time.Now().Add(f.cfg.StatusInterval)
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication stream: server ended the stream")
		default:
			// Notices and parameter changes carry nothing for us.
		}
	}
}

// handle processes one CopyData message; reply reports a keepalive that
// asks for an immediate status update.
func (s *stream) handle(data []byte) (reply bool, err error) {
	if len(data) == 0 {
		return false, errors.New("replication stream: empty CopyData")
	}
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Messages++
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("parse keepalive: %w", err)
		}
		f.stats.Keepalives++
		f.stats.LastKeepalive = time.Now()
		f.stats.LastReceivedLSN = max(f.stats.LastReceivedLSN, pkm.ServerWALEnd)
		// Between transactions everything the server decoded up to its
		// position has been sent, and a transaction still open there will
		// commit later, past that position: confirming it is safe and is
		// what lets the slot advance while the collections are idle but the
		// rest of the database writes.
		if !f.dec.inTxn && pkm.ServerWALEnd > f.stats.ConfirmedLSN {
			f.stats.ConfirmedLSN = pkm.ServerWALEnd
		}
		return pkm.ReplyRequested, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("parse XLogData: %w", err)
		}
		f.stats.LastReceivedLSN = max(f.stats.LastReceivedLSN, xld.WALStart)
		commit, err := f.dec.decode(xld.WALData)
		if err != nil {
			return false, err
		}
		if commit != nil {
			f.commitLocked(commit)
			s.committedSincePersist = true
		}
		return false, nil
	default:
		return false, fmt.Errorf("replication stream: unknown CopyData type %q", data[0])
	}
}

// commitLocked adds a committed transaction's counts. Counting only here is
// what makes the counts exact: a transaction cut short by a disconnect is
// dropped and arrives again, whole, after the reconnect.
func (f *Feed) commitLocked(c *pglogrepl.CommitMessage) {
	f.stats.Transactions++
	f.stats.LastCommit = c.CommitTime
	f.stats.ConfirmedLSN = max(f.stats.ConfirmedLSN, c.TransactionEndLSN)
	if f.dec.txn.empty() {
		return
	}
	f.totals.merge(&f.dec.txn)
	f.ring.add(c.CommitTime.Unix(), time.Now().Unix(), &f.dec.txn)
	f.dec.txn = newTally()
}

// status sends a standby status update confirming the processed LSN, after
// persisting it when due.
func (s *stream) status(ctx context.Context, final bool) error {
	f := s.f
	f.mu.Lock()
	confirmed, received, persisted := f.stats.ConfirmedLSN, f.stats.LastReceivedLSN, f.stats.PersistedLSN
	f.mu.Unlock()

	if confirmed > persisted && (final || s.committedSincePersist || time.Since(s.lastPersist) >= f.cfg.PersistInterval) {
		if err := persist(ctx, s.conn, s.slot, confirmed); err != nil {
			return err
		}
		s.lastPersist, s.committedSincePersist = time.Now(), false
		f.mu.Lock()
		f.stats.PersistedLSN = max(f.stats.PersistedLSN, confirmed)
		f.mu.Unlock()
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.rc, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(received, confirmed),
		// Flush is what the server takes as the slot's confirmed_flush_lsn.
		WALFlushPosition: confirmed,
		WALApplyPosition: confirmed,
	})
	if err != nil {
		return fmt.Errorf("send standby status update: %w", err)
	}
	f.mu.Lock()
	f.stats.StatusSent++
	f.stats.LastStatusUpdate = time.Now()
	f.mu.Unlock()
	return nil
}

// sync re-matches the publications to the registered collections. The
// stream picks up newly published tables by itself: pgoutput re-reads
// publication membership when it changes.
func (s *stream) sync(ctx context.Context) error {
	leaves, err := syncPublications(ctx, s.conn, s.f.pubFull, s.f.pubInsert)
	if err != nil {
		return err
	}
	s.lastSync = time.Now()
	s.f.mu.Lock()
	s.f.dec.meta = leaves
	s.f.mu.Unlock()
	return nil
}

// failed returns err, unless it only happened because ctx was canceled
// mid-call: then the session still ends cleanly.
func (s *stream) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return s.finish(ctx)
	}
	return err
}

// finish ends a canceled session cleanly: persist and confirm what was
// processed, then end the COPY so the walsender has read our last update
// before the connection goes. It returns nil unless that fails, which only
// costs a redelivery from the previous confirmed position.
func (s *stream) finish(ctx context.Context) error {
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.status(bg, true); err != nil {
		s.f.cfg.Log.Warn().Err(err).Msg("changefeed: final status update failed")
		return nil
	}
	// SendStandbyCopyDone reads without a context: bound it by the socket.
	_ = s.rc.Conn().SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := pglogrepl.SendStandbyCopyDone(bg, s.rc); err != nil {
		s.f.cfg.Log.Debug().Err(err).Msg("changefeed: ending the stream")
	}
	return nil
}
