package healing_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// manualOnly is above max_auto_heal_impact (0.5): never chosen
// automatically.
type manualOnly struct{ *fake }

func (manualOnly) Impact() float64 { return 0.9 }

// A strategy that declined a problem is not asked again for it within
// DeclineBackoff while nothing has acted: with every candidate declined
// the attempt finds no strategy and writes no record. Once another remedy
// acted, the decliners are asked again.
func TestDeclinedStrategiesAreNotAskedAgainUntilSomethingActs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	var asked atomic.Int32
	decline := func(name string) *fake {
		return &fake{name: name, classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 5 * time.Second,
			run: func(context.Context, *strategy.Context) (strategy.Result, error) {
				asked.Add(1)
				return strategy.NoopResult(name + " cannot help"), nil
			}}
	}
	actor := &fake{name: "zz_actor", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 5 * time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"kind": "act"}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1}, nil
		}}
	smp := &sampler{}
	smp.set(0.9, nil)
	// The actor is only run by hand here: its impact puts it above the
	// automatic limit.
	e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Stabilization: time.Millisecond}, smp,
		decline("a_decliner"), decline("b_decliner"), manualOnly{actor})
	records := func() (n int) {
		t.Helper()
		if err := v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	tr := memoryPressure("emb", embID, 0.5)

	out, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusNoop || asked.Load() != 2 || records() != 2 {
		t.Fatalf("first attempt: %s, %d asked, %d records; want both decliners asked, two noops", out.Status, asked.Load(), records())
	}
	out, err = e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusNoStrategy || asked.Load() != 2 || records() != 2 {
		t.Fatalf("second attempt: %s (%s), %d asked, %d records; want no strategy, nobody asked, nothing written",
			out.Status, out.Reason, asked.Load(), records())
	}
	verdicts := map[string]strategy.Verdict{}
	for _, c := range out.Selection.Candidates {
		verdicts[c.Name] = c.Verdict
	}
	if verdicts["a_decliner"] != strategy.VerdictDeclinedRecently || verdicts["b_decliner"] != strategy.VerdictDeclinedRecently {
		t.Fatalf("verdicts %v, want both decliners declined_recently", verdicts)
	}

	// A remedy acts (a person runs it): the decliners are asked again.
	if act, err := e.Execute(ctx, tr, "zz_actor", nil); err != nil || act.Status != healing.StatusVerified {
		t.Fatalf("manual remedy: %+v %v", act, err)
	}
	if _, err := e.Heal(ctx, tr); err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 4 {
		t.Fatalf("after a remedy acted the decliners were asked %d times in all, want 4", asked.Load())
	}
}
