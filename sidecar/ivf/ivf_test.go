package ivf_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

func assignments(t *testing.T, conn *pgx.Conn, table string) map[int64]int32 {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT id, ivf_list FROM %s`, table))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int32{}
	for rows.Next() {
		var id int64
		var l *int32
		if err := rows.Scan(&id, &l); err != nil {
			t.Fatal(err)
		}
		if l == nil {
			out[id] = -1
		} else {
			out[id] = *l
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Train on a clustered collection, reassign, drift (skew rises), rebuild
// (skew falls), roll back (the previous version's assignment, exactly).
func TestTrainReassignDriftRebuildRollback(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vecs", Dim: 2, Partitions: 4, Lists: 8, Seed: 1})
	w := env.W
	w.SetDistribution(workload.Uniform{Dim: 2, Min: -10, Max: 10})
	if err := w.CopyInsert(ctx, 4000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ivf.Skew(ctx, env.Conn, "vecs"); !errors.Is(err, ivf.ErrNoVersion) {
		t.Fatalf("skew before training: %v, want ErrNoVersion", err)
	}
	v1, err := ivf.Train(ctx, env.Conn, "vecs", ivf.TrainOptions{Seed: 5, SampleRows: 1500})
	if err != nil {
		t.Fatal(err)
	}
	var state string
	var sample int64
	if err := env.Conn.QueryRow(ctx, `SELECT state, sample_rows FROM ruvector.centroid_versions WHERE version = $1`, v1).Scan(&state, &sample); err != nil {
		t.Fatal(err)
	}
	if state != "active" || sample != 1500 {
		t.Fatalf("version %d: state %s sample %d, want active 1500", v1, state, sample)
	}
	var calls int
	p, err := ivf.Reassign(ctx, env.Conn, "vecs", v1, 500, func(ivf.Progress) error { calls++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if p.Seen != 4000 || calls < 8 {
		t.Fatalf("reassign saw %d rows in %d batches, want 4000 in >= 8", p.Seen, calls)
	}
	before := assignments(t, env.Conn, w.Table)
	for id, l := range before {
		if l < 0 {
			t.Fatalf("row %d has no list after reassign", id)
		}
	}
	s0, err := ivf.Skew(ctx, env.Conn, "vecs")
	if err != nil {
		t.Fatal(err)
	}
	if s0.Unassigned != 0 || s0.Factor > 2.5 {
		t.Fatalf("after training: %+v, want every row assigned and factor <= 2.5", s0)
	}

	// Drift: 6000 new rows in one corner of the space; the insert trigger
	// assigns them to the active version's nearest lists, which grow; a
	// retrained version spends more lists on the corner.
	w.SetDistribution(workload.Uniform{Dim: 2, Min: 2, Max: 10})
	if err := w.CopyInsert(ctx, 6000, nil); err != nil {
		t.Fatal(err)
	}
	s1, err := ivf.Skew(ctx, env.Conn, "vecs")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Unassigned != 0 {
		t.Fatalf("inserted rows not assigned by the trigger: %+v", s1)
	}
	if s1.Factor < 2*s0.Factor || s1.Factor < 5 {
		t.Fatalf("skew after drift %.2f %v, before %.2f %v: want a large rise", s1.Factor, s1.Sizes, s0.Factor, s0.Sizes)
	}

	v2, err := ivf.Rebuild(ctx, env.Conn, "vecs", ivf.TrainOptions{Seed: 6}, 700, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ivf.Skew(ctx, env.Conn, "vecs")
	if err != nil {
		t.Fatal(err)
	}
	if s2.Version != v2 || s2.Factor >= 0.6*s1.Factor {
		t.Fatalf("after rebuild: version %d factor %.2f (drifted %.2f), want version %d and factor down by 40%%", s2.Version, s2.Factor, s1.Factor, v2)
	}
	mid := assignments(t, env.Conn, w.Table)

	// Rollback: version 1 active again and every row in the list it had
	// under version 1 (the drifted rows got theirs from the C trigger; the
	// Go reassignment must agree with it).
	back, err := ivf.Rollback(ctx, env.Conn, "vecs", 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if back != v1 {
		t.Fatalf("rolled back to %d, want %d", back, v1)
	}
	var states map[int]string = map[int]string{}
	rows, _ := env.Conn.Query(ctx, `SELECT version, state FROM ruvector.centroid_versions`)
	for rows.Next() {
		var v int
		var s string
		_ = rows.Scan(&v, &s)
		states[v] = s
	}
	if states[v1] != "active" || states[v2] != "retired" {
		t.Fatalf("states %v", states)
	}
	after := assignments(t, env.Conn, w.Table)
	if maps.Equal(mid, after) {
		t.Fatal("rollback changed no assignment")
	}
	for id, l := range before {
		if after[id] != l {
			t.Fatalf("row %d: list %d after rollback, %d before the rebuild", id, after[id], l)
		}
	}
	s3, _ := ivf.Skew(ctx, env.Conn, "vecs")
	if s3.Factor != s1.Factor {
		t.Fatalf("skew after rollback %.3f, want the drifted %.3f exactly", s3.Factor, s1.Factor)
	}
}

func TestTrainErrors(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "small", Dim: 4, Partitions: 2, Lists: 10, Seed: 1})
	if _, err := ivf.Train(ctx, env.Conn, "nope", ivf.TrainOptions{}); !errors.Is(err, ivf.ErrUnknownCollection) {
		t.Fatalf("unknown collection: %v", err)
	}
	if err := env.W.CopyInsert(ctx, 5, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ivf.Train(ctx, env.Conn, "small", ivf.TrainOptions{}); !errors.Is(err, ivf.ErrTooFewVectors) {
		t.Fatalf("5 rows, 10 lists: %v, want ErrTooFewVectors", err)
	}
	var n int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.centroid_versions`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d versions written by a failed training", n)
	}
	if _, err := ivf.Rollback(ctx, env.Conn, "small", 100, nil); !errors.Is(err, ivf.ErrNoVersion) {
		t.Fatalf("rollback without a previous version: %v", err)
	}
}

// A large collection is trained on a sample, not on every row.
func TestTrainSamplesLargeCollection(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "big", Dim: 4, Partitions: 2, Lists: 4, Seed: 2})
	if err := env.W.CopyInsert(ctx, 20000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE big`); err != nil {
		t.Fatal(err)
	}
	v, err := ivf.Train(ctx, env.Conn, "big", ivf.TrainOptions{SampleRows: 1000, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var sample int64
	_ = env.Conn.QueryRow(ctx, `SELECT sample_rows FROM ruvector.centroid_versions WHERE version = $1`, v).Scan(&sample)
	if sample != 1000 {
		t.Fatalf("sample_rows %d, want 1000", sample)
	}
}
