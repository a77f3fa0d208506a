package remedy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// resume_replay refuses what it must not touch, on real standbys: one
// paused at a reached recovery target (a resume there ends recovery and
// promotes it), one whose replay is not paused, one it has no connection
// for. Each is a noop that says why, and each standby is left as it was.
func TestResumeReplayRefusesWhatItMustNotTouch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	primary := c.Connect(ctx, "postgres")
	standbys := map[string]string{}
	start := func(name string, conf ...string) *pgx.Conn {
		t.Helper()
		sb, err := workload.StartStandby(ctx, workload.StandbySpec{PrimaryHost: c.SocketDir(), PrimaryPort: c.Port,
			Dir: filepath.Join(c.Dir, name), Name: name, Conf: conf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sb.Stop(context.Background()) })
		conn, err := pgx.Connect(ctx, sb.DSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		standbys[name] = sb.DSN
		return conn
	}
	const target = "ruvector_test_target"
	targeted := start("targeted", "recovery_target_name = '"+target+"'", "recovery_target_action = 'pause'")
	plain := start("plain")
	if _, err := primary.Exec(ctx, `CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(ctx, `SELECT pg_create_restore_point($1)`, target); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(ctx, `INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	state := func(conn *pgx.Conn) (bool, string) {
		t.Helper()
		var rec bool
		var st string
		if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()`).Scan(&rec, &st); err != nil {
			t.Fatal(err)
		}
		return rec, st
	}
	pgtest.WaitFor(t, 30*time.Second, "the targeted standby paused at its target", func() (bool, error) {
		_, st := state(targeted)
		return st == "paused", nil
	})

	r := &ResumeReplay{Standbys: standbys, Dial: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, c.DSN("postgres")) }}
	if ok, why := (&ResumeReplay{}).Available(ctx); ok || !strings.Contains(why, "--standby") {
		t.Fatalf("no standbys: available %v (%q)", ok, why)
	}
	if ok, _ := r.Available(ctx); !ok {
		t.Fatal("standbys configured, yet unavailable")
	}
	run := func(names map[int64]string) strategy.Result {
		t.Helper()
		stalled := map[int64]float64{}
		for id := range names {
			stalled[id] = 200
		}
		rc := &strategy.Context{Collection: "c", CollectionID: 1, Recorder: &strategy.MemoryRecorder{},
			Problem: classify.Problem{Class: classify.ClassReplicationLag, ReplicationLag: &classify.ReplicationLag{}},
			Metrics: classify.Metrics{ReplicaNames: names, ReplicaReplayStalledSeconds: stalled}}
		p, err := r.Plan(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.Execute(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		if acts, _ := rc.Actions(); len(acts) != 0 || !res.Noop || !p.Noop || p.Reason != res.Metadata["noop_reason"] {
			t.Fatalf("result %+v, plan %+v, %d rollback records: want a noop, planned as such, nothing recorded", res, p, len(acts))
		}
		return res
	}
	res := run(map[int64]string{1: "targeted"})
	if why := res.Metadata["noop_reason"].(string); !strings.Contains(why, "targeted: a recovery target is set (recovery_target_name = '"+target+"'); resuming could end recovery") {
		t.Fatalf("targeted: %q", why)
	}
	if rec, st := state(targeted); !rec || st != "paused" {
		t.Fatalf("targeted standby in recovery %v, replay %q: want still paused in recovery", rec, st)
	}
	res = run(map[int64]string{2: "plain"})
	if why := res.Metadata["noop_reason"].(string); !strings.Contains(why, "plain: replay is not paused") {
		t.Fatalf("plain: %q", why)
	}
	if rec, st := state(plain); !rec || st != "not paused" {
		t.Fatalf("plain standby in recovery %v, replay %q: want left as it was", rec, st)
	}
	res = run(map[int64]string{3: "elsewhere", 4: ""})
	if why := res.Metadata["noop_reason"].(string); !strings.Contains(why, "elsewhere: no connection configured for it") ||
		!strings.Contains(why, "replica 4: no connection configured for it") {
		t.Fatalf("unconfigured: %q", why)
	}
}
