package rebalance_test

import (
	"context"
	"testing"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

// A move inserts the rows into the destinations' B-trees. Rows taken
// lowest ids first land all over a destination's primary key (their ids
// interleave with its own) and split pages throughout it: in scorecard run
// 23 the moves of a hotspot left a destination's key at 33% leaf
// fragmentation, index_fragmentation followed, and compact_indexes added a
// minute to the hotspot's recovery. The newest rows (a hot shard's
// writer's), moved in ascending batches, append at the right edge of each
// destination's key, as its own new rows do. (Here, lowest ids first to one
// destination: 11%; the newest in descending batches, each batch left of
// the one before: 4.3%.) Each batch is dealt over every destination, so
// none takes a whole batch.
func TestMoveKeepsTheDestinationsKeysInOrder(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hot", Dim: 4, Partitions: 3, Lists: 4, Seed: 5})
	// Every shard written alike for a while, then shard 0 alone (the hot
	// shard's writer), the indexes freshly built.
	if err := env.W.CopyInsert(ctx, 45000, func(i int) int { return i % 3 }); err != nil {
		t.Fatal(err)
	}
	if err := env.W.CopyInsert(ctx, 6000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`REINDEX TABLE hot`, `CREATE EXTENSION IF NOT EXISTS pgstattuple`} {
		if _, err := env.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	frag := func(index string) (pct float64, leaves int64) {
		t.Helper()
		if err := env.Conn.QueryRow(ctx, `SELECT leaf_fragmentation, leaf_pages FROM pgstatindex($1)`, index).Scan(&pct, &leaves); err != nil {
			t.Fatal(err)
		}
		return pct, leaves
	}
	dests := []string{"hot_p1_pkey", "hot_p2_pkey"}
	before := map[string]float64{}
	for _, ix := range dests {
		pct, leaves := frag(ix)
		if leaves < 32 {
			t.Fatalf("%s has %d leaf pages: too small to read its fragmentation", ix, leaves)
		}
		before[ix] = pct
	}
	var newestDest, oldestNew int64
	if err := env.Conn.QueryRow(ctx, `SELECT (SELECT max(id) FROM hot WHERE shard <> 0),
  (SELECT min(id) FROM (SELECT id FROM hot WHERE shard = 0 ORDER BY id DESC LIMIT 3000) n)`).Scan(&newestDest, &oldestNew); err != nil {
		t.Fatal(err)
	}
	res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 11, From: 0, To: []int{1, 2}, Rows: 3000, BatchSize: 1500},
		func(context.Context, rebalance.Batch) (rebalance.Decision, error) { return rebalance.Decision{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 3000 || len(res.Batches) != 2 {
		t.Fatalf("moved %d rows in %d batches, want 3000 in 2", res.Moved, len(res.Batches))
	}
	var older, notNewest int
	var journaled int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE row_id < $2), count(*) FILTER (WHERE row_id < $3)
FROM ruvector.healing_moves WHERE outcome_id = $1`, 11, newestDest, oldestNew).Scan(&journaled, &older, &notNewest); err != nil {
		t.Fatal(err)
	}
	if journaled != 3000 || older != 0 || notNewest != 0 {
		t.Errorf("of %d journaled moves, %d older than the destinations' newest row, %d not among the hot shard's 3000 newest", journaled, older, notNewest)
	}
	rows, err := env.Conn.Query(ctx, `SELECT batch, to_shard, count(*) FROM ruvector.healing_moves WHERE outcome_id = 11 GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	split := map[[2]int]int{}
	for rows.Next() {
		var b, to, n int
		if err := rows.Scan(&b, &to, &n); err != nil {
			t.Fatal(err)
		}
		split[[2]int{b, to}] = n
	}
	rows.Close()
	for _, k := range [][2]int{{1, 1}, {1, 2}, {2, 1}, {2, 2}} {
		if split[k] != 750 {
			t.Errorf("batch %d sent %d rows to shard %d, want 750 (each batch dealt over both destinations): %v", k[0], split[k], k[1], split)
		}
	}
	for _, ix := range dests {
		after, leaves := frag(ix)
		t.Logf("%s: %.1f%% leaf fragmentation before, %.1f%% after the move (%d leaf pages)", ix, before[ix], after, leaves)
		// The collector's tolerance before a key reads as degraded is 20%
		// (health.DefaultConfig), reached after a few moves of this size.
		if after > 2 {
			t.Errorf("%s is %.1f%% fragmented after the move (%.1f%% before)", ix, after, before[ix])
		}
	}
}
