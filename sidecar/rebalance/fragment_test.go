package rebalance_test

import (
	"context"
	"testing"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

// A move inserts the rows into the destination's B-trees. Rows taken
// lowest ids first land all over the destination's primary key (their ids
// interleave with its own) and split pages throughout it: in scorecard run
// 23 the moves of a hotspot left a destination's key at 33% leaf
// fragmentation, index_fragmentation followed, and compact_indexes added a
// minute to the hotspot's recovery. The newest rows (a hot shard's writer's),
// moved in ascending batches, append at the right edge of the destination's
// key, as its own new rows do. (Lowest ids first: 11% here; the newest in
// descending batches, each batch left of the one before: 4.3%.)
func TestMoveKeepsTheDestinationsKeyInOrder(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hot", Dim: 4, Partitions: 2, Lists: 4, Seed: 5})
	// Both shards written alike for a while, then shard 0 alone (the hot
	// shard's writer), the indexes freshly built.
	if err := env.W.CopyInsert(ctx, 30000, func(i int) int { return i % 2 }); err != nil {
		t.Fatal(err)
	}
	if err := env.W.CopyInsert(ctx, 4000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`REINDEX TABLE hot`, `CREATE EXTENSION IF NOT EXISTS pgstattuple`} {
		if _, err := env.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	frag := func() (pct float64, leaves int64) {
		t.Helper()
		if err := env.Conn.QueryRow(ctx, `SELECT leaf_fragmentation, leaf_pages FROM pgstatindex('hot_p1_pkey')`).Scan(&pct, &leaves); err != nil {
			t.Fatal(err)
		}
		return pct, leaves
	}
	before, leaves := frag()
	if leaves < 32 {
		t.Fatalf("hot_p1_pkey has %d leaf pages: too small to read its fragmentation", leaves)
	}
	var newest1 int64
	_ = env.Conn.QueryRow(ctx, `SELECT max(id) FROM hot WHERE shard = 1`).Scan(&newest1)
	res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 11, From: 0, To: []int{1}, Rows: 2000, BatchSize: 500},
		func(context.Context, rebalance.Batch) (rebalance.Decision, error) { return rebalance.Decision{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 2000 {
		t.Fatalf("moved %d rows, want 2000", res.Moved)
	}
	var older int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves WHERE outcome_id = 11 AND row_id < $1`, newest1).Scan(&older)
	after, leavesAfter := frag()
	t.Logf("hot_p1_pkey: %.1f%% leaf fragmentation on %d leaf pages before, %.1f%% on %d after; %d moved rows older than shard 1's newest",
		before, leaves, after, leavesAfter, older)
	if older != 0 {
		t.Errorf("%d of the moved rows were older than the destination's newest row: the hot shard's newest rows go first", older)
	}
	// The collector's tolerance before a key reads as degraded is 20%
	// (health.DefaultConfig), reached after a few moves of this size.
	if after > 2 {
		t.Errorf("the destination's key is %.1f%% fragmented after the move (%.1f%% before)", after, before)
	}
}
