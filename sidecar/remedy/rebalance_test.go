package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

func TestRebalancePartitions(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 3})
	if err := env.W.CopyInsert(ctx, 2000, nil); err != nil {
		t.Fatal(err)
	}
	// Shard 1 takes every write for a while: the hot partition.
	if _, err := env.W.HotPartition(ctx, 1, 20000, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	hotRel := partitionRelID(t, env, 1)
	load := map[int64]float64{hotRel: 300}
	for _, s := range []int{0, 2, 3} {
		load[partitionRelID(t, env, s)] = 10
	}
	counts := func() map[int]int64 {
		c, err := shardCounts(ctx, env.Conn, int64(env.W.ID))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// λ stand-in measured on the real table: the smallest shard over the
	// largest, which is what moving rows off the hot shard changes.
	balance := func(context.Context) (float64, error) {
		c := counts()
		lo, hi := int64(-1), int64(0)
		for s := 0; s < 4; s++ {
			if lo < 0 || c[s] < lo {
				lo = c[s]
			}
			hi = max(hi, c[s])
		}
		return float64(lo) / float64(hi), nil
	}
	before := counts()
	t.Logf("rows per shard before: %v", before)
	if before[1] < 3*before[0] {
		t.Fatalf("setup: shard 1 is not hot: %v", before)
	}
	// The stand-in λ (row balance) is computed at once from the rows, so
	// there is nothing to settle; batches of exactly 200.
	s := &RebalancePartitions{Dial: vecDialer(env), BatchSize: 200, MaxBatches: 1000, Settle: -1}
	newRC := func(id int64) *strategy.Context {
		l0, _ := balance(ctx)
		return &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID), InitialLambda: l0,
			Problem: classify.Problem{Class: classify.ClassHotspotCongestion,
				HotspotCongestion: &classify.HotspotCongestion{PartitionIDs: []int64{hotRel}, LoadRatio: 3}},
			Metrics:  classify.Metrics{PartitionLoad: load},
			Sample:   balance,
			Recorder: &outcomeRecorder{id: id}, Started: time.Now(), Timeout: 2 * s.EstimatedDuration()}
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		p, err := s.Plan(ctx, newRC(1))
		if err != nil || p.Noop || p.Steps[0].Detail["rows"].(int) <= 0 {
			t.Fatalf("plan %+v, %v", p, err)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatal("the plan moved rows")
		}
	})

	t.Run("needs an outcome id", func(t *testing.T) {
		rc := newRC(0)
		rc.Recorder = &strategy.MemoryRecorder{}
		if _, err := s.Execute(ctx, rc); !errors.Is(err, ErrNoOutcome) {
			t.Fatalf("want ErrNoOutcome, got %v", err)
		}
	})

	t.Run("a batch that makes lambda worse is undone", func(t *testing.T) {
		rc := newRC(101)
		calls := 0
		rc.InitialLambda = 0.8
		rc.Sample = func(context.Context) (float64, error) { calls++; return 0.5, nil }
		res, err := s.Execute(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		if res.Metadata["moved"] != 0 || res.Metadata["undone"] != 200 || calls != 1 {
			t.Fatalf("want the one batch undone: %v (sampled %d times)", res.Metadata, calls)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatalf("rows per shard %v, want %v", counts(), before)
		}
	})

	t.Run("a worse batch is not moved back into a capped shard", func(t *testing.T) {
		if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_shard_cap_set('vec', 1, 5)`); err != nil {
			t.Fatal(err)
		}
		rc := newRC(150)
		rc.InitialLambda = 0.8
		rc.Sample = func(context.Context) (float64, error) { return 0.5, nil }
		res, err := s.Execute(ctx, rc)
		if _, cerr := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_shard_cap_clear('vec', 1)`); cerr != nil {
			t.Fatal(cerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Metadata["moved"] != 200 || res.Metadata["undone"] != 0 ||
			!strings.Contains(fmt.Sprint(res.Metadata["stopped"]), "but shard 1 is capped (5 rows/s, set by manual)") {
			t.Fatalf("want the batch kept and the move stopped: %v", res.Metadata)
		}
		// Uncapped, the rollback moves it back.
		if r, err := rebalance.Rollback(ctx, env.Conn, 150); err != nil || r.Rows != 200 {
			t.Fatalf("rollback: %+v %v", r, err)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatalf("rows per shard %v, want %v", counts(), before)
		}
	})

	t.Run("settle_ms waits before each judgement", func(t *testing.T) {
		rc := newRC(103)
		rc.Params = json.RawMessage(`{"settle_ms": 300, "max_moves": 400}`)
		var at []time.Time
		rc.InitialLambda = 0.5
		rc.Sample = func(context.Context) (float64, error) { at = append(at, time.Now()); return 0.5, nil }
		start := time.Now()
		res, err := s.Execute(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("result %v", res.Metadata)
		if len(at) != 2 || at[0].Sub(start) < 300*time.Millisecond || at[1].Sub(at[0]) < 300*time.Millisecond ||
			res.Metadata["settle_ms"] != int64(300) || res.Metadata["moved"] != 400 {
			t.Fatalf("samples at %v after a start at %v: want 2, each ≥ 300 ms after the previous step; %v", at, start, res.Metadata)
		}
		if err := s.Rollback(ctx, rc); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatalf("after rollback %v, want %v", counts(), before)
		}
		rc = newRC(104)
		rc.Params = json.RawMessage(`{"settle_ms": -5}`)
		if _, err := s.Execute(ctx, rc); err == nil || !strings.Contains(err.Error(), "settle_ms -5 is out of range") {
			t.Fatalf("settle_ms -5: %v", err)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatalf("a refused execution moved rows: %v, want %v", counts(), before)
		}
	})

	t.Run("moves until lambda improved by 10% and rolls back exactly", func(t *testing.T) {
		rc := newRC(102)
		res, err := s.Execute(ctx, rc)
		if err != nil || !res.Success {
			t.Fatalf("%+v, %v", res, err)
		}
		after := counts()
		t.Logf("result %v; rows per shard after: %v", res.Metadata, after)
		if after[1] >= before[1] {
			t.Fatalf("hot shard not relieved: %v -> %v", before, after)
		}
		l, _ := balance(ctx)
		if l < rc.InitialLambda*1.1 {
			t.Fatalf("λ %.3f, want ≥ 1.1 × %.3f", l, rc.InitialLambda)
		}
		if res.Metadata["planned_rows"].(int) <= res.Metadata["moved"].(int) {
			t.Fatalf("did not stop early at the 10%% improvement: %v", res.Metadata)
		}
		check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
		if err != nil || !check.TotalOK() || check.ShardsOK() {
			t.Fatalf("after the move the total must hold and the shards differ: %v %v", check, err)
		}
		// Rollback by a fresh strategy value, from the recorded JSON.
		if err := (&RebalancePartitions{Dial: vecDialer(env)}).Rollback(ctx, rc); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(counts()) != fmt.Sprint(before) {
			t.Fatalf("after rollback %v, want %v", counts(), before)
		}
		check, err = env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
		if err != nil || !check.TotalOK() || !check.ShardsOK() {
			t.Fatalf("after rollback every row must be back in its shard, content unchanged: %v %v", check, err)
		}
	})
}
