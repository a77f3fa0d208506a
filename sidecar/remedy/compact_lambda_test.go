package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// rollbackWatch is compact_indexes with its Rollback counted: the engine
// must never call it (the strategy says it is not reversible).
type rollbackWatch struct {
	*CompactIndexes
	calls atomic.Int32
}

func (r *rollbackWatch) Rollback(ctx context.Context, rc *strategy.Context) error {
	r.calls.Add(1)
	return r.CompactIndexes.Rollback(ctx, rc)
}

// compact_indexes through the real engine, judged by the real integrity
// monitor's λ: the workload tool's IndexBloat (random updates of an indexed
// column, 60% of the rows deleted, VACUUM) under a steady workload of
// routed inserts and searches; the indexes collector (every few seconds
// here, --index-sample-interval) sees the fragmentation, the monitor's λ
// falls with an index node on the cut's witness, the engine classifies
// index_fragmentation, selects and executes compact_indexes and verifies
// with healing.SegmentSampler once the collector has measured the rebuilt
// indexes twice. Then: no invalid index, no row lost, and no rollback
// attempted or possible.
func TestCompactIndexesRaisesMonitorLambda(t *testing.T) {
	if testing.Short() {
		t.Skip("a couple of minutes of real load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "cix", Dim: 8, Partitions: 2, Lists: 4, Seed: 5})
	// 40,000 rows a partition: even rebuilt, with 60% of the rows
	// deleted by the bloat, each partition's bloat index keeps more than
	// the collector's 32 leaf pages, so "after" is a measurement, not an
	// index left out.
	if err := env.W.CopyInsert(ctx, 80000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE `+env.W.Table); err != nil {
		t.Fatal(err)
	}

	h := openLambdaRig(t, ctx, env, env.Conn, "cix")
	defer h.stop()
	// The sensor as the daemon builds it for this signal: the indexes
	// collector at a short cadence, beside the gateway and the partitions
	// (the load the workload puts on them is part of λ too). Memory is
	// left out: it measures this shared machine, not the collection.
	idx := collect.NewIndexes()
	idx.Interval = 3 * time.Second
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	type point struct {
		at   time.Time
		snap monitor.Snapshot
	}
	var timeline []point // under h.mu
	h.onSample = func(s monitor.Snapshot) { timeline = append(timeline, point{time.Now(), s}) }
	h.start(ctx, collect.NewGateway(h.seg), parts, idx)

	// Steady load: routed single-row inserts (about 40/s) and searches.
	// Statements run to completion when the load stops, so a committed
	// insert is never missing from the ledger.
	sctx := context.WithoutCancel(ctx)
	var inserted atomic.Int64
	var loadErr atomic.Value
	h.spawn(func(loopCtx context.Context) {
		for loopCtx.Err() == nil {
			if err := env.W.InsertRouted(sctx, 1); err != nil {
				loadErr.Store(err)
			} else {
				inserted.Add(1)
			}
			time.Sleep(25 * time.Millisecond)
		}
	})
	h.spawn(func(loopCtx context.Context) {
		for loopCtx.Err() == nil {
			if _, _, err := env.W.Search(sctx, 10, 4); err != nil {
				loadErr.Store(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	worst := func(sig health.Signals) (float64, string) {
		w, name := 0.0, ""
		for _, is := range sig.Indexes {
			if is.FragmentationPct >= w {
				w, name = is.FragmentationPct, is.Name
			}
		}
		return w, name
	}
	trigger := func(s monitor.Snapshot, sig health.Signals) healing.Trigger {
		tr := h.trigger(s, sig)
		tr.RestoreLambda = s.Policy.ThresholdHigh + s.Policy.Hysteresis.RestoreThresholdOffset
		return tr
	}
	// waitFor polls the sensor until ok or the deadline.
	waitFor := func(what string, d time.Duration, ok func(monitor.Snapshot, health.Signals) bool) (monitor.Snapshot, health.Signals) {
		t.Helper()
		return h.waitFor(what, d, ok, func(_ monitor.Snapshot, sig health.Signals) string {
			w, name := worst(sig)
			return fmt.Sprintf("worst fragmentation %.1f%% %s", w, name)
		})
	}

	// Healthy band of the code: an index at or below the graph's
	// fragmentation tolerance has full capacity; the classifier names
	// index_fragmentation only above its threshold.
	tolerance := health.DefaultConfig().FragmentationTolerancePct
	threshold := classify.DefaultThresholds().FragmentationPct

	// Before: the indexes measured twice, the load's rates settled. (The
	// primary keys are below the collector's 32 leaf pages: it measures
	// nothing yet, which is the healthy reading.)
	time.Sleep(8 * time.Second)
	before, sigBefore := waitFor("a healthy λ before the fault", 60*time.Second, func(s monitor.Snapshot, sig health.Signals) bool {
		w, _ := worst(sig)
		return s.LambdaNorm > 0 && w <= tolerance
	})
	wBefore, _ := worst(sigBefore)
	t.Logf("before: state %s λ %.3f, %d indexes measured, worst fragmentation %.1f%%",
		integrity.StateName(before.State), before.LambdaNorm, len(sigBefore.Indexes), wBefore)

	bloatStart := time.Now()
	rep, err := env.W.IndexBloat(ctx, workload.BloatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bloatTook := time.Since(bloatStart)
	t.Logf("IndexBloat: %d updates, %d rows deleted in %v", rep.Updated, rep.Deleted, bloatTook.Round(time.Millisecond))

	// The fault as the monitor sees it: λ down, an index node on the cut's
	// witness, classified index_fragmentation.
	fault, sigFault := waitFor("λ down with index_fragmentation witnessed", 90*time.Second, func(s monitor.Snapshot, sig health.Signals) bool {
		w, _ := worst(sig)
		return w > threshold && s.LambdaNorm < before.LambdaNorm/VerifyBar && witnessesIndex(s.Cut.Witness) &&
			classify.Classify(s.Cut.Witness, health.MetricsFrom(sig), classify.DefaultThresholds()).Problem.Class == classify.ClassIndexFragmentation
	})
	wFault, nFault := worst(sigFault)
	t.Logf("fault: state %s λ %.3f, worst fragmentation %.1f%% (%s), witness %v; pgstatindex of every index: %v",
		integrity.StateName(fault.State), fault.LambdaNorm, wFault, nFault, fault.Cut.Witness, fragmentation(t, ctx, env.Conn))

	watch := &rollbackWatch{CompactIndexes: &CompactIndexes{Dial: vecDialer(env)}}
	// The daemon's verification wait for this class (signalRefresh): two
	// periods of the indexes collector and one integrity sample.
	stab := 2*idx.Interval + 250*time.Millisecond
	e := h.engine(ctx, watch, healing.Options{Holder: "compact-lambda-test", Stabilization: stab})
	out, err := e.Heal(ctx, trigger(fault, sigFault))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outcome %d: %s (%s) class %s strategy %s λ %.3f → %.3f verified=%v rolled_back=%v in %v; error %q; result %v",
		out.ID, out.Status, out.Reason, out.Decision.Problem.Class, out.Strategy, out.InitialLambda, out.FinalLambda,
		out.Verified, out.RolledBack, out.Duration.Round(time.Millisecond), out.Error, asJSON(out.Result.Metadata))
	_, sigAfter := waitFor("the rebuilt indexes measured", 30*time.Second, func(_ monitor.Snapshot, sig health.Signals) bool {
		return len(sig.Indexes) > 0 && sig.Indexes[0].SampledAt.After(time.Now().Add(-2*idx.Interval))
	})
	wAfter, nAfter := worst(sigAfter)
	t.Logf("after: the collector measures %d indexes, worst fragmentation %.1f%% (%s); pgstatindex of every index, small ones included: %v",
		len(sigAfter.Indexes), wAfter, nAfter, fragmentation(t, ctx, env.Conn))
	if out.Decision.Problem.Class != classify.ClassIndexFragmentation || out.Strategy != "compact_indexes" {
		t.Fatalf("classified %s, selected %q: want index_fragmentation and compact_indexes (%s)",
			out.Decision.Problem.Class, out.Strategy, out.Reason)
	}
	if out.Status != healing.StatusVerified || out.FinalLambda <= VerifyBar*out.InitialLambda {
		t.Fatalf("want verified with λ up > 10%%: %s, λ %.3f → %.3f, error %q", out.Status, out.InitialLambda, out.FinalLambda, out.Error)
	}
	measured := false
	for _, is := range sigAfter.Indexes {
		measured = measured || strings.Contains(is.Name, workload.BloatColumn)
	}
	if !measured {
		t.Fatalf("the collector does not measure the rebuilt bloat indexes (%v): the after reading would be vacuous", sigAfter.Indexes)
	}
	if wAfter > tolerance {
		t.Fatalf("worst fragmentation after %.1f%% (%s): want at most the graph's tolerance %.0f%%", wAfter, nAfter, tolerance)
	}
	if out.Result.ActionsTaken == 0 {
		t.Fatalf("no index rebuilt: %v", out.Result.Metadata)
	}

	// Not reversible: the engine neither attempted nor recorded a rollback,
	// the actions it recorded name the rebuilt indexes, and an operator's
	// rollback is refused without touching anything.
	if n := watch.calls.Load(); n != 0 || out.RolledBack {
		t.Fatalf("the engine called Rollback %d times (rolled_back %v) on an irreversible strategy", n, out.RolledBack)
	}
	var sealed, verified, rolledBack bool
	var actions []string
	if err := env.Conn.QueryRow(ctx, `SELECT signature IS NOT NULL, coalesce(verified, false), rolled_back,
			ARRAY(SELECT a->>'index' FROM jsonb_array_elements(coalesce(metadata->'actions', '[]')) a WHERE a->>'kind' = 'reindex')
		FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&sealed, &verified, &rolledBack, &actions); err != nil {
		t.Fatal(err)
	}
	if !sealed || !verified || rolledBack || len(actions) != out.Result.ActionsTaken {
		t.Fatalf("outcome row %d: sealed %v verified %v rolled_back %v, reindex actions %v (%d rebuilt)",
			out.ID, sealed, verified, rolledBack, actions, out.Result.ActionsTaken)
	}
	oidsBefore := indexOIDs(t, ctx, env.Conn)
	rid, err := e.RollbackOutcome(ctx, "cix", int64(env.W.ID), out.ID)
	if !errors.Is(err, healing.ErrNothingToRollBack) || !strings.Contains(err.Error(), "not reversible") {
		t.Fatalf("operator rollback of outcome %d: %v, want refused as not reversible", out.ID, err)
	}
	// The refusal is a signed record of its own: failed, nothing undone.
	var ok, undone bool
	var msg string
	if err := env.Conn.QueryRow(ctx, `SELECT signature IS NOT NULL AND success = false, rolled_back OR (metadata->>'actions_undone')::int <> 0,
			coalesce(error_message, '') FROM ruvector.healing_outcomes WHERE id = $1 AND (metadata->>'rollback_of')::int8 = $2`,
		rid, out.ID).Scan(&ok, &undone, &msg); err != nil || !ok || undone || !strings.Contains(msg, "not reversible") {
		t.Fatalf("record %d of the refused rollback: sealed and failed %v, undone %v, error %q (%v)", rid, ok, undone, msg, err)
	}
	t.Logf("operator rollback refused, recorded as outcome %d: %s", rid, msg)
	if oidsAfter := indexOIDs(t, ctx, env.Conn); !slices.Equal(oidsBefore, oidsAfter) {
		t.Fatalf("the refused rollback changed the indexes: %v -> %v", oidsBefore, oidsAfter)
	}

	// λ over the whole episode, for the record: the first sample with the
	// fault on the cut (the bloat itself takes seconds, and the collector
	// samples during it), the lowest, and the last.
	h.mu.Lock()
	lo, firstLow := 1.0, time.Duration(0)
	for _, p := range timeline {
		if p.at.After(bloatStart) {
			lo = min(lo, p.snap.LambdaNorm)
			if firstLow == 0 && p.snap.LambdaNorm < before.LambdaNorm/VerifyBar && witnessesIndex(p.snap.Cut.Witness) {
				firstLow = p.at.Sub(bloatStart)
			}
		}
	}
	h.mu.Unlock()
	after, _ := h.current()
	t.Logf("λ: before %.3f, lowest in the fault %.3f (first low %v after the bloat began, which took %v), after %.3f; fragmentation %.1f%% → %.1f%% → %.1f%%",
		before.LambdaNorm, lo, firstLow.Round(time.Millisecond), bloatTook.Round(time.Millisecond), after.LambdaNorm, wBefore, wFault, wAfter)

	// An attempt that does not verify: λ that cannot rise. With the
	// integrity loop stopped (a stalled sensor) the segment keeps the
	// fault's λ, so the engine's verification fails; compact_indexes being
	// irreversible, the engine must neither call Rollback nor record a
	// rollback, and the rebuilds stand.
	if _, err := env.W.IndexBloat(ctx, workload.BloatOptions{}); err != nil {
		t.Fatal(err)
	}
	fault2, sigFault2 := waitFor("λ down again after a second bloat", 90*time.Second, func(s monitor.Snapshot, sig health.Signals) bool {
		w, _ := worst(sig)
		return w > threshold && s.LambdaNorm < after.LambdaNorm/VerifyBar && witnessesIndex(s.Cut.Witness)
	})
	h.stopMonitor()
	frag2 := fragmentation(t, ctx, env.Conn)
	out2, err := e.Execute(ctx, trigger(fault2, sigFault2), "compact_indexes", nil)
	if err != nil {
		t.Fatal(err)
	}
	frag2After := fragmentation(t, ctx, env.Conn)
	t.Logf("with the sensor stopped: outcome %d %s λ %.3f → %.3f verified=%v rolled_back=%v, %d rebuilt, error %q; fragmentation %v -> %v",
		out2.ID, out2.Status, out2.InitialLambda, out2.FinalLambda, out2.Verified, out2.RolledBack, out2.Result.ActionsTaken,
		out2.Error, frag2, frag2After)
	if out2.Status != healing.StatusUnverified || out2.Result.ActionsTaken == 0 {
		t.Fatalf("want an unverified attempt that rebuilt indexes: %s, %d rebuilt (%s)", out2.Status, out2.Result.ActionsTaken, out2.Error)
	}
	if n := watch.calls.Load(); n != 0 || out2.RolledBack {
		t.Fatalf("unverified: the engine called Rollback %d times (rolled_back %v) on an irreversible strategy", n, out2.RolledBack)
	}
	if err := env.Conn.QueryRow(ctx, `SELECT coalesce(verified, true), rolled_back FROM ruvector.healing_outcomes WHERE id = $1`,
		out2.ID).Scan(&verified, &rolledBack); err != nil || verified || rolledBack {
		t.Fatalf("outcome row %d: verified %v rolled_back %v (%v); want false, false", out2.ID, verified, rolledBack, err)
	}
	for n, f := range frag2After {
		if strings.Contains(n, workload.BloatColumn) && f > tolerance {
			t.Fatalf("%s is %.1f%% fragmented after the unverified attempt (was %.1f%%): the rebuild did not stand", n, f, frag2[n])
		}
	}

	// Stop the load (statements finish), then: no invalid index, no row lost.
	h.stop()
	if err, _ := loadErr.Load().(error); err != nil {
		t.Fatalf("the steady load failed: %v", err)
	}
	if left := invalidIndexes(t, ctx, env.Conn); len(left) != 0 {
		t.Fatalf("invalid indexes left: %v", left)
	}
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() || !check.ShardsOK() {
		t.Fatalf("ledger after the rebuild (%d rows inserted during the test): %v %v", inserted.Load(), check, err)
	}
	t.Logf("ledger: %v (%d routed inserts under way during the episode)", check, inserted.Load())
}

// VerifyBar is the engine's verification bar (healing.VerifyImprovement).
const VerifyBar = healing.VerifyImprovement

func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// witnessesIndex: an edge of the cut touches a (non-hub) index node.
func witnessesIndex(w []classify.WitnessEdge) bool {
	for _, e := range w {
		for _, n := range []classify.NodeRef{e.Source, e.Target} {
			if n.Kind == classify.NodeIndex && n.Name != "ivf_lists" {
				return true
			}
		}
	}
	return false
}

// indexOIDs are the oids of the collection's indexes, in order.
func indexOIDs(t *testing.T, ctx context.Context, conn *pgx.Conn) []int64 {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT i.indexrelid::int8 FROM pg_index i
		WHERE i.indrelid IN (SELECT relid FROM ruvector.collection_relations) ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return oids
}
