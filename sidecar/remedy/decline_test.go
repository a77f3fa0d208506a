package remedy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// drain_hot_partition and rebalance_partitions decline, as a noop that
// says why, the hotspots they cannot cool, judged from the trigger's
// partition loads and write rates and the real routing weights; and act
// on the ones they can. Without write rates in the metrics they act as
// before (the other tests of this package).
func TestDrainAndRebalanceDeclineWhatTheyCannotCool(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 4, Partitions: 4, Lists: 2, Seed: 11})
	sidecarAlive(t, env)
	if err := env.W.CopyInsert(ctx, 800, nil); err != nil {
		t.Fatal(err)
	}
	// Shard 1 holds more rows than the others, so a rebalance has rows to move.
	if _, err := env.W.HotPartition(ctx, 1, 8000, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	rel := map[int]int64{}
	for s := range 4 {
		rel[s] = partitionRelID(t, env, s)
	}
	rc := func(load, writes [4]float64) *strategy.Context {
		m := classify.Metrics{PartitionLoad: map[int64]float64{}, PartitionWrites: map[int64]float64{}}
		for s := range 4 {
			m.PartitionLoad[rel[s]] = load[s]
			m.PartitionWrites[rel[s]] = writes[s]
		}
		return &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID),
			Problem: classify.Problem{Class: classify.ClassHotspotCongestion,
				HotspotCongestion: &classify.HotspotCongestion{PartitionIDs: []int64{rel[1]}, LoadRatio: 3}},
			Metrics: m, Recorder: &outcomeRecorder{id: 99}, Started: time.Now(), Timeout: 10 * time.Second}
	}
	drain := &DrainHotPartition{Dial: vecDialer(env)}
	move := &RebalancePartitions{Dial: vecDialer(env)}
	plans := func(c *strategy.Context) (Plan, Plan) {
		t.Helper()
		d, err := drain.Plan(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		r, err := move.Plan(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return d, r
	}

	// A writer naming shard 1 at 300 rows/s beside 12 routed rows/s per
	// shard: routing reaches 12 of them, and rows moved at most 167/s
	// cannot catch up.
	d, r := plans(rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 312, 12, 12}))
	if !d.Noop || !strings.Contains(d.Reason, "routing cannot cool it") || !strings.Contains(d.Reason, "about 12 of the 312 rows/s") {
		t.Fatalf("drain against an explicit writer: %+v", d)
	}
	if !r.Noop || !strings.Contains(r.Reason, "grows 300 rows/s faster") || !strings.Contains(r.Reason, "throttle_ingestion") {
		t.Fatalf("rebalance against an explicit writer: %+v", r)
	}
	prior := routingState(t, env)
	res, err := drain.Execute(ctx, rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 312, 12, 12}))
	if err != nil || !res.Noop || routingState(t, env) != prior {
		t.Fatalf("drain executed against an explicit writer: %+v %v; routing %q → %q", res, err, prior, routingState(t, env))
	}

	// The same shard once its writer is capped at its peers' pace: its
	// load is the reads of the rows it holds. Moving rows helps; routing
	// does not.
	d, r = plans(rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 12, 12, 12}))
	if !d.Noop || r.Noop || r.Steps[0].Detail["rows"].(int) <= 0 {
		t.Fatalf("capped writer, large shard: drain %+v; rebalance %+v", d, r)
	}

	// The same large shard among small ones that are each scanned whole
	// many times a second (per row 1000/200 = 5 rows/s against shard 1's
	// about 2400/1800): rows moved there would be read more, not less.
	_, r = plans(rc([4]float64{1000, 2400, 1000, 1000}, [4]float64{12, 12, 12, 12}))
	if !r.Noop || !strings.Contains(r.Reason, "read each of their rows more than 2× as often as shard 1") ||
		!strings.Contains(r.Reason, "rows moved there would be read more, not less") {
		t.Fatalf("rebalance into busier shards: %+v", r)
	}

	// A hotspot made by routing (shard 1 weighted 4): draining takes its
	// routed rows away, and that cools it.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_routing_set('vec', 1, 4, 'sidecar', 17)`); err != nil {
		t.Fatal(err)
	}
	d, _ = plans(rc([4]float64{12, 50, 12, 12}, [4]float64{12, 48, 12, 12}))
	if d.Noop {
		t.Fatalf("drain against a routed hotspot declined: %s", d.Reason)
	}
	// Weighted 1 again, the same 48 rows/s are not routing's doing.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_routing_reset('vec', 1)`); err != nil {
		t.Fatal(err)
	}
	d, _ = plans(rc([4]float64{12, 50, 12, 12}, [4]float64{12, 48, 12, 12}))
	if !d.Noop {
		t.Fatalf("drain at weight 1 against 48 rows/s beside peers' 12: %+v", d)
	}
}
