package healing_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// An engine whose connection was closed under it (here its backend
// terminated; in CI, pgx closed it when a bounded query's deadline passed)
// dials a new one at its next use when it has Options.Dial, and heals and
// records as before; without Dial it stays unable to record.
func TestEngineReplacesAClosedConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, v.c.DSN("postgres")) }
	evict := &fake{name: "evict", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"evicted": true}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1}, nil
		}}
	s := &sampler{}
	s.set(0.9, nil)
	with := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Dial: dial, Stabilization: time.Millisecond}, s, evict)
	without := v.engineWith(ctx, t, healing.Options{Holder: t.Name() + "-nodial", Stabilization: time.Millisecond}, s, evict)
	for _, e := range []*healing.Engine{with, without} {
		if _, err := e.Config(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Terminate every client backend but the test's own.
	if _, err := v.db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the engines' backends gone", func() (bool, error) {
		var n int
		err := v.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&n)
		return n == 0, err
	})
	// The first use of each finds its backend gone: the query fails and
	// pgx closes the connection.
	for _, e := range []*healing.Engine{with, without} {
		if _, err := e.Config(ctx); err == nil {
			t.Fatal("a query on a terminated backend succeeded")
		}
	}
	if _, err := without.Config(ctx); err == nil {
		t.Fatal("an engine without Dial read its config over a closed connection")
	}
	out, err := with.Heal(ctx, memoryPressure("emb", embID, 0.3))
	if err != nil || out.ID == 0 || out.Status != healing.StatusVerified {
		t.Fatalf("heal after the reconnect: %+v %v", out, err)
	}
	var status string
	if err := v.db.QueryRow(ctx, `SELECT metadata->>'status' FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&status); err != nil ||
		status != "verified" {
		t.Fatalf("the outcome's record: %q %v", status, err)
	}
}
