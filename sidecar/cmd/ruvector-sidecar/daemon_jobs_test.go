package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
)

// The daemon's job loop runs what SQL enqueued and keeps going after its
// connection is killed (it redials and requeues what it had claimed).
func TestDaemonRunsMaintenanceJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
SELECT ruvector_collection_create('docs', 4, 2, 4);
INSERT INTO docs (embedding) SELECT ARRAY[g, g, g, g]::real[] FROM generate_series(1, 200) g;
SELECT ruvector_maintenance_enqueue('docs', 'analyze', 100);`)
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		superviseJobs(loopCtx, func(ctx context.Context) (*pgx.Conn, error) { return dialSidecar(ctx, env.Cluster.DSN("postgres")) },
			"test-sidecar", 100*time.Millisecond, nil, zerolog.Nop())
	}()
	defer func() { stop(); <-done }()

	state := func(id int64) func() (bool, error) {
		return func() (bool, error) {
			var s string
			err := env.Conn.QueryRow(ctx, `SELECT state FROM ruvector.maintenance_jobs WHERE job_id = $1`, id).Scan(&s)
			return s == "done", err
		}
	}
	pgtest.WaitFor(t, 30*time.Second, "the analyze job to be done", state(1))

	// Kill the runner's connection; a job enqueued after must still run.
	if _, err := env.Conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'ruvector-sidecar' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := env.Conn.QueryRow(ctx, `SELECT ruvector_maintenance_enqueue('docs', 'vacuum', 100)`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "the vacuum job after a lost connection", state(id))
	var owner string
	if err := env.Conn.QueryRow(ctx, `SELECT owner FROM ruvector.maintenance_jobs WHERE job_id = $1`, id).Scan(&owner); err != nil || owner != "test-sidecar" {
		t.Fatalf("owner %q %v", owner, err)
	}
}
