package remedy

import (
	"context"
	"fmt"
	"math"
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
	// rcOf is the problem "shard hot is a hotspot" with the loads now, the
	// loads over the long window (none when nil) and the write rates.
	rcOf := func(hot int, load [4]float64, long *[4]float64, writes [4]float64) *strategy.Context {
		m := classify.Metrics{PartitionLoad: map[int64]float64{}, PartitionWrites: map[int64]float64{}}
		if long != nil {
			m.PartitionLoadLong = map[int64]float64{}
		}
		for s := range 4 {
			m.PartitionLoad[rel[s]] = load[s]
			m.PartitionWrites[rel[s]] = writes[s]
			if long != nil {
				m.PartitionLoadLong[rel[s]] = long[s]
			}
		}
		return &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID),
			Problem: classify.Problem{Class: classify.ClassHotspotCongestion,
				HotspotCongestion: &classify.HotspotCongestion{PartitionIDs: []int64{rel[hot]}, LoadRatio: 3}},
			Metrics: m, Recorder: &outcomeRecorder{id: 99}, Started: time.Now(), Timeout: 10 * time.Second}
	}
	rc := func(load, writes [4]float64) *strategy.Context { return rcOf(1, load, nil, writes) }
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

	// The same small shards idle in the short window (their readers'
	// counts not flushed yet) but scanned busily over the long one: the
	// long window decides.
	_, r = plans(rcOf(1, [4]float64{0, 2400, 0, 0}, &[4]float64{1000, 2400, 1000, 1000}, [4]float64{12, 12, 12, 12}))
	if !r.Noop || !strings.Contains(r.Reason, "read each of their rows more than 2× as often as shard 1") {
		t.Fatalf("rebalance into shards busy over the long window: %+v", r)
	}

	// The move is sized from the loads: the share of shard 1's rows that
	// carries its load above the mean (2400 − 675 of 2400 rows/s).
	counts, err := shardCounts(ctx, env.Conn, int64(env.W.ID))
	if err != nil {
		t.Fatal(err)
	}
	_, r = plans(rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 12, 12, 12}))
	if want := int(math.Ceil(float64(counts[1]) * 1725 / 2400)); r.Noop || r.Steps[0].Detail["rows"].(int) != want ||
		!strings.HasPrefix(r.Steps[0].Detail["sized_by"].(string), "load:") {
		t.Fatalf("rebalance of shard 1 (%d rows) at 2400 of a mean 675 rows/s: want %d rows sized by load, got %+v", counts[1], want, r)
	}
	// A small shard read hot (each row many times a second, as a shard
	// that rows were moved into and is scanned whole): it holds fewer
	// rows than the mean, and still has rows to give, to the shard whose
	// rows are read least first.
	_, r = plans(rcOf(0, [4]float64{2400, 100, 100, 100}, nil, [4]float64{12, 12, 12, 12}))
	if want := int(math.Ceil(float64(counts[0]) * 1725 / 2400)); r.Noop || r.Steps[0].Detail["rows"].(int) != want ||
		fmt.Sprint(r.Steps[0].Detail["to_shards"]) != "[1 2 3]" {
		t.Fatalf("rebalance of the small hot shard 0 (rows %v): want %d rows to shards [1 2 3], shard 1 first, got %+v", counts, want, r)
	}

	// A shard so large that the rows one capped move may take carry too
	// little of its load (a giant partition scanned whole): 200 of its
	// ~1,800 rows take ~270 of its 1,725 rows/s above the mean, and
	// rebalance declines; a cap of 1,000 takes most of it, and it moves
	// the 1,000.
	capped := &RebalancePartitions{Dial: vecDialer(env), MaxMoves: 200}
	r, err = capped.Plan(ctx, rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 12, 12, 12}))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Noop || !strings.Contains(r.Reason, fmt.Sprintf("moving at most 200 of the %d rows of shard 1", counts[1])) ||
		!strings.Contains(r.Reason, "rebalancing cannot cool it") {
		t.Fatalf("rebalance of a giant shard, 200 rows at most: %+v", r)
	}
	capped.MaxMoves = 1000
	if r, err = capped.Plan(ctx, rc([4]float64{100, 2400, 100, 100}, [4]float64{12, 12, 12, 12})); err != nil {
		t.Fatal(err)
	}
	if r.Noop || r.Steps[0].Detail["rows"].(int) != 1000 {
		t.Fatalf("rebalance of the same shard, 1,000 rows at most: %+v", r)
	}

	// A shard with no more rows than its peers, read 1.5× as often per
	// row: its load is not its rows', and rebalance declines.
	_, r = plans(rcOf(2, [4]float64{200, 200, 300, 200}, nil, [4]float64{12, 12, 12, 12}))
	if !r.Noop || !strings.Contains(r.Reason, "no more than its peers") || !strings.Contains(r.Reason, "moving rows would not cool it") {
		t.Fatalf("rebalance of a read-hot shard without excess rows (rows %v): %+v", counts, r)
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
