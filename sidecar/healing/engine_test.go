package healing_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

const setupSQL = `
CREATE EXTENSION ruvector_healing;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE emb_0 PARTITION OF emb FOR VALUES IN (0) WITH (autovacuum_enabled = true);
CREATE TABLE emb_1 PARTITION OF emb FOR VALUES IN (1);
CREATE TABLE emb_2 PARTITION OF emb FOR VALUES IN (2) WITH (autovacuum_freeze_max_age = 100000);
SELECT ruvector.ruvector_collection_register('emb', 'emb');
INSERT INTO ruvector.healing_config (config) VALUES
  ('{"min_healing_interval_seconds": 0, "max_attempts_per_hour": 1000, "stabilization_seconds": 0,
     "require_approval_strategies": ["scale_like"]}');
`

// sampler reports a settable λ and runs a hook on each sample (the moment
// between execution and rollback, where tests look at what was done).
type sampler struct {
	mu     sync.Mutex
	lambda float64
	hook   func()
}

func (s *sampler) set(l float64, hook func()) {
	s.mu.Lock()
	s.lambda, s.hook = l, hook
	s.mu.Unlock()
}

func (s *sampler) Sample(context.Context, string, int64) (float64, error) {
	s.mu.Lock()
	l, hook := s.lambda, s.hook
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return l, nil
}

// fake is a strategy that misbehaves on request.
type fake struct {
	name     string
	classes  []classify.Class
	estimate time.Duration
	run      func(ctx context.Context, rc *strategy.Context) (strategy.Result, error)
	rolled   atomic.Int32
}

func (f *fake) Name() string                     { return f.name }
func (f *fake) Handles() []classify.Class        { return f.classes }
func (f *fake) Impact() float64                  { return 0.2 }
func (f *fake) EstimatedDuration() time.Duration { return f.estimate }
func (f *fake) Reversible() bool                 { return true }
func (f *fake) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	return f.run(ctx, rc)
}
func (f *fake) Rollback(_ context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	if len(acts) == 0 {
		return errors.New("rollback found no recorded action")
	}
	f.rolled.Add(1)
	return nil
}

func memoryPressure(collection string, id int64, lambda float64) healing.Trigger {
	return healing.Trigger{Collection: collection, CollectionID: id, State: strategy.StateStress, Lambda: lambda,
		Metrics: classify.Metrics{MemoryUsagePct: 95}}
}

type env struct {
	c   *pgtest.Cluster
	seg *shmproto.Segment
	srv instance.Server
	key *audit.Key
	db  *pgx.Conn // the test's own queries
}

func (v *env) engine(ctx context.Context, t *testing.T, s healing.Sampler, strategies ...strategy.Strategy) *healing.Engine {
	t.Helper()
	return v.engineWith(ctx, t, healing.Options{Holder: t.Name()}, s, strategies...)
}

func (v *env) engineWith(ctx context.Context, t *testing.T, opts healing.Options, s healing.Sampler, strategies ...strategy.Strategy) *healing.Engine {
	t.Helper()
	reg, err := strategy.NewRegistry(strategies...)
	if err != nil {
		t.Fatal(err)
	}
	e, err := healing.New(ctx, v.c.Connect(ctx, "postgres"), reg, s, v.key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (v *env) throttle(t *testing.T, slot int, op shmproto.Op) shmproto.Throttle {
	t.Helper()
	th, err := v.seg.ReadThrottle(slot, op)
	if err != nil {
		t.Fatal(err)
	}
	return th
}

func (v *env) row(ctx context.Context, t *testing.T, id int64) (state string, success bool, verified *bool, rolledBack bool, sealed bool) {
	t.Helper()
	err := v.db.QueryRow(ctx, `SELECT state, success, verified, rolled_back, chain_seq IS NOT NULL AND signature IS NOT NULL
		FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&state, &success, &verified, &rolledBack, &sealed)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestEngineOnRealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	c := v.c
	coll, err := v.seg.Find("emb", v.srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	throttle := healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID}

	t.Run("the segment sampler reads the published λ", func(t *testing.T) {
		ss := healing.SegmentSampler{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID}
		if _, err := ss.Sample(ctx, "emb", embID); err == nil || !strings.Contains(err.Error(), "never published") {
			t.Fatalf("before any sample: %v", err)
		}
		if err := v.seg.WriteIntegrity(coll.Slot, 0.42, shmproto.StateStress, time.Now()); err != nil {
			t.Fatal(err)
		}
		if l, err := ss.Sample(ctx, "emb", embID); err != nil || l != 0.42 {
			t.Fatalf("λ %v %v, want 0.42", l, err)
		}
		if _, err := ss.Sample(ctx, "emb", embID+1); err == nil {
			t.Fatal("a slot of another collection id was accepted")
		}
	})

	t.Run("throttle verified, recorded, weights learned", func(t *testing.T) {
		s := &sampler{}
		// The collection's state after the wait: memory usage down to 70%.
		e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Current: func(name string) (healing.Trigger, bool) {
			return healing.Trigger{Collection: name, Metrics: classify.Metrics{MemoryUsagePct: 70}}, name == "emb"
		}}, s, throttle)
		s.set(0.7, nil) // from 0.5: +40%
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != healing.StatusVerified || out.Strategy != "throttle_ingestion" || out.RolledBack {
			t.Fatalf("outcome %+v", out)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpInsert); th.Pct != 50 || th.SetBy != shmproto.SetBySidecar || th.OutcomeID != out.ID {
			t.Fatalf("insert throttle %+v, want 50 by the sidecar for outcome %d", th, out.ID)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpBulkInsert); th.Pct != 60 || th.OutcomeID != out.ID {
			t.Fatalf("bulk_insert throttle %+v, want 60 for outcome %d", th, out.ID)
		}
		state, success, verified, rolledBack, sealed := v.row(ctx, t, out.ID)
		if state != "done" || !success || verified == nil || !*verified || rolledBack || !sealed {
			t.Fatalf("row: %s success=%v verified=%v rolled_back=%v sealed=%v", state, success, verified, rolledBack, sealed)
		}
		var prev string
		if err := v.db.QueryRow(ctx, `SELECT metadata->'actions'->0->>'previous_by' FROM ruvector.healing_outcomes WHERE id = $1`,
			out.ID).Scan(&prev); err != nil || prev != "none" {
			t.Fatalf("recorded previous value: %q %v", prev, err)
		}
		// What explain needs beyond the decision: the symptom before and
		// after, the verification bar, and the limits selection obeyed.
		var signal, impact string
		var target float64
		if err := v.db.QueryRow(ctx, `SELECT metadata->'signal'->>'name' || ' ' || (metadata->'signal'->>'before') || ' ' || (metadata->'signal'->>'after'),
				(metadata->'verification'->>'target_lambda')::float8, decision->'limits'->>'max_auto_heal_impact'
			FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&signal, &target, &impact); err != nil {
			t.Fatal(err)
		}
		if signal != "current_usage_pct 95 70" || math.Abs(target-0.55) > 1e-9 || impact != "0.5" {
			t.Fatalf("recorded signal %q, target λ %v, max impact %q", signal, target, impact)
		}
		var w float32
		if err := v.db.QueryRow(ctx, `SELECT weight FROM ruvector.healing_strategy_weights WHERE strategy_name = 'throttle_ingestion'`).Scan(&w); err != nil {
			t.Fatal(err)
		}
		if math.Abs(float64(w)-1.4) > 1e-4 { // success rate 1 × (1 + 0.4)
			t.Fatalf("weight %v, want 1.4", w)
		}
		// Back to no throttle for the next case.
		for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
			if err := v.seg.SetSidecarThrottle(coll.Slot, op, 0, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("throttle not improving is rolled back to the previous value", func(t *testing.T) {
		// The previous sidecar value belongs to an earlier remediation
		// (outcome 777): rollback gives it back its value and its id.
		if err := v.seg.SetSidecarThrottleFor(coll.Slot, shmproto.OpInsert, 20, time.Now(), 777); err != nil {
			t.Fatal(err)
		}
		s := &sampler{}
		e := v.engine(ctx, t, s, throttle)
		var during shmproto.Throttle
		s.set(0.52, func() { during = v.throttle(t, coll.Slot, shmproto.OpInsert) }) // +4%: not enough
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != healing.StatusUnverified || !out.RolledBack {
			t.Fatalf("outcome %+v", out)
		}
		if during.Pct != 50 || during.OutcomeID != out.ID {
			t.Fatalf("throttle during verification %+v, want 50 for outcome %d", during, out.ID)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpInsert); th.Pct != 20 || th.SetBy != shmproto.SetBySidecar || th.OutcomeID != 777 {
			t.Fatalf("insert throttle after rollback %+v, want the previous 20 of outcome 777", th)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpBulkInsert); th.Pct != 0 || th.OutcomeID != 0 {
			t.Fatalf("bulk_insert throttle after rollback %+v, want released", th)
		}
		_, _, verified, rolledBack, sealed := v.row(ctx, t, out.ID)
		if verified == nil || *verified || !rolledBack || !sealed {
			t.Fatalf("row verified=%v rolled_back=%v sealed=%v", verified, rolledBack, sealed)
		}
		var w float32
		if err := v.db.QueryRow(ctx, `SELECT weight FROM ruvector.healing_strategy_weights WHERE strategy_name = 'throttle_ingestion'`).Scan(&w); err != nil {
			t.Fatal(err)
		}
		if math.Abs(float64(w)-0.5*(1+(0.4+0.04)/2)) > 1e-4 {
			t.Fatalf("weight %v after one verified and one unverified attempt", w)
		}
		if err := v.seg.SetSidecarThrottle(coll.Slot, shmproto.OpInsert, 0, time.Now()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a manual throttle is never overridden", func(t *testing.T) {
		c.MustExec(ctx, `SELECT ruvector.ruvector_throttle_set('emb', 'bulk_insert', 30)`)
		s := &sampler{}
		s.set(0.9, nil)
		e := v.engine(ctx, t, s, throttle)
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != healing.StatusFailed || !strings.Contains(out.Error, "manual") {
			t.Fatalf("outcome %+v", out)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpInsert); th.Pct != 0 {
			t.Fatalf("insert throttle %+v changed despite the manual pin", th)
		}
		c.MustExec(ctx, `SELECT ruvector.ruvector_throttle_clear('emb')`)
	})

	t.Run("misbehaving strategies are failed or unverified and rolled back", func(t *testing.T) {
		mem := []classify.Class{classify.ClassMemoryPressure}
		record := func(rc *strategy.Context) error { return rc.Record(map[string]string{"did": "something"}) }
		// The sleeper ignores ctx on purpose and runs until the test lets
		// it go (after Heal returned, or after a minute): whether the
		// engine waited for it is then a fact, not a matter of how fast
		// the machine is.
		release, sleeperDone := make(chan struct{}), make(chan struct{})
		var releaseOnce sync.Once
		letGo := func() { releaseOnce.Do(func() { close(release) }) }
		t.Cleanup(letGo)
		sleeper := &fake{name: "sleeper", classes: mem, estimate: 100 * time.Millisecond,
			run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
				defer close(sleeperDone)
				if err := record(rc); err != nil {
					return strategy.Result{}, err
				}
				select {
				case <-release:
				case <-time.After(time.Minute):
				}
				return strategy.Result{Success: true}, nil
			}}
		panicker := &fake{name: "panicker", classes: mem, estimate: time.Second,
			run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
				if err := record(rc); err != nil {
					return strategy.Result{}, err
				}
				panic("boom")
			}}
		liar := &fake{name: "liar", classes: mem, estimate: time.Second,
			run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
				if err := record(rc); err != nil {
					return strategy.Result{}, err
				}
				return strategy.Result{Success: true, ActionsTaken: 1, Improvement: 0.5}, nil
			}}
		cases := []struct {
			f      *fake
			status healing.Status
			errHas string
		}{
			{sleeper, healing.StatusFailed, "timed out"},
			{panicker, healing.StatusFailed, "panic"},
			{liar, healing.StatusUnverified, ""},
		}
		for i, tc := range cases {
			s := &sampler{}
			s.set(0.5, nil) // λ never moves
			e := v.engine(ctx, t, s, tc.f)
			start := time.Now()
			out, err := e.Heal(ctx, memoryPressure(tc.f.name, int64(1000+i), 0.5))
			if err != nil {
				t.Fatal(err)
			}
			if out.Status != tc.status || !strings.Contains(out.Error, tc.errHas) || !out.RolledBack || tc.f.rolled.Load() != 1 {
				t.Fatalf("%s: outcome %+v, rollbacks %d", tc.f.name, out, tc.f.rolled.Load())
			}
			if tc.f == sleeper {
				select {
				case <-sleeperDone:
					t.Fatalf("the engine waited %v for a strategy that overran its 200ms timeout", time.Since(start))
				default:
				}
				letGo()
			}
			state, success, verified, rolledBack, sealed := v.row(ctx, t, out.ID)
			// The liar reports success (recorded as such); verification says otherwise.
			wantSuccess := tc.f == liar
			if state != "done" || success != wantSuccess || (verified != nil && *verified) ||
				(wantSuccess && verified == nil) || !rolledBack || !sealed {
				t.Fatalf("%s: row %s success=%v verified=%v rolled_back=%v sealed=%v",
					tc.f.name, state, success, verified, rolledBack, sealed)
			}
		}
	})

	t.Run("two engines, one remediation", func(t *testing.T) {
		started := make(chan struct{}, 2)
		slow := &fake{name: "slow", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 5 * time.Second,
			run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
				started <- struct{}{}
				if err := rc.Record("x"); err != nil {
					return strategy.Result{}, err
				}
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return strategy.Result{}, ctx.Err()
				}
				return strategy.Result{Success: true, ActionsTaken: 1}, nil
			}}
		s := &sampler{}
		s.set(0.9, nil)
		e1 := v.engine(ctx, t, s, slow)
		e2 := v.engine(ctx, t, s, slow)
		var wg sync.WaitGroup
		outs := make([]healing.Outcome, 2)
		errs := make([]error, 2)
		for i, e := range []*healing.Engine{e1, e2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = e.Heal(ctx, memoryPressure("shared", 2000, 0.5))
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
		busy, acted := 0, 0
		for _, o := range outs {
			switch o.Status {
			case healing.StatusBusy:
				busy++
				if !strings.Contains(o.Reason, "another remediation is active") {
					t.Fatalf("busy reason %q", o.Reason)
				}
			case healing.StatusVerified:
				acted++
			}
		}
		if busy != 1 || acted != 1 || len(started) != 1 {
			t.Fatalf("outcomes %s / %s, %d executions", outs[0].Status, outs[1].Status, len(started))
		}
		var leases int
		if err := v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_leases`).Scan(&leases); err != nil || leases != 0 {
			t.Fatalf("leases left: %d %v", leases, err)
		}
	})

	t.Run("approval leaves a pending row and does nothing", func(t *testing.T) {
		scale := &fake{name: "scale_like", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Second,
			run: func(context.Context, *strategy.Context) (strategy.Result, error) {
				t.Error("a strategy requiring approval ran")
				return strategy.Result{}, nil
			}}
		s := &sampler{}
		e := v.engine(ctx, t, s, scale)
		out, err := e.Heal(ctx, memoryPressure("approve", 3000, 0.5))
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != healing.StatusPendingApproval || out.ID == 0 {
			t.Fatalf("outcome %+v", out)
		}
		state, _, _, _, sealed := v.row(ctx, t, out.ID)
		if state != "pending_approval" || !sealed {
			t.Fatalf("row state %s sealed %v", state, sealed)
		}
	})

	t.Run("unknown problems and limits are deferred", func(t *testing.T) {
		s := &sampler{}
		e := v.engine(ctx, t, s, throttle)
		out, err := e.Heal(ctx, healing.Trigger{Collection: "emb", CollectionID: embID, State: strategy.StateStress, Lambda: 0.5})
		if err != nil || out.Status != healing.StatusDeferred || !strings.Contains(out.Reason, "unknown") {
			t.Fatalf("unknown problem: %+v %v", out, err)
		}
		// Two unverified attempts in the window: healing is ineffective.
		liar := &fake{name: "liar2", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Second,
			run: func(_ context.Context, rc *strategy.Context) (strategy.Result, error) {
				return strategy.Result{Success: true}, rc.Record("x")
			}}
		s.set(0.5, nil)
		e = v.engine(ctx, t, s, liar)
		for i := 0; i < 2; i++ {
			if out, err := e.Heal(ctx, memoryPressure("ineff", 4000, 0.5)); err != nil || out.Status != healing.StatusUnverified {
				t.Fatalf("attempt %d: %+v %v", i, out, err)
			}
		}
		out, err = e.Heal(ctx, memoryPressure("ineff", 4000, 0.5))
		if err != nil || out.Status != healing.StatusDeferred || !strings.Contains(out.Reason, "ineffective") {
			t.Fatalf("third attempt: %+v %v", out, err)
		}
		// A cooldown from the configuration.
		c.MustExec(ctx, `UPDATE ruvector.healing_config SET config = config || '{"min_healing_interval_seconds": 600}'`)
		defer c.MustExec(ctx, `UPDATE ruvector.healing_config SET config = config || '{"min_healing_interval_seconds": 0}'`)
		out, err = e.Heal(ctx, memoryPressure("shared", 2000, 0.5))
		if err != nil || out.Status != healing.StatusDeferred || !strings.Contains(out.Reason, "cooldown") {
			t.Fatalf("cooldown: %+v %v", out, err)
		}
	})

	t.Run("pause_maintenance sets and restores reloptions", func(t *testing.T) {
		// Age the tables: emb_2's own freeze max age (100000) times the
		// fraction below is 10 transactions, the others' 20000.
		for i := 0; i < 30; i++ {
			c.MustExec(ctx, `SELECT txid_current()`)
		}
		reloptions := func() string {
			var s string
			if err := v.db.QueryRow(ctx, `SELECT string_agg(relname || '=' || coalesce(array_to_string(reloptions, ','), ''), ' ' ORDER BY relname)
				FROM pg_class WHERE relname IN ('emb_0', 'emb_1', 'emb_2')`).Scan(&s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		before := reloptions()
		pm := healing.NewPauseMaintenance(c.Connect(ctx, "postgres"))
		pm.WraparoundFraction = 0.0001
		s := &sampler{}
		var during string
		s.set(0.5, func() { during = reloptions() })
		// emb's last two attempts (rolled back, refused by the manual pin)
		// would otherwise stop healing it as ineffective.
		e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), IneffectiveAfter: 100}, s, pm)
		var witness []classify.WitnessEdge
		for i := int64(1); i <= 3; i++ {
			witness = append(witness, classify.WitnessEdge{
				Source:   classify.NodeRef{Kind: classify.NodeRoot, ID: 0, Name: "emb"},
				Target:   classify.NodeRef{Kind: classify.NodeMaintenanceDep, ID: i, Name: "autovacuum"},
				EdgeType: classify.EdgeDependency, Capacity: 0.1, Flow: 0.1})
		}
		out, err := e.Heal(ctx, healing.Trigger{Collection: "emb", CollectionID: embID, State: strategy.StateStress,
			Lambda: 0.5, Witness: witness})
		if err != nil {
			t.Fatal(err)
		}
		if out.Decision.Problem.Class != classify.ClassMaintenanceContention || out.Strategy != "pause_maintenance" {
			t.Fatalf("outcome %+v", out)
		}
		wantDuring := "emb_0=autovacuum_enabled=false emb_1=autovacuum_enabled=false emb_2=autovacuum_freeze_max_age=100000"
		if during != wantDuring {
			t.Fatalf("during verification:\n%s\nwant\n%s", during, wantDuring)
		}
		if out.Status != healing.StatusUnverified || !out.RolledBack {
			t.Fatalf("outcome %s rolled back %v: %s", out.Status, out.RolledBack, out.Error)
		}
		if after := reloptions(); after != before {
			t.Fatalf("after rollback:\n%s\nwant\n%s", after, before)
		}
		if fmt.Sprint(out.Result.Metadata["skipped_near_wraparound"]) != "[emb_2]" {
			t.Fatalf("metadata %v", out.Result.Metadata)
		}
	})

	t.Run("nothing to do is a noop, not a failure", func(t *testing.T) {
		s := &sampler{}
		e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), IneffectiveAfter: 100}, s, throttle)
		tr := memoryPressure("emb", embID, 0.5)
		tr.State = strategy.StateNormal
		weight := func() float64 {
			var w float64
			if err := v.db.QueryRow(ctx, `SELECT coalesce((SELECT weight FROM ruvector.healing_strategy_weights
				WHERE strategy_name = 'throttle_ingestion'), -1)`).Scan(&w); err != nil {
				t.Fatal(err)
			}
			return w
		}
		before := weight()
		out, err := e.Heal(ctx, tr)
		if err != nil || out.Status != healing.StatusNoop || out.RolledBack {
			t.Fatalf("outcome %+v %v", out, err)
		}
		// Nothing was done, so nothing was learned.
		if after := weight(); after != before {
			t.Fatalf("a noop moved the learned weight %v → %v", before, after)
		}
		if th := v.throttle(t, coll.Slot, shmproto.OpInsert); th.Pct != 0 {
			t.Fatalf("insert throttle %+v", th)
		}
		if state, success, _, _, sealed := v.row(ctx, t, out.ID); state != "done" || success || !sealed {
			t.Fatalf("row %s success=%v sealed=%v", state, success, sealed)
		}
	})

	t.Run("verification waits until the class's measurements show the change", func(t *testing.T) {
		// stabilization_seconds is 0 here; the memory signal needs 1.5 s
		// to reflect a change, so λ is sampled no earlier. (Execute: the
		// automatic gate has stopped after the unverified attempts above.)
		refresh := func(c classify.Class) time.Duration {
			if c == classify.ClassMemoryPressure {
				return 1500 * time.Millisecond
			}
			return 0
		}
		s := &sampler{}
		var sampledAfter time.Duration
		var start time.Time
		s.set(0.9, func() { sampledAfter = time.Since(start) })
		e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), SignalRefresh: refresh}, s, throttle)
		start = time.Now()
		out, err := e.Execute(ctx, memoryPressure("emb", embID, 0.5), "throttle_ingestion", nil)
		if err != nil || out.Status != healing.StatusVerified {
			t.Fatalf("outcome %+v %v", out, err)
		}
		if sampledAfter < 1500*time.Millisecond {
			t.Fatalf("λ sampled %v after the start, before the 1.5 s the memory signal needs", sampledAfter)
		}
		var stab float64
		var refreshed bool
		if err := v.db.QueryRow(ctx, `SELECT (metadata->'verification'->>'stabilization_seconds')::float8,
				(metadata->'verification'->>'signals_refreshed')::boolean FROM ruvector.healing_outcomes WHERE id = $1`,
			out.ID).Scan(&stab, &refreshed); err != nil || stab != 1.5 || !refreshed {
			t.Fatalf("recorded stabilization %v refreshed %v (%v)", stab, refreshed, err)
		}
		for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
			if err := v.seg.SetSidecarThrottle(coll.Slot, op, 0, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		// An explicit override (--stabilization) shorter than the refresh is
		// raised to it too: verifying before the measurements can show the
		// change would judge the remediation on the fault's own numbers.
		s.set(0.9, func() { sampledAfter = time.Since(start) })
		e = v.engineWith(ctx, t, healing.Options{Holder: t.Name(), SignalRefresh: refresh, Stabilization: 100 * time.Millisecond}, s, throttle)
		start = time.Now()
		out, err = e.Execute(ctx, memoryPressure("emb", embID, 0.5), "throttle_ingestion", nil)
		if err != nil || out.Status != healing.StatusVerified || sampledAfter < 1500*time.Millisecond {
			t.Fatalf("outcome %+v %v, sampled after %v", out, err, sampledAfter)
		}
		if err := v.db.QueryRow(ctx, `SELECT (metadata->'verification'->>'signals_refreshed')::boolean
			FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&refreshed); err != nil || !refreshed {
			t.Fatalf("an override shorter than the refresh recorded as refreshed=%v (%v)", refreshed, err)
		}
		for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
			if err := v.seg.SetSidecarThrottle(coll.Slot, op, 0, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("the audit chain verifies and detects tampering", func(t *testing.T) {
		rep, err := audit.Verify(ctx, v.db, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Records < 8 || rep.Unsealed != 0 {
			t.Fatalf("chain: %+v", rep)
		}
		var sqlOK bool
		if err := v.db.QueryRow(ctx, `SELECT (ruvector.ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&sqlOK); err != nil || !sqlOK {
			t.Fatalf("sql check: %v %v", sqlOK, err)
		}
		c.MustExec(ctx, `UPDATE ruvector.healing_outcomes SET verified = true WHERE chain_seq = 2`)
		c.MustExec(ctx, `DELETE FROM ruvector.healing_outcomes WHERE chain_seq = 4`)
		rep, err = audit.Verify(ctx, v.db, int64(rep.Records))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, p := range rep.Problems {
			got[p.Kind] = p.ChainSeq
		}
		if got[audit.KindHashMismatch] != 2 || got[audit.KindMissing] != 5 || got[audit.KindBrokenLink] != 5 {
			t.Fatalf("problems %+v", rep.Problems)
		}
		if err := v.db.QueryRow(ctx, `SELECT (ruvector.ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&sqlOK); err != nil || sqlOK {
			t.Fatalf("sql check after tampering: %v %v", sqlOK, err)
		}
	})
}
