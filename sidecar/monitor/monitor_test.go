package monitor_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// A fast policy so the tests see transitions in seconds.
const policySQL = `
SELECT ruvector_integrity_policy_set('emb', 'test',
  '{"degrade_samples": 3, "critical_samples": 2, "restore_hold_seconds": 2, "cooldown_after_transition_seconds": 1}');
`

// The whole sensor on a real server: real collectors, the exact cut, the
// state machine, the segment and the catalog. A balanced load reads
// normal; a load concentrated on one shard is a hotspot that moves the
// state to stress with the partitions as witness edges; balance restores
// normal after the hold.
func TestMonitorDetectsHotspotOnRealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 8, policySQL)
	c, conn, srv, seg, target := env.Cluster, env.Conn, env.Server, env.Segment, env.Target

	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go (&instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}).Run(hbCtx)

	collConn := c.Connect(ctx, "postgres")
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	gw := collect.NewGateway(seg)
	runner := collect.NewRunner(collConn, []collect.Target{target}, []collect.Collector{parts, gw}, collect.RunnerOptions{})
	dbConn := c.Connect(ctx, "postgres")
	transitions := make(chan integrity.Transition, 16)
	mon, err := monitor.New(monitor.Config{Sample: 250 * time.Millisecond, Warmup: 5 * time.Second, PolicyEvery: time.Second},
		dbConn, seg, runner, srv.DatabaseOID, []collect.Target{target}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	mon.OnTransition = func(_ *monitor.Collection, tr integrity.Transition, _ health.Cut) { transitions <- tr }
	loopCtx, stopLoop := context.WithCancel(ctx)
	var loops sync.WaitGroup
	// Defers run before the harness's cleanups close the connections.
	defer func() { stopLoop(); loops.Wait() }()
	loops.Add(2)
	go func() { defer loops.Done(); runner.Run(loopCtx) }()
	go func() { defer loops.Done(); mon.Run(loopCtx) }()

	// A writer whose shard choice the test steers.
	hot := make(chan bool, 1)
	hot <- false
	writer := c.Connect(ctx, "postgres")
	writerDone := make(chan struct{})
	// Stop the writer before the harness closes its connection.
	defer func() { stopLoop(); <-writerDone }()
	go func() {
		defer close(writerDone)
		isHot := false
		for loopCtx.Err() == nil {
			select {
			case isHot = <-hot:
			default:
			}
			sql := "INSERT INTO emb (embedding, shard) SELECT '{1,2}', g % 8 FROM generate_series(1, 400) g"
			if isHot {
				sql = "INSERT INTO emb (embedding, shard) SELECT '{1,2}', g % 4 FROM generate_series(1, 400) g"
			}
			if _, err := writer.Exec(loopCtx, sql); err != nil {
				return
			}
			_, _ = writer.Exec(loopCtx, "SELECT pg_stat_force_next_flush()")
			time.Sleep(100 * time.Millisecond)
		}
	}()

	waitState := func(want integrity.State, within time.Duration) integrity.Transition {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case tr := <-transitions:
				if tr.To == want {
					return tr
				}
			case <-deadline:
				in, _ := readStatus(ctx, conn)
				t.Fatalf("state %s not reached within %v; status %s", integrity.StateName(want), within, in)
			}
		}
	}
	waitState(shmproto.StateNormal, 40*time.Second)
	var state string
	var lambda float64
	if err := conn.QueryRow(ctx, `SELECT s->>'state', (s->>'lambda_cut')::float8 FROM ruvector_integrity_status('emb') s`).Scan(&state, &lambda); err != nil {
		t.Fatal(err)
	}
	if state != "normal" || lambda < 0.8 {
		t.Fatalf("balanced load: state %s λ %.3f", state, lambda)
	}

	// Half of the shards take all the writes. (One hot shard out of eight
	// lowers the partition bundle's mean capacity only to ~0.88: the
	// bundle model sees a lone hot partition as an imbalance, not stress.)
	hot <- true
	tr := waitState(shmproto.StateStress, 60*time.Second)
	if tr.Lambda >= 0.8 {
		t.Fatalf("stress with λ %.3f", tr.Lambda)
	}
	var prev, next, class string
	var witness int
	var edges json.RawMessage
	err = conn.QueryRow(ctx, `SELECT previous_state, new_state, witness_edge_count, metadata->'witness_edges', metadata->>'classified_as'
		FROM ruvector_integrity_history('emb', 'state_transition') ORDER BY id DESC LIMIT 1`).Scan(&prev, &next, &witness, &edges, &class)
	if err != nil {
		t.Fatal(err)
	}
	if prev != "normal" || next != "stress" || witness <= 3 || class != "hotspot_congestion" {
		rows, _ := conn.Query(ctx, `SELECT previous_state || ' -> ' || new_state || ' ' || coalesce(metadata->>'reason', '') || ' ' || coalesce(metadata->>'unknown_kinds', '') FROM ruvector_integrity_history('emb', 'state_transition') ORDER BY id`)
		hist, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		t.Logf("history: %q", hist)
		for _, st := range runner.Stats() {
			t.Logf("collector %s: ok %d err %d warm %d last error %q", st.Name, st.Successes, st.Errors, st.Warmups, st.LastError)
		}
		t.Fatalf("hotspot event: %s -> %s, %d witness edges, classified %q", prev, next, witness, class)
	}
	if !strings.Contains(string(edges), `"partition_link"`) {
		t.Fatalf("witness edges of a hotspot: %s", edges)
	}
	// The segment says the same as SQL, with no SQL.
	col, err := seg.Find("emb", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	in, err := seg.ReadIntegrity(col.Slot)
	if err != nil || in.State != shmproto.StateStress || in.Lambda >= 0.8 {
		t.Fatalf("segment during the hotspot: %+v %v", in, err)
	}
	var nodes int
	if err := conn.QueryRow(ctx, `SELECT (ruvector_contracted_graph('emb')->>'node_count')::int`).Scan(&nodes); err != nil || nodes < 10 {
		t.Fatalf("contracted graph has %d nodes (%v)", nodes, err)
	}

	hot <- false
	waitState(shmproto.StateNormal, 60*time.Second)
}

func readStatus(ctx context.Context, conn *pgx.Conn) (string, error) {
	var s string
	err := conn.QueryRow(ctx, `SELECT ruvector_integrity_status('emb')::text`).Scan(&s)
	return s, err
}

// A server restart replaces the segment and drops every connection: the
// loop keeps publishing into the new segment and, once it has redialled,
// records events again.
func TestMonitorSurvivesServerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 8, policySQL)
	c, srv, seg, target := env.Cluster, env.Server, env.Segment, env.Target
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, c.DSN("postgres")) }

	loopCtx, stopLoop := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer func() { stopLoop(); loops.Wait() }()
	collConn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dbConn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	runner := collect.NewRunner(collConn, []collect.Target{target}, []collect.Collector{parts, collect.NewGateway(seg)},
		collect.RunnerOptions{Redial: func(ctx context.Context) (collect.Querier, error) { return dial(ctx) }})
	mon, err := monitor.New(monitor.Config{Sample: 250 * time.Millisecond, Warmup: 5 * time.Second, PolicyEvery: 500 * time.Millisecond,
		Redial: func(ctx context.Context) (monitor.DB, error) { return dial(ctx) }},
		dbConn, seg, runner, srv.DatabaseOID, []collect.Target{target}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	loops.Add(3)
	go func() {
		defer loops.Done()
		(&instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}).Run(loopCtx)
	}()
	go func() { defer loops.Done(); runner.Run(loopCtx) }()
	go func() { defer loops.Done(); defer mon.Close(context.Background()); mon.Run(loopCtx) }()

	segState := func() shmproto.State {
		col, err := seg.Find("emb", srv.DatabaseOID)
		if err != nil {
			return shmproto.StateUnknown
		}
		in, err := seg.ReadIntegrity(col.Slot)
		if err != nil {
			return shmproto.StateUnknown
		}
		return in.State
	}
	pgtest.WaitFor(t, 30*time.Second, "normal before the restart", func() (bool, error) { return segState() == shmproto.StateNormal, nil })
	before, _ := seg.Info()

	c.Restart("fast")
	pgtest.WaitFor(t, 30*time.Second, "normal in the new segment", func() (bool, error) {
		in, _ := seg.Info()
		return in.Generation > before.Generation && segState() == shmproto.StateNormal, nil
	})
	// An override set after the restart reaches the loop (policies are read
	// over the redialled connection) and its transition is recorded there.
	admin := c.Connect(ctx, "postgres")
	if _, err := admin.Exec(ctx, `SELECT ruvector_integrity_override('emb', 'critical', 'restart test', 60)`); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "the override's transition recorded after the restart", func() (bool, error) {
		var n int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM ruvector_integrity_history('emb', 'state_transition') WHERE new_state = 'critical'`).Scan(&n)
		return n == 1 && segState() == shmproto.StateCritical, err
	})
}
