package healing_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
)

// A verified temporary remediation (here a collection throttle for memory
// pressure) stays while the collection is degraded or only recently
// normal, and is lifted, as a rollback record of its own, once it has been
// normal for the lift delay; a lifted one is not lifted twice.
func TestLiftTemporaryAfterNormal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	coll, err := v.seg.Find("emb", v.srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	s := &sampler{}
	s.set(0.9, nil)
	e := v.engine(ctx, t, s, healing.ThrottleIngestion{Segment: v.seg, DatabaseOID: v.srv.DatabaseOID})
	out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusVerified {
		t.Fatalf("outcome %+v", out)
	}
	transition := func(state string) {
		t.Helper()
		if _, err := v.db.Exec(ctx, `INSERT INTO ruvector.integrity_events (collection_id, event_type, previous_state, new_state, lambda_cut)
			VALUES ($1, 'state_transition', 'stress', $2, 0.9)`, embID, state); err != nil {
			t.Fatal(err)
		}
	}
	liftAfter := func(delay time.Duration) []int64 {
		t.Helper()
		ids, err := e.LiftTemporary(ctx, delay)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	lift := func() []int64 { t.Helper(); return liftAfter(2 * time.Second) }
	throttled := func() uint32 { return v.throttle(t, coll.Slot, shmproto.OpInsert).Pct }

	// Still degraded (no transition to normal since): kept.
	if ids := lift(); len(ids) != 0 || throttled() != 50 {
		t.Fatalf("degraded: lifted %v, throttle %d%%", ids, throttled())
	}
	// Normal, but for less than the lift delay: kept. (A delay of an hour:
	// with 2 s, a loaded machine could let them pass between the
	// transition and the lift.)
	transition("normal")
	if ids := liftAfter(time.Hour); len(ids) != 0 || throttled() != 50 {
		t.Fatalf("normal just now: lifted %v, throttle %d%%", ids, throttled())
	}
	// Degraded again: kept, however long ago it was normal.
	transition("stress")
	time.Sleep(2500 * time.Millisecond)
	if ids := lift(); len(ids) != 0 {
		t.Fatalf("degraded again: lifted %v", ids)
	}
	// Normal for longer than the delay: lifted, recorded, and only once.
	transition("normal")
	time.Sleep(2500 * time.Millisecond)
	ids := lift()
	if !slices.Equal(ids, []int64{out.ID}) || throttled() != 0 {
		t.Fatalf("normal for 2.5 s: lifted %v (want [%d]), throttle %d%%", ids, out.ID, throttled())
	}
	var why string
	var ok bool
	if err := v.db.QueryRow(ctx, `SELECT decision->>'lifted', success FROM ruvector.healing_outcomes
		WHERE metadata->>'kind' = 'rollback' AND metadata->>'rollback_of' = ($1::bigint)::text`, out.ID).Scan(&why, &ok); err != nil || !ok || why == "" {
		t.Fatalf("lift record: %q success=%v %v", why, ok, err)
	}
	if ids := lift(); len(ids) != 0 {
		t.Fatalf("lifted twice: %v", ids)
	}

	// A measure taken while the collection was normal already (its last
	// transition before the remediation; run 20 acted on a trigger that
	// had waited): lifted once the delay has passed since its end, not
	// left until the collection next recovers.
	again, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
	if err != nil || again.Status != healing.StatusVerified || throttled() != 50 {
		t.Fatalf("second outcome %+v %v, throttle %d%%", again, err, throttled())
	}
	if ids := liftAfter(time.Hour); len(ids) != 0 {
		t.Fatalf("taken while normal, just ended: lifted %v", ids)
	}
	time.Sleep(2500 * time.Millisecond)
	if ids := lift(); !slices.Equal(ids, []int64{again.ID}) || throttled() != 0 {
		t.Fatalf("taken while normal, ended 2.5 s ago: lifted %v (want [%d]), throttle %d%%", ids, again.ID, throttled())
	}
}
