package healing_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// contending lists the maintenance jobs that degrade their edge: waiting
// (on a lock, or a queued flood) or running on a relation another running
// job works on. The same rule as health's job capacities.
func contending(js []health.JobSignal) []string {
	running := map[string]int{}
	for _, j := range js {
		if j.Running && j.Relation != "" {
			running[strings.ToLower(j.Relation)]++
		}
	}
	var out []string
	for _, j := range js {
		if j.WaitingFor != "" || (j.Running && j.Relation != "" && running[strings.ToLower(j.Relation)] > 1) {
			out = append(out, fmt.Sprintf("%s on %s (%s)", j.Type, j.Relation, j.WaitingFor))
		}
	}
	return out
}

// pause_maintenance through the real engine against contention the
// product is entitled to pause: autovacuum made continuous and slow on the
// collection's partitions and a flood of the product's own low-priority
// jobs run by the real job runner. The real monitor's λ drops with the
// maintenance contention witnessed, the engine (Heal: classification and
// selection, not a named strategy) pauses, the contention clears and λ
// rises while the storm is still in place; then the pause is rolled back
// and the storm undone, and every reloption, job and row is as before.
func TestPauseMaintenanceRaisesMonitorLambda(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of real load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 31})
	if err := env.W.CopyInsert(ctx, 20000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `VACUUM ANALYZE `+env.W.Table); err != nil {
		t.Fatal(err)
	}
	reloptions := func() map[string]string {
		rows, err := env.Conn.Query(ctx, `SELECT p.relid::regclass::text, coalesce(c.reloptions, '{}')
			FROM pg_partition_tree($1::regclass) p JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf ORDER BY 1`, env.W.Table)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for rows.Next() {
			var name string
			var ro []string
			if err := rows.Scan(&name, &ro); err != nil {
				t.Fatal(err)
			}
			slices.Sort(ro) // ALTER TABLE keeps a set; its order follows the edits
			out[name] = strings.Join(ro, ",")
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		return out
	}
	naptime := func() string {
		var s string
		if err := env.Conn.QueryRow(ctx, `SELECT current_setting('autovacuum_naptime')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A table option of the operator's own, which the storm sets too and
	// must put back as it was.
	if _, err := env.Conn.Exec(ctx, `ALTER TABLE vec_p1 SET (autovacuum_vacuum_cost_limit = 500, fillfactor = 90)`); err != nil {
		t.Fatal(err)
	}
	relBefore, napBefore := reloptions(), naptime()

	h := openLambdaRig(t, ctx, env, env.Conn, "vec")
	defer h.stop()
	maint := collect.NewMaintenance()
	maint.Interval = time.Second
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	h.start(ctx, maint, parts, collect.NewGateway(h.seg))

	// The product's job runner, as the daemon's --jobs runs it.
	runCtx, stopRunner := context.WithCancel(h.ctx)
	runnerDone := make(chan struct{})
	go func() {
		defer close(runnerDone)
		_ = (&jobs.Runner{Conn: env.Cluster.Connect(ctx, "postgres"), Owner: "lambda-test", Poll: 200 * time.Millisecond}).Run(runCtx)
	}()
	defer func() { stopRunner(); <-runnerDone }()

	var before monitor.Snapshot
	pgtest.WaitFor(t, 30*time.Second, "a first λ", func() (bool, error) {
		before, _ = h.current()
		return before.LambdaNorm > 0, nil
	})
	time.Sleep(3 * time.Second)
	before, sig := h.current()
	t.Logf("before: state %s λ %.3f, %d maintenance jobs", integrity.StateName(before.State), before.LambdaNorm, len(sig.Maintenance))

	injected := time.Now()
	storm, err := env.W.AutovacuumStorm(ctx, workload.AutovacOptions{Naptime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	undone := false
	defer func() {
		if !undone {
			_, _ = storm.Undo(context.Background())
		}
	}()
	thresholds := classify.DefaultThresholds()
	var fault monitor.Snapshot
	var tr healing.Trigger
	var visible time.Duration
	pgtest.WaitFor(t, 120*time.Second, "maintenance contention witnessed with λ down and the state degraded", func() (bool, error) {
		fault, sig = h.current()
		tr = h.trigger(fault, sig)
		d := classify.Classify(tr.Witness, tr.Metrics, thresholds)
		var autovac bool
		for _, j := range sig.Maintenance {
			autovac = autovac || j.Type == "autovacuum"
		}
		witnessed := d.Problem.Class == classify.ClassMaintenanceContention && autovac && fault.LambdaNorm < 0.9*before.LambdaNorm
		if witnessed && visible == 0 {
			visible = time.Since(injected)
		}
		// The monitor has declared it (its hysteresis, and the default
		// policy's cooldown after its first transition at start), as the
		// daemon's trigger needs.
		return witnessed && fault.State != integrity.Normal, nil
	})
	declared := time.Since(injected)
	t.Logf("fault witnessed after %v, declared after %v: state %s λ %.3f, witness %d edges; contending: %v",
		visible.Round(100*time.Millisecond), declared.Round(100*time.Millisecond),
		integrity.StateName(fault.State), fault.LambdaNorm, len(fault.Cut.Witness), contending(sig.Maintenance))
	for _, j := range sig.Maintenance {
		t.Logf("  job %+v", j)
	}

	// Stabilisation: two maintenance-collector periods and a sample.
	e := h.engine(ctx, healing.NewPauseMaintenance(env.Cluster.Connect(ctx, "postgres")),
		healing.Options{Holder: "lambda-test", Stabilization: 2*maint.Interval + 500*time.Millisecond})
	paused := time.Now()
	out, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	toVerified := time.Since(paused)
	after, sig := h.current()
	t.Logf("outcome %d: %s (%s) %s class %s λ %.3f → %.3f verified=%v rolled_back=%v in %v; result %v",
		out.ID, out.Status, out.Reason, out.Strategy, out.Decision.Problem.Class, out.InitialLambda, out.FinalLambda,
		out.Verified, out.RolledBack, toVerified.Round(100*time.Millisecond), out.Result.Metadata)
	if out.Strategy != "pause_maintenance" || out.Status != healing.StatusVerified || out.RolledBack || out.FinalLambda < 1.1*out.InitialLambda {
		t.Fatalf("want pause_maintenance verified with λ up ≥ 10%%: %s %s, λ %.3f → %.3f, error %q",
			out.Strategy, out.Status, out.InitialLambda, out.FinalLambda, out.Error)
	}
	// The storm is still in place: its churn runs and its reloptions hold.
	churned := storm.Churned()
	if c := contending(sig.Maintenance); len(c) != 0 {
		t.Fatalf("after the pause, jobs still contend: %v", c)
	}
	for _, j := range sig.Maintenance {
		t.Logf("  after: job %+v", j)
	}
	t.Logf("after: state %s λ %.3f (monitor)", integrity.StateName(after.State), after.LambdaNorm)
	during := reloptions()
	for rel, ro := range during {
		if !strings.Contains(ro, "autovacuum_vacuum_cost_delay=100") || !strings.Contains(ro, "autovacuum_enabled=false") {
			t.Fatalf("during the pause %s has %q: want the storm's options and autovacuum off", rel, ro)
		}
	}
	// Polled, not judged after a fixed second: a loaded machine can take
	// longer than that for one round of churn; a stopped churn never moves.
	pgtest.WaitFor(t, 30*time.Second, "the storm's churn to go on during the pause", func() (bool, error) {
		return storm.Churned() > churned || storm.Err() != nil, nil
	})
	if storm.Err() != nil {
		t.Fatalf("the storm's churn stopped (%d rows, then %d; %v)", churned, storm.Churned(), storm.Err())
	}
	var autovacRunning int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_progress_vacuum v JOIN pg_partition_tree($1::regclass) p ON p.relid = v.relid`,
		env.W.Table).Scan(&autovacRunning); err != nil || autovacRunning != 0 {
		t.Fatalf("vacuums on the collection during the pause: %d (%v)", autovacRunning, err)
	}

	// The jobs as the pause left them; the runner stops so that the
	// rollback's effect is not mixed with its claims.
	stopRunner()
	<-runnerDone
	type jobRow struct {
		state    string
		pausedBy *int64
		progress float64
	}
	jobStates := func() map[int64]jobRow {
		rows, err := env.Conn.Query(ctx, `SELECT job_id, state, paused_by, progress::float8 FROM ruvector.maintenance_jobs WHERE job_id = ANY($1)`, storm.JobIDs())
		if err != nil {
			t.Fatal(err)
		}
		m := map[int64]jobRow{}
		for rows.Next() {
			var id int64
			var r jobRow
			if err := rows.Scan(&id, &r.state, &r.pausedBy, &r.progress); err != nil {
				t.Fatal(err)
			}
			m[id] = r
		}
		return m
	}
	var actions []struct {
		Kind      string `json:"kind"`
		JobID     int64  `json:"job_id"`
		PrevState string `json:"prev_state"`
	}
	if err := env.Conn.QueryRow(ctx, `SELECT metadata->'actions' FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&actions); err != nil {
		t.Fatal(err)
	}
	prev := map[int64]string{}
	for _, a := range actions {
		if a.Kind == "job" {
			prev[a.JobID] = a.PrevState
		}
	}
	atPause := jobStates()
	var pausedIDs []int64
	for id, r := range atPause {
		if r.state == "paused" {
			pausedIDs = append(pausedIDs, id)
			if r.pausedBy == nil || *r.pausedBy != out.ID || prev[id] == "" {
				t.Fatalf("job %d paused by %v, recorded previous state %q: want paused by outcome %d", id, r.pausedBy, prev[id], out.ID)
			}
		}
	}
	sort.Slice(pausedIDs, func(i, j int) bool { return pausedIDs[i] < pausedIDs[j] })
	if len(pausedIDs) < 10 {
		t.Fatalf("%d of the storm's jobs paused: want the flood paused", len(pausedIDs))
	}

	rb, err := e.RollbackOutcome(ctx, "vec", int64(env.W.ID), out.ID)
	if err != nil {
		t.Fatal(err)
	}
	afterRollback := jobStates()
	for _, id := range pausedIDs {
		r := afterRollback[id]
		// A job that was running resumes through the queue (its runner let
		// go of it): the runner claims it again at its checkpoint.
		want := prev[id]
		if want == "running" {
			want = "queued"
		}
		if r.state != want || r.pausedBy != nil || r.progress != atPause[id].progress {
			t.Fatalf("job %d after rollback %d: %s paused_by %v progress %v, want %s (was %s) with progress %v",
				id, rb, r.state, r.pausedBy, r.progress, want, prev[id], atPause[id].progress)
		}
	}
	var failed int
	for _, r := range afterRollback {
		if r.state == "failed" {
			failed++
		}
	}
	if len(afterRollback) != len(storm.JobIDs()) || failed != 0 {
		t.Fatalf("%d of the storm's %d jobs left, %d failed", len(afterRollback), len(storm.JobIDs()), failed)
	}
	rep, err := storm.Undo(ctx)
	undone = true
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("undo: %+v; %d jobs paused and resumed", rep, len(pausedIDs))
	if rep.JobsDeleted+rep.JobsRan != rep.Jobs || rep.Jobs != len(storm.JobIDs()) || rep.JobsRunning != 0 {
		t.Fatalf("storm jobs: %+v of %d", rep, len(storm.JobIDs()))
	}
	if got := reloptions(); !maps.Equal(got, relBefore) {
		t.Fatalf("reloptions after rollback and undo:\n%v\nwant\n%v", got, relBefore)
	}
	pgtest.WaitFor(t, 10*time.Second, "autovacuum_naptime restored", func() (bool, error) { return naptime() == napBefore, nil })
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() || !check.ShardsOK() {
		t.Fatalf("ledger after the storm: %v %v", check, err)
	}
	var left int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.maintenance_jobs WHERE state IN ('queued', 'paused', 'running')`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d jobs left in the queue (%v)", left, err)
	}
	t.Logf("MEASURED λ before %.3f, in the fault %.3f (engine's initial %.3f), after the pause %.3f (monitor %.3f); contention in λ %v after injection, state degraded after %v; pause to verified %v",
		before.LambdaNorm, fault.LambdaNorm, out.InitialLambda, out.FinalLambda, after.LambdaNorm,
		visible.Round(100*time.Millisecond), declared.Round(100*time.Millisecond), toVerified.Round(100*time.Millisecond))
}
