package remedy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// rebalance_partitions through the real engine, judged by the real
// integrity monitor's λ rather than a stand-in: a size imbalance (one shard
// bulk-loaded with most of the rows) read by steady searches makes that
// shard's partition the hot one (the partitions collector counts the rows
// each scan reads), the monitor publishes λ in the segment, the engine
// executes rebalance_partitions with the trigger the daemon would build
// (snapshot λ and witness, metrics from the same collectors), and verifies
// with healing.SegmentSampler after the stabilisation wait.
func TestRebalanceVerifiedByMonitorLambda(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of real load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 21})
	const hot = 2
	if err := env.W.CopyInsert(ctx, 1200, nil); err != nil {
		t.Fatal(err)
	}
	if err := env.W.CopyInsert(ctx, 12000, func(int) int { return hot }); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE `+env.W.Table); err != nil {
		t.Fatal(err)
	}

	h := openLambdaRig(t, ctx, env, env.Conn, "vec")
	defer h.stop()
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	h.start(ctx, parts, collect.NewGateway(h.seg))

	// Steady searches over every list: each reads the rows of every
	// partition, so a partition's read rate follows its size.
	for range 2 {
		h.spawn(func(loopCtx context.Context) {
			for loopCtx.Err() == nil {
				if _, _, err := env.W.Search(loopCtx, 10, 4); err != nil && loopCtx.Err() == nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}

	loads := func(sig health.Signals) string {
		out := ""
		for _, p := range sig.Partitions {
			out += fmt.Sprintf(" shard %d: %.0f rows/s read, %.0f written, %d live;", p.Shard, p.ReadRowsPerSec, p.WriteRowsPerSec, p.LiveRows)
		}
		return out
	}
	// Let the rates settle: λ over a few seconds of searches.
	time.Sleep(12 * time.Second)
	var s monitor.Snapshot
	var sig health.Signals
	for i := 0; i < 40; i++ {
		s, sig = h.current()
		if len(sig.Partitions) == 4 && s.LambdaNorm > 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("before: state %s λ %.3f, witness %d edges;%s", integrity.StateName(s.State), s.LambdaNorm, len(s.Cut.Witness), loads(sig))
	tr := h.trigger(s, sig)

	// The settle wait by the daemon's rule (DefaultRebalanceSettle) at this
	// test's cadences: two partitions-collector periods and one sample.
	settle := 2*parts.Interval + 250*time.Millisecond
	// Current, as the daemon gives it: the settle wait ends once the
	// partition rates cover only time after the batch.
	e := h.engine(ctx, &RebalancePartitions{Dial: vecDialer(env), BatchSize: 1000, Settle: settle},
		healing.Options{Holder: "lambda-test", Stabilization: 12 * time.Second, Current: func(string) (healing.Trigger, bool) {
			s, sig := h.current()
			return h.trigger(s, sig), true
		}})
	// The problem names the hot shard when the cut classifies as a
	// hotspot; otherwise the operator's shard parameter does.
	var params json.RawMessage
	if !namesHotspot(tr) {
		params = json.RawMessage(fmt.Sprintf(`{"shard": %d}`, hot))
		t.Logf("the cut does not classify as a hotspot naming a partition; executing with %s", params)
	}
	out, err := e.Execute(ctx, tr, "rebalance_partitions", params)
	if err != nil {
		t.Fatal(err)
	}
	_, sig = h.current()
	counts, err := shardCounts(ctx, env.Conn, int64(env.W.ID))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outcome %d: %s (%s) class %s λ %.3f → %.3f verified=%v rolled_back=%v result %v; rows per shard %v; after:%s",
		out.ID, out.Status, out.Reason, out.Decision.Problem.Class, out.InitialLambda, out.FinalLambda, out.Verified, out.RolledBack,
		out.Result.Metadata, counts, loads(sig))
	if out.Status != healing.StatusVerified || out.FinalLambda < 1.1*out.InitialLambda || out.RolledBack {
		t.Fatalf("want verified with λ up ≥ 10%%: %s, λ %.3f → %.3f, error %q", out.Status, out.InitialLambda, out.FinalLambda, out.Error)
	}
	// Judged on λ that saw each batch, the move stops once λ reaches the
	// engine's target instead of moving every planned row on λ that
	// predates the batches. This engine knows no restore level, so the
	// target is the +10% verification bar.
	m := out.Result.Metadata
	if stopped := fmt.Sprint(m["stopped"]); !strings.Contains(stopped, "reached the target") ||
		m["moved"].(int) >= m["planned_rows"].(int) || m["settle_ms"] != settle.Milliseconds() {
		t.Fatalf("want an early stop at the target after %v of settling: stopped %q, moved %v of %v planned, λ after each batch %v",
			settle, stopped, m["moved"], m["planned_rows"], m["lambda_after_batches"])
	}
	var sealed, verified bool
	if err := env.Conn.QueryRow(ctx, `SELECT signature IS NOT NULL, coalesce(verified, false) FROM ruvector.healing_outcomes WHERE id = $1`,
		out.ID).Scan(&sealed, &verified); err != nil || !sealed || !verified {
		t.Fatalf("outcome row %d: sealed %v verified %v (%v)", out.ID, sealed, verified, err)
	}
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() {
		t.Fatalf("ledger after the move: %v %v", check, err)
	}
}

// namesHotspot reports whether tr classifies (default thresholds) as a
// hotspot naming at least one partition.
func namesHotspot(tr healing.Trigger) bool {
	p := classify.Classify(tr.Witness, tr.Metrics, classify.DefaultThresholds()).Problem
	return p.HotspotCongestion != nil && len(p.HotspotCongestion.PartitionIDs) > 0
}
