package collect

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

func TestJobAppNamePrefixMatchesRunner(t *testing.T) {
	if JobAppNamePrefix != jobs.AppNamePrefix {
		t.Fatalf("collect %q, jobs %q: the collector would not find runner backends", JobAppNamePrefix, jobs.AppNamePrefix)
	}
}

// jobCapacity is the capacity of a job node's dependency edge in the
// health graph built from s.
func jobCapacity(t *testing.T, s health.Signals, id int64) float64 {
	t.Helper()
	g, err := health.Build(s, health.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range g.Edges {
		if e.EdgeType == classify.EdgeDependency && e.Target.Kind == classify.NodeMaintenanceDep && e.Target.ID == id {
			return e.Capacity
		}
	}
	t.Fatalf("no dependency edge of job node %d in %+v", id, g.Edges)
	return 0
}

func findJob(js []health.JobSignal, id int64) (health.JobSignal, bool) {
	for _, j := range js {
		if j.ID == id {
			return j, true
		}
	}
	return health.JobSignal{}, false
}

func enqueue(t *testing.T, conn *pgx.Conn, collection, kind, state string, priority, n int) {
	t.Helper()
	mustExec(t, conn, `INSERT INTO ruvector.maintenance_jobs (collection_id, kind, state, priority)
SELECT collection_id, $2, $3, $4 FROM ruvector.collections, generate_series(1, $5) WHERE name = $1`,
		collection, kind, state, priority, n)
}

// The product's queue of the collection: queued jobs per kind (a flood is
// degraded), paused ones without load, finished ones and other
// collections' not at all; the classifier's queue depth counts the queued.
func TestMaintenanceProductQueue(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	c.MustExec(ctx, `CREATE TABLE other (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE other_0 PARTITION OF other FOR VALUES IN (0);
SELECT ruvector.ruvector_collection_register('other', 'other');`)
	m := NewMaintenance()
	if s := mustCollect(t, m, conn, tg); len(s.Maintenance) != 0 {
		t.Fatalf("empty queue: %+v", s.Maintenance)
	}

	enqueue(t, conn, "emb", "vacuum", "queued", 10, 12)
	enqueue(t, conn, "emb", "analyze", "queued", 500, 2)
	enqueue(t, conn, "emb", "compaction", "paused", 10, 3)
	enqueue(t, conn, "emb", "autovacuum", "paused", 10, 1)
	enqueue(t, conn, "emb", "autovacuum", "queued", 10, 1) // a marker, never claimed: not work
	enqueue(t, conn, "emb", "rebalance", "done", 10, 4)
	enqueue(t, conn, "emb", "centroid_rebuild", "failed", 10, 1)
	enqueue(t, conn, "other", "vacuum", "queued", 10, 30)

	s := mustCollect(t, m, conn, tg)
	for _, j := range s.Maintenance {
		t.Logf("%+v", j)
	}
	if len(s.Maintenance) != 4 {
		t.Fatalf("%d job nodes, want 4 (vacuum, analyze queued; compaction, autovacuum paused)", len(s.Maintenance))
	}
	vac, ok := findJob(s.Maintenance, aggregateID("vacuum", "queued"))
	if !ok || vac.Type != "product:vacuum" || vac.Queued != 12 || vac.Running || vac.Relation != "emb" ||
		!strings.HasPrefix(vac.WaitingFor, "Queue: 12 queued vacuum") || vac.Priority != 0 {
		t.Fatalf("queued vacuum flood: %+v", vac)
	}
	an, ok := findJob(s.Maintenance, aggregateID("analyze", "queued"))
	if !ok || an.Queued != 2 || an.WaitingFor != "" || an.Priority != productPriority(500) || an.Priority != 30 {
		t.Fatalf("queued analyze: %+v", an)
	}
	for _, kind := range []string{"compaction", "autovacuum"} {
		p, ok := findJob(s.Maintenance, aggregateID(kind, "paused"))
		if !ok || p.Type != "product:"+kind+" (paused)" || p.Queued != 0 || p.Running || p.WaitingFor != "" {
			t.Fatalf("paused %s: %+v", kind, p)
		}
	}
	met := health.MetricsFrom(s)
	if met.MaintenanceQueueDepth != 14 {
		t.Fatalf("queue depth %d, want 12 + 2", met.MaintenanceQueueDepth)
	}
	if c := jobCapacity(t, s, vac.ID); c >= 1 {
		t.Fatalf("a flood of queued jobs has capacity %v, want degraded", c)
	}
	if c := jobCapacity(t, s, an.ID); c != 1 {
		t.Fatalf("two queued jobs have capacity %v, want 1", c)
	}

	// pause_maintenance's effect: paused, they leave the queue depth.
	mustExec(t, conn, `UPDATE ruvector.maintenance_jobs SET state = 'paused' WHERE kind = 'vacuum'`)
	s = mustCollect(t, m, conn, tg)
	if d := health.MetricsFrom(s).MaintenanceQueueDepth; d != 2 {
		t.Fatalf("after pausing the vacuums: queue depth %d, want 2", d)
	}
	if p, ok := findJob(s.Maintenance, aggregateID("vacuum", "paused")); !ok || p.Queued != 0 {
		t.Fatalf("paused vacuums: %+v", s.Maintenance)
	}
}

// Jobs queued after a pause_maintenance, no more important than a job it
// paused, are held back (the runner does not start them) and read as
// paused: a scheduler that keeps queuing does not undo the pause. Jobs
// above that level are queued load as before, and a job paused by hand
// (no paused_by) holds nothing back.
func TestMaintenanceQueueHeldByAPause(t *testing.T) {
	t.Parallel()
	_, conn, tg := startCollection(t)
	m := NewMaintenance()
	enqueue(t, conn, "emb", "vacuum", "paused", 10, 1)
	enqueue(t, conn, "emb", "vacuum", "queued", 10, 12)
	enqueue(t, conn, "emb", "analyze", "queued", 60, 11)
	s := mustCollect(t, m, conn, tg)
	if vac, ok := findJob(s.Maintenance, aggregateID("vacuum", "queued")); !ok || !strings.HasPrefix(vac.WaitingFor, "Queue: 12 queued vacuum") {
		t.Fatalf("paused by hand, it holds nothing back: %+v", s.Maintenance)
	}

	mustExec(t, conn, `UPDATE ruvector.maintenance_jobs SET paused_by = 41 WHERE state = 'paused'`)
	s = mustCollect(t, m, conn, tg)
	for _, j := range s.Maintenance {
		t.Logf("%+v", j)
	}
	if _, ok := findJob(s.Maintenance, aggregateID("vacuum", "queued")); ok {
		t.Fatalf("vacuums held back by the pause read as queued: %+v", s.Maintenance)
	}
	if p, ok := findJob(s.Maintenance, aggregateID("vacuum", "paused")); !ok || p.Queued != 0 || p.WaitingFor != "" || p.Type != "product:vacuum (paused)" {
		t.Fatalf("held vacuums: %+v", s.Maintenance)
	}
	an, ok := findJob(s.Maintenance, aggregateID("analyze", "queued"))
	if !ok || an.Queued != 11 || !strings.HasPrefix(an.WaitingFor, "Queue: 11 queued analyze") {
		t.Fatalf("analyzes above the paused level are queued load: %+v", s.Maintenance)
	}
	if d := health.MetricsFrom(s).MaintenanceQueueDepth; d != 11 {
		t.Fatalf("queue depth %d, want the 11 analyzes", d)
	}
}

// fillEmb0 gives emb_0 enough pages that a throttled VACUUM of it stays
// in its heap scan for the test's duration.
func fillEmb0(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	c.MustExec(context.Background(), `INSERT INTO emb (embedding, shard) SELECT ARRAY[g]::real[], 0 FROM generate_series(1, 20000) g`)
}

// throttle makes the session's VACUUMs crawl (100 ms per page).
func throttle(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	mustExec(t, conn, `SET vacuum_cost_delay = '100ms'`)
	mustExec(t, conn, `SET vacuum_cost_limit = 1`)
}

// A running centroid rebuild (no progress view, all partitions) next to a
// VACUUM of a partition: both degraded; alone, the rebuild is healthy.
// A runner's own VACUUM is one job, typed as the product's.
func TestMaintenanceProductJobContention(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	fillEmb0(t, c)
	enqueue(t, conn, "emb", "centroid_rebuild", "running", 100, 1)
	var rebuildID int64
	if err := conn.QueryRow(ctx, `SELECT job_id FROM ruvector.maintenance_jobs WHERE kind = 'centroid_rebuild'`).Scan(&rebuildID); err != nil {
		t.Fatal(err)
	}
	m := NewMaintenance()
	s := mustCollect(t, m, conn, tg)
	rb, ok := findJob(s.Maintenance, RunningJobID(rebuildID))
	if !ok || rb.ID >= -1 || len(s.Maintenance) != 1 || rb.Type != "product:centroid_rebuild" || !rb.Running || rb.Relation != "emb" || rb.Priority != 6 {
		t.Fatalf("running rebuild alone: %+v", s.Maintenance)
	}
	if c := jobCapacity(t, s, rb.ID); c != 1 {
		t.Fatalf("rebuild alone: capacity %v, want 1", c)
	}
	if d := health.MetricsFrom(s).MaintenanceQueueDepth; d != 1 {
		t.Fatalf("queue depth %d, want 1 (the running rebuild)", d)
	}

	vacuumer := c.Connect(ctx, "postgres")
	throttle(t, vacuumer)
	var vacPID int64
	if err := vacuumer.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&vacPID); err != nil {
		t.Fatal(err)
	}
	vacDone := make(chan error, 1)
	go func() { _, err := vacuumer.Exec(ctx, "VACUUM emb_0"); vacDone <- err }()
	pgtest.WaitFor(t, 20*time.Second, "the VACUUM and the rebuild paired", func() (bool, error) {
		var err error
		s, err = collectOnce(t, m, conn, tg)
		_, ok := findJob(s.Maintenance, vacPID)
		return ok, err
	})
	vac, _ := findJob(s.Maintenance, vacPID)
	rb, _ = findJob(s.Maintenance, RunningJobID(rebuildID))
	t.Logf("vacuum %+v, rebuild %+v", vac, rb)
	if vac.Type != "vacuum" || !vac.Running || rb.Relation != "emb_0" || !rb.Running {
		t.Fatalf("vacuum %+v, rebuild %+v: want both running on emb_0", vac, rb)
	}
	if cv, cr := jobCapacity(t, s, vac.ID), jobCapacity(t, s, rb.ID); cv >= 1 || cr >= 1 {
		t.Fatalf("contending: capacities vacuum %v, rebuild %v, want both degraded", cv, cr)
	}
	if d := health.MetricsFrom(s).MaintenanceQueueDepth; d != 2 {
		t.Fatalf("queue depth %d, want 2 running", d)
	}
	mustExec(t, conn, `SELECT pg_cancel_backend($1::int)`, vacPID)
	if err := <-vacDone; err == nil {
		t.Fatal("the cancelled VACUUM finished")
	}

	// A runner's VACUUM: the runner names its session after the job, and
	// the collector reports its backend once, as the product's vacuum.
	mustExec(t, conn, `UPDATE ruvector.maintenance_jobs SET state = 'done' WHERE job_id = $1`, rebuildID)
	enqueue(t, conn, "emb", "vacuum", "queued", 100, 1)
	rconn := c.Connect(ctx, "postgres")
	throttle(t, rconn)
	var runnerPID int64
	if err := rconn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&runnerPID); err != nil {
		t.Fatal(err)
	}
	r := &jobs.Runner{Conn: rconn, Owner: "test"}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		j   jobs.Job
		out jobs.Outcome
		err error
	}
	ran := make(chan result, 1)
	go func() { j, out, err := r.RunOne(runCtx); ran <- result{j, out, err} }()
	pgtest.WaitFor(t, 20*time.Second, "the runner's VACUUM", func() (bool, error) {
		var err error
		s, err = collectOnce(t, m, conn, tg)
		_, ok := findJob(s.Maintenance, runnerPID)
		return ok, err
	})
	for _, j := range s.Maintenance {
		t.Logf("runner: %+v", j)
	}
	rv, _ := findJob(s.Maintenance, runnerPID)
	if len(s.Maintenance) != 1 || rv.Type != "product:vacuum" || !rv.Running || rv.Priority != PriorityVacuum || !strings.HasPrefix(rv.Relation, "emb_") {
		t.Fatalf("runner's vacuum: %+v, want one running product:vacuum node (its backend)", s.Maintenance)
	}
	if d := health.MetricsFrom(s).MaintenanceQueueDepth; d != 1 {
		t.Fatalf("queue depth %d, want 1: the runner's VACUUM counted once", d)
	}
	mustExec(t, conn, `SELECT pg_cancel_backend($1::int)`, runnerPID)
	res := <-ran
	var name string
	if err := rconn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(name, jobs.AppNamePrefix) {
		t.Fatalf("after the job (%v, %v) the runner's session is still named %q", res.out, res.err, name)
	}
}

// A paused job whose runner is still in its step's statement (the pause
// takes effect at the step's end) is the product's job, pausing: its
// backend is one node typed "product:vacuum (pausing)", not a manual
// VACUUM of someone else's, next to the paused aggregate.
func TestMaintenancePausingJobIsTheProducts(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	fillEmb0(t, c)
	enqueue(t, conn, "emb", "vacuum", "queued", 10, 1)
	rconn := c.Connect(ctx, "postgres")
	throttle(t, rconn)
	var runnerPID int64
	if err := rconn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&runnerPID); err != nil {
		t.Fatal(err)
	}
	r := &jobs.Runner{Conn: rconn, Owner: "test"}
	type result struct {
		out jobs.Outcome
		err error
	}
	ran := make(chan result, 1)
	go func() { _, out, err := r.RunOne(ctx); ran <- result{out, err} }()
	m := NewMaintenance()
	var s health.Signals
	pgtest.WaitFor(t, 20*time.Second, "the runner's VACUUM", func() (bool, error) {
		var err error
		s, err = collectOnce(t, m, conn, tg)
		_, ok := findJob(s.Maintenance, runnerPID)
		return ok, err
	})
	mustExec(t, conn, `UPDATE ruvector.maintenance_jobs SET state = 'paused', paused_by = 1 WHERE kind = 'vacuum'`)
	s = mustCollect(t, m, conn, tg)
	for _, j := range s.Maintenance {
		t.Logf("pausing: %+v", j)
	}
	rv, ok := findJob(s.Maintenance, runnerPID)
	if !ok || rv.Type != "product:vacuum (pausing)" || !rv.Running || len(s.Maintenance) != 2 {
		t.Fatalf("jobs %+v: want the runner's backend as product:vacuum (pausing) and the paused aggregate", s.Maintenance)
	}
	var aggregate bool
	for _, j := range s.Maintenance {
		aggregate = aggregate || (j.Type == "product:vacuum (paused)" && !j.Running && j.WaitingFor == "")
	}
	if !aggregate {
		t.Fatalf("jobs %+v: no paused aggregate", s.Maintenance)
	}
	// Its statement cut short, the runner leaves the job paused: stopped,
	// not failed.
	mustExec(t, conn, `SELECT pg_cancel_backend($1::int)`, runnerPID)
	if res := <-ran; res.out != jobs.Stopped || res.err != nil {
		t.Fatalf("runner: %v %v, want stopped", res.out, res.err)
	}
	var state string
	if err := conn.QueryRow(ctx, `SELECT state FROM ruvector.maintenance_jobs WHERE kind = 'vacuum'`).Scan(&state); err != nil || state != "paused" {
		t.Fatalf("job %s (%v), want paused", state, err)
	}
}
