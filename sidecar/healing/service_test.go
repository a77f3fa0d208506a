package healing_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healconfig"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/metrics"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// observer feeds metrics.Healing the way the daemon does.
type observer struct{ m *metrics.Healing }

func (o observer) RemediationStarted(c, s string) { o.m.RemediationStarted(c, s) }
func (o observer) RemediationFinished(c, s string, out healing.Outcome) {
	imp := 0.0
	if out.InitialLambda > 0 && out.FinalLambda > 0 {
		imp = (out.FinalLambda - out.InitialLambda) / out.InitialLambda
	}
	o.m.Finished(c, s, metrics.HealingResult{Verified: out.Verified, Improvement: imp, Duration: out.Duration})
}

type svcEnv struct {
	*env
	embID int64
	coll  shmproto.Collection
}

// service starts a healing service (engine + SQL requests + leader
// election) like the daemon's and stops it when the test ends.
func (v *svcEnv) service(ctx context.Context, t *testing.T, holder string, s healing.Sampler, m *metrics.Healing,
	strategies ...strategy.Strategy) (*healing.Service, func()) {
	t.Helper()
	reg, err := strategy.NewRegistry(strategies...)
	if err != nil {
		t.Fatal(err)
	}
	opts := healing.Options{Holder: holder}
	if m != nil {
		opts.Observer = observer{m}
	}
	e, err := healing.New(ctx, v.c.Connect(ctx, "postgres"), reg, s, v.key, opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := healing.ServiceConfig{Engine: e, Holder: holder, LeaderTTL: 3 * time.Second,
		Dial: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, v.c.DSN("postgres")) },
		Current: func(name string) (healing.Trigger, bool) {
			return healing.Trigger{Collection: name, CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5,
				Metrics: classify.Metrics{MemoryUsagePct: 95}}, name == "emb"
		},
		Log: zerolog.Nop()}
	if m != nil {
		cfg.Metrics = m
	}
	svc, err := healing.NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(sctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("service %s: %v", holder, err)
			}
		})
	}
	t.Cleanup(stop)
	return svc, stop
}

// request waits for a request to finish and returns its document.
func (v *svcEnv) request(ctx context.Context, t *testing.T, id int64) map[string]any {
	t.Helper()
	var doc map[string]any
	pgtest.WaitFor(t, 30*time.Second, fmt.Sprintf("request %d finished", id), func() (bool, error) {
		var raw []byte
		if err := v.db.QueryRow(ctx, `SELECT ruvector_healing_request_status($1)`, id).Scan(&raw); err != nil {
			return false, err
		}
		doc = nil
		if err := json.Unmarshal(raw, &doc); err != nil {
			return false, err
		}
		st := doc["status"]
		return st != "pending" && st != "running", nil
	})
	return doc
}

func (v *svcEnv) call(ctx context.Context, t *testing.T, sql string, args ...any) map[string]any {
	t.Helper()
	var raw []byte
	if err := v.db.QueryRow(ctx, sql, args...).Scan(&raw); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func reqID(t *testing.T, doc map[string]any) int64 {
	t.Helper()
	f, ok := doc["request_id"].(float64)
	if !ok {
		t.Fatalf("no request_id in %v", doc)
	}
	return int64(f)
}

func (v *svcEnv) clearThrottles(t *testing.T) {
	t.Helper()
	for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
		if err := v.seg.SetSidecarThrottle(v.coll.Slot, op, 0, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServiceOnRealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL+`ALTER DATABASE postgres SET search_path = "$user", public, ruvector;`)
	v := &svcEnv{env: &env{c: c, db: c.Connect(ctx, "postgres")}}
	var err error
	if v.srv, err = instance.Discover(ctx, v.db); err != nil {
		t.Fatal(err)
	}
	if v.seg, err = instance.OpenSegment(v.srv, ""); err != nil {
		t.Fatal(err)
	}
	defer v.seg.Close()
	if v.key, _, err = audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key")); err != nil {
		t.Fatal(err)
	}
	if err := v.db.QueryRow(ctx, `SELECT collection_id FROM ruvector.collections WHERE name = 'emb'`).Scan(&v.embID); err != nil {
		t.Fatal(err)
	}
	if v.coll, err = v.seg.Find("emb", v.srv.DatabaseOID); err != nil {
		t.Fatal(err)
	}
	throttle := healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID}

	t.Run("configure agrees with healconfig", func(t *testing.T) { testConfigureAgrees(ctx, t, v) })

	// Before any sidecar: the request waits, and says so.
	var waiting int64
	t.Run("a request made while the sidecar is down waits and says so", func(t *testing.T) {
		var notices []string
		cfg, _ := pgx.ParseConfig(c.DSN("postgres"))
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var raw []byte
		if err := conn.QueryRow(ctx, `SELECT ruvector_healing_execute('emb', 'throttle_ingestion')`).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		_ = json.Unmarshal(raw, &doc)
		waiting = reqID(t, doc)
		if doc["sidecar_alive"] != false || doc["status"] != "pending" || !strings.Contains(fmt.Sprint(doc["note"]), "sidecar not running") {
			t.Fatalf("request document %v", doc)
		}
		if len(notices) != 1 || !strings.Contains(notices[0], "ruvector-sidecar is not running") {
			t.Fatalf("notices %q", notices)
		}
		// One that expires before any sidecar comes.
		var expired int64
		v.db.QueryRow(ctx, `SELECT (ruvector_healing_trigger('emb')->>'request_id')::bigint`).Scan(&expired)
		c.MustExec(ctx, fmt.Sprintf(`UPDATE ruvector.healing_requests SET expires_at = now() - interval '1 second' WHERE id = %d`, expired))
		if d := v.call(ctx, t, `SELECT ruvector_healing_request_status($1)`, expired); d["status"] != "expired" {
			t.Fatalf("expired request reads %v", d["status"])
		}
	})

	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		_ = (&instance.Heartbeat{Segment: v.seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}).Run(hbCtx)
	}()
	defer func() { stopHB(); <-hbDone }()

	m := metrics.NewHealing()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	s := &sampler{}
	s.set(0.7, nil) // 0.5 → 0.7: verified
	slow := &fake{name: "slow_fix", classes: []classify.Class{classify.ClassCentroidSkew}, estimate: 20 * time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"step": 1}); err != nil {
				return strategy.Result{}, err
			}
			<-ctx.Done()
			return strategy.Result{ActionsTaken: 1}, ctx.Err()
		}}
	scaleLike := &fake{name: "scale_like", classes: []classify.Class{classify.ClassCentroidSkew}, estimate: time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"scaled": 1}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1}, nil
		}}
	svc, stop := v.service(ctx, t, "sidecar-A", s, m, throttle, slow, scaleLike)
	pgtest.WaitFor(t, 10*time.Second, "sidecar-A leads", func() (bool, error) { return svc.IsLeader(), nil })

	t.Run("the waiting request is served when the sidecar starts; metrics move", func(t *testing.T) {
		doc := v.request(ctx, t, waiting)
		if doc["status"] != "done" || doc["outcome_id"] == nil {
			t.Fatalf("request %v", doc)
		}
		res := doc["result"].(map[string]any)
		if res["status"] != "verified" {
			t.Fatalf("result %v", res)
		}
		if th := v.throttle(t, v.coll.Slot, shmproto.OpInsert); th.Pct != 50 || th.SetBy != shmproto.SetBySidecar {
			t.Fatalf("insert throttle %+v", th)
		}
		out, err := testutil.GatherAndCount(reg, "ruvector_healing_duration_seconds", "ruvector_healing_success_rate",
			"ruvector_healing_avg_improvement", "ruvector_healing_active", "ruvector_healing_cooldown", "ruvector_healing_enabled")
		if err != nil || out != 6 {
			t.Fatalf("series %d %v", out, err)
		}
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ruvector_healing_attempts_total Remediations started, by collection and strategy.
# TYPE ruvector_healing_attempts_total counter
ruvector_healing_attempts_total{collection="emb",strategy="throttle_ingestion"} 1
# HELP ruvector_healing_success_total Remediations that succeeded and verified (λ rose by at least 10%).
# TYPE ruvector_healing_success_total counter
ruvector_healing_success_total{collection="emb",strategy="throttle_ingestion"} 1
# HELP ruvector_healing_success_rate Verified remediations / finished remediations seen by this sidecar.
# TYPE ruvector_healing_success_rate gauge
ruvector_healing_success_rate{collection="emb"} 1
# HELP ruvector_healing_active Remediations running now on the collection (0 or 1).
# TYPE ruvector_healing_active gauge
ruvector_healing_active{collection="emb"} 0
# HELP ruvector_healing_enabled 1 when automatic healing is enabled (healing_config enabled) and this sidecar is the active one.
# TYPE ruvector_healing_enabled gauge
ruvector_healing_enabled 1
`), "ruvector_healing_attempts_total", "ruvector_healing_success_total", "ruvector_healing_success_rate",
			"ruvector_healing_active", "ruvector_healing_enabled"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rollback requested from SQL undoes it and is recorded", func(t *testing.T) {
		doc := v.call(ctx, t, `SELECT ruvector_healing_rollback('emb')`)
		done := v.request(ctx, t, reqID(t, doc))
		if done["status"] != "done" {
			t.Fatalf("rollback request %v", done)
		}
		if th := v.throttle(t, v.coll.Slot, shmproto.OpInsert); th.Pct != 0 {
			t.Fatalf("insert throttle after rollback %+v", th)
		}
		var kind string
		var of int64
		if err := v.db.QueryRow(ctx, `SELECT metadata->>'kind', (metadata->>'rollback_of')::bigint FROM ruvector.healing_outcomes
			WHERE id = $1 AND chain_seq IS NOT NULL`, int64(done["outcome_id"].(float64))).Scan(&kind, &of); err != nil || kind != "rollback" {
			t.Fatalf("rollback record: %q %v", kind, err)
		}
		// Nothing left to roll back: a clear error.
		_, err := v.db.Exec(ctx, `SELECT ruvector_healing_rollback('emb')`)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55000" || !strings.Contains(pe.Message, "no remediation to roll back") {
			t.Fatalf("second rollback: %v", err)
		}
	})

	t.Run("execute with dry_run returns the plan and changes nothing", func(t *testing.T) {
		var before, reqsBefore int
		v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes`).Scan(&before)
		v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_requests`).Scan(&reqsBefore)
		doc := v.call(ctx, t, `SELECT ruvector_healing_execute('emb', 'throttle_ingestion', '{"dry_run": true}')`)
		if doc["dry_run"] != true || doc["would_run"] != true || doc["reversible"] != true || doc["timeout_seconds"] != 16.0 {
			t.Fatalf("plan %v", doc)
		}
		var after, reqsAfter int
		v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes`).Scan(&after)
		v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_requests`).Scan(&reqsAfter)
		// One request: the plan the sidecar answers (plan_test.go).
		if after != before || reqsAfter != reqsBefore+1 || doc["kind"] != "plan" {
			t.Fatalf("dry run wrote: outcomes %d→%d requests %d→%d (want one plan request): %v", before, after, reqsBefore, reqsAfter, doc)
		}
		if th := v.throttle(t, v.coll.Slot, shmproto.OpInsert); th.Pct != 0 {
			t.Fatalf("dry run throttled %+v", th)
		}
		_, err := v.db.Exec(ctx, `SELECT ruvector_healing_execute('emb', 'no_such', '{}')`)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "22023" || !strings.Contains(pe.Hint, "throttle_ingestion") {
			t.Fatalf("unknown strategy: %v", err)
		}
	})

	t.Run("approval then execution", func(t *testing.T) {
		// scale_like needs approval (setupSQL); centroid skew selects it
		// over slow_fix by weight.
		c.MustExec(ctx, `INSERT INTO ruvector.healing_strategy_weights VALUES ('scale_like', 5), ('slow_fix', 0.1)
			ON CONFLICT (strategy_name) DO UPDATE SET weight = EXCLUDED.weight`)
		e := v.engine(ctx, t, s, scaleLike)
		out, err := e.Heal(ctx, healing.Trigger{Collection: "emb", CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5,
			Witness: centroidWitness(6)})
		if err != nil || out.Status != healing.StatusPendingApproval {
			t.Fatalf("heal %+v %v", out, err)
		}
		st := v.call(ctx, t, `SELECT ruvector_healing_status()`)
		if pend := st["pending_actions"].([]any); len(pend) != 1 {
			t.Fatalf("pending_actions %v", st["pending_actions"])
		}
		doc := v.request(ctx, t, reqID(t, v.call(ctx, t, `SELECT ruvector_healing_approve($1)`, out.ID)))
		if doc["status"] != "done" || doc["result"].(map[string]any)["status"] != "verified" {
			t.Fatalf("approval %v", doc)
		}
		if scaleLike.rolled.Load() != 0 {
			t.Fatal("verified approval was rolled back")
		}
		st = v.call(ctx, t, `SELECT ruvector_healing_status()`)
		if pend := st["pending_actions"].([]any); len(pend) != 0 {
			t.Fatalf("pending_actions after approval %v", pend)
		}
		_, err = v.db.Exec(ctx, `SELECT ruvector_healing_approve($1)`, out.ID)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55000" {
			t.Fatalf("second approval: %v", err)
		}
	})

	t.Run("abort of a running action rolls it back and records it failed", func(t *testing.T) {
		c.MustExec(ctx, `UPDATE ruvector.healing_config SET config = config || '{"require_approval_strategies": []}'`)
		rolledBefore := slow.rolled.Load()
		doc := v.call(ctx, t, `SELECT ruvector_healing_execute('emb', 'slow_fix')`)
		var action int64
		pgtest.WaitFor(t, 20*time.Second, "slow_fix running", func() (bool, error) {
			err := v.db.QueryRow(ctx, `SELECT id FROM ruvector.healing_outcomes WHERE strategy_name = 'slow_fix' AND state = 'running'`).Scan(&action)
			if errors.Is(err, pgx.ErrNoRows) {
				return false, nil
			}
			return err == nil, err
		})
		ab := v.request(ctx, t, reqID(t, v.call(ctx, t, `SELECT ruvector_healing_abort($1)`, action)))
		if ab["status"] != "done" || ab["result"].(map[string]any)["aborted"] != true {
			t.Fatalf("abort %v", ab)
		}
		ex := v.request(ctx, t, reqID(t, doc))
		if ex["status"] != "failed" || !strings.Contains(fmt.Sprint(ex["error"]), "aborted by an operator") {
			t.Fatalf("execute request %v", ex)
		}
		state, success, _, rolledBack, sealed := v.row(ctx, t, action)
		if state != "done" || success || !rolledBack || !sealed || slow.rolled.Load() != rolledBefore+1 {
			t.Fatalf("aborted row: %s success=%v rolled_back=%v sealed=%v rollbacks=%d", state, success, rolledBack, sealed, slow.rolled.Load())
		}
	})

	t.Run("two sidecars: only one acts", func(t *testing.T) {
		v.clearThrottles(t)
		svcB, stopB := v.service(ctx, t, "sidecar-B", s, nil, throttle)
		time.Sleep(1500 * time.Millisecond) // B tries at least once
		if svcB.IsLeader() {
			t.Fatal("B leads while A is alive")
		}
		id := reqID(t, v.call(ctx, t, `SELECT ruvector_healing_execute('emb', 'throttle_ingestion')`))
		if d := v.request(ctx, t, id); d["claimed_by"] != "sidecar-A" {
			t.Fatalf("request served by %v", d["claimed_by"])
		}
		// A stops (steps down): B takes over and serves.
		stop()
		pgtest.WaitFor(t, 10*time.Second, "B leads", func() (bool, error) { return svcB.IsLeader(), nil })
		v.clearThrottles(t)
		c.MustExec(ctx, `DELETE FROM ruvector.healing_leases`)
		id = reqID(t, v.call(ctx, t, `SELECT ruvector_healing_execute('emb', 'throttle_ingestion')`))
		if d := v.request(ctx, t, id); d["claimed_by"] != "sidecar-B" || d["status"] != "done" {
			t.Fatalf("request after takeover %v", d)
		}
		stopB()
	})

	t.Run("start-up recovery rolls back what a dead sidecar left running", func(t *testing.T) {
		if err := v.seg.SetSidecarThrottle(v.coll.Slot, shmproto.OpInsert, 90, time.Now()); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := v.db.QueryRow(ctx, `INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details,
				strategy_name, started_at, success, initial_lambda, state, metadata)
			VALUES ($1, 'memory_pressure', '{}', 'throttle_ingestion', now(), false, 0.5, 'running',
				jsonb_build_object('actions', jsonb_build_array(jsonb_build_object('collection_id', $2::int8, 'op', 'insert',
					'previous_pct', 0, 'previous_by', 'none', 'new_pct', 90))))
			RETURNING id`, v.embID, v.embID).Scan(&id); err != nil {
			t.Fatal(err)
		}
		svcC, _ := v.service(ctx, t, "sidecar-C", s, nil, throttle)
		pgtest.WaitFor(t, 15*time.Second, "recovered", func() (bool, error) {
			var st string
			err := v.db.QueryRow(ctx, `SELECT state FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&st)
			return st == "done", err
		})
		_ = svcC
		var msg string
		var rolled, sealed bool
		v.db.QueryRow(ctx, `SELECT error_message, rolled_back, signature IS NOT NULL FROM ruvector.healing_outcomes WHERE id = $1`, id).
			Scan(&msg, &rolled, &sealed)
		if msg != healing.RecoveryError || !rolled || !sealed {
			t.Fatalf("recovered row: %q rolled_back=%v sealed=%v", msg, rolled, sealed)
		}
		if th := v.throttle(t, v.coll.Slot, shmproto.OpInsert); th.Pct != 0 {
			t.Fatalf("throttle after recovery %+v", th)
		}
	})

	t.Run("pause_maintenance pauses low-priority jobs of the queue and resumes them on rollback", func(t *testing.T) {
		c.MustExec(ctx, `DELETE FROM ruvector.healing_leases`)
		var low, running, high int64
		if err := v.db.QueryRow(ctx, `WITH j AS (INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, state)
				VALUES ($1, 'compaction', 10, 'queued'), ($1, 'rebalance', 40, 'running'), ($1, 'vacuum', 100, 'queued')
				RETURNING job_id, priority)
			SELECT (SELECT job_id FROM j WHERE priority = 10), (SELECT job_id FROM j WHERE priority = 40),
			       (SELECT job_id FROM j WHERE priority = 100)`, v.embID).Scan(&low, &running, &high); err != nil {
			t.Fatal(err)
		}
		jobs := func() map[int64]string {
			rows, _ := v.db.Query(ctx, `SELECT job_id, state || coalesce(':' || paused_by, '') FROM ruvector.maintenance_jobs`)
			out := map[int64]string{}
			for rows.Next() {
				var id int64
				var st string
				_ = rows.Scan(&id, &st)
				out[id] = st
			}
			return out
		}
		ps := &sampler{}
		var during map[int64]string
		ps.set(0.4, func() { during = jobs() }) // not improved: rolled back
		pm := healing.NewPauseMaintenance(c.Connect(ctx, "postgres"))
		e := v.engine(ctx, t, ps, pm)
		out, err := e.Execute(ctx, healing.Trigger{Collection: "emb", CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5},
			"pause_maintenance", nil)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("paused:%d", out.ID)
		if during[low] != want || during[running] != want || during[high] != "queued" {
			t.Fatalf("jobs during the remediation %v (outcome %d)", during, out.ID)
		}
		if !out.RolledBack {
			t.Fatalf("outcome %+v", out)
		}
		if after := jobs(); after[low] != "queued" || after[running] != "queued" || after[high] != "queued" {
			t.Fatalf("jobs after rollback %v", after)
		}
		// priority_below as a parameter of a manual execution.
		ps.set(0.4, func() { during = jobs() })
		if _, err := e.Execute(ctx, healing.Trigger{Collection: "emb", CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5},
			"pause_maintenance", json.RawMessage(`{"priority_below": 200}`)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(during[high], "paused:") {
			t.Fatalf("priority_below 200 left the priority-100 job %s", during[high])
		}
		// The bar is configuration: maintenance_pause_priority_below 30 spares
		// the priority-40 job, and the outcome records the bar it used; a
		// parameter still overrides it.
		c.MustExec(ctx, `SELECT ruvector_healing_configure('{"maintenance_pause_priority_below": 30}')`)
		ps.set(0.4, func() { during = jobs() })
		out, err = e.Execute(ctx, healing.Trigger{Collection: "emb", CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5},
			"pause_maintenance", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("paused:%d", out.ID); during[low] != want || during[running] != "queued" || during[high] != "queued" {
			t.Fatalf("jobs during the remediation with the bar at 30: %v (outcome %d)", during, out.ID)
		}
		var recorded bool
		if err := v.db.QueryRow(ctx, `SELECT jsonb_path_exists(to_jsonb(o), '$.** ? (@.priority_below == 30)')
			FROM ruvector.healing_outcomes o WHERE id = $1`, out.ID).Scan(&recorded); err != nil || !recorded {
			t.Fatalf("outcome %d does not record priority_below 30: %v", out.ID, err)
		}
		ps.set(0.4, func() { during = jobs() })
		if _, err := e.Execute(ctx, healing.Trigger{Collection: "emb", CollectionID: v.embID, State: strategy.StateStress, Lambda: 0.5},
			"pause_maintenance", json.RawMessage(`{"priority_below": 41}`)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(during[running], "paused:") || during[high] != "queued" {
			t.Fatalf("priority_below 41 over a configured 30: %v", during)
		}
		c.MustExec(ctx, `SELECT ruvector_healing_configure('{"maintenance_pause_priority_below": 50}')`)
	})

	t.Run("an audit record altered by hand is detected", func(t *testing.T) {
		if d := v.call(ctx, t, `SELECT ruvector_healing_verify_audit()`); d["ok"] != true {
			t.Fatalf("chain before tampering: %v", d)
		}
		// The signatures are verified by the server, and a monitor can ask.
		exec := func(sql string, args ...any) {
			t.Helper()
			if _, err := v.db.Exec(ctx, sql, args...); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		c.MustExec(ctx, `CREATE ROLE heal_audit_watch IN ROLE ruvector_monitor`)
		watch := c.Connect(ctx, "postgres")
		if _, err := watch.Exec(ctx, `SET ROLE heal_audit_watch`); err != nil {
			t.Fatal(err)
		}
		var monitorOK bool
		if err := watch.QueryRow(ctx, `SELECT (ruvector.ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&monitorOK); err != nil || !monitorOK {
			t.Fatalf("chain as a monitor: %v %v", monitorOK, err)
		}
		if _, err := watch.Exec(ctx, `SELECT count(*) FROM ruvector.healing_audit_keys`); err == nil {
			t.Fatal("a monitor read the key inventory")
		}
		problems := func() string {
			t.Helper()
			d := v.call(ctx, t, `SELECT ruvector_healing_verify_audit()`)
			if d["ok"] != false {
				t.Fatalf("chain verified after tampering: %v", d)
			}
			return fmt.Sprint(d["problems"])
		}

		// One signature byte flipped: the hashes and links still hold.
		var seq int64
		var sig []byte
		if err := v.db.QueryRow(ctx, `SELECT chain_seq, signature FROM ruvector.healing_outcomes
			WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1`).Scan(&seq, &sig); err != nil {
			t.Fatal(err)
		}
		flipped := append([]byte(nil), sig...)
		flipped[17] ^= 0x01
		exec(`UPDATE ruvector.healing_outcomes SET signature = $2 WHERE chain_seq = $1`, seq, flipped)
		if p := problems(); !strings.Contains(p, "signature does not verify with key "+v.key.ID) ||
			strings.Contains(p, "altered after sealing") || strings.Contains(p, "prev_hash") {
			t.Fatalf("flipped signature byte: %s", p)
		}
		exec(`UPDATE ruvector.healing_outcomes SET signature = $2 WHERE chain_seq = $1`, seq, sig)
		if d := v.call(ctx, t, `SELECT ruvector_healing_verify_audit()`); d["ok"] != true {
			t.Fatalf("chain with the signature restored: %v", d)
		}

		// Altered and re-sealed by someone holding another key: hash and link
		// consistent, signed, but by a key the server does not know; the same
		// key put in the sealer's key_id does not verify either.
		forger, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "forger.key"))
		if err != nil {
			t.Fatal(err)
		}
		exec(`UPDATE ruvector.healing_outcomes SET improvement_pct = 99, key_id = $2 WHERE chain_seq = $1`, seq, forger.ID)
		rec, err := audit.Scan(v.db.QueryRow(ctx, `SELECT `+audit.Columns+` FROM ruvector.healing_outcomes WHERE chain_seq = $1`, seq))
		if err != nil {
			t.Fatal(err)
		}
		exec(`UPDATE ruvector.healing_outcomes SET record_hash = $2, signature = $3 WHERE chain_seq = $1`,
			seq, rec.Hash(), forger.Sign(rec.Canonical()))
		if p := problems(); !strings.Contains(p, "signed by key "+forger.ID+", which is not in ruvector.healing_audit_keys") ||
			strings.Contains(p, "altered after sealing") {
			t.Fatalf("re-signed by an unknown key: %s", p)
		}
		exec(`UPDATE ruvector.healing_outcomes SET key_id = $2 WHERE chain_seq = $1`, seq, v.key.ID)
		rec, err = audit.Scan(v.db.QueryRow(ctx, `SELECT `+audit.Columns+` FROM ruvector.healing_outcomes WHERE chain_seq = $1`, seq))
		if err != nil {
			t.Fatal(err)
		}
		exec(`UPDATE ruvector.healing_outcomes SET record_hash = $2, signature = $3 WHERE chain_seq = $1`,
			seq, rec.Hash(), forger.Sign(rec.Canonical()))
		if p := problems(); !strings.Contains(p, "signature does not verify with key "+v.key.ID) ||
			strings.Contains(p, "altered after sealing") {
			t.Fatalf("re-signed by another key under the sealer's key_id: %s", p)
		}
		// Go's verifier agrees.
		rep, err := audit.Verify(ctx, v.db, 0)
		if err != nil || rep.OK() || rep.Problems[0].Kind != audit.KindBadSignature {
			t.Fatalf("audit.Verify: %+v %v", rep, err)
		}

		exec(`UPDATE ruvector.healing_outcomes SET improvement_pct = 99 WHERE chain_seq = 2`)
		if p := problems(); !strings.Contains(p, "altered after sealing") {
			t.Fatalf("chain after tampering: %s", p)
		}
	})
}

func centroidWitness(n int) []classify.WitnessEdge {
	w := make([]classify.WitnessEdge, n)
	for i := range w {
		w[i] = classify.WitnessEdge{EdgeType: classify.EdgeRoutingLink,
			Source: classify.NodeRef{Kind: classify.NodeCentroid, ID: int64(i)}, Target: classify.NodeRef{Kind: classify.NodeRoot}}
	}
	return w
}

var sqlKey = regexp.MustCompile(`key "([^"]+)"`)

// testConfigureAgrees runs one table of documents through
// healconfig.Merge and ruvector_healing_configure: both must accept or
// reject each, name the same key, and agree on the resulting configuration.
func testConfigureAgrees(ctx context.Context, t *testing.T, v *svcEnv) {
	c := v.c
	c.MustExec(ctx, `DELETE FROM ruvector.healing_config`)
	var sqlDefaults []byte
	if err := v.db.QueryRow(ctx, `SELECT ruvector._healing_config_defaults()::text`).Scan(&sqlDefaults); err != nil {
		t.Fatal(err)
	}
	goDefaults, _ := json.Marshal(healconfig.Default())
	if !jsonEqual(t, sqlDefaults, goDefaults) {
		t.Fatalf("defaults differ:\nSQL %s\nGo  %s", sqlDefaults, goDefaults)
	}
	docs := []string{
		`{}`, `{"enabled": false}`, `{"enabled": "yes"}`, `{"enabled": null}`, `{"enabeld": true}`,
		`{"min_healing_interval_seconds": 0}`, `{"min_healing_interval_seconds": 86400}`, `{"min_healing_interval_seconds": 86401}`,
		`{"min_healing_interval_seconds": -1}`, `{"min_healing_interval_seconds": 1.5}`, `{"min_healing_interval_seconds": 3e2}`,
		`{"min_healing_interval_seconds": "300"}`, `{"max_attempts_per_hour": 0}`, `{"max_attempts_per_hour": 1000}`,
		`{"max_attempts_per_hour": 1001}`, `{"attempt_window_seconds": 59}`, `{"attempt_window_seconds": 604800}`,
		`{"max_auto_heal_impact": 1}`, `{"max_auto_heal_impact": 1.01}`, `{"max_auto_heal_impact": -0.1}`, `{"max_auto_heal_impact": 50}`,
		`{"require_approval": ["centroid_skew", "memory_pressure"]}`, `{"require_approval": ["centroid"]}`,
		`{"require_approval": ["centroid_skew", "centroid_skew"]}`, `{"require_approval": [1]}`, `{"require_approval": "centroid_skew"}`,
		`{"require_approval_strategies": []}`, `{"require_approval_strategies": ["Scale"]}`, `{"require_approval_strategies": ["a", "a"]}`,
		`{"require_approval_strategies": ["` + strings.Repeat("a", 64) + `"]}`,
		`{"learning_enabled": false}`, `{"stabilization_seconds": 3600}`, `{"stabilization_seconds": 3601}`,
		`{"maintenance_pause_priority_below": 0}`, `{"maintenance_pause_priority_below": 1000}`,
		`{"maintenance_pause_priority_below": 1001}`, `{"maintenance_pause_priority_below": -1}`,
		`{"maintenance_pause_priority_below": 7.5}`, `{"maintenance_pause_priority_below": "50"}`,
		`{"maintenance_pause_priority_below": null}`, `{"maintenance_pause_priority_below": 2000, "stabilization_seconds": 4000}`,
		`{"classifier_thresholds": {"memory_usage_pct": 90}}`, `{"classifier_thresholds": {"memory_usage_pct": 101}}`,
		`{"classifier_thresholds": {"memory_usage": 90}}`, `{"classifier_thresholds": {"centroid_nodes": 2.5}}`,
		`{"classifier_thresholds": {"hot_partition_ratio": 0.5}}`, `{"classifier_thresholds": {"max_memory_consumers": 0}}`,
		`{"classifier_thresholds": {"partition_link_edges": 100001}}`, `{"classifier_thresholds": {"dependency_edges": null}}`,
		`{"classifier_thresholds": []}`, `{"zeta": 1, "enabled": "x"}`, `{"enabled": "x", "max_auto_heal_impact": 7}`,
		`{"max_auto_heal_impact": 7, "stabilization_seconds": -1}`, `[]`, `null`, `"x"`,
	}
	for _, d := range docs {
		goCfg, goErr := healconfig.Merge(healconfig.Default(), []byte(d))
		var raw []byte
		sqlErr := v.db.QueryRow(ctx, `SELECT ruvector_healing_configure($1::jsonb)::text`, d).Scan(&raw)
		switch {
		case goErr == nil && sqlErr == nil:
			want, _ := json.Marshal(goCfg)
			if !jsonEqual(t, raw, want) {
				t.Errorf("%s: results differ:\nSQL %s\nGo  %s", d, raw, want)
			}
			c.MustExec(ctx, `DELETE FROM ruvector.healing_config`)
		case goErr != nil && sqlErr != nil:
			var pe *pgconn.PgError
			if !errors.As(sqlErr, &pe) || pe.Code != "22023" || pe.Hint == "" {
				t.Errorf("%s: SQL error %v is not 22023 with a hint", d, sqlErr)
				continue
			}
			var ce *healconfig.Error
			if errors.As(goErr, &ce) && ce.Key != "" {
				m := sqlKey.FindStringSubmatch(pe.Message)
				if m == nil || m[1] != ce.Key {
					t.Errorf("%s: Go names key %q, SQL says %q", d, ce.Key, pe.Message)
				}
			}
		default:
			t.Errorf("%s: Go error %v, SQL error %v", d, goErr, sqlErr)
		}
	}
	// A rejected patch changes nothing; an accepted one merges.
	c.MustExec(ctx, `SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 0, "max_attempts_per_hour": 1000, "stabilization_seconds": 0, "require_approval_strategies": ["scale_like"]}')`)
	if _, err := v.db.Exec(ctx, `SELECT ruvector_healing_configure('{"max_attempts_per_hour": 0}')`); err == nil {
		t.Fatal("accepted 0 attempts")
	}
	var n int
	if err := v.db.QueryRow(ctx, `SELECT (config->>'max_attempts_per_hour')::int FROM ruvector.healing_config`).Scan(&n); err != nil || n != 1000 {
		t.Fatalf("after a rejected patch: %d %v", n, err)
	}
	var stored []byte
	v.db.QueryRow(ctx, `SELECT config::text FROM ruvector.healing_config`).Scan(&stored)
	if _, err := healconfig.Parse(stored); err != nil {
		t.Fatalf("the engine cannot read what configure stored: %v", err)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// Observe's trigger rule, without a server: NewService needs an engine
// only to be built, and Observe queues nothing for a standby.
func TestObserveRecordsRecovery(t *testing.T) {
	rec := &recoveries{}
	svc, err := healing.NewService(healing.ServiceConfig{Engine: &healing.Engine{},
		Dial: func(context.Context) (*pgx.Conn, error) { return nil, errors.New("unused") }, Metrics: rec, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	tr := healing.Trigger{Collection: "emb", CollectionID: 1}
	for i, st := range []strategy.IntegrityState{strategy.StateNormal, strategy.StateStress, strategy.StateCritical, strategy.StateNormal} {
		tr.State = st
		svc.Observe(tr, t0.Add(time.Duration(i)*10*time.Second))
	}
	if len(rec.d) != 1 || rec.d[0] != 20*time.Second {
		t.Fatalf("recoveries %v, want one of 20s (stress at 10s, normal at 30s)", rec.d)
	}
}

type recoveries struct{ d []time.Duration }

func (r *recoveries) SetEnabled(bool)                     {}
func (r *recoveries) SetCooldownUntil(string, time.Time)  {}
func (r *recoveries) Recovered(_ string, d time.Duration) { r.d = append(r.d, d) }
