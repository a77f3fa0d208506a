package collect

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
)

// Partitions measures each leaf partition of a collection (or the table
// itself when it is not partitioned) from pg_stat_user_tables.
//
// pg_stat counters move when a backend flushes its pending statistics
// (PostgreSQL 15: at transaction end at most once a second, and a backend
// that goes idle flushes what is left only after 10 s), so the counters
// trail activity and arrive in lumps: a rate is the average over the
// cadence of what was flushed, and short cadences make it jumpy. Keep the
// cadence at 5 s or more.
type Partitions struct {
	// Interval is the cadence (default 5 s).
	Interval time.Duration
	// Own, when set, is the sidecar's own reads and writes of the
	// partitions (rows its remediations moved and verified), left out of
	// the rates: the healer judges the application's load, not its own.
	Own *ownload.Ledger
	// LongWindow is the span of the long rates (default 60 s): besides
	// the rates since the previous sample, each partition gets its rates
	// since the oldest sample kept within this window. A backend that goes
	// idle flushes its counts up to 10 s late, so one 5 s sample can show
	// a busily scanned partition reading nothing; a strategy that judges
	// where rows should go reads the long rates (scorecard run 15 moved
	// rows into such a partition).
	LongWindow time.Duration

	mu   sync.Mutex
	hist map[int][]partSample // by Target.ID, oldest first
}

type partCounters struct {
	writes, scans int64
	// seqRead is seq_tup_read; idxFetch idx_tup_fetch (heap rows fetched
	// through an index: plain and bitmap index scans); idxRead the
	// idx_tup_read of the partition's indexes summed (entries returned,
	// which is the only count an index-only scan leaves).
	seqRead, idxFetch, idxRead int64
}

type partSample struct {
	at   time.Time
	rels map[int64]partCounters
}

// NewPartitions returns the partitions collector.
func NewPartitions() *Partitions { return &Partitions{} }

func (p *Partitions) Name() string { return "partitions" }

func (p *Partitions) Cadence() time.Duration { return orDefault(p.Interval, 5*time.Second) }

const partitionsSQL = `
SELECT c.oid::bigint, c.oid::regclass::text,
       coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
       s.n_tup_ins + s.n_tup_upd + s.n_tup_del,
       s.seq_scan + coalesce(s.idx_scan, 0),
       coalesce(s.seq_tup_read, 0), coalesce(s.idx_tup_fetch, 0),
       coalesce((SELECT sum(pg_stat_get_tuples_returned(x.indexrelid)) FROM pg_index x WHERE x.indrelid = c.oid), 0)::bigint,
       s.n_live_tup, s.n_dead_tup
FROM pg_class c
JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY($1::oid[]) AND c.relkind = 'r'
  -- Filtering the view by relid too lets the planner push the filter into
  -- it; on c.oid alone it aggregates every table of the database first
  -- (20 ms at 4,000 tables, per collection: bench/RESULTS.md, P1).
  AND s.relid = ANY($1::oid[])
ORDER BY c.oid`

// Collect reads the counters and turns their deltas since the previous
// sample into rates over the real elapsed time. On the first sample (and
// after a stats reset) it reports live/dead rows with zero rates and
// returns ErrFirstSample; a partition that appears later gets zero rates
// for its first sample only.
func (p *Partitions) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	var now time.Time
	cur := partSample{rels: map[int64]partCounters{}}
	var out []health.PartitionSignal
	own, err := p.Own.Observe(func() error {
		clear(cur.rels)
		out = out[:0]
		rows, err := q.Query(ctx, partitionsSQL, t.Relations)
		if err != nil {
			return fmt.Errorf("partitions: query pg_stat_user_tables: %w", err)
		}
		defer rows.Close()
		now = time.Now()
		for rows.Next() {
			var ps health.PartitionSignal
			var bound string
			var c partCounters
			if err := rows.Scan(&ps.RelID, &ps.Name, &bound, &c.writes, &c.scans, &c.seqRead, &c.idxFetch, &c.idxRead, &ps.LiveRows, &ps.DeadRows); err != nil {
				return fmt.Errorf("partitions: scan: %w", err)
			}
			ps.Shard = ShardOf(bound)
			cur.rels[ps.RelID] = c
			out = append(out, ps)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("partitions: read rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cur.at = now
	for rel, c := range cur.rels {
		if o, ok := own[rel]; ok {
			cur.rels[rel] = partCounters{writes: c.writes - o.Writes, scans: c.scans - o.Scans,
				seqRead: c.seqRead - o.SeqRead, idxFetch: c.idxFetch - o.IdxFetch, idxRead: c.idxRead - o.IdxRead}
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hist == nil {
		p.hist = map[int][]partSample{}
	}
	hist := p.hist[t.ID]
	had := len(hist) > 0
	reset := false
	if had {
		prev := hist[len(hist)-1]
		// The long window's base: the oldest sample kept, which the
		// pruning below keeps within LongWindow of now.
		base := hist[0]
		el, longEl := now.Sub(prev.at), now.Sub(base.at)
		for i := range out {
			pc, ok := prev.rels[out[i].RelID]
			if !ok {
				continue
			}
			c := cur.rels[out[i].RelID]
			if c.writes < pc.writes || c.scans < pc.scans || c.seqRead < pc.seqRead || c.idxFetch < pc.idxFetch {
				reset = true
				continue
			}
			out[i].WriteRowsPerSec = rate(c.writes, pc.writes, el)
			out[i].ScansPerSec = rate(c.scans, pc.scans, el)
			out[i].ReadRowsPerSec = rate(c.seqRead, pc.seqRead, el) + indexReadRate(c, pc, el)
			out[i].LongWriteRowsPerSec, out[i].LongReadRowsPerSec = out[i].WriteRowsPerSec, out[i].ReadRowsPerSec
			// A partition younger than the base has no long rates beyond
			// its short ones; counters below the base's (a reset between
			// them is caught by the short check) likewise.
			if bc, ok := base.rels[out[i].RelID]; ok && c.writes >= bc.writes && c.seqRead >= bc.seqRead && c.idxFetch >= bc.idxFetch {
				out[i].LongWriteRowsPerSec = rate(c.writes, bc.writes, longEl)
				out[i].LongReadRowsPerSec = rate(c.seqRead, bc.seqRead, longEl) + indexReadRate(c, bc, longEl)
			}
		}
		if !reset {
			s.PartitionsSince, s.PartitionsLongSince = prev.at, base.at
		}
	}
	if reset {
		hist = hist[:0]
	}
	// Keep the samples that can still be a long window's base at the next
	// collection: those no older than LongWindow then (one cadence on).
	keepFrom := now.Add(p.Cadence() - orDefault(p.LongWindow, time.Minute))
	for len(hist) > 0 && hist[0].at.Before(keepFrom) {
		hist = hist[1:]
	}
	p.hist[t.ID] = append(hist, cur)
	s.Partitions = out
	if !had || reset {
		s.PartitionsSince, s.PartitionsLongSince = time.Time{}, time.Time{}
		return fmt.Errorf("partitions of %s: %w", t.Name, ErrFirstSample)
	}
	return nil
}

// indexReadRate is the rate of rows read through the partition's indexes:
// the larger of the heap fetches and the index entries returned. A plain or
// bitmap index scan counts both (about the same rows, so they are not
// added), an index-only scan only the entries: counting idx_tup_fetch alone
// read a partition served by index-only scans as idle, and the same reads
// counted 0 or in full as the planner switched between an index-only and
// a sequential scan (the visibility map cleared by writes, set again by
// VACUUM), which made equally read partitions look several times hotter
// than one another. The entries' sum falls when an index is dropped or
// rebuilt under a new oid: that is not a statistics reset, so its rate is
// then 0 for one sample.
func indexReadRate(c, pc partCounters, el time.Duration) float64 {
	fetch := rate(c.idxFetch, pc.idxFetch, el)
	if c.idxRead < pc.idxRead {
		return fetch
	}
	return max(fetch, rate(c.idxRead, pc.idxRead, el))
}

var listBound = regexp.MustCompile(`^FOR VALUES IN \('?(-?[0-9]+)'?\)$`)

// ShardOf parses a partition bound as pg_get_expr prints it: the value of a
// single-value LIST partition ("FOR VALUES IN (3)"), else -1 (ranges, hash
// partitions, DEFAULT, several values, not a partition).
func ShardOf(bound string) int64 {
	m := listBound.FindStringSubmatch(bound)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
