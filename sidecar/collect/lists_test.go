package collect_test

import (
	"context"
	"testing"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

// The list sizes follow training, drift and a rebuild, and agree with an
// exact count.
func TestListsCollector(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "lc", Dim: 8, Partitions: 2, Lists: 6, Seed: 1})
	tg, err := collect.LoadTarget(ctx, env.Conn, "lc")
	if err != nil {
		t.Fatal(err)
	}
	l := collect.NewLists()
	sample := func() []health.CentroidSignal {
		var s health.Signals
		s.Centroids = []health.CentroidSignal{{ID: 99}}
		if err := l.Collect(ctx, env.Conn, tg, &s); err != nil {
			t.Fatal(err)
		}
		return s.Centroids
	}
	if err := env.W.CopyInsert(ctx, 3000, nil); err != nil {
		t.Fatal(err)
	}
	if got := sample(); got != nil {
		t.Fatalf("no trained version: lists %v, want none", got)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "lc", ivf.TrainOptions{Seed: 2}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	check := func() []health.CentroidSignal {
		got := sample()
		sk, err := ivf.Skew(ctx, env.Conn, "lc")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 6 {
			t.Fatalf("%d lists, want 6", len(got))
		}
		for i, c := range got {
			if c.ID != int64(i) || c.ListSize != sk.Sizes[i] {
				t.Fatalf("list %d: %+v, exact count %d", i, c, sk.Sizes[i])
			}
		}
		return got
	}
	before := check()
	if err := env.W.Drift(ctx, 4000, nil, 0); err != nil {
		t.Fatal(err)
	}
	after := check()
	var grew int64
	for i := range after {
		grew = max(grew, after[i].ListSize-before[i].ListSize)
	}
	if grew < 3000 {
		t.Fatalf("largest growth of a list after drifting 4000 rows: %d", grew)
	}
}
