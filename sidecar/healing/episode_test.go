package healing_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Within one episode (no return to normal in between) a strategy that
// already ran yields to one that has not; a state transition into normal
// starts a new episode with the learned order.
func TestEscalationWithinEpisode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	ok := func(context.Context, *strategy.Context) (strategy.Result, error) {
		return strategy.Result{Success: true, ActionsTaken: 1}, nil
	}
	mem := []classify.Class{classify.ClassMemoryPressure}
	a := &fake{name: "a_first", classes: mem, estimate: time.Second, run: ok}
	b := &fake{name: "b_second", classes: mem, estimate: time.Second, run: ok}
	s := &sampler{}
	s.set(0.8, nil) // every attempt verified (from 0.5), yet the trigger keeps coming
	e := v.engine(ctx, t, s, a, b)

	heal := func() healing.Outcome {
		t.Helper()
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != healing.StatusVerified {
			t.Fatalf("outcome %+v", out)
		}
		return out
	}
	tried := func(out healing.Outcome, name string) int {
		for _, c := range out.Selection.Candidates {
			if c.Name == name {
				return c.Tried
			}
		}
		t.Fatalf("no candidate %s", name)
		return 0
	}
	first := heal()
	if first.Strategy != "a_first" || tried(first, "a_first") != 0 {
		t.Fatalf("fresh episode: chose %s (a tried %d), want a_first by name order", first.Strategy, tried(first, "a_first"))
	}
	// a_first was verified, so its learned weight is now above b_second's
	// default; it ran once this episode, so b_second goes next anyway.
	second := heal()
	if second.Strategy != "b_second" || tried(second, "a_first") != 1 {
		t.Fatalf("second attempt chose %s (a tried %d), want b_second\n%s", second.Strategy, tried(second, "a_first"), second.Selection.Explain())
	}
	// Back to normal: a new episode counts nothing.
	if _, err := v.db.Exec(ctx, `INSERT INTO ruvector.integrity_events (collection_id, event_type, previous_state, new_state, lambda_cut)
		VALUES ($1, 'state_transition', 'stress', 'normal', 0.9)`, embID); err != nil {
		t.Fatal(err)
	}
	third := heal()
	if tried(third, "a_first") != 0 || tried(third, "b_second") != 0 {
		t.Fatalf("after normal: tried a %d, b %d, want 0 and 0", tried(third, "a_first"), tried(third, "b_second"))
	}
}

// The ineffective-healing stop (the last two attempts unverified) does not
// stop an escalation to a strategy not yet tried in the episode; once every
// strategy was tried, it stops.
func TestIneffectiveStopLetsEscalationThrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	mem := []classify.Class{classify.ClassMemoryPressure}
	liar := func(name string) *fake {
		return &fake{name: name, classes: mem, estimate: time.Second,
			run: func(_ context.Context, rc *strategy.Context) (strategy.Result, error) {
				return strategy.Result{Success: true}, rc.Record("x")
			}}
	}
	s := &sampler{}
	s.set(0.5, nil) // λ never moves: every attempt unverified
	e := v.engine(ctx, t, s, liar("a"), liar("b"), liar("c"))
	var ran []string
	for i := range 3 {
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil || out.Status != healing.StatusUnverified {
			t.Fatalf("attempt %d: %+v %v", i+1, out, err)
		}
		ran = append(ran, out.Strategy)
	}
	if strings.Join(ran, ",") != "a,b,c" {
		t.Fatalf("ran %v, want each strategy once: a,b,c", ran)
	}
	out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
	if err != nil || out.Status != healing.StatusDeferred || !strings.Contains(out.Reason, "ineffective") {
		t.Fatalf("fourth attempt, every strategy tried: %+v %v", out, err)
	}
}
