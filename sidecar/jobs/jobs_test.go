package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

func enqueue(t *testing.T, conn *pgx.Conn, coll, kind string, prio int, params string) int64 {
	t.Helper()
	var id int64
	if err := conn.QueryRow(context.Background(), `SELECT ruvector.ruvector_maintenance_enqueue($1, $2, $3, $4::jsonb)`, coll, kind, prio, params).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

type jobRow struct {
	State, Owner, Error string
	Progress            float64
}

func job(t *testing.T, conn *pgx.Conn, id int64) jobRow {
	t.Helper()
	var j jobRow
	if err := conn.QueryRow(context.Background(), `SELECT state, coalesce(owner, ''), coalesce(error, ''), progress
FROM ruvector.maintenance_jobs WHERE job_id = $1`, id).Scan(&j.State, &j.Owner, &j.Error, &j.Progress); err != nil {
		t.Fatal(err)
	}
	return j
}

func connect(t *testing.T, env *workloadtest.Env) *pgx.Conn {
	t.Helper()
	return env.Cluster.Connect(context.Background(), "postgres")
}

func TestPriorityOrderAndFailure(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "jc", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	low := enqueue(t, env.Conn, "jc", "analyze", 10, `{}`)
	high := enqueue(t, env.Conn, "jc", "analyze", 500, `{}`)
	mid := enqueue(t, env.Conn, "jc", "rebalance", 100, `{"from": 99, "to": [1], "rows": 10}`)
	marker := enqueue(t, env.Conn, "jc", "autovacuum", 900, `{}`)
	r := &jobs.Runner{Conn: connect(t, env), Owner: "test-1"}
	var order []int64
	var outs []jobs.Outcome
	for {
		j, out, err := r.RunOne(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if out == jobs.None {
			break
		}
		order = append(order, j.ID)
		outs = append(outs, out)
	}
	if want := []int64{high, mid, low}; !slices.Equal(order, want) {
		t.Fatalf("ran %v, want %v (priority order, autovacuum markers never)", order, want)
	}
	if want := []jobs.Outcome{jobs.Done, jobs.Failed, jobs.Done}; !slices.Equal(outs, want) {
		t.Fatalf("outcomes %v, want %v", outs, want)
	}
	f := job(t, env.Conn, mid)
	if f.State != "failed" || !strings.Contains(f.Error, "99") || f.Owner != "test-1" {
		t.Fatalf("failed job: %+v, want failed with an error naming shard 99", f)
	}
	if d := job(t, env.Conn, high); d.State != "done" || d.Progress != 1 {
		t.Fatalf("done job: %+v", d)
	}
	if m := job(t, env.Conn, marker); m.State != "queued" {
		t.Fatalf("autovacuum marker: %+v, want untouched", m)
	}
	var analyzed int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'jc_p%' AND analyze_count > 0`).Scan(&analyzed)
	if analyzed != 2 {
		t.Fatalf("%d partitions analyzed, want 2", analyzed)
	}
}

func vacuumCounts(t *testing.T, conn *pgx.Conn) []int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT vacuum_count FROM pg_stat_user_tables WHERE relname LIKE 'pv_p%' ORDER BY relid::regclass::text`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Paused after its third partition, a vacuum job stops there with its
// progress; re-queued it vacuums only the rest.
func TestPauseAndResume(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "pv", Dim: 4, Partitions: 8, Lists: 4, Seed: 1})
	id := enqueue(t, env.Conn, "pv", "vacuum", 50, `{}`)
	r := &jobs.Runner{Conn: connect(t, env), Owner: "test-p",
		AfterStep: func(ctx context.Context, j jobs.Job, step int) {
			if step == 2 {
				if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'paused', paused_by = 77 WHERE job_id = $1`, j.ID); err != nil {
					t.Error(err)
				}
			}
		}}
	_, out, err := r.RunOne(ctx)
	if err != nil || out != jobs.Stopped {
		t.Fatalf("first run: %v %v, want stopped", out, err)
	}
	if j := job(t, env.Conn, id); j.State != "paused" || j.Progress != 3.0/8 {
		t.Fatalf("paused job %+v, want paused at 3/8", j)
	}
	if got, want := vacuumCounts(t, env.Conn), []int64{1, 1, 1, 0, 0, 0, 0, 0}; !slices.Equal(got, want) {
		t.Fatalf("vacuum counts %v, want %v", got, want)
	}
	if _, out, _ := r.RunOne(ctx); out != jobs.None {
		t.Fatalf("a paused job was claimed: %v", out)
	}
	r.AfterStep = nil
	if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued', paused_by = NULL WHERE job_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Done {
		t.Fatalf("resumed run: %v %v", out, err)
	}
	if got, want := vacuumCounts(t, env.Conn), []int64{1, 1, 1, 1, 1, 1, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("vacuum counts after resume %v, want each partition once", got)
	}
}

// While a pause_maintenance is in force (a job paused with paused_by),
// the runner starts no job of that collection queued since that is no
// more important than a paused one; more important jobs and other
// collections' run; once the pause is rolled back all run.
func TestAPauseHoldsBackNewJobsBelowIt(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hb", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_collection_create('other', 4, 2, 2)`); err != nil {
		t.Fatal(err)
	}
	paused := enqueue(t, env.Conn, "hb", "analyze", 10, `{}`)
	if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'paused', paused_by = 77 WHERE job_id = $1`, paused); err != nil {
		t.Fatal(err)
	}
	same := enqueue(t, env.Conn, "hb", "analyze", 10, `{}`)
	lower := enqueue(t, env.Conn, "hb", "analyze", 5, `{}`)
	higher := enqueue(t, env.Conn, "hb", "analyze", 60, `{}`)
	elsewhere := enqueue(t, env.Conn, "other", "analyze", 5, `{}`)
	r := &jobs.Runner{Conn: connect(t, env), Owner: "test-h"}
	drain := func() []int64 {
		t.Helper()
		var ran []int64
		for {
			j, out, err := r.RunOne(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if out == jobs.None {
				return ran
			}
			ran = append(ran, j.ID)
		}
	}
	if got, want := drain(), []int64{higher, elsewhere}; !slices.Equal(got, want) {
		t.Fatalf("under the pause ran %v, want %v (jobs %d and %d held back)", got, want, same, lower)
	}
	for _, id := range []int64{same, lower} {
		if j := job(t, env.Conn, id); j.State != "queued" {
			t.Fatalf("held job %d: %+v, want queued", id, j)
		}
	}
	// The pause's rollback queues its job again and clears paused_by.
	if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued', paused_by = NULL WHERE job_id = $1`, paused); err != nil {
		t.Fatal(err)
	}
	if got, want := drain(), []int64{paused, same, lower}; !slices.Equal(got, want) {
		t.Fatalf("after the pause ran %v, want %v", got, want)
	}
}

// Two runners draining one queue concurrently never run a job twice.
func TestTwoRunnersNeverShareAJob(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "tw", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	var all []int64
	for i := range 40 {
		all = append(all, enqueue(t, env.Conn, "tw", "analyze", i%5, `{}`))
	}
	claimed := make([][]int64, 2)
	var wg sync.WaitGroup
	for k := range 2 {
		r := &jobs.Runner{Conn: connect(t, env), Owner: fmt.Sprintf("runner-%d", k)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j, out, err := r.RunOne(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if out == jobs.None {
					return
				}
				claimed[k] = append(claimed[k], j.ID)
			}
		}()
	}
	wg.Wait()
	both := append(slices.Clone(claimed[0]), claimed[1]...)
	slices.Sort(both)
	if !slices.Equal(both, all) {
		t.Fatalf("claimed %v, want each of %v exactly once", both, all)
	}
	if len(claimed[0]) == 0 || len(claimed[1]) == 0 {
		t.Logf("one runner took every job (%d / %d): no contention this run", len(claimed[0]), len(claimed[1]))
	}
	var owners int
	_ = env.Conn.QueryRow(ctx, `SELECT count(DISTINCT owner) FROM ruvector.maintenance_jobs WHERE state = 'done'`).Scan(&owners)
	var notDone int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.maintenance_jobs WHERE state <> 'done'`).Scan(&notDone)
	if notDone != 0 {
		t.Fatalf("%d jobs not done", notDone)
	}
}

// A centroid_rebuild job paused after training resumes with the same
// version and finishes the reassignment; a rebalance and a compaction job
// do their work.
func TestRebuildRebalanceCompactionJobs(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rj", Dim: 4, Partitions: 4, Lists: 6, Seed: 1})
	if err := env.W.CopyInsert(ctx, 3000, nil); err != nil {
		t.Fatal(err)
	}
	id := enqueue(t, env.Conn, "rj", "centroid_rebuild", 100, `{"seed": 4}`)
	r := &jobs.Runner{Conn: connect(t, env), Owner: "test-r", BatchSize: 200,
		AfterStep: func(ctx context.Context, j jobs.Job, step int) {
			if step == 0 {
				_, _ = env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'paused' WHERE job_id = $1`, j.ID)
			}
		}}
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Stopped {
		t.Fatalf("rebuild first run: %v %v", out, err)
	}
	s, err := ivf.Skew(ctx, env.Conn, "rj")
	if err != nil {
		t.Fatal(err)
	}
	if s.Unassigned != 3000 {
		t.Fatalf("paused after training: %d rows unassigned, want all 3000 still", s.Unassigned)
	}
	r.AfterStep = nil
	_, _ = env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued' WHERE job_id = $1`, id)
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Done {
		t.Fatalf("rebuild resumed: %v %v (%+v)", out, err, job(t, env.Conn, id))
	}
	s, _ = ivf.Skew(ctx, env.Conn, "rj")
	var versions int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.centroid_versions`).Scan(&versions)
	if s.Unassigned != 0 || versions != 1 || s.Version != 1 {
		t.Fatalf("after the rebuild job: %d unassigned, %d versions, active %d; want 0, 1 (no retraining on resume), 1", s.Unassigned, versions, s.Version)
	}

	rb := enqueue(t, env.Conn, "rj", "rebalance", 100, `{"from": 0, "to": [1, 2], "rows": 300, "batch": 100}`)
	var before int64
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM rj WHERE shard = 0`).Scan(&before)
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Done {
		t.Fatalf("rebalance job: %v %v (%+v)", out, err, job(t, env.Conn, rb))
	}
	var after, journal int64
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM rj WHERE shard = 0`).Scan(&after)
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves WHERE outcome_id = $1`, -rb).Scan(&journal)
	if before-after != 300 || journal != 300 {
		t.Fatalf("shard 0 %d → %d, journal %d; want 300 moved under outcome %d", before, after, journal, -rb)
	}

	nodes := func() map[string]uint32 {
		rows, _ := env.Conn.Query(ctx, `SELECT i.indexrelid::regclass::text, c.relfilenode FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname LIKE 'rj_p%'`)
		out := map[string]uint32{}
		for rows.Next() {
			var n string
			var f uint32
			_ = rows.Scan(&n, &f)
			out[n] = f
		}
		return out
	}
	n0 := nodes()
	if len(n0) < 4 {
		t.Fatalf("partition indexes: %v", n0)
	}
	enqueue(t, env.Conn, "rj", "compaction", 100, `{}`)
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Done {
		t.Fatalf("compaction job: %v %v", out, err)
	}
	n1 := nodes()
	for name, f := range n0 {
		if n1[name] == f {
			t.Errorf("index %s not rebuilt (relfilenode %d)", name, f)
		}
	}
}

// Run requeues the jobs its owner left running (a restarted sidecar), then
// drains the queue until its context ends.
func TestRunRequeuesOwnOrphansAndDrains(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rr", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	orphan := enqueue(t, env.Conn, "rr", "analyze", 100, `{}`)
	foreign := enqueue(t, env.Conn, "rr", "analyze", 100, `{}`)
	fresh := enqueue(t, env.Conn, "rr", "vacuum", 5, `{}`)
	if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'running', owner = CASE job_id WHEN $1 THEN 'me' ELSE 'other' END
WHERE job_id IN ($1, $2)`, orphan, foreign); err != nil {
		t.Fatal(err)
	}
	r := &jobs.Runner{Conn: connect(t, env), Owner: "me", Poll: 50 * time.Millisecond}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	pgtest.WaitFor(t, 20*time.Second, "the orphan and the fresh job done", func() (bool, error) {
		return job(t, env.Conn, orphan).State == "done" && job(t, env.Conn, fresh).State == "done", nil
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run ended with %v", err)
	}
	if j := job(t, env.Conn, foreign); j.State != "running" || j.Owner != "other" {
		t.Fatalf("another owner's running job was touched: %+v", j)
	}
}

// A rebalance job paused after its second batch resumes where it stopped:
// exactly "rows" rows move in all, journaled under -job_id.
func TestRebalanceJobPauseResume(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "rp", Dim: 4, Partitions: 3, Lists: 4, Seed: 1})
	if err := env.W.CopyInsert(ctx, 1000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	id := enqueue(t, env.Conn, "rp", "rebalance", 100, `{"from": 0, "to": [1, 2], "rows": 450, "batch": 100}`)
	r := &jobs.Runner{Conn: connect(t, env), Owner: "test-rp",
		AfterStep: func(ctx context.Context, j jobs.Job, step int) {
			if step == 1 {
				_, _ = env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'paused' WHERE job_id = $1`, j.ID)
			}
		}}
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Stopped {
		t.Fatalf("first run: %v %v", out, err)
	}
	moved := func() (n int) {
		_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM rp WHERE shard <> 0`).Scan(&n)
		return n
	}
	if j := job(t, env.Conn, id); moved() != 200 || j.Progress != float64(float32(200.0/450)) {
		t.Fatalf("paused after 2 batches: %d rows moved, progress %v", moved(), j.Progress)
	}
	r.AfterStep = nil
	_, _ = env.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued' WHERE job_id = $1`, id)
	if _, out, err := r.RunOne(ctx); err != nil || out != jobs.Done {
		t.Fatalf("resumed: %v %v (%+v)", out, err, job(t, env.Conn, id))
	}
	var journal, batches int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT batch) FROM ruvector.healing_moves WHERE outcome_id = $1`, -id).Scan(&journal, &batches)
	if moved() != 450 || journal != 450 || batches != 5 {
		t.Fatalf("%d rows moved, %d journaled in %d batches; want 450 in 5", moved(), journal, batches)
	}
}
