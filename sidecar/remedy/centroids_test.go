package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
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
	// 1 of 8 lists probed: recall below 1, so it can move either way.
	s := &RebuildCentroids{Dial: vecDialer(env), Train: ivf.TrainOptions{Seed: 9}, BatchSize: 700,
		Recall: ivf.RecallOptions{Queries: 60, Probes: 1}}
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
	if err != nil || p.Noop || len(p.Steps) != 3 || p.Steps[2].Action != "verify_recall" || p.Steps[2].Detail["probes"] != 1 {
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
	m := res.Metadata
	for _, k := range []string{"recall_before", "recall_after", "recall_after_matched_cost", "recall_tolerance",
		"search_p50_before_ms", "search_p99_before_ms", "search_p50_after_ms", "search_p99_after_ms"} {
		if _, ok := m[k].(float64); !ok {
			t.Fatalf("metadata %s = %v (%T), want a number", k, m[k], m[k])
		}
	}
	if m["search_p99_before_ms"].(float64) <= 0 || m["search_p99_after_ms"].(float64) <= 0 {
		t.Fatalf("p99 latencies %v, %v", m["search_p99_before_ms"], m["search_p99_after_ms"])
	}
	// Kept: recall at the skewed version's cost did not fall beyond the
	// sampling error.
	if m["recall_after_matched_cost"].(float64) < m["recall_before"].(float64)-m["recall_tolerance"].(float64) {
		t.Fatalf("a kept rebuild with lower recall: %v", m)
	}
	// Every index of the collection was rebuilt after the reassignment
	// (which rewrote every row): 4 partitions × (primary key, ivf_list).
	if n, _ := m["indexes_rebuilt"].(int); n < 8 {
		t.Fatalf("indexes rebuilt after the reassignment: %v (error %v)", m["indexes_rebuilt"], m["reindex_error"])
	}
	var invalid int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_index i JOIN ruvector.collection_relations r ON r.relid = i.indrelid
		WHERE r.collection_id = $1 AND NOT i.indisvalid`, w.ID).Scan(&invalid); err != nil || invalid != 0 {
		t.Fatalf("%d invalid indexes left (%v)", invalid, err)
	}
	if _, rejected := m["recall_rejected"]; rejected {
		t.Fatalf("rejected: %v", m)
	}
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

// A rebuild that searches worse than the version it replaced is rolled
// back by the strategy itself: the test hook scrambles the new version's
// assignments after the reassignment (as a broken centroid set or
// reassignment would), recall at equal cost collapses, and the previous
// version and every row's list are exactly back.
func TestRebuildCentroidsRolledBackWhenRecallFalls(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 4, Partitions: 2, Lists: 8, Seed: 3})
	if err := env.W.CopyInsert(ctx, 4000, nil); err != nil {
		t.Fatal(err)
	}
	v1, err := ivf.Rebuild(ctx, env.Conn, "vec", ivf.TrainOptions{Seed: 5}, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := listAssignments(t, env)
	var scrambled int
	s := &RebuildCentroids{Dial: vecDialer(env), Train: ivf.TrainOptions{Seed: 9}, BatchSize: 900,
		Recall: ivf.RecallOptions{Queries: 60, Probes: 2},
		afterReassign: func(ctx context.Context, conn *pgx.Conn, version int) error {
			tag, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET ivf_list = (id * 7919) %% 8`, env.W.Table))
			scrambled = int(tag.RowsAffected())
			return err
		}}
	rec := &outcomeRecorder{id: 78}
	rc := &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID), Recorder: rec,
		Started: time.Now(), Timeout: 2 * s.EstimatedDuration()}
	res, err := s.Execute(ctx, rc)
	t.Logf("result %v; %v", res.Metadata, err)
	if !errors.Is(err, ErrRecallLowered) || res.Success || scrambled != 4000 {
		t.Fatalf("scrambled %d rows; result %+v, %v: want ErrRecallLowered and no success", scrambled, res, err)
	}
	m := res.Metadata
	rb, _ := m["recall_before"].(float64)
	ra, _ := m["recall_after_matched_cost"].(float64)
	if rb < 0.5 || ra > rb-0.2 || m["restored_version"] != v1 || m["recall_rejected"] == nil ||
		m["search_p99_before_ms"] == nil || m["search_p99_after_ms"] == nil {
		t.Fatalf("metadata %v: want recall before ≥ 0.5, a drop of 0.2, version %d restored, a reason, both p99s", m, v1)
	}
	sk, err := ivf.Skew(ctx, env.Conn, "vec")
	if err != nil || sk.Version != v1 || sk.Unassigned != 0 {
		t.Fatalf("after the strategy's rollback: %+v, %v; want version %d", sk, err, v1)
	}
	if got := listAssignments(t, env); !maps.Equal(got, before) {
		t.Fatal("after the strategy's rollback the rows' lists differ from before the rebuild")
	}
	acts, _ := rec.Actions()
	if len(acts) != 2 || !strings.Contains(string(acts[1]), `"centroids_restored"`) {
		t.Fatalf("actions %s: want the rebuild and its restoration", acts)
	}
	// The engine rolls back an attempt that failed: nothing is left to do.
	var activated time.Time
	q := `SELECT activated_at FROM ruvector.centroid_versions WHERE collection_id = $1 AND version = $2`
	if err := env.Conn.QueryRow(ctx, q, env.W.ID, v1).Scan(&activated); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback(ctx, rc); err != nil {
		t.Fatal(err)
	}
	var again time.Time
	if err := env.Conn.QueryRow(ctx, q, env.W.ID, v1).Scan(&again); err != nil || !again.Equal(activated) {
		t.Fatalf("Rollback after the strategy's own re-activated version %d again (%v → %v, %v)", v1, activated, again, err)
	}
	if got := listAssignments(t, env); !maps.Equal(got, before) {
		t.Fatal("after Rollback the rows' lists differ from before the rebuild")
	}

	// Through the real engine: the attempt is recorded as failed, not
	// verified, rolled back, with the recall numbers and the reason in the
	// outcome; the collection is back on version 1.
	srv, err := instance.Discover(ctx, env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := strategy.NewRegistry(s)
	if err != nil {
		t.Fatal(err)
	}
	e, err := healing.New(ctx, env.Cluster.Connect(ctx, "postgres"), reg,
		healing.SegmentSampler{Segment: seg, DatabaseOID: srv.DatabaseOID}, key, healing.Options{Holder: "recall-test"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Execute(ctx, healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: "stress", Lambda: 0.5},
		"rebuild_centroids", json.RawMessage(`{"recall_queries": 40}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engine outcome %d: %s rolled_back=%v error %q", out.ID, out.Status, out.RolledBack, out.Error)
	if out.Status != healing.StatusFailed || out.Verified || !out.RolledBack || !strings.Contains(out.Error, "lowered recall") {
		t.Fatalf("engine outcome %+v: want failed, not verified, rolled back, the recall reason", out)
	}
	var (
		success, rolledBack bool
		verified            *bool
		errMsg              string
		recallBefore        float64
		p99Before, p99After float64
		queries             int
	)
	if err := env.Conn.QueryRow(ctx, `SELECT success, verified, rolled_back, error_message,
		(metadata->'result'->'metadata'->>'recall_before')::float8,
		(metadata->'result'->'metadata'->>'search_p99_before_ms')::float8,
		(metadata->'result'->'metadata'->>'search_p99_after_ms')::float8,
		(metadata->'result'->'metadata'->>'recall_queries')::int
		FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&success, &verified, &rolledBack, &errMsg,
		&recallBefore, &p99Before, &p99After, &queries); err != nil {
		t.Fatal(err)
	}
	if success || (verified != nil && *verified) || !rolledBack || !strings.Contains(errMsg, "lowered recall") ||
		recallBefore < 0.5 || p99Before <= 0 || p99After <= 0 || queries != 40 {
		t.Fatalf("outcome row: success %v verified %v rolled_back %v error %q recall_before %v p99 %v/%v queries %d",
			success, verified, rolledBack, errMsg, recallBefore, p99Before, p99After, queries)
	}
	if sk, err := ivf.Skew(ctx, env.Conn, "vec"); err != nil || sk.Version != v1 {
		t.Fatalf("after the engine's attempt: %+v, %v; want version %d", sk, err, v1)
	}
	if got := listAssignments(t, env); !maps.Equal(got, before) {
		t.Fatal("after the engine's attempt the rows' lists differ from before")
	}

	// Bad parameters are refused before anything is measured.
	for _, params := range []string{`{"recall_queries": 0}`, `{"recall_probes": 5000}`, `{"recall_tolerance": 2}`} {
		rc := &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID), Recorder: &outcomeRecorder{id: 79},
			Params: json.RawMessage(params)}
		if _, err := s.Execute(ctx, rc); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Fatalf("%s: %v", params, err)
		}
	}
}
