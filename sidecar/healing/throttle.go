package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Segment is the part of the shared segment the segment-based strategies
// and the sampler use (*shmproto.Segment).
type Segment interface {
	Find(name string, dbOID uint32) (shmproto.Collection, error)
	ReadThrottle(i int, op shmproto.Op) (shmproto.Throttle, error)
	SetSidecarThrottleFor(i int, op shmproto.Op, pct uint32, now time.Time, outcomeID int64) error
	ReadIntegrity(i int) (shmproto.Integrity, error)
}

// SegmentSampler reads λ from the segment, where the integrity monitor
// publishes it every sample.
type SegmentSampler struct {
	Segment     Segment
	DatabaseOID uint32
}

// Sample implements Sampler.
func (s SegmentSampler) Sample(_ context.Context, collection string, collectionID int64) (float64, error) {
	c, err := findSlot(s.Segment, collection, collectionID, s.DatabaseOID)
	if err != nil {
		return 0, err
	}
	in, err := s.Segment.ReadIntegrity(c.Slot)
	if err != nil {
		return 0, fmt.Errorf("healing: read λ of %q: %w", collection, err)
	}
	if in.Updated.IsZero() {
		return 0, fmt.Errorf("healing: λ of %q was never published", collection)
	}
	return in.Lambda, nil
}

func findSlot(seg Segment, name string, id int64, dbOID uint32) (shmproto.Collection, error) {
	c, err := seg.Find(name, dbOID)
	if err != nil {
		return shmproto.Collection{}, fmt.Errorf("healing: collection %q in the segment: %w", name, err)
	}
	if int64(c.CollectionID) != id {
		return shmproto.Collection{}, fmt.Errorf("healing: segment slot of %q belongs to collection %d, not %d (re-registered?)",
			name, c.CollectionID, id)
	}
	return c, nil
}

// ThrottleIngestion is the design's throttle_ingestion. What it slows
// depends on the problem:
//
//   - hotspot_congestion whose hot partitions are shards of the vector
//     collection (the trigger's witness edges name them, or {"shard": n} in a
//     manual execution's parameters): a write cap on each hot shard, at the
//     median write rate of the other shards, or, when
//     they write nothing, at (100 - pct)% of the shard's own (pct 50 in
//     stress, 90 in critical; at least 1 row/s), enforced per row by the
//     collection's row trigger (see shardCap). A writer that names its shard explicitly
//     makes a hotspot that routing weights (drain_hot_partition) cannot move
//     and rebalance_partitions cannot outrun; a whole-collection throttle
//     would slow every shard alike and leave the hottest/median load ratio
//     where it was, while a cap on the hot shard lowers exactly that ratio.
//     The rates are the rows written per second the problem was classified
//     from; without them, n_tup_ins of each partition over RateWindow (5 s),
//     or, when the statistics show none, the partition load the problem was
//     classified from.
//   - otherwise (memory_pressure, replication_lag, or a hotspot no shard
//     of which can be named): the whole collection, insert throttle 50% in
//     stress, 90% in critical, bulk_insert 10 points more (capped at 100).
//
// Both go through the segment naming the attempt's outcome id, so the
// errors of refused writes point at it, and both are released by the
// watchdog if the sidecar stops. It never overrides a manual throttle or a
// manual shard cap. Every previous setting is recorded before it is changed
// and restored exactly by Rollback.
//
// It also handles replication_lag (the design names no strategy for it):
// ingestion is what produces the WAL a lagging replica has to replay, so
// slowing it is the direct, reversible lever; pause_maintenance is the
// other one.
type ThrottleIngestion struct {
	Segment     Segment
	DatabaseOID uint32
	// Dial opens a connection the strategy owns, used to map hot partitions
	// to shards and measure their insert rate. Without it (or with a
	// Segment that keeps no shard caps) every problem gets the
	// whole-collection throttle.
	Dial func(ctx context.Context) (*pgx.Conn, error)
	// RateWindow is how long the hot shards' insert rate is measured;
	// 0 means DefaultRateWindow.
	RateWindow time.Duration
}

// DefaultRateWindow is the partitions collector's cadence: a backend
// reports its statistics at most once a second and single-row writers in
// lumps, so over 2 s the peers' median came out at 19 rows/s where the
// monitor read 48, and the hot shard was capped below its peers.
const DefaultRateWindow = 5 * time.Second

// shardCapSegment is the part of the segment that keeps shard caps
// (*shmproto.Segment).
type shardCapSegment interface {
	ReadShardCap(i, shard int) (shmproto.ShardCap, error)
	SetSidecarShardCap(i, shard int, rowsPerSec uint32, outcomeID int64) error
	ReadShardCapCounters(i int) (shmproto.ShardCapCounters, error)
}

// Kinds of rollback records.
const (
	actionThrottle = "" // an op's collection throttle (records before shard caps had no kind)
	actionShardCap = "shard_cap"
)

// throttleAction is the rollback record: the setting before the change.
type throttleAction struct {
	Kind         string `json:"kind,omitempty"`
	CollectionID int64  `json:"collection_id"`
	Op           string `json:"op,omitempty"`
	Shard        int    `json:"shard,omitempty"`
	PreviousPct  uint32 `json:"previous_pct,omitempty"`
	// PreviousCap is a shard's cap before, rows/s (0: none).
	PreviousCap uint32 `json:"previous_cap,omitempty"`
	// PreviousBy is who set the previous value; only a sidecar value is
	// restored, since a manual one is the watchdog's and the table's to keep.
	PreviousBy string `json:"previous_by"`
	// PreviousOutcome is the outcome that set a previous sidecar value,
	// restored with it.
	PreviousOutcome int64  `json:"previous_outcome_id,omitempty"`
	NewPct          uint32 `json:"new_pct,omitempty"`
	NewCap          uint32 `json:"new_cap,omitempty"`
	// Rate is the capped shard's insert rate measured before, rows/s.
	Rate float64 `json:"measured_rows_per_sec,omitempty"`
}

// shardCapTarget is one hot shard and the cap it gets.
type shardCapTarget struct {
	Shard  int     `json:"shard"`
	RelID  int64   `json:"partition_relid"`
	Rate   float64 `json:"measured_rows_per_sec"`
	Source string  `json:"measured_from"`
	// PeerMedian is the median insert rate of the collection's other
	// shards over the same window (0: none measured).
	PeerMedian float64           `json:"peer_median_rows_per_sec"`
	Cap        uint32            `json:"cap_rows_per_sec"`
	Previous   shmproto.ShardCap `json:"-"`
}

func (ThrottleIngestion) Name() string { return "throttle_ingestion" }
func (ThrottleIngestion) Handles() []classify.Class {
	return []classify.Class{classify.ClassHotspotCongestion, classify.ClassMemoryPressure, classify.ClassReplicationLag}
}
func (ThrottleIngestion) Impact() float64                  { return 0.4 }
func (ThrottleIngestion) EstimatedDuration() time.Duration { return 8 * time.Second } // DefaultRateWindow and the caps
func (ThrottleIngestion) Reversible() bool                 { return true }

// Temporary: a throttle or cap is lifted once the collection has been
// normal long enough (strategy.Temporary).
func (ThrottleIngestion) Temporary() bool { return true }

func statePct(st strategy.IntegrityState) (uint32, bool) {
	switch st {
	case strategy.StateStress:
		return 50, true
	case strategy.StateCritical:
		return 90, true
	}
	return 0, false
}

// hotShardsWanted returns the shard a manual execution names ({"shard": n})
// and the hot partitions of a hotspot problem; both empty when the problem
// names no partition.
func hotShardsWanted(rc *strategy.Context) (shard *int, relids []int64, err error) {
	if len(rc.Params) > 0 {
		var p struct {
			Shard *int `json:"shard"`
		}
		if err := json.Unmarshal(rc.Params, &p); err != nil {
			return nil, nil, fmt.Errorf("throttle_ingestion: parameters: %w", err)
		}
		if p.Shard != nil {
			return p.Shard, nil, nil
		}
	}
	if rc.Problem.HotspotCongestion != nil {
		return nil, rc.Problem.HotspotCongestion.PartitionIDs, nil
	}
	return nil, nil, nil
}

// shardCaps decides the caps for a hotspot: the hot shards, their measured
// insert rate and the cap at (100 - pct)% of it. An empty result with a
// reason means the whole collection is throttled instead. A manual cap on
// a hot shard is ErrManualPinned.
func (t ThrottleIngestion) shardCaps(ctx context.Context, rc *strategy.Context, slot int, pct uint32) ([]shardCapTarget, string, error) {
	caps, ok := t.Segment.(shardCapSegment)
	if !ok || t.Dial == nil {
		return nil, "this sidecar cannot set shard caps (no segment support or no connection)", nil
	}
	wantShard, relids, err := hotShardsWanted(rc)
	if err != nil {
		return nil, "", err
	}
	if wantShard == nil && len(relids) == 0 {
		return nil, fmt.Sprintf("the problem (class %q) names no hot partition", rc.Problem.Class), nil
	}
	conn, err := t.Dial(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("throttle_ingestion: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	all, err := shardPartitions(ctx, conn, rc)
	if err != nil {
		return nil, "", err
	}
	var hot []shardCapTarget
	for _, s := range all {
		if (wantShard != nil && s.Shard == *wantShard) || slices.Contains(relids, s.RelID) {
			hot = append(hot, s)
		}
	}
	if len(hot) == 0 {
		if wantShard != nil {
			return nil, "", fmt.Errorf("throttle_ingestion: parameter shard %d is not a shard of %q", *wantShard, rc.Collection)
		}
		return nil, fmt.Sprintf("hot partitions %v are not shards of vector collection %q", relids, rc.Collection), nil
	}
	for i := range hot {
		sc, err := caps.ReadShardCap(slot, hot[i].Shard)
		if err != nil {
			return nil, "", fmt.Errorf("throttle_ingestion: read cap of shard %d: %w", hot[i].Shard, err)
		}
		if sc.SetBy == shmproto.SetByManual {
			return nil, "", fmt.Errorf("a manual cap of %d rows/s is in force on shard %d of %q; not overriding it: %w",
				sc.RowsPerSec, hot[i].Shard, rc.Collection, shmproto.ErrManualPinned)
		}
		hot[i].Previous = sc
	}
	var peers []int64
	for _, s := range all {
		if !slices.ContainsFunc(hot, func(h shardCapTarget) bool { return h.RelID == s.RelID }) {
			peers = append(peers, s.RelID)
		}
	}
	if hot, err = t.measure(ctx, conn, rc, hot, peers); err != nil {
		return nil, "", err
	}
	for i := range hot {
		hot[i].Cap = shardCap(hot[i].Rate, hot[i].PeerMedian, pct)
	}
	return hot, "", nil
}

// shardPartitions lists the collection's shards and their partitions.
func shardPartitions(ctx context.Context, conn *pgx.Conn, rc *strategy.Context) ([]shardCapTarget, error) {
	rows, err := conn.Query(ctx, `
SELECT c.oid::int8, (regexp_match(pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES IN \((\d+)\)$'))[1]::int
FROM ruvector.collection_relations r
JOIN ruvector.vector_collections v ON v.collection_id = r.collection_id
JOIN pg_class c ON c.oid = r.relid
WHERE r.collection_id = $1 AND c.relispartition
  AND pg_get_expr(c.relpartbound, c.oid) ~ '^FOR VALUES IN \(\d+\)$'
ORDER BY 2`, rc.CollectionID)
	if err != nil {
		return nil, fmt.Errorf("throttle_ingestion: shards of %q: %w", rc.Collection, err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (shardCapTarget, error) {
		var x shardCapTarget
		return x, r.Scan(&x.RelID, &x.Shard)
	})
	if err != nil {
		return nil, fmt.Errorf("throttle_ingestion: shards of %q: %w", rc.Collection, err)
	}
	return all, nil
}

// shardCap is the cap of a hot shard measured at rate rows/s. When its
// peers write, it is their median rate: one attempt brings the shard's
// write load in line with a typical shard's, which is the ratio the hotspot
// is judged by, where (100 - pct)% of a runaway writer's pace would still
// be many times its peers' (measured: 10% of 2,000 rows/s left the ratio at
// 5.7 and λ at 0.05); and a hot shard is never cut below what a normal one
// takes. When no peer writes, (100 - pct)% of its own rate. At least 1 row/s.
func shardCap(rate, peerMedian float64, pct uint32) uint32 {
	c := rate * float64(100-pct) / 100
	if peerMedian > 0 {
		c = min(rate, peerMedian)
	}
	return uint32(min(max(c, 1), shmproto.ShardCapRateMask))
}

// measure fills each target's write rate: the rows written per second the
// problem was classified from (the partitions collector's last period,
// the healer's own moves left out) when it has a rate for every shard and
// the hot ones write; else n_tup_ins of each partition over RateWindow, or
// the classified partition load when the statistics moved not at all (a
// writer that has not flushed them yet). Measuring afresh cost RateWindow
// (5 s) of every hotspot's time to recovery for a rate the trigger already
// carried.
//
// Of several hot shards only those written faster than HoldBindingFactor ×
// the median shard are kept, the others join the peers: a cut that runs
// through every partition link names every shard, and capping each at half
// its own pace (no peers left to take the median of) held the routed
// workload back instead of the one writer (scorecard run 20, episode 12).
func (t ThrottleIngestion) measure(ctx context.Context, conn *pgx.Conn, rc *strategy.Context, hot []shardCapTarget, peers []int64) ([]shardCapTarget, error) {
	ids := slices.Clone(peers)
	for _, h := range hot {
		ids = append(ids, h.RelID)
	}
	rates, source := classifiedWrites(rc.Metrics.PartitionWrites, hot, ids), "partition_writes"
	if rates == nil {
		var err error
		if rates, err = t.insertRates(ctx, conn, ids, nil); err != nil {
			return nil, fmt.Errorf("throttle_ingestion: insert counts of %q: %w", rc.Collection, err)
		}
		source = "n_tup_ins"
	}
	if len(hot) > 1 {
		all := make([]float64, 0, len(ids))
		for _, id := range ids {
			all = append(all, rates[id])
		}
		med := medianRate(all)
		keep := slices.DeleteFunc(slices.Clone(hot), func(h shardCapTarget) bool { return rates[h.RelID] <= HoldBindingFactor*med })
		if len(keep) > 0 && len(keep) < len(hot) {
			for _, h := range hot {
				if !slices.ContainsFunc(keep, func(k shardCapTarget) bool { return k.RelID == h.RelID }) {
					peers = append(peers, h.RelID)
				}
			}
			hot = keep
		}
	}
	var peerRates []float64
	for _, id := range peers {
		peerRates = append(peerRates, rates[id])
	}
	median := medianRate(peerRates)
	for i := range hot {
		hot[i].PeerMedian = median
		if r := rates[hot[i].RelID]; r > 0 {
			hot[i].Rate, hot[i].Source = r, source
		} else {
			hot[i].Rate, hot[i].Source = rc.Metrics.PartitionLoad[hot[i].RelID], "partition_load"
		}
	}
	return hot, nil
}

// medianRate is the median of rates, 0 for none.
func medianRate(rates []float64) float64 {
	n := len(rates)
	if n == 0 {
		return 0
	}
	r := slices.Sorted(slices.Values(rates))
	return (r[(n-1)/2] + r[n/2]) / 2
}

// classifiedWrites returns the classified write rates of ids, or nil when
// one is missing or no hot shard writes.
func classifiedWrites(writes map[int64]float64, hot []shardCapTarget, ids []int64) map[int64]float64 {
	out := make(map[int64]float64, len(ids))
	for _, id := range ids {
		r, ok := writes[id]
		if !ok {
			return nil
		}
		out[id] = r
	}
	for _, h := range hot {
		if out[h.RelID] > 0 {
			return out
		}
	}
	return nil
}

// insertRates measures the rows/s inserted into each partition of ids
// (n_tup_ins) over RateWindow; between, if not nil, runs at the start and
// the end of the window.
func (t ThrottleIngestion) insertRates(ctx context.Context, conn *pgx.Conn, ids []int64, between func() error) (map[int64]float64, error) {
	read := func() (map[int64]int64, time.Time, error) {
		rows, err := conn.Query(ctx, `SELECT r, pg_stat_get_tuples_inserted(r::oid) FROM unnest($1::int8[]) r`, ids)
		if err != nil {
			return nil, time.Time{}, err
		}
		at := time.Now()
		out := map[int64]int64{}
		var id, n int64
		_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
			out[id] = n
			return nil
		})
		return out, at, err
	}
	window := t.RateWindow
	if window <= 0 {
		window = DefaultRateWindow
	}
	mark := func() error {
		if between == nil {
			return nil
		}
		return between()
	}
	if err := mark(); err != nil {
		return nil, err
	}
	before, t0, err := read()
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(window):
	}
	after, t1, err := read()
	if err != nil {
		return nil, err
	}
	if err := mark(); err != nil {
		return nil, err
	}
	el := t1.Sub(t0).Seconds()
	rates := make(map[int64]float64, len(ids))
	for _, id := range ids {
		rates[id] = float64(max(after[id]-before[id], 0)) / el
	}
	return rates, nil
}

// maxReadHotspotWrites: a hot shard whose rows written per second are at
// most this share of its load is hot from reads, which no write cap or
// throttle cools.
const maxReadHotspotWrites = 0.1

// readHotspot says why throttling cannot cool the hotspot, or "": every hot
// shard's load is reads, its writes measured (by the trigger's partition
// writes, or afresh when those showed none) at most maxReadHotspotWrites of
// it and no faster than its peers'. A cap or throttle there slows nothing that loads the shard, and λ
// cannot verify it: in scorecard run 15 such throttles on a read-hot shard
// were tried and rolled back once a minute, in a fault-free period. When
// the trigger carried no write rates for the hot shards nothing is known
// of their writes, and throttling goes ahead as before.
func readHotspot(rc *strategy.Context, hot []shardCapTarget) string {
	if rc.Problem.Class != classify.ClassHotspotCongestion || len(hot) == 0 {
		return ""
	}
	var parts []string
	for _, h := range hot {
		load, ok := rc.Metrics.PartitionLoad[h.RelID]
		if _, known := rc.Metrics.PartitionWrites[h.RelID]; !ok || !known || load <= 0 {
			return ""
		}
		writes := h.Rate
		if h.Source == "partition_load" {
			writes = 0 // measured afresh too, and none seen
		}
		// A shard written faster than its peers has a writer to hold back
		// while the next remedy moves the rows its readers load it with
		// (a held cap), however small the writes' share of its load.
		if writes > maxReadHotspotWrites*load || writes > HoldBindingFactor*h.PeerMedian {
			return ""
		}
		parts = append(parts, fmt.Sprintf("shard %d: %.0f of %.0f rows/s written, the other shards' median %.0f", h.Shard, writes, load, h.PeerMedian))
	}
	return fmt.Sprintf("the hot shards of %q are loaded by reads (%s): a write cap or throttle cannot cool them",
		rc.Collection, strings.Join(parts, "; "))
}

// HoldWindow is how long Holds measures (RateWindow).
func (t ThrottleIngestion) HoldWindow() time.Duration { return orWindow(t.RateWindow) }

// Holds (strategy.Holder) says whether the attempt's shard caps still hold
// back the writer that made the hotspot: every cap is still this outcome's,
// each capped shard took at most its cap (with a margin for the GCRA's
// burst) over RateWindow where it took at least HoldBindingFactor × the cap
// before, and the segment delayed or refused writes during the window, so
// a writer is being held back right now rather than gone by itself. A
// whole-collection throttle is never held: it slows every shard alike and
// its effect is λ's to show.
func (t ThrottleIngestion) Holds(ctx context.Context, rc *strategy.Context) (bool, string, error) {
	acts, err := rc.Actions()
	if err != nil {
		return false, "", err
	}
	var capped []throttleAction
	for _, raw := range acts {
		var a throttleAction
		if err := json.Unmarshal(raw, &a); err != nil {
			return false, "", fmt.Errorf("throttle_ingestion: action record: %w", err)
		}
		if a.Kind == actionShardCap {
			capped = append(capped, a)
		}
	}
	if len(capped) == 0 {
		return false, "a whole-collection throttle is not held: it slows every shard alike", nil
	}
	caps, ok := t.Segment.(shardCapSegment)
	if !ok || t.Dial == nil {
		return false, "", errors.New("throttle_ingestion: shard caps were set but this sidecar cannot read them now")
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return false, "", err
	}
	for _, a := range capped {
		sc, err := caps.ReadShardCap(c.Slot, a.Shard)
		if err != nil {
			return false, "", fmt.Errorf("throttle_ingestion: read cap of shard %d: %w", a.Shard, err)
		}
		if sc.SetBy != shmproto.SetBySidecar || sc.OutcomeID != rc.OutcomeID {
			return false, fmt.Sprintf("the cap of shard %d is no longer this remediation's (%d rows/s set by %s, outcome %d)",
				a.Shard, sc.RowsPerSec, shmproto.SetByNames[sc.SetBy], sc.OutcomeID), nil
		}
		if a.Rate < HoldBindingFactor*float64(a.NewCap) {
			return false, fmt.Sprintf("shard %d took %.0f rows/s before its cap of %d: the cap never bound it", a.Shard, a.Rate, a.NewCap), nil
		}
	}
	conn, err := t.Dial(ctx)
	if err != nil {
		return false, "", fmt.Errorf("throttle_ingestion: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	all, err := shardPartitions(ctx, conn, rc)
	if err != nil {
		return false, "", err
	}
	relOf := map[int]int64{}
	for _, p := range all {
		relOf[p.Shard] = p.RelID
	}
	var ids []int64
	for _, a := range capped {
		if id, ok := relOf[a.Shard]; ok {
			ids = append(ids, id)
		}
	}
	var counters []shmproto.ShardCapCounters
	rates, err := t.insertRates(ctx, conn, ids, func() error {
		cc, err := caps.ReadShardCapCounters(c.Slot)
		counters = append(counters, cc)
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("throttle_ingestion: insert rates under the caps: %w", err)
	}
	held := counters[1].DelayedRows - counters[0].DelayedRows
	refused := counters[1].RejectedStatements - counters[0].RejectedStatements
	var parts []string
	for _, a := range capped {
		r := rates[relOf[a.Shard]]
		if r > float64(a.NewCap)*1.25+2 {
			return false, fmt.Sprintf("shard %d takes %.0f rows/s under its cap of %d: the cap does not hold it", a.Shard, r, a.NewCap), nil
		}
		parts = append(parts, fmt.Sprintf("shard %d: %.0f rows/s before, %.0f under a cap of %d", a.Shard, a.Rate, r, a.NewCap))
	}
	if held == 0 && refused == 0 {
		return false, fmt.Sprintf("no write was delayed or refused by the caps for %s (%s): the writer stopped by itself",
			orWindow(t.RateWindow), strings.Join(parts, "; ")), nil
	}
	return true, fmt.Sprintf("the caps hold the hot writer back (%s; %d rows delayed, %d statements refused in %s); λ needs the shard's excess rows moved too",
		strings.Join(parts, "; "), held, refused, orWindow(t.RateWindow)), nil
}

// HoldBindingFactor: a shard cap is held only where the shard took at
// least this many times its cap before; below that the cap barely binds
// and what λ shows is its whole effect.
const HoldBindingFactor = 1.5

func orWindow(w time.Duration) time.Duration {
	if w <= 0 {
		return DefaultRateWindow
	}
	return w
}

// Execute applies the caps or the throttle.
func (t ThrottleIngestion) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	pct, ok := statePct(rc.State)
	if !ok {
		return strategy.NoopResult(fmt.Sprintf("state %q needs no throttle", rc.State)), nil
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return strategy.Result{}, err
	}
	hot, why, err := t.shardCaps(ctx, rc, c.Slot, pct)
	if err != nil {
		return strategy.Result{}, err
	}
	if reason := readHotspot(rc, hot); reason != "" {
		return strategy.NoopResult(reason), nil
	}
	if len(hot) > 0 {
		return t.capShards(ctx, rc, c.Slot, pct, hot)
	}
	res, err := t.throttleCollection(ctx, rc, c.Slot, pct)
	if res.Metadata != nil && why != "" {
		res.Metadata["shard_caps_not_used"] = why
	}
	return res, err
}

func (t ThrottleIngestion) capShards(ctx context.Context, rc *strategy.Context, slot int, pct uint32, hot []shardCapTarget) (strategy.Result, error) {
	caps := t.Segment.(shardCapSegment)
	done := 0
	for _, h := range hot {
		if err := ctx.Err(); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := rc.Record(throttleAction{Kind: actionShardCap, CollectionID: rc.CollectionID, Shard: h.Shard,
			PreviousCap: h.Previous.RowsPerSec, PreviousBy: shmproto.SetByNames[h.Previous.SetBy],
			PreviousOutcome: h.Previous.OutcomeID, NewCap: h.Cap, Rate: h.Rate}); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := caps.SetSidecarShardCap(slot, h.Shard, h.Cap, rc.OutcomeID); err != nil {
			return strategy.Result{ActionsTaken: done}, fmt.Errorf("cap shard %d at %d rows/s: %w", h.Shard, h.Cap, err)
		}
		done++
	}
	return strategy.Result{Success: true, ActionsTaken: done,
		Metadata: map[string]any{"throttle_pct": pct, "shard_caps": hot}}, nil
}

func (t ThrottleIngestion) throttleCollection(ctx context.Context, rc *strategy.Context, slot int, pct uint32) (strategy.Result, error) {
	targets := []struct {
		op  shmproto.Op
		pct uint32
	}{{shmproto.OpInsert, pct}, {shmproto.OpBulkInsert, min(pct+10, 100)}}
	now := time.Now()
	// Check both ops before touching either: a manual throttle on one op
	// means a human is steering this collection's writes.
	prev := make([]shmproto.Throttle, len(targets))
	for i, tg := range targets {
		th, err := t.Segment.ReadThrottle(slot, tg.op)
		if err != nil {
			return strategy.Result{}, fmt.Errorf("read %s throttle: %w", shmproto.OpNames[tg.op], err)
		}
		if th.SetBy == shmproto.SetByManual && (th.Expires.IsZero() || th.Expires.After(now)) {
			return strategy.Result{}, fmt.Errorf("a manual %s throttle of %d%% is in force on %q; not overriding it: %w",
				shmproto.OpNames[tg.op], th.Pct, rc.Collection, shmproto.ErrManualPinned)
		}
		prev[i] = th
	}
	done := 0
	for i, tg := range targets {
		if err := ctx.Err(); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := rc.Record(throttleAction{Kind: actionThrottle, CollectionID: rc.CollectionID, Op: shmproto.OpNames[tg.op],
			PreviousPct: prev[i].Pct, PreviousBy: shmproto.SetByNames[prev[i].SetBy], PreviousOutcome: prev[i].OutcomeID,
			NewPct: tg.pct}); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := t.Segment.SetSidecarThrottleFor(slot, tg.op, tg.pct, time.Now(), rc.OutcomeID); err != nil {
			return strategy.Result{ActionsTaken: done}, fmt.Errorf("set %s throttle: %w", shmproto.OpNames[tg.op], err)
		}
		done++
	}
	return strategy.Result{Success: true, ActionsTaken: done,
		Metadata: map[string]any{"throttle_pct": pct, "bulk_insert_pct": targets[1].pct}}, nil
}

// Describe says what Execute would do now, changing nothing (the dry run's
// document; measuring the hot shards' rate takes RateWindow).
func (t ThrottleIngestion) Describe(ctx context.Context, rc *strategy.Context) (map[string]any, error) {
	pct, ok := statePct(rc.State)
	if !ok {
		return map[string]any{"noop": true, "reason": fmt.Sprintf("state %q needs no throttle", rc.State)}, nil
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return nil, err
	}
	hot, why, err := t.shardCaps(ctx, rc, c.Slot, pct)
	if err != nil {
		return nil, err
	}
	if reason := readHotspot(rc, hot); reason != "" {
		return map[string]any{"noop": true, "reason": reason}, nil
	}
	if len(hot) > 0 {
		steps := make([]map[string]any, 0, len(hot))
		for _, h := range hot {
			steps = append(steps, map[string]any{"action": "cap_shard", "shard": h.Shard, "partition_relid": h.RelID,
				"measured_rows_per_sec": h.Rate, "measured_from": h.Source, "cap_rows_per_sec": h.Cap,
				"cap_before": h.Previous.RowsPerSec, "cap_before_set_by": shmproto.SetByNames[h.Previous.SetBy]})
		}
		return map[string]any{"mode": "shard_caps", "cut_pct": pct, "steps": steps}, nil
	}
	return map[string]any{"mode": "collection_throttle", "insert_pct": pct, "bulk_insert_pct": min(pct+10, 100),
		"why_not_shard_caps": why}, nil
}

// Rollback restores each previous sidecar value (0 releases it), last
// change first. A manual throttle or cap set since then wins and is left
// alone.
func (t ThrottleIngestion) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(acts) - 1; i >= 0; i-- {
		var a throttleAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			errs = append(errs, fmt.Errorf("action %d: %w", i, err))
			continue
		}
		restore, outcome, err := t.restoreTarget(ctx, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("action %d: %w", i, err))
			continue
		}
		if a.Kind == actionShardCap {
			caps, ok := t.Segment.(shardCapSegment)
			if !ok {
				errs = append(errs, fmt.Errorf("action %d: shard %d was capped but this segment keeps no shard caps", i, a.Shard))
				continue
			}
			if rc.OutcomeID != 0 {
				cur, err := caps.ReadShardCap(c.Slot, a.Shard)
				if err != nil {
					errs = append(errs, fmt.Errorf("read the cap of shard %d: %w", a.Shard, err))
					continue
				}
				if overriddenSince(cur.SetBy, cur.OutcomeID, rc.OutcomeID) {
					continue // another measure's now: see restoreTarget
				}
			}
			err := caps.SetSidecarShardCap(c.Slot, a.Shard, restore, outcome)
			if err != nil && !errors.Is(err, shmproto.ErrManualPinned) {
				errs = append(errs, fmt.Errorf("restore the cap of shard %d to %d rows/s: %w", a.Shard, restore, err))
			}
			continue
		}
		op, ok := opByName(a.Op)
		if !ok {
			errs = append(errs, fmt.Errorf("action %d: unknown op %q", i, a.Op))
			continue
		}
		if rc.OutcomeID != 0 {
			cur, err := t.Segment.ReadThrottle(c.Slot, op)
			if err != nil {
				errs = append(errs, fmt.Errorf("read the %s throttle: %w", a.Op, err))
				continue
			}
			if overriddenSince(cur.SetBy, cur.OutcomeID, rc.OutcomeID) {
				continue
			}
		}
		err = t.Segment.SetSidecarThrottleFor(c.Slot, op, restore, time.Now(), outcome)
		if err != nil && !errors.Is(err, shmproto.ErrManualPinned) {
			errs = append(errs, fmt.Errorf("restore %s throttle to %d%%: %w", a.Op, restore, err))
		}
	}
	return errors.Join(errs...)
}

// overriddenSince reports whether the value in force is another
// remediation's sidecar value (a newer measure), which a rollback of
// outcome leaves to that measure's own rollback. A value without an
// outcome (set outside a remediation, or by a sidecar that died between
// its record and its own) is taken as this outcome's; a manual one is
// refused by the segment anyway.
func overriddenSince(by shmproto.SetBy, current, outcome int64) bool {
	return by == shmproto.SetBySidecar && current != 0 && current != outcome
}

// maxRestoreChain bounds how many rolled-back outcomes restoreTarget
// looks through.
const maxRestoreChain = 16

// restoreTarget is what rolling back action a leaves in force: the sidecar
// value it replaced (a manual one is never touched, and anything else
// means none), unless the outcome that set that value has been rolled
// back since, in which case that outcome's own previous value, and so on.
//
// Measures stack: a second throttle records the first as its previous
// value. Undone out of order, the second's rollback restored the first's
// throttle after the first had been lifted, and it then stayed in force
// for good (scorecard run 16: a 60% bulk_insert throttle refused a later
// fault's COPY 14 minutes after both were lifted). Rollback also leaves a
// value that is no longer the outcome's own (a newer measure overrode
// it): the newer one's rollback restores past it.
//
// Without Dial the rolled-back state of the previous outcome cannot be
// read, and its value is restored as recorded.
func (t ThrottleIngestion) restoreTarget(ctx context.Context, a throttleAction) (uint32, int64, error) {
	if t.Dial == nil || a.PreviousBy != shmproto.SetByNames[shmproto.SetBySidecar] || a.PreviousOutcome == 0 {
		return previousOf(a)
	}
	conn, err := t.Dial(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("throttle_ingestion: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for range maxRestoreChain {
		if a.PreviousBy != shmproto.SetByNames[shmproto.SetBySidecar] || a.PreviousOutcome == 0 {
			break
		}
		var rolled bool
		var doc []byte
		err := conn.QueryRow(ctx, `SELECT coalesce(rolled_back, false) OR EXISTS (SELECT 1 FROM ruvector.healing_outcomes r
				WHERE r.metadata->>'kind' = 'rollback' AND r.metadata->>'rollback_of' = o.id::text AND r.success),
			coalesce(metadata->'actions', '[]')::text
			FROM ruvector.healing_outcomes o WHERE id = $1`, a.PreviousOutcome).Scan(&rolled, &doc)
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("throttle_ingestion: outcome %d behind the value to restore: %w", a.PreviousOutcome, err)
		}
		if !rolled {
			break
		}
		var acts []throttleAction
		if err := json.Unmarshal(doc, &acts); err != nil {
			return 0, 0, fmt.Errorf("throttle_ingestion: actions of outcome %d: %w", a.PreviousOutcome, err)
		}
		i := slices.IndexFunc(acts, func(p throttleAction) bool {
			return p.Kind == a.Kind && p.Op == a.Op && p.Shard == a.Shard && p.CollectionID == a.CollectionID
		})
		if i < 0 {
			// It set the value without recording it here: nothing further
			// back is known, and its own value is withdrawn.
			return 0, 0, nil
		}
		a = acts[i]
	}
	return previousOf(a)
}

// previousOf is the sidecar value a replaced, or none.
func previousOf(a throttleAction) (uint32, int64, error) {
	if a.PreviousBy != shmproto.SetByNames[shmproto.SetBySidecar] {
		return 0, 0, nil
	}
	if a.Kind == actionShardCap {
		return a.PreviousCap, a.PreviousOutcome, nil
	}
	return a.PreviousPct, a.PreviousOutcome, nil
}

func opByName(name string) (shmproto.Op, bool) {
	for i, n := range shmproto.OpNames {
		if n == name {
			return shmproto.Op(i), true
		}
	}
	return 0, false
}
