package workload_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

// leafReloptions maps each partition to its sorted reloptions.
func leafReloptions(t *testing.T, env *workloadtest.Env) map[string]string {
	t.Helper()
	rows, err := env.Conn.Query(context.Background(), `SELECT p.relid::regclass::text, coalesce(c.reloptions, '{}')
		FROM pg_partition_tree($1::regclass) p JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf`, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name string
		var ro []string
		if err := rows.Scan(&name, &ro); err != nil {
			t.Fatal(err)
		}
		slices.Sort(ro)
		out[name] = strings.Join(ro, ",")
	}
	return out
}

// The storm, left alone with a real job runner for 30 s: contention made
// of autovacuum and the product's jobs appears within seconds and stays
// (it does not drain by itself, which a scorecard needs to judge a heal),
// no manual VACUUM of anyone else is involved, and Undo puts back every
// reloption, the server's naptime, the queue and every row.
func TestAutovacuumStormSustainsContentionAndUndoes(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s of storm")
	}
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "av", Dim: 8, Partitions: 4, Lists: 4, Seed: 3})
	if err := env.W.CopyInsert(ctx, 20000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ALTER TABLE av_p2 SET (autovacuum_vacuum_threshold = 7, fillfactor = 80)`); err != nil {
		t.Fatal(err)
	}
	relBefore := leafReloptions(t, env)
	var napBefore string
	if err := env.Conn.QueryRow(ctx, `SHOW autovacuum_naptime`).Scan(&napBefore); err != nil {
		t.Fatal(err)
	}

	// Bad options change nothing.
	for _, o := range []workload.AutovacOptions{{CostDelayMS: 500}, {CostLimit: -1}, {Naptime: time.Millisecond}, {Churn: -1}} {
		if _, err := env.W.AutovacuumStorm(ctx, o); err == nil {
			t.Fatalf("options %+v accepted", o)
		}
	}
	if got := leafReloptions(t, env); !maps.Equal(got, relBefore) {
		t.Fatalf("a refused storm changed reloptions: %v", got)
	}

	runCtx, stopRunner := context.WithCancel(ctx)
	runnerDone := make(chan struct{})
	go func() {
		defer close(runnerDone)
		_ = (&jobs.Runner{Conn: env.Cluster.Connect(ctx, "postgres"), Owner: "storm-test", Poll: 200 * time.Millisecond}).Run(runCtx)
	}()
	defer func() { stopRunner(); <-runnerDone }()

	start := time.Now()
	storm, err := env.W.AutovacuumStorm(ctx, workload.AutovacOptions{Naptime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := collect.NewMaintenance()
	// Sampled until contention has been seen and then for 15 s more (the
	// rest of the 30 s this test always ran when it came within 15 s), or
	// for 60 s without it: how soon the storm starts is the machine's
	// speed, not the storm's property, and a fixed 30 s window left a late
	// start too few samples to judge it sustained.
	var first time.Duration
	var samples, contended, withAutovac, manual int
	for el := time.Since(start); (first == 0 && el < 60*time.Second) || (first > 0 && el < max(30*time.Second, first+15*time.Second)); el = time.Since(start) {
		s, err := collectWith(t, env, m)
		if err != nil {
			t.Fatal(err)
		}
		var autovac bool
		for _, j := range s.Maintenance {
			autovac = autovac || strings.HasPrefix(j.Type, "auto")
			if j.Type == "vacuum" || j.Type == "analyze" {
				manual++ // a VACUUM not of the product's runner
			}
		}
		degraded := len(contendingJobs(s.Maintenance))
		if first == 0 && degraded > 0 && autovac {
			first = time.Since(start)
		}
		if first > 0 {
			samples++
			if degraded > 0 {
				contended++
			}
			if autovac {
				withAutovac++
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("contention first seen after %v; then %d of %d samples contended, %d with autovacuum visible; %d rows churned",
		first.Round(100*time.Millisecond), contended, samples, withAutovac, storm.Churned())
	if first == 0 {
		t.Fatalf("no contention with autovacuum within %v", time.Since(start).Round(time.Second))
	}
	if contended < samples*9/10 || withAutovac < samples/2 || manual != 0 {
		t.Fatalf("%d of %d samples contended, %d with autovacuum, %d with a manual vacuum: want sustained contention of autovacuum and product jobs only",
			contended, samples, withAutovac, manual)
	}
	// The runner keeps going: Undo deletes what is queued and waits for
	// the job it is running.
	rep, err := storm.Undo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("undo: %+v", rep)
	if rep.Jobs <= 40 || rep.JobsRan == 0 || rep.JobsDeleted+rep.JobsRan != rep.Jobs || rep.JobsRunning != 0 {
		t.Fatalf("jobs: %+v, want the backlog topped up as the runner ran them, and every job accounted for", rep)
	}
	if _, err := storm.Undo(ctx); err == nil {
		t.Fatal("a second undo was accepted")
	}
	if got := leafReloptions(t, env); !maps.Equal(got, relBefore) {
		t.Fatalf("reloptions after undo:\n%v\nwant\n%v", got, relBefore)
	}
	var left, failed int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('queued', 'paused', 'running')),
		count(*) FILTER (WHERE state = 'failed') FROM ruvector.maintenance_jobs`).Scan(&left, &failed); err != nil || left != 0 || failed != 0 {
		t.Fatalf("%d jobs left in the queue, %d failed (%v)", left, failed, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var nap string
		if err := env.Conn.QueryRow(ctx, `SHOW autovacuum_naptime`).Scan(&nap); err != nil {
			t.Fatal(err)
		}
		if nap == napBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("autovacuum_naptime %s after undo, want %s", nap, napBefore)
		}
		time.Sleep(100 * time.Millisecond)
	}
	chk, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !chk.TotalOK() || !chk.ShardsOK() {
		t.Fatalf("ledger after the storm: %v %v", chk, err)
	}
}

// contendingJobs are the jobs whose edge is degraded: waiting, or running
// on a relation another running job works on (health's rule).
func contendingJobs(js []health.JobSignal) []health.JobSignal {
	running := map[string]int{}
	for _, j := range js {
		if j.Running && j.Relation != "" {
			running[strings.ToLower(j.Relation)]++
		}
	}
	var out []health.JobSignal
	for _, j := range js {
		if j.WaitingFor != "" || (j.Running && j.Relation != "" && running[strings.ToLower(j.Relation)] > 1) {
			out = append(out, j)
		}
	}
	return out
}
