package ivf_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

func recall(t *testing.T, env *workloadtest.Env, probes int) ivf.RecallReport {
	t.Helper()
	r, err := ivf.Recall(context.Background(), env.Conn, "rec", ivf.RecallOptions{Queries: 60, K: 10, Probes: probes, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probes %d: %+v", probes, r)
	return r
}

// probes = lists is an exact search (recall 1); one probe is not; the
// same seed gives the same measurement.
func TestRecallExactAtAllLists(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rec", Dim: 8, Partitions: 2, Lists: 16, Seed: 1})
	if err := env.W.CopyInsert(ctx, 4000, nil); err != nil {
		t.Fatal(err)
	}
	// No version yet: the search is an exact scan.
	if r := recall(t, env, 1); r.Version != 0 || r.RecallAtK != 1 || r.Scanned != 4000 {
		t.Fatalf("no centroids: %+v, want version 0, recall 1, 4000 rows scanned", r)
	}
	v, err := ivf.Rebuild(ctx, env.Conn, "rec", ivf.TrainOptions{Seed: 1}, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := recall(t, env, 16)
	if all.Version != v || all.Queries != 60 || all.RecallAtK != 1 || all.MinRecall != 1 || all.Scanned != 4000 {
		t.Fatalf("probes = lists: %+v, want version %d, 60 queries, recall 1 on every query, every row scanned", all, v)
	}
	if all.P50 <= 0 || all.P99 < all.P50 || all.ExactP50 <= 0 || all.ExactP99 < all.ExactP50 {
		t.Fatalf("latencies %+v", all)
	}
	one := recall(t, env, 1)
	if one.RecallAtK >= 0.95 || one.MinRecall >= 0.5 || one.Scanned >= 1000 {
		t.Fatalf("one probe of 16: %+v, want recall < 0.95, a poor worst query and about 1/16 of the rows scanned", one)
	}
	again := recall(t, env, 1)
	if again.RecallAtK != one.RecallAtK || again.Scanned != one.Scanned {
		t.Fatalf("same seed, different result: %+v then %+v", one, again)
	}
}

// Rows assigned under old centroids (a new version active after drift,
// rows not reassigned yet) lose recall; a rebuild brings it back and cuts
// the rows a search scans.
func TestRecallStaleListsRecoverAfterRebuild(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rec", Dim: 8, Partitions: 2, Lists: 16, Seed: 1})
	if err := env.W.CopyInsert(ctx, 4000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "rec", ivf.TrainOptions{Seed: 1}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if err := env.W.Drift(ctx, 6000, nil, 0); err != nil {
		t.Fatal(err)
	}
	drifted := recall(t, env, 2)
	if _, err := ivf.Train(ctx, env.Conn, "rec", ivf.TrainOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	stale := recall(t, env, 2)
	if stale.RecallAtK > drifted.RecallAtK-0.1 || stale.MinRecall > 0.2 {
		t.Fatalf("stale lists: recall %.3f (worst %.2f), drifted %.3f: want a drop of at least 0.1 and a lost query",
			stale.RecallAtK, stale.MinRecall, drifted.RecallAtK)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "rec", ivf.TrainOptions{Seed: 3}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	rebuilt := recall(t, env, 2)
	if rebuilt.RecallAtK < 0.93 || rebuilt.RecallAtK < stale.RecallAtK+0.1 {
		t.Fatalf("after rebuild: recall %.3f, stale %.3f: want >= 0.93 and up by 0.1", rebuilt.RecallAtK, stale.RecallAtK)
	}
	if rebuilt.Scanned > 0.7*drifted.Scanned {
		t.Fatalf("after rebuild a search scans %.0f rows, %.0f when skewed: want 30%% fewer", rebuilt.Scanned, drifted.Scanned)
	}

	// The curve: the same queries and exact answers at several probes.
	curve, err := ivf.RecallCurve(ctx, env.Conn, "rec", ivf.RecallOptions{Queries: 60, K: 10, Seed: 3}, []int{2, 4, 8, 16})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range curve {
		t.Logf("curve: %+v", r)
		if i > 0 && (r.Scanned < curve[i-1].Scanned || r.RecallAtK < curve[i-1].RecallAtK) {
			t.Fatalf("more probes, fewer rows or less recall: %+v after %+v", r, curve[i-1])
		}
	}
	if curve[0].RecallAtK != rebuilt.RecallAtK || curve[0].Scanned != rebuilt.Scanned || curve[3].RecallAtK != 1 {
		t.Fatalf("curve %+v disagrees with Recall %+v or is not exact at probes = lists", curve, rebuilt)
	}
	// At the skewed version's cost the rebuilt one is at least as good.
	m, ok := ivf.MatchedCost(curve, drifted.Scanned)
	if !ok || m.Scanned < drifted.Scanned || m.RecallAtK < drifted.RecallAtK {
		t.Fatalf("matched cost %v: %+v, skewed %+v: want at least the skewed recall at its cost", ok, m, drifted)
	}
	if _, ok := ivf.MatchedCost(curve, 1e9); ok {
		t.Fatal("MatchedCost reached a cost no search has")
	}
}

func TestRecallErrors(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rec", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	if _, err := ivf.Recall(ctx, env.Conn, "nope", ivf.RecallOptions{}); !errors.Is(err, ivf.ErrUnknownCollection) {
		t.Fatalf("unknown collection: %v", err)
	}
	if _, err := ivf.Recall(ctx, env.Conn, "rec", ivf.RecallOptions{}); !errors.Is(err, ivf.ErrNoQueries) {
		t.Fatalf("empty collection: %v", err)
	}
	for _, o := range []ivf.RecallOptions{{K: -1}, {Queries: -5}, {Probes: -1}} {
		if _, err := ivf.Recall(ctx, env.Conn, "rec", o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
	for _, probes := range [][]int{nil, {4, 0}} {
		if _, err := ivf.RecallCurve(ctx, env.Conn, "rec", ivf.RecallOptions{}, probes); err == nil {
			t.Fatalf("probes %v accepted", probes)
		}
	}
}
