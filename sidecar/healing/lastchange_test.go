package healing_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// A strategy that waited and judged its own last change (LastChange) is
// verified after the rest of the stabilization only; one that did not is
// verified after all of it. Both waits are recorded.
func TestVerificationCountsStabilizationFromTheLastChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	const stab = 3 * time.Second
	var lastChange time.Time
	s := &fake{name: "settler", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 10 * time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			if err := rc.Record(map[string]any{"kind": "settle"}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1, LastChange: lastChange}, nil
		}}
	// When λ was last sampled: verification must not sample before the
	// stabilization has passed since the strategy's last change.
	var sampledMu sync.Mutex
	var sampledAt time.Time
	smp := &sampler{}
	smp.set(0.9, func() {
		sampledMu.Lock()
		sampledAt = time.Now()
		sampledMu.Unlock()
	})
	e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Stabilization: stab}, smp, s)

	for _, c := range []struct {
		name  string
		since time.Duration // LastChange this long before Heal starts (0: not set)
	}{
		{"no last change: the whole stabilization", 0},
		{"changed 2 s before: the rest of it", 2 * time.Second},
		{"changed 10 s before: no wait", 10 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			lastChange = time.Time{}
			if c.since > 0 {
				lastChange = time.Now().Add(-c.since)
			}
			start := time.Now()
			out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
			if err != nil {
				t.Fatal(err)
			}
			end := time.Now()
			took := end.Sub(start)
			// The wait is the stabilization left after the last change,
			// counted when the strategy has returned: somewhere inside the
			// Heal call, so between what is left of it at the call's end and
			// at its start (a fixed window here failed whenever the engine's
			// own work before the wait took long on a loaded machine).
			lo, hi := stab, stab
			if c.since > 0 {
				lo, hi = max(stab-end.Sub(lastChange), 0), max(stab-start.Sub(lastChange), 0)
			}
			if out.Status != healing.StatusVerified || out.Waited < lo || out.Waited > hi {
				t.Fatalf("outcome %s, waited %v; want verified after a wait in [%v, %v]", out.Status, out.Waited, lo, hi)
			}
			if took < out.Waited {
				t.Fatalf("Heal took %v, less than the %v it says it waited", took, out.Waited)
			}
			sampledMu.Lock()
			at := sampledAt
			sampledMu.Unlock()
			from := lastChange
			if c.since == 0 {
				from = start
			}
			if at.Before(start) || at.Before(from.Add(stab)) || at.After(end) {
				t.Fatalf("λ verified %v after the last change (%v after the start), before the %v stabilization had passed",
					at.Sub(from), at.Sub(start), stab)
			}
			var waited float64
			var since *string
			if err := v.db.QueryRow(ctx, `SELECT (metadata->'verification'->>'waited_seconds')::float8, metadata->'verification'->>'since_last_change'
				FROM ruvector.healing_outcomes WHERE id = $1`, out.ID).Scan(&waited, &since); err != nil {
				t.Fatal(err)
			}
			if d := time.Duration(waited * float64(time.Second)); (d - out.Waited).Abs() > time.Millisecond {
				t.Fatalf("recorded wait %v, outcome says %v", d, out.Waited)
			}
			if (since != nil) != (c.since > 0) {
				t.Fatalf("recorded since_last_change %v for a strategy that set LastChange %v ago", since, c.since)
			}
		})
	}
}
