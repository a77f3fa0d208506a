package healing_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

const childLeaseTTL = 1500 * time.Millisecond

// blocker records one action and then waits for its context: a remediation
// in the middle of its work.
func blocker() *fake {
	return &fake{name: "blocker", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 10 * time.Minute,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"step": 1}); err != nil {
				return strategy.Result{}, err
			}
			<-ctx.Done()
			return strategy.Result{}, ctx.Err()
		}}
}

// TestLeaseHolderChild is the sidecar SIGKILLed mid-remediation by
// TestOrphanLeases.
func TestLeaseHolderChild(t *testing.T) {
	dsn := os.Getenv("HEALING_CHILD_DSN")
	if dsn == "" {
		t.Skip("runs only as TestOrphanLeases' child process")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := audit.LoadOrCreateKey(os.Getenv("HEALING_CHILD_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := strategy.NewRegistry(blocker())
	if err != nil {
		t.Fatal(err)
	}
	e, err := healing.New(ctx, conn, reg, &sampler{}, key, healing.Options{Holder: "child", LeaseTTL: childLeaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := conn.QueryRow(ctx, `SELECT collection_id FROM ruvector.collections WHERE name = 'emb'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	_, err = e.Execute(ctx, memoryPressure("emb", id, 0.5), "blocker", nil)
	t.Fatalf("the child was meant to be killed mid-remediation; Execute returned %v", err)
}

func TestOrphanLeases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	v := &env{c: c, db: c.Connect(ctx, "postgres")}
	keyPath := filepath.Join(t.TempDir(), "audit.key")
	var err error
	if v.key, _, err = audit.LoadOrCreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	var embID int64
	if err := v.db.QueryRow(ctx, `SELECT collection_id FROM ruvector.collections WHERE name = 'emb'`).Scan(&embID); err != nil {
		t.Fatal(err)
	}

	// The active sidecar: it leads before the other one starts (and dies),
	// so only its per-tick recovery can finish the orphan.
	recov := blocker()
	slowSvc := &fake{name: "slow", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Minute}
	reg, err := strategy.NewRegistry(recov, slowSvc)
	if err != nil {
		t.Fatal(err)
	}
	const leaderTTL = 1500 * time.Millisecond
	eng, err := healing.New(ctx, c.Connect(ctx, "postgres"), reg, &sampler{}, v.key,
		healing.Options{Holder: "active", LeaseTTL: childLeaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := healing.NewService(healing.ServiceConfig{Engine: eng, Holder: "active", LeaderTTL: leaderTTL,
		Dial: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, c.DSN("postgres")) },
		Log:  zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSvc := context.WithCancel(ctx)
	svcDone := make(chan error, 1)
	go func() { svcDone <- svc.Run(sctx) }()
	defer func() {
		stopSvc()
		if err := <-svcDone; err != nil {
			t.Errorf("service: %v", err)
		}
	}()
	pgtest.WaitFor(t, 10*time.Second, "the service leads", func() (bool, error) { return svc.IsLeader(), nil })

	t.Run("a SIGKILLed holder's remediation is recovered within about a lease TTL", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseHolderChild$")
		cmd.Env = append(os.Environ(), "HEALING_CHILD_DSN="+c.DSN("postgres")+" application_name=healing_child",
			"HEALING_CHILD_KEY="+keyPath)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var id int64
		pgtest.WaitFor(t, 30*time.Second, "the child's remediation to record its action", func() (bool, error) {
			err := v.db.QueryRow(ctx, `SELECT id FROM ruvector.healing_outcomes WHERE strategy_name = 'blocker'
				AND state = 'running' AND jsonb_array_length(coalesce(metadata->'actions', '[]')) = 1`).Scan(&id)
			if err == pgx.ErrNoRows {
				return false, nil
			}
			return err == nil, err
		})
		// Held past several TTLs while alive: the child renews its lease.
		time.Sleep(3 * childLeaseTTL)
		var state, holder string
		if err := v.db.QueryRow(ctx, `SELECT o.state, l.holder FROM ruvector.healing_outcomes o
			JOIN ruvector.healing_leases l USING (collection_id) WHERE o.id = $1 AND l.expires_at > clock_timestamp()`,
			id).Scan(&state, &holder); err != nil || state != "running" || holder != "child" {
			t.Fatalf("while the child lives: state %q, live lease of %q, %v", state, holder, err)
		}
		// The live child's lease: the orphan must not be taken before it
		// (or a later renewal) has expired.
		var leased time.Time
		if err := v.db.QueryRow(ctx, `SELECT l.expires_at FROM ruvector.healing_leases l JOIN ruvector.healing_outcomes o
			USING (collection_id) WHERE o.id = $1 AND l.holder = 'child'`, id).Scan(&leased); err != nil {
			t.Fatalf("the child's lease: %v", err)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		_ = cmd.Wait()
		pgtest.WaitFor(t, 30*time.Second, "the orphan to be recovered", func() (bool, error) {
			err := v.db.QueryRow(ctx, `SELECT state FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&state)
			return state == "done", err
		})
		// When the record was completed (the server's clock, same host),
		// not when this test's polling saw it: TTL until the lease expires,
		// a tick until recovery looks, then the rollback and the record,
		// whose slack is a loaded machine's (3 s was not always enough for
		// them and the polling), not a speed target.
		var completed time.Time
		if err := v.db.QueryRow(ctx, `SELECT completed_at FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&completed); err != nil {
			t.Fatal(err)
		}
		t.Logf("orphan recovered %v after the kill", completed.Sub(killed).Round(10*time.Millisecond))
		if completed.Add(time.Millisecond).Before(leased) {
			t.Errorf("orphan recovered at %v, before the dead child's lease expired at %v", completed, leased)
		}
		if took, bound := completed.Sub(killed), childLeaseTTL+leaderTTL/3+10*time.Second; took > bound {
			t.Errorf("orphan recovered %v after the kill; want within %v", took, bound)
		}
		var msg, by string
		var rolled, sealed bool
		if err := v.db.QueryRow(ctx, `SELECT error_message, rolled_back, signature IS NOT NULL, metadata->>'recovered_by'
			FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&msg, &rolled, &sealed, &by); err != nil {
			t.Fatal(err)
		}
		if msg != healing.RecoveryError || !rolled || !sealed || by != "active" {
			t.Fatalf("recovered row: %q rolled_back=%v sealed=%v recovered_by=%q", msg, rolled, sealed, by)
		}
		if n := recov.rolled.Load(); n != 1 {
			t.Fatalf("the recovering engine rolled back %d times, want 1", n)
		}
	})

	t.Run("an attempt longer than the lease TTL keeps its lease by renewal", func(t *testing.T) {
		slow := &fake{name: "slow", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Minute,
			run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
				if err := rc.Record(map[string]any{"step": 1}); err != nil {
					return strategy.Result{}, err
				}
				select {
				case <-time.After(4 * childLeaseTTL):
				case <-ctx.Done():
					return strategy.Result{}, ctx.Err()
				}
				// A durable step late in the attempt is still fenced on a
				// live lease.
				if err := rc.Record(map[string]any{"step": 2}); err != nil {
					return strategy.Result{}, err
				}
				return strategy.Result{Success: true}, nil
			}}
		s := &sampler{}
		s.set(0.9, nil)
		a := v.engineWith(ctx, t, healing.Options{Holder: "long", LeaseTTL: childLeaseTTL}, s, slow)
		b := v.engineWith(ctx, t, healing.Options{Holder: "other", LeaseTTL: childLeaseTTL}, s, slow)
		type ret struct {
			out healing.Outcome
			err error
		}
		done := make(chan ret, 1)
		go func() {
			out, err := a.Execute(ctx, memoryPressure("emb", embID, 0.5), "slow", nil)
			done <- ret{out, err}
		}()
		time.Sleep(2 * childLeaseTTL)
		out, err := b.Execute(ctx, memoryPressure("emb", embID, 0.5), "slow", nil)
		if err != nil || out.Status != healing.StatusBusy {
			t.Fatalf("another engine past the TTL: %+v, %v (want busy)", out.Status, err)
		}
		if ids, err := b.Recover(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("Recover during a live, renewed attempt: %v, %v", ids, err)
		}
		r := <-done
		if r.err != nil || r.out.Status != healing.StatusVerified || r.out.RolledBack {
			t.Fatalf("long attempt: %+v, %v", r.out, r.err)
		}
		var by *string
		var acts int
		if err := v.db.QueryRow(ctx, `SELECT metadata->>'recovered_by', jsonb_array_length(metadata->'actions')
			FROM ruvector.healing_outcomes WHERE id = $1`, r.out.ID).Scan(&by, &acts); err != nil {
			t.Fatal(err)
		}
		if by != nil || acts != 2 || slowSvc.rolled.Load() != 0 || slow.rolled.Load() != 0 {
			t.Fatalf("long attempt row: recovered_by %v, %d actions, rolled back %d/%d", by, acts,
				slowSvc.rolled.Load(), slow.rolled.Load())
		}
		var leases int
		_ = v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_leases`).Scan(&leases)
		if leases != 0 {
			t.Fatalf("%d leases left after the attempt released its own", leases)
		}
	})

	t.Run("a stepwise strategy aims for the collection's restore level", func(t *testing.T) {
		var seen float64
		peek := &fake{name: "peek", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Second,
			run: func(_ context.Context, rc *strategy.Context) (strategy.Result, error) {
				seen = rc.TargetLambda
				return strategy.Result{Success: true, Noop: true}, nil
			}}
		e := v.engineWith(ctx, t, healing.Options{Holder: "peek"}, &sampler{}, peek)
		for _, tc := range []struct{ lambda, restore, want float64 }{
			{0.010, 0.9, 0.9},  // a hotspot: +10 % (0.011) would leave it critical
			{0.010, 0, 0.011},  // restore level unknown: the verification bar
			{0.95, 0.9, 1.045}, // already above the restore level: the bar
			{0.5, 1.3, 1},      // capped at 1
		} {
			tr := memoryPressure("emb", embID, tc.lambda)
			tr.RestoreLambda = tc.restore
			out, err := e.Execute(ctx, tr, "peek", nil)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(seen-tc.want) > 1e-9 {
				t.Errorf("λ %g, restore %g: strategy saw target %g, want %g", tc.lambda, tc.restore, seen, tc.want)
			}
			var doc []byte
			if err := v.db.QueryRow(ctx, `SELECT metadata->'verification' FROM ruvector.healing_outcomes WHERE id = $1`,
				out.ID).Scan(&doc); err != nil {
				t.Fatal(err)
			}
			var ver struct {
				Target float64 `json:"target_lambda"`
				Above  float64 `json:"verify_above_lambda"`
			}
			if err := json.Unmarshal(doc, &ver); err != nil {
				t.Fatal(err)
			}
			if math.Abs(ver.Target-tc.want) > 1e-9 || math.Abs(ver.Above-tc.lambda*healing.VerifyImprovement) > 1e-9 {
				t.Errorf("recorded verification %s, want target %g and bar %g", doc, tc.want, tc.lambda*healing.VerifyImprovement)
			}
		}
	})
}
