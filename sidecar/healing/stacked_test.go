package healing_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Two throttles stacked on one collection (the second recorded the
// first's as the value to restore) leave nothing in force once both are
// rolled back, in either order. Undone oldest first, the second's
// rollback used to restore the first's throttle after the first had been
// lifted, and it stayed for good (scorecard run 16).
func TestStackedThrottlesRolledBackInEitherOrderLeaveNone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	col, err := v.seg.Find("emb", v.srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, v.c.DSN("postgres")) }
	throttle := healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID, Dial: dial}
	s := &sampler{}
	s.set(0.9, nil) // every attempt verifies and stays in force
	e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Stabilization: time.Millisecond}, s, throttle)
	insert := func() shmproto.Throttle {
		t.Helper()
		th, err := v.seg.ReadThrottle(col.Slot, shmproto.OpInsert)
		if err != nil {
			t.Fatal(err)
		}
		return th
	}
	none := func(what string) {
		t.Helper()
		for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
			if th, _ := v.seg.ReadThrottle(col.Slot, op); th.Pct != 0 {
				t.Fatalf("%s: the %s throttle is %d%% (outcome %d), want none", what, shmproto.OpNames[op], th.Pct, th.OutcomeID)
			}
		}
	}
	stack := func() (first, second int64) {
		t.Helper()
		tr := memoryPressure("emb", embID, 0.3)
		a, err := e.Execute(ctx, tr, "throttle_ingestion", nil)
		if err != nil || a.Status != healing.StatusVerified {
			t.Fatalf("first throttle: %+v %v", a, err)
		}
		tr.State = strategy.StateCritical
		b, err := e.Execute(ctx, tr, "throttle_ingestion", nil)
		if err != nil || b.Status != healing.StatusVerified {
			t.Fatalf("second throttle: %+v %v", b, err)
		}
		if th := insert(); th.Pct != 90 || th.OutcomeID != b.ID {
			t.Fatalf("stacked: insert throttle %+v, want 90%% by outcome %d", th, b.ID)
		}
		return a.ID, b.ID
	}
	rollback := func(id int64) {
		t.Helper()
		if _, err := e.RollbackOutcome(ctx, "emb", embID, id); err != nil {
			t.Fatalf("roll back %d: %v", id, err)
		}
	}

	// Oldest first: the first's rollback leaves the second's throttle,
	// which is not its own, in force; the second's then restores past the
	// rolled-back first.
	a, b := stack()
	rollback(a)
	if th := insert(); th.Pct != 90 || th.OutcomeID != b {
		t.Fatalf("after rolling back the older %d: insert throttle %+v, want the newer %d's 90%% still in force", a, th, b)
	}
	rollback(b)
	none("rolled back oldest first")

	// Newest first: the second restores the first's, the first restores none.
	a, b = stack()
	rollback(b)
	if th := insert(); th.Pct != 50 || th.OutcomeID != a {
		t.Fatalf("after rolling back the newer %d: insert throttle %+v, want the older %d's 50%%", b, th, a)
	}
	rollback(a)
	none("rolled back newest first")
}
