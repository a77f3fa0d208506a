package healing_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// outcomeRecorder is a MemoryRecorder with an outcome id, as the engine's
// recorder has (pause_maintenance writes it into paused_by).
type outcomeRecorder struct {
	strategy.MemoryRecorder
	id int64
}

func (r *outcomeRecorder) OutcomeID() int64 { return r.id }

func autovacuumEnabled(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT coalesce((SELECT o FROM pg_class, unnest(reloptions) o
		WHERE oid = $1::regclass AND o LIKE 'autovacuum_enabled=%'), '')`, table).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A product job whose step is blocked behind a lock pause_maintenance may
// not touch (someone else's SHARE UPDATE EXCLUSIVE lock: what a manual or
// anti-wraparound VACUUM holds) is released by the pause: its statement is
// cancelled while it waits, the runner stops it (not failed), and the job
// stays paused with its progress; the table the pause cannot lock is left
// as it was (skipped_locked) while the others are paused. Without the
// release the runner's VACUUM would stay in the lock queue, contention in
// the signal, and run as soon as the lock came free, pause or not.
func TestPauseMaintenanceReleasesAJobBlockedOnALock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 2, Lists: 2, Seed: 5})
	if err := env.W.CopyInsert(ctx, 500, nil); err != nil {
		t.Fatal(err)
	}
	holder := env.Cluster.Connect(ctx, "postgres")
	if _, err := holder.Exec(ctx, `BEGIN; LOCK TABLE vec_p0 IN SHARE UPDATE EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var jobID int64
	if err := env.Conn.QueryRow(ctx, `SELECT ruvector_maintenance_enqueue('vec', 'vacuum', 10, '{}')`).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	var logs []string
	r := &jobs.Runner{Conn: env.Cluster.Connect(ctx, "postgres"), Owner: "locks-test",
		Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
	type result struct {
		out jobs.Outcome
		err error
	}
	ran := make(chan result, 1)
	go func() { _, out, err := r.RunOne(ctx); ran <- result{out, err} }()
	pgtest.WaitFor(t, 20*time.Second, "the runner's VACUUM waiting for the lock", func() (bool, error) {
		var n int
		err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
			fmt.Sprint(jobs.AppNamePrefix, jobID)).Scan(&n)
		return n == 1, err
	})
	target, err := collect.LoadTarget(ctx, env.Conn, "vec")
	if err != nil {
		t.Fatal(err)
	}
	waiting := func() []health.JobSignal {
		var s health.Signals
		if err := collect.NewMaintenance().Collect(ctx, env.Conn, target, &s); err != nil {
			t.Fatal(err)
		}
		var out []health.JobSignal
		for _, j := range s.Maintenance {
			if j.WaitingFor != "" {
				out = append(out, j)
			}
		}
		return out
	}
	if w := waiting(); len(w) != 1 {
		t.Fatalf("before the pause: waiting jobs %+v, want the runner's", w)
	}

	pmConn := env.Cluster.Connect(ctx, "postgres")
	pmPID := pmConn.PgConn().PID()
	pm := healing.NewPauseMaintenance(pmConn)
	rec := &outcomeRecorder{id: 4242}
	rc := &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID), Recorder: rec, Started: time.Now(), Timeout: time.Minute}
	start := time.Now()
	res, err := pm.Execute(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pause in %v: %+v", time.Since(start).Round(time.Millisecond), res)
	if fmt.Sprint(res.Metadata["skipped_locked"]) != "[vec_p0]" || fmt.Sprint(res.Metadata["paused_tables"]) != "[vec_p1]" ||
		fmt.Sprint(res.Metadata["paused_jobs"]) != fmt.Sprintf("[%d]", jobID) {
		t.Fatalf("metadata %v", res.Metadata)
	}
	var got result
	select {
	case got = <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the runner's blocked step was not released by the pause")
	}
	t.Logf("runner: %v %v; log %q", got.out, got.err, logs)
	if got.out != jobs.Stopped || got.err != nil {
		t.Fatalf("runner ended %v (%v), want stopped", got.out, got.err)
	}
	var state string
	var pausedBy *int64
	var progress float64
	if err := env.Conn.QueryRow(ctx, `SELECT state, paused_by, progress::float8 FROM ruvector.maintenance_jobs WHERE job_id = $1`, jobID).
		Scan(&state, &pausedBy, &progress); err != nil || state != "paused" || pausedBy == nil || *pausedBy != 4242 || progress != 0 {
		t.Fatalf("job %d: %s paused_by %v progress %v (%v)", jobID, state, pausedBy, progress, err)
	}
	if w := waiting(); len(w) != 0 {
		t.Fatalf("after the pause: waiting jobs %+v", w)
	}
	// The holder's lock and transaction are untouched.
	var inTx string
	if err := holder.QueryRow(ctx, `SELECT current_setting('transaction_isolation')`).Scan(&inTx); err != nil {
		t.Fatalf("the lock holder's session was disturbed: %v", err)
	}
	if a, b := autovacuumEnabled(t, env.Conn, "vec_p0"), autovacuumEnabled(t, env.Conn, "vec_p1"); a != "" || b != "autovacuum_enabled=false" {
		t.Fatalf("during the pause: vec_p0 %q vec_p1 %q", a, b)
	}

	// Rollback while the lock is still held: nothing queues for it. Seen in
	// pg_locks while it runs, not judged by how long it took (a time bound
	// failed on a loaded machine; a rollback that queued would also fail at
	// the pause's 5 s lock_timeout).
	rolled := make(chan error, 1)
	go func() { rolled <- pm.Rollback(ctx, rc) }()
	watch := env.Cluster.Connect(ctx, "postgres")
	var waitedFor string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var err error
		select {
		case err = <-rolled:
		default:
			if time.Now().After(deadline) {
				t.Fatal("the rollback did not return within a minute")
			}
			var what *string
			if qerr := watch.QueryRow(ctx, `SELECT string_agg(mode || ' on ' || coalesce(relation::regclass::text, locktype), ', ')
				FROM pg_locks WHERE pid = $1 AND NOT granted`, pmPID).Scan(&what); qerr != nil {
				t.Fatal(qerr)
			}
			if what != nil && waitedFor == "" {
				waitedFor = *what
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if waitedFor != "" {
		t.Fatalf("the rollback queued for %s: it waited for the lock of the table it never changed", waitedFor)
	}
	if a, b := autovacuumEnabled(t, env.Conn, "vec_p0"), autovacuumEnabled(t, env.Conn, "vec_p1"); a != "" || b != "" {
		t.Fatalf("after rollback: vec_p0 %q vec_p1 %q", a, b)
	}
	if _, err := holder.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	_, out, err := r.RunOne(ctx)
	if err != nil || out != jobs.Done {
		t.Fatalf("resumed job: %v %v", out, err)
	}
}

// An anti-wraparound autovacuum on the collection is never cancelled:
// neither when the table check finds the table near wraparound (the
// default fraction: the table is skipped) nor when it does not (a fraction
// no table reaches: the worker's own "to prevent wraparound" is what
// protects it, the ALTER that would queue behind it gives up at
// lock_timeout and the table is left as it was) and the pause does not
// wait for it to end.
func TestPauseMaintenanceNeverCancelsAntiWraparound(t *testing.T) {
	if testing.Short() {
		t.Skip("burns 110,000 transaction ids")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 2, Lists: 2, Seed: 6,
		Conf: []string{"autovacuum_naptime = 1s", "log_autovacuum_min_duration = 0"}})
	// autovacuum_freeze_max_age's smallest value; slow, so the worker stays.
	// Plain autovacuum is off on the table (before the load, so that no
	// vacuum marks its pages): the only vacuum it gets is the
	// anti-wraparound one, which autovacuum_enabled does not stop.
	if _, err := env.Conn.Exec(ctx, `ALTER TABLE vec_p1 SET (autovacuum_freeze_max_age = 100000,
		autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1, autovacuum_enabled = false)`); err != nil {
		t.Fatal(err)
	}
	if err := env.W.CopyInsert(ctx, 40000, func(int) int { return 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `CREATE PROCEDURE burn_xids(n int) LANGUAGE plpgsql AS $$
		BEGIN FOR i IN 1..n LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	burn := time.Now()
	if _, err := env.Conn.Exec(ctx, `CALL burn_xids(110000)`); err != nil {
		t.Fatal(err)
	}
	t.Logf("110,000 transaction ids burnt in %v", time.Since(burn).Round(100*time.Millisecond))
	// Whoever cancels an autovacuum worker, the worker logs it.
	cancelled := func() []string {
		b, err := os.ReadFile(env.Cluster.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "canceling autovacuum task") {
				out = append(out, l)
			}
		}
		return out
	}
	worker := func() int32 {
		var pid int32
		pgtest.WaitFor(t, 60*time.Second, "an anti-wraparound autovacuum of vec_p1", func() (bool, error) {
			err := env.Conn.QueryRow(ctx, `SELECT coalesce((SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'
				AND query LIKE '%vec_p1 (to prevent wraparound)%' LIMIT 1), 0)`).Scan(&pid)
			return pid != 0, err
		})
		return pid
	}
	for _, c := range []struct {
		fraction float64
		key      string
	}{{0.8, "skipped_near_wraparound"}, {1000, "skipped_locked"}} {
		pid := worker()
		pm := healing.NewPauseMaintenance(env.Cluster.Connect(ctx, "postgres"))
		pm.WraparoundFraction = c.fraction
		pm.DrainTimeout = 10 * time.Second
		rc := &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID), Recorder: &outcomeRecorder{id: 7},
			Started: time.Now(), Timeout: time.Minute}
		res, err := pm.Execute(ctx, rc)
		if err != nil {
			t.Fatalf("fraction %v: %v", c.fraction, err)
		}
		t.Logf("fraction %v: %+v", c.fraction, res.Metadata)
		if !slices.Contains(res.Metadata[c.key].([]string), "vec_p1") || fmt.Sprint(res.Metadata["paused_tables"]) != "[vec_p0]" {
			t.Fatalf("fraction %v: metadata %v, want vec_p1 in %s and vec_p0 paused", c.fraction, res.Metadata, c.key)
		}
		time.Sleep(time.Second)
		if l := cancelled(); len(l) > 0 {
			t.Fatalf("fraction %v: an autovacuum was cancelled (the anti-wraparound one was pid %d): %q", c.fraction, pid, l)
		}
		var running bool
		if err := env.Conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1
			AND query LIKE '%vec_p1 (to prevent wraparound)%')`, pid).Scan(&running); err != nil || !running {
			t.Fatalf("fraction %v: the anti-wraparound worker %d ended during the pause, uncancelled: it must outlast it for this test to test anything (%v)",
				c.fraction, pid, err)
		}
		if err := pm.Rollback(ctx, rc); err != nil {
			t.Fatal(err)
		}
		if a, b := autovacuumEnabled(t, env.Conn, "vec_p0"), autovacuumEnabled(t, env.Conn, "vec_p1"); a != "" || b != "autovacuum_enabled=false" {
			t.Fatalf("after rollback: vec_p0 %q vec_p1 %q", a, b)
		}
	}
}
