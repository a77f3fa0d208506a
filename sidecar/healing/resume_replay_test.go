package healing_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/remedy"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// lagSampler reads λ from the standby's real replay lag on the primary:
// 1 once it has replayed all but 64 kB of what it received, 0.3 before.
// flat pins it at 0.3 (λ never improves: the attempt is rolled back).
type lagSampler struct {
	db   *pgx.Conn
	name string
	flat atomic.Bool
}

func (s *lagSampler) Sample(ctx context.Context, _ string, _ int64) (float64, error) {
	if s.flat.Load() {
		return 0.3, nil
	}
	// A write makes the standby report its position (as the workload's
	// writes do): the primary sees a standby's replay only in its replies.
	if _, err := s.db.Exec(ctx, `INSERT INTO emb (embedding, shard) VALUES ('{1,2,3,4}', 1)`); err != nil {
		return 0, err
	}
	var lag int64
	if err := s.db.QueryRow(ctx, `SELECT coalesce(max(pg_wal_lsn_diff(sent_lsn, replay_lsn))::bigint, 0)
		FROM pg_stat_replication WHERE application_name = $1`, s.name).Scan(&lag); err != nil {
		return 0, err
	}
	if lag <= 64<<10 {
		return 1, nil
	}
	return 0.3, nil
}

// A standby whose replay a person paused, named to the healer with a
// connection (--standby): the engine waits out the grace, then
// resume_replay resumes replay — and only it is eligible, the
// WAL-reducing strategies are not applicable to a stalled replay. Replay
// moves on the real standby and the attempt is verified on the lag
// itself. Paused again with λ held flat, the attempt is unverified and
// its rollback pauses the standby's replay again, as it was.
func TestResumeReplayEndsAPausedReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	v, _ := startEnv(ctx, t)
	c := v.c
	const name = "resume_standby"
	sb, err := workload.StartStandby(ctx, workload.StandbySpec{PrimaryHost: c.SocketDir(), PrimaryPort: c.Port,
		Dir: filepath.Join(c.Dir, "standby"), Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	standby, err := pgx.Connect(ctx, sb.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close(context.Background())
	pauseState := func() string {
		t.Helper()
		var st string
		if err := standby.QueryRow(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	probe := newReplicaProbe(ctx, t, c, name, 5*time.Second)
	sample := probe.sample
	// No witness names: they come from the metrics, as when the cut names
	// none.
	trigger := func(s health.Signals, r health.ReplicaSignal) healing.Trigger { return probe.trigger(s, r, false) }
	probe.waitStreaming()

	const grace = 15 * time.Second
	lam := &lagSampler{db: v.db, name: name}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, c.DSN("postgres")) }
	resume := &remedy.ResumeReplay{Standbys: map[string]string{name: sb.DSN}, Grace: grace, Dial: dial}
	throttle := healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID}
	e := v.engine(ctx, t, lam, throttle, resume)

	stalled := func() (health.Signals, health.ReplicaSignal) {
		t.Helper()
		var sig health.Signals
		var rs health.ReplicaSignal
		pgtest.WaitFor(t, 30*time.Second, "replay stalled", func() (bool, error) {
			sig, rs = sample()
			return rs.ReplayStalled, nil
		})
		return sig, rs
	}
	if _, err := workload.LaggingReplica(ctx, sb.DSN); err != nil {
		t.Fatal(err)
	}
	sig, rs := stalled()
	if rs.ReplayStalledSeconds < grace.Seconds() {
		// Within the grace: handed over, with when the healer would act.
		out, err := e.Heal(ctx, trigger(sig, rs))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("within the grace: %s: %s", out.Status, out.Reason)
		if out.Status != healing.StatusDeferred || out.ID != 0 ||
			!strings.HasPrefix(out.Reason, "replay stalled on "+name+": ") ||
			!strings.Contains(out.Reason, "a paused replay is resumed once stalled for 15s, unless a person ends the pause first") {
			t.Fatalf("within the grace: outcome %+v", out)
		}
	}
	pgtest.WaitFor(t, 60*time.Second, "the stall outlasting the grace", func() (bool, error) {
		sig, rs = sample()
		return rs.ReplayStalled && rs.ReplayStalledSeconds >= grace.Seconds(), nil
	})
	out, err := e.Heal(ctx, trigger(sig, rs))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("past the grace: %s (%s): %s", out.Status, out.Strategy, out.Reason)
	if out.Strategy != "resume_replay" || out.ID == 0 || out.Status != healing.StatusVerified || out.RolledBack {
		t.Fatalf("past the grace: outcome %+v, want resume_replay verified", out)
	}
	if st := pauseState(); st != "not paused" {
		t.Fatalf("standby replay %q after resume_replay", st)
	}
	var verdicts map[string]string
	var resumed map[string]any
	var raw []byte
	if err := v.db.QueryRow(ctx, `SELECT decision->'selection', metadata->'result'->'metadata'->'resumed'->$2
		FROM ruvector.healing_outcomes WHERE id = $1`, out.ID, name).Scan(&raw, &resumed); err != nil {
		t.Fatal(err)
	}
	var sel strategy.Selection
	if err := json.Unmarshal(raw, &sel); err != nil {
		t.Fatal(err)
	}
	verdicts = map[string]string{}
	for _, cand := range sel.Candidates {
		verdicts[cand.Name] = string(cand.Verdict)
	}
	if verdicts["resume_replay"] != "chosen" || verdicts["throttle_ingestion"] != "not_applicable" {
		t.Fatalf("selection verdicts %v: want resume_replay chosen, throttle_ingestion not applicable to a stalled replay", verdicts)
	}
	// ruvector_healing_explain says why throttle_ingestion was passed over
	// and finds everything it looks for.
	var fits, impact, avail *bool
	var missing string
	if err := v.db.QueryRow(ctx, `SELECT (c->>'fits_cause')::boolean, (c->>'within_impact_limit')::boolean,
			(c->>'available')::boolean, (ruvector.ruvector_healing_explain($1::bigint)->'not_recorded')::text
		FROM jsonb_array_elements(ruvector.ruvector_healing_explain($1::bigint)->'selection'->'candidates') c
		WHERE c->>'name' = 'throttle_ingestion'`, out.ID).Scan(&fits, &impact, &avail, &missing); err != nil {
		t.Fatal(err)
	}
	if fits == nil || *fits || impact != nil || avail != nil || missing != "[]" {
		t.Fatalf("explain of throttle_ingestion: fits_cause %v, within_impact_limit %v, available %v, not_recorded %s; want false, null, null, []",
			fits, impact, avail, missing)
	}
	if resumed["replay_moved"] != true || resumed["caught_up"] != true || resumed["pause_state"] != "paused" {
		t.Fatalf("recorded resume %v: want replay moved after a pause", resumed)
	}

	// Again, with λ held flat: unverified, and the rollback pauses the
	// standby's replay again.
	lam.flat.Store(true)
	if _, err := workload.LaggingReplica(ctx, sb.DSN); err != nil {
		t.Fatal(err)
	}
	stalled()
	pgtest.WaitFor(t, 60*time.Second, "the second stall outlasting the grace", func() (bool, error) {
		sig, rs = sample()
		return rs.ReplayStalled && rs.ReplayStalledSeconds >= grace.Seconds(), nil
	})
	out, err = e.Heal(ctx, trigger(sig, rs))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flat λ: %s (%s): %s", out.Status, out.Strategy, out.Reason)
	if out.Strategy != "resume_replay" || out.Status != healing.StatusUnverified || !out.RolledBack {
		t.Fatalf("flat λ: outcome %+v, want resume_replay unverified and rolled back", out)
	}
	// pg_wal_replay_pause() is a request the startup process honours at
	// its next record ("pause requested" until then): with WAL to replay,
	// replay is paused again, and stays so.
	if st := pauseState(); st != "paused" && st != "pause requested" {
		t.Fatalf("standby replay %q after the rollback, want paused again", st)
	}
	pgtest.WaitFor(t, 15*time.Second, "the standby's replay paused again", func() (bool, error) {
		probe.sample()
		return pauseState() == "paused", nil
	})
	_, before := probe.sample()
	time.Sleep(2 * time.Second)
	if _, after := probe.sample(); pauseState() != "paused" || after.ReplayStalledSeconds <= before.ReplayStalledSeconds {
		t.Fatalf("after the rollback: replay %q, stalled %.1fs then %.1fs: want paused, the stall growing",
			pauseState(), before.ReplayStalledSeconds, after.ReplayStalledSeconds)
	}
}
