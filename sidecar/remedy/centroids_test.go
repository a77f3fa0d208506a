package remedy

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

func listAssignments(t *testing.T, env *workloadtest.Env) map[int64]int32 {
	t.Helper()
	rows, err := env.Conn.Query(context.Background(), fmt.Sprintf(`SELECT id, coalesce(ivf_list, -1) FROM %s`, env.W.Table))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int32{}
	for rows.Next() {
		var id int64
		var l int32
		if err := rows.Scan(&id, &l); err != nil {
			t.Fatal(err)
		}
		out[id] = l
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRebuildCentroids(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 2, Partitions: 4, Lists: 8, Seed: 1})
	w := env.W
	w.SetDistribution(workload.Uniform{Dim: 2, Min: -10, Max: 10})
	if err := w.CopyInsert(ctx, 4000, nil); err != nil {
		t.Fatal(err)
	}
	s := &RebuildCentroids{Dial: vecDialer(env), Train: ivf.TrainOptions{Seed: 9}, BatchSize: 700}
	rc := &strategy.Context{Collection: "vec", CollectionID: int64(w.ID), Recorder: &outcomeRecorder{id: 77},
		Started: time.Now(), Timeout: 2 * s.EstimatedDuration()}
	if res, err := s.Execute(ctx, rc); err != nil || !res.Noop {
		t.Fatalf("without centroids: %+v, %v; want a noop", res, err)
	}
	v1, err := ivf.Train(ctx, env.Conn, "vec", ivf.TrainOptions{Seed: 5, SampleRows: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ivf.Reassign(ctx, env.Conn, "vec", v1, 1000, nil); err != nil {
		t.Fatal(err)
	}
	// The workload's drift injector: new rows in one corner, so a few
	// lists grow.
	if err := w.Drift(ctx, 6000, w.DriftCenter(), 1); err != nil {
		t.Fatal(err)
	}
	drifted, err := ivf.Skew(ctx, env.Conn, "vec")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drifted skew factor %.2f sizes %v", drifted.Factor, drifted.Sizes)
	before := listAssignments(t, env)

	p, err := s.Plan(ctx, rc)
	if err != nil || p.Noop || len(p.Steps) != 2 {
		t.Fatalf("plan %+v, %v", p, err)
	}
	if sk, _ := ivf.Skew(ctx, env.Conn, "vec"); sk.Version != v1 || !maps.Equal(before, listAssignments(t, env)) {
		t.Fatal("the plan changed the centroids or the assignment")
	}

	res, err := s.Execute(ctx, rc)
	if err != nil || !res.Success {
		t.Fatalf("%+v, %v", res, err)
	}
	t.Logf("result %v", res.Metadata)
	after, err := ivf.Skew(ctx, env.Conn, "vec")
	if err != nil {
		t.Fatal(err)
	}
	if after.Version == v1 || after.Factor >= 0.6*drifted.Factor || after.Unassigned != 0 {
		t.Fatalf("after rebuild: version %d factor %.2f unassigned %d (drifted %.2f): want a new version and skew down by 40%%",
			after.Version, after.Factor, after.Unassigned, drifted.Factor)
	}
	var outcome *int64
	if err := env.Conn.QueryRow(ctx, `SELECT outcome_id FROM ruvector.centroid_versions WHERE version = $1`, after.Version).Scan(&outcome); err != nil || outcome == nil || *outcome != 77 {
		t.Fatalf("new version's outcome %v, %v; want 77", outcome, err)
	}

	if err := (&RebuildCentroids{Dial: vecDialer(env)}).Rollback(ctx, rc); err != nil {
		t.Fatal(err)
	}
	back, err := ivf.Skew(ctx, env.Conn, "vec")
	if err != nil {
		t.Fatal(err)
	}
	if back.Version != v1 || back.Factor != drifted.Factor {
		t.Fatalf("after rollback: version %d factor %.3f, want %d %.3f", back.Version, back.Factor, v1, drifted.Factor)
	}
	if got := listAssignments(t, env); !maps.Equal(got, before) {
		t.Fatal("after rollback the rows' lists differ from before the rebuild")
	}
	check, err := w.Ledger.Verify(ctx, env.Pool, w.Table)
	if err != nil || !check.TotalOK() || !check.ShardsOK() {
		t.Fatalf("ledger: %v %v", check, err)
	}
}
