package healing_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// throttle_ingestion against the hotspot it could not cure before shard
// caps: a writer that COPYs batches with every row's shard named
// explicitly (bench/workload HotPartition), next to a light routed load on
// every shard. The real monitor's λ drops; the engine executes
// throttle_ingestion with the trigger the daemon would build; it caps the
// hot shard at 10% of its measured insert rate (critical), the hot shard's
// admitted write rate falls (the partitions collector's signal) and λ rises
// and verifies while the hot writer keeps going. Rolling the outcome back
// leaves no cap (as before) and the workload's ledger matches the table
// row for row: the cap slowed rows, it lost none.
func TestThrottleIngestionShardCapRaisesMonitorLambda(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of real load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 41})
	const (
		hot        = 3
		hotRate    = 2000.0 // rows/s, COPY batches every 100 ms, all in shard hot
		routedRate = 200.0  // rows/s over all four shards
	)
	if err := env.W.CopyInsert(ctx, 2000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE `+env.W.Table); err != nil {
		t.Fatal(err)
	}
	// React within seconds, as the README's walkthrough does.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector_integrity_policy_set('vec', 'test',
		'{"degrade_samples": 1, "restore_hold_seconds": 10, "cooldown_after_transition_seconds": 1}')`); err != nil {
		t.Fatal(err)
	}

	h := openLambdaRig(t, ctx, env, env.Conn, "vec")
	defer h.stop()
	col, err := h.seg.Find("vec", h.srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	parts := collect.NewPartitions()
	// The product's cadence: a capped COPY commits seconds of rows at once, so
	// shorter periods read lumps (pg_stat counters arrive at commit).
	parts.Interval = 5 * time.Second
	h.start(ctx, parts, collect.NewGateway(h.seg))

	writeRates := func(sig health.Signals) (hotRate, medianOthers float64, line string) {
		var others []float64
		for _, p := range sig.Partitions {
			line += fmt.Sprintf(" shard %d %.0f rows/s written;", p.Shard, p.WriteRowsPerSec)
			if p.Shard == hot {
				hotRate = p.WriteRowsPerSec
			} else {
				others = append(others, p.WriteRowsPerSec)
			}
		}
		slices.Sort(others)
		if len(others) > 0 {
			medianOthers = others[len(others)/2]
		}
		return hotRate, medianOthers, line
	}
	// settled waits until λ has been published and every partition has a
	// rate, then averages the hot shard's write rate over a few collector
	// periods (one period's delta is noisy: writers flush their statistics
	// at most once a second).
	settled := func(what string) (monitor.Snapshot, health.Signals, float64) {
		t.Helper()
		var s monitor.Snapshot
		var sig health.Signals
		for i := 0; i < 60; i++ {
			s, sig = h.current()
			if len(sig.Partitions) == 4 && s.LambdaNorm > 0 {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		var sum float64
		const n = 4
		for range n {
			time.Sleep(parts.Interval)
			_, sig = h.current()
			h, _, _ := writeRates(sig)
			sum += h
		}
		s, sig = h.current()
		_, med, line := writeRates(sig)
		t.Logf("%s: state %s λ %.3f, witness %d edges; hot shard %.0f rows/s (mean of %d periods), median other %.0f;%s",
			what, integrity.StateName(s.State), s.LambdaNorm, len(s.Cut.Witness), sum/n, n, med, line)
		return s, sig, sum / n
	}

	// The background: the application's routed inserts (the shard column's
	// default), which go around a capped shard. An earlier version wrote
	// COPY batches naming random shards: every batch then waited on its
	// rows for the capped shard, the other shards' rates fell with the hot
	// one's, and the ratio hardly moved (flaky under load). The writers stop
	// by a flag between statements, never by cancelling one: a statement
	// cancelled after its commit would be missing from the ledger.
	var stop atomic.Bool
	var writers sync.WaitGroup
	writerErr := make(chan error, 2)
	writers.Add(2)
	go func() {
		defer writers.Done()
		for !stop.Load() {
			if err := env.W.InsertRouted(ctx, int(routedRate/10)); err != nil {
				writerErr <- fmt.Errorf("routed writer: %w", err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var hotRows atomic.Int64
	go func() {
		defer writers.Done()
		for !stop.Load() {
			n, err := env.W.HotPartition(ctx, hot, hotRate, time.Second)
			hotRows.Add(int64(n))
			if err != nil {
				writerErr <- fmt.Errorf("hot writer: %w", err)
				return
			}
		}
	}()
	stopWriters := func() {
		stop.Store(true)
		writers.Wait()
		select {
		case err := <-writerErr:
			t.Fatal(err)
		default:
		}
	}
	defer func() {
		if !stop.Load() {
			stop.Store(true)
			writers.Wait()
		}
	}()

	time.Sleep(10 * time.Second)
	s, sig, hotBefore := settled("hot writer on")
	if s.State != integrity.Critical {
		t.Fatalf("the hot writer did not make the collection critical: state %s λ %.3f", integrity.StateName(s.State), s.LambdaNorm)
	}
	tr := h.trigger(s, sig)
	ratioBefore := loadRatio(sig, hot)

	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
	// Verification after three collector periods and a sample: the rates
	// the cut is made of then describe the capped writer.
	e := h.engine(ctx, healing.ThrottleIngestion{Segment: h.seg, DatabaseOID: h.srv.DatabaseOID, Dial: dial},
		healing.Options{Holder: "lambda-test", Stabilization: 3*parts.Interval + 500*time.Millisecond})
	var params json.RawMessage
	p := classify.Classify(tr.Witness, tr.Metrics, classify.DefaultThresholds()).Problem
	if p.HotspotCongestion == nil || len(p.HotspotCongestion.PartitionIDs) == 0 {
		params = json.RawMessage(fmt.Sprintf(`{"shard": %d}`, hot))
		t.Logf("the cut does not classify as a hotspot naming a partition (%s); executing with %s", p.Class, params)
	}
	out, err := e.Execute(ctx, tr, "throttle_ingestion", params)
	if err != nil {
		t.Fatal(err)
	}
	caps, err := h.seg.ReadShardCaps(col.Slot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outcome %d: %s (%s) class %s λ %.3f → %.3f verified=%v rolled_back=%v signal %+v; caps %+v; result %v",
		out.ID, out.Status, out.Reason, out.Decision.Problem.Class, out.InitialLambda, out.FinalLambda, out.Verified,
		out.RolledBack, out.Signal, caps, out.Result.Metadata)
	if out.Status != healing.StatusVerified || out.FinalLambda < 1.1*out.InitialLambda || out.RolledBack {
		t.Fatalf("want verified with λ up ≥ 10%%: %s, λ %.3f → %.3f, error %q", out.Status, out.InitialLambda, out.FinalLambda, out.Error)
	}
	if len(caps) != 1 || caps[0].Shard != hot || caps[0].SetBy != shmproto.SetBySidecar || caps[0].OutcomeID != out.ID {
		t.Fatalf("want one sidecar cap on shard %d for outcome %d, got %+v", hot, out.ID, caps)
	}
	// The rates came with the trigger (the collector's last period), not
	// from a fresh 5 s measurement.
	if doc, err := json.Marshal(out.Result.Metadata["shard_caps"]); err != nil || !strings.Contains(string(doc), `"measured_from":"partition_writes"`) {
		t.Fatalf("the cap's rates: %s %v, want measured_from partition_writes", doc, err)
	}
	// The cap is the other shards' median insert rate (shardCap), measured
	// by the strategy over its own window: about what the monitor saw.
	capRate := float64(caps[0].RowsPerSec)
	if _, peers, _ := writeRates(sig); capRate > 2*peers || capRate < peers/2 {
		t.Fatalf("cap %.0f rows/s is not about the other shards' median %.0f rows/s (hot shard %.0f)", capRate, peers, hotBefore)
	}
	for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
		if th, err := h.seg.ReadThrottle(col.Slot, op); err != nil || th.Pct != 0 {
			t.Fatalf("the whole collection was throttled too (%s): %+v %v", shmproto.OpNames[op], th, err)
		}
	}

	// Under the cap, with the hot writer still going.
	rowsAtCap := hotRows.Load()
	s, sig, hotUnder := settled("under the cap")
	ratioUnder := loadRatio(sig, hot)
	if hotUnder > 1.3*capRate || hotUnder > 0.5*hotBefore {
		t.Fatalf("hot shard admitted %.0f rows/s under a cap of %.0f (before: %.0f)", hotUnder, capRate, hotBefore)
	}
	if ratioUnder >= ratioBefore/2 {
		t.Fatalf("hot shard load ratio %.1f under the cap, %.1f before: want at least halved", ratioUnder, ratioBefore)
	}
	if s.LambdaNorm < 1.1*tr.Lambda {
		t.Fatalf("λ %.3f under the cap, %.3f before", s.LambdaNorm, tr.Lambda)
	}
	counters, err := h.seg.ReadShardCapCounters(col.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if hotRows.Load() <= rowsAtCap || counters.AdmittedRows == 0 || counters.RejectedStatements != 0 {
		t.Fatalf("the hot writer must keep going under the cap, never refused: %d rows before the wait, %d after; counters %+v",
			rowsAtCap, hotRows.Load(), counters)
	}
	t.Logf("hot shard: %.0f rows/s before, %.0f under a cap of %.0f; load ratio %.1f → %.1f; λ %.3f → %.3f; trigger counters %+v",
		hotBefore, hotUnder, capRate, ratioBefore, ratioUnder, tr.Lambda, s.LambdaNorm, counters)

	// Rollback restores the cap words exactly: there were none.
	if _, err := e.RollbackOutcome(ctx, "vec", int64(env.W.ID), out.ID); err != nil {
		t.Fatal(err)
	}
	caps, err = h.seg.ReadShardCaps(col.Slot)
	if err != nil || len(caps) != 0 {
		t.Fatalf("caps after the rollback: %+v %v, want none", caps, err)
	}
	_, _, hotAfter := settled("after the rollback")
	if hotAfter < 2*capRate {
		t.Fatalf("hot shard %.0f rows/s after the rollback: still capped at %.0f?", hotAfter, capRate)
	}

	stopWriters()
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() || !check.ShardsOK() {
		t.Fatalf("ledger against the table: %v %v", check, err)
	}
	t.Logf("ledger: %v (hot writer %d rows)", check, hotRows.Load())
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("ran out of time")
	}
}

// loadRatio is the hot shard's load (rows written and read per second)
// over the median of the others'.
func loadRatio(sig health.Signals, hot int64) float64 {
	var h float64
	var others []float64
	for _, p := range sig.Partitions {
		l := p.WriteRowsPerSec + p.ReadRowsPerSec
		if p.Shard == hot {
			h = l
		} else {
			others = append(others, l)
		}
	}
	if len(others) == 0 {
		return 0
	}
	slices.Sort(others)
	return h / max(others[len(others)/2], 1)
}
