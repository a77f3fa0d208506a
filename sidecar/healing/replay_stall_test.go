package healing_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Replication lag on a real standby (pg_basebackup on loopback) whose
// replay is paused: the replicas collector reads it as stalled, and the
// engine takes no remediation (no outcome row, no throttle in the segment)
// but hands the collection to a person with the reason; once replay is
// resumed the stall clears and the engine acts on replication lag as
// before.
func TestEngineHandsOverStalledReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, _ := startEnv(ctx, t)
	c := v.c
	coll, err := v.seg.Find("emb", v.srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}

	sb, err := workload.StartStandby(ctx, workload.StandbySpec{PrimaryHost: c.SocketDir(), PrimaryPort: c.Port,
		Dir: filepath.Join(c.Dir, "standby"), Name: "stall_standby"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })

	// An 8 s bar instead of the default 10 s keeps the test short, and
	// leaves the state before the judgement (standing still for 1 s or
	// more, not yet stalled) a window of 7 s to be sampled in: with a 3 s
	// bar it was 2 s, less than a sample (an insert and a collection) can
	// take on a loaded machine, and once missed it never came back.
	const stallAfter = 8 * time.Second
	probe := newReplicaProbe(ctx, t, c, "stall_standby", stallAfter)
	sample := probe.sample
	trigger := func(s health.Signals, r health.ReplicaSignal) healing.Trigger { return probe.trigger(s, r, true) }
	outcomes := func() int {
		var n int
		if err := v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	probe.waitStreaming()

	throttle := healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID}
	s := &sampler{}
	s.set(0.3, nil) // λ never improves: an attempt is unverified and rolled back
	e := v.engine(ctx, t, s, throttle)

	resume, err := workload.LaggingReplica(ctx, sb.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var sig health.Signals
	var rs health.ReplicaSignal
	// Before the stall judgement: replay has stood still for a second or
	// more, not yet the bar. The engine waits rather than act.
	pgtest.WaitFor(t, 30*time.Second, "replay standing still, not yet stalled", func() (bool, error) {
		sig, rs = sample()
		return !rs.ReplayStalled && rs.ReplayStalledSeconds >= 1, nil
	})
	tr := trigger(sig, rs)
	if got := tr.Metrics.ReplicaReplayWaitingSeconds[rs.ID]; got < 1 || len(tr.Metrics.ReplicaReplayStalledSeconds) != 0 {
		t.Fatalf("metrics carry waiting seconds %v for replica %d, want >= 1 and no stall yet: %+v", got, rs.ID, tr.Metrics)
	}
	out, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standing still: %s: %s", out.Status, out.Reason)
	if out.Status != healing.StatusDeferred || out.ID != 0 ||
		!strings.HasPrefix(out.Reason, "replay not moving on stall_standby: replay_lsn has not moved for ") ||
		!strings.Contains(out.Reason, "waiting for the stall judgement before acting") {
		t.Fatalf("replay standing still: outcome %+v", out)
	}
	if n := outcomes(); n != 0 {
		t.Fatalf("%d outcome rows while waiting for the stall judgement, want none", n)
	}
	pgtest.WaitFor(t, 30*time.Second, "replay stalled", func() (bool, error) {
		sig, rs = sample()
		return rs.ReplayStalled, nil
	})
	t.Logf("paused: %+v", rs)
	tr = trigger(sig, rs)
	if got := tr.Metrics.ReplicaReplayStalledSeconds[rs.ID]; got < stallAfter.Seconds() {
		t.Fatalf("metrics carry stalled seconds %v for replica %d, want >= %v: %+v", got, rs.ID, stallAfter.Seconds(), tr.Metrics)
	}

	out, err = e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stalled: %s: %s", out.Status, out.Reason)
	if out.Status != healing.StatusDeferred || out.ID != 0 || out.Strategy != "" ||
		out.Decision.Problem.Class != classify.ClassReplicationLag ||
		!strings.HasPrefix(out.Reason, "replay stalled on stall_standby: replay_lsn has not moved for ") ||
		!strings.Contains(out.Reason, "s while WAL is received; reducing WAL on the primary cannot help; needs a person (pg_wal_replay_resume, or a blocking query on the standby)") {
		t.Fatalf("stalled replay: outcome %+v", out)
	}
	if !slices.Contains(out.Decision.Notes, out.Reason) || !strings.Contains(out.Decision.Explain(), "replay stalled on stall_standby") {
		t.Fatalf("the decision's explanation lacks the hand-over: %s", out.Decision.Explain())
	}
	if n := outcomes(); n != 0 {
		t.Fatalf("%d outcome rows after a hand-over, want none (nothing was attempted)", n)
	}
	if th := v.throttle(t, coll.Slot, shmproto.OpInsert); th.Pct != 0 {
		t.Fatalf("insert throttle %+v after a hand-over, want none", th)
	}

	// Resumed: the stall clears, and replication lag is healed as before.
	if err := resume(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 15*time.Second, "the stall clearing", func() (bool, error) {
		sig, rs = sample()
		return !rs.ReplayStalled, nil
	})
	t.Logf("resumed: %+v", rs)
	tr = trigger(sig, rs)
	if len(tr.Metrics.ReplicaReplayStalledSeconds) != 0 {
		t.Fatalf("metrics still carry a stall: %+v", tr.Metrics)
	}
	out, err = e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replaying: %s (%s): %s", out.Status, out.Strategy, out.Reason)
	if out.Strategy != "throttle_ingestion" || out.ID == 0 || out.Status != healing.StatusUnverified || !out.RolledBack {
		t.Fatalf("replaying standby: outcome %+v, want throttle_ingestion executed (unverified at a flat λ, rolled back)", out)
	}
	if n := outcomes(); n != 1 {
		t.Fatalf("%d outcome rows, want the one attempt", n)
	}
}
