package collect

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

func lsn(v int64) *int64 { return &v }

// The stall rule on a stepped clock (5 s cadence, so a 10 s bar): replay
// that moves is never stalled; replay that stays put with WAL waiting is
// stalled once the WAL has waited 10 s, not before; an idle caught-up
// standby whose replay_lsn has not moved for minutes is not stalled the
// moment new WAL arrives; a walsender that is not streaming is not.
func TestReplicasReplayStallRule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	r := &Replicas{now: func() time.Time { return now }}
	sample := func(state string, replay, flush int64) health.ReplicaSignal {
		ws := []health.ReplicaSignal{{ID: 7, Name: "standby", State: state}}
		r.trackReplay(ws, []replayPos{{replay: lsn(replay), flush: lsn(flush)}}, r.clock())
		return ws[0]
	}
	step := func(d time.Duration) { now = now.Add(d) }

	// Slow: replay moves 1000 bytes per 5 s while flush is far ahead.
	var rs health.ReplicaSignal
	for i := int64(0); i < 6; i++ {
		if i > 0 {
			step(5 * time.Second)
		}
		rs = sample("streaming", 1000*i, 1_000_000)
		if rs.ReplayStalled {
			t.Fatalf("sample %d: a replica whose replay moves is stalled: %+v", i, rs)
		}
	}
	if rs.ReplayBytesPerSec != 200 {
		t.Fatalf("replay rate %v, want 200 B/s", rs.ReplayBytesPerSec)
	}
	// Back-to-back calls (one per collection) keep the rate.
	if rs = sample("streaming", 5000, 1_000_000); rs.ReplayBytesPerSec != 200 {
		t.Fatalf("rate over a zero interval: %v, want the last one (200)", rs.ReplayBytesPerSec)
	}

	// Stalled: replay stays at 5000 with WAL waiting.
	for _, d := range []time.Duration{5 * time.Second, 4 * time.Second} {
		step(d)
		if rs = sample("streaming", 5000, 2_000_000); rs.ReplayStalled {
			t.Fatalf("stalled after %vs, before the 10 s bar: %+v", rs.ReplayStalledSeconds, rs)
		}
	}
	step(time.Second)
	if rs = sample("streaming", 5000, 2_000_000); !rs.ReplayStalled || rs.ReplayStalledSeconds != 10 || rs.ReplayBytesPerSec != 0 {
		t.Fatalf("replay still for 10 s with WAL waiting: %+v, want stalled for 10 s at 0 B/s", rs)
	}
	// Not streaming: not reported as a replay stall (it is Broken instead).
	if rs = sample("catchup", 5000, 2_000_000); rs.ReplayStalled {
		t.Fatalf("catchup walsender read as stalled: %+v", rs)
	}
	// Replay resumes: the stall clears at once.
	step(5 * time.Second)
	if rs = sample("streaming", 9000, 2_000_000); rs.ReplayStalled || rs.ReplayStalledSeconds != 0 {
		t.Fatalf("replay moved but still stalled: %+v", rs)
	}

	// Idle and caught up for a minute, then WAL arrives: the clock starts
	// with the waiting WAL.
	sample("streaming", 2_000_000, 2_000_000)
	step(time.Minute)
	sample("streaming", 2_000_000, 2_000_000)
	step(time.Second)
	if rs = sample("streaming", 2_000_000, 2_000_100); rs.ReplayStalled || rs.ReplayStalledSeconds != 0 {
		t.Fatalf("an idle standby read as stalled when WAL arrived: %+v", rs)
	}

	// A replica that went away is forgotten.
	r.trackReplay(nil, nil, now)
	if len(r.replay) != 0 {
		t.Fatalf("gone replica still tracked: %+v", r.replay)
	}
}

// A real standby (pg_basebackup on loopback): streaming under writes it is
// never stalled; with replay paused (pg_wal_replay_pause) it reads as
// stalled once its received WAL has waited StallAfter, and replay resumed
// clears it.
func TestReplicasReplayStalledRealStandby(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb, err := workload.StartStandby(ctx, workload.StandbySpec{PrimaryHost: c.SocketDir(), PrimaryPort: c.Port,
		Dir: filepath.Join(c.Dir, "stall_standby"), Name: "stall_standby"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	// Short bar and cadence so the test takes seconds; the rule is the same.
	r := &Replicas{Interval: time.Second, StallAfter: 3 * time.Second}
	writer := c.Connect(ctx, "postgres")
	write := func() {
		mustExec(t, writer, "INSERT INTO emb (embedding, shard) SELECT '{1,2,3,4}', 0 FROM generate_series(1, 200)")
	}
	var rs health.ReplicaSignal
	pgtest.WaitFor(t, 15*time.Second, "the standby streaming", func() (bool, error) {
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "stall_standby")
		return rs.State == "streaming", err
	})
	// Healthy under writes for longer than the bar: never stalled.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		write()
		s, err := collectOnce(t, r, conn, tg)
		if err != nil {
			t.Fatal(err)
		}
		if rs, _ = replica(s, "stall_standby"); rs.ReplayStalled {
			t.Fatalf("a replaying standby read as stalled: %+v", rs)
		}
	}
	t.Logf("replaying: %+v", rs)

	resume, err := workload.LaggingReplica(ctx, sb.DSN)
	if err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	pgtest.WaitFor(t, 30*time.Second, "the paused standby read as stalled", func() (bool, error) {
		write()
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "stall_standby")
		return rs.ReplayStalled, err
	})
	if took := time.Since(pausedAt); took < 3*time.Second || rs.ReplayStalledSeconds < 3 || rs.Broken || rs.LagBytes == 0 {
		t.Fatalf("stalled after %v: %+v; want at least the 3 s bar, streaming, with a byte lag", took, rs)
	}
	t.Logf("paused: %+v", rs)

	if err := resume(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 15*time.Second, "the stall clearing after resume", func() (bool, error) {
		write()
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "stall_standby")
		return !rs.ReplayStalled, err
	})
	t.Logf("resumed: %+v", rs)
}
