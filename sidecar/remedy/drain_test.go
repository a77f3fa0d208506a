package remedy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// outcomeRecorder is a MemoryRecorder that, like the engine's, knows its
// healing outcome's id.
type outcomeRecorder struct {
	strategy.MemoryRecorder
	id int64
}

func (r *outcomeRecorder) OutcomeID() int64 { return r.id }

func vecDialer(env *workloadtest.Env) Dialer {
	return func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
}

// sidecarAlive heartbeats the segment like the sidecar, for the test's
// duration: without it the watchdog puts every 'sidecar' routing weight
// back to the default.
func sidecarAlive(t *testing.T, env *workloadtest.Env) {
	t.Helper()
	ctx := context.Background()
	srv, err := instance.Discover(ctx, env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	hb := &instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}
	go func() { done <- hb.Run(hctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		seg.Close()
	})
	time.Sleep(300 * time.Millisecond)
}

func partitionRelID(t *testing.T, env *workloadtest.Env, shard int) int64 {
	t.Helper()
	var id int64
	err := env.Conn.QueryRow(context.Background(), `SELECT c.oid::int8 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass AND pg_get_expr(c.relpartbound, c.oid) = $2`,
		env.W.Table, fmt.Sprintf("FOR VALUES IN (%d)", shard)).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// routedTo inserts n rows through the routing default and counts how many
// landed on shard.
func routedTo(t *testing.T, env *workloadtest.Env, shard, n int) int {
	t.Helper()
	ctx := context.Background()
	var before, after int
	q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE shard = $1`, env.W.Table)
	if err := env.Conn.QueryRow(ctx, q, shard).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if err := env.W.InsertRouted(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := env.Conn.QueryRow(ctx, q, shard).Scan(&after); err != nil {
		t.Fatal(err)
	}
	return after - before
}

func routingState(t *testing.T, env *workloadtest.Env) string {
	t.Helper()
	var s string
	if err := env.Conn.QueryRow(context.Background(), `SELECT coalesce(string_agg(format('%s:%s:%s:%s:%s', shard, weight, set_by, outcome_id, segment_weight), ' ' ORDER BY shard), '')
		FROM ruvector.ruvector_routing_status($1)`, env.W.Name).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDrainHotPartition(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 7})
	sidecarAlive(t, env)
	hotRel := partitionRelID(t, env, 2)
	// The hot partition, made by the workload's injector.
	if _, err := env.W.HotPartition(ctx, 2, 2000, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	s := &DrainHotPartition{Dial: vecDialer(env)}
	newRC := func() *strategy.Context {
		return &strategy.Context{Collection: "vec", CollectionID: int64(env.W.ID),
			Problem: classify.Problem{Class: classify.ClassHotspotCongestion,
				HotspotCongestion: &classify.HotspotCongestion{PartitionIDs: []int64{hotRel}, LoadRatio: 3}},
			Metrics:  classify.Metrics{PartitionLoad: map[int64]float64{hotRel: 300}},
			Recorder: &outcomeRecorder{id: 4242}, Started: time.Now(), Timeout: 10 * time.Second}
	}
	// A previous sidecar weight on the shard, to show rollback restores it
	// exactly rather than to the default.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_routing_set('vec', 2, 0.5, 'sidecar', 17)`); err != nil {
		t.Fatal(err)
	}
	prior := routingState(t, env)
	if got := routedTo(t, env, 2, 400); got == 0 {
		t.Fatalf("setup: no routed row reached shard 2")
	}

	rc := newRC()
	p, err := s.Plan(ctx, rc)
	if err != nil || p.Noop || p.Steps[0].Target != "vec shard 2" {
		t.Fatalf("plan %+v, %v", p, err)
	}
	if routingState(t, env) != prior {
		t.Fatalf("the plan changed routing: %s -> %s", prior, routingState(t, env))
	}
	res, err := s.Execute(ctx, rc)
	if err != nil || !res.Success {
		t.Fatalf("execute %+v, %v", res, err)
	}
	if got := routedTo(t, env, 2, 400); got != 0 {
		t.Fatalf("%d of 400 new rows still routed to the drained shard", got)
	}
	t.Logf("drained: %s", routingState(t, env))

	// Rollback from the recorded JSON by a fresh strategy value.
	if err := (&DrainHotPartition{Dial: vecDialer(env)}).Rollback(ctx, rc); err != nil {
		t.Fatal(err)
	}
	if got := routingState(t, env); got != prior {
		t.Fatalf("after rollback\n %s\nwant\n %s", got, prior)
	}
	if got := routedTo(t, env, 2, 400); got == 0 {
		t.Fatal("rolled back, but no routed row reaches shard 2")
	}
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() || !check.ShardsOK() {
		t.Fatalf("ledger: %v %v", check, err)
	}

	t.Run("manual weight is not overridden", func(t *testing.T) {
		if _, err := env.Conn.Exec(ctx, `SELECT ruvector.ruvector_routing_set('vec', 2, 3, 'manual')`); err != nil {
			t.Fatal(err)
		}
		before := routingState(t, env)
		if _, err := s.Execute(ctx, newRC()); !errors.Is(err, ErrManualRouting) {
			t.Fatalf("want ErrManualRouting, got %v", err)
		}
		if routingState(t, env) != before {
			t.Fatal("routing changed")
		}
	})
	t.Run("no hot shard in the problem", func(t *testing.T) {
		rc := newRC()
		rc.Problem.HotspotCongestion.PartitionIDs = []int64{1}
		if _, err := s.Execute(ctx, rc); !errors.Is(err, ErrNoHotShard) {
			t.Fatalf("want ErrNoHotShard, got %v", err)
		}
	})
}
