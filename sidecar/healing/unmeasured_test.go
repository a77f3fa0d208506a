package healing_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// A problem classified from signals whose collector failed this sample is
// not acted on (nothing runs, nothing is recorded); an unknown signal of
// another kind does not stop it.
func TestProblemsOfUnmeasuredSignalsAreNotActedOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	var runs atomic.Int32
	s := &fake{name: "memfix", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: 5 * time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			runs.Add(1)
			if err := rc.Record(map[string]any{"kind": "memfix"}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1}, nil
		}}
	smp := &sampler{}
	smp.set(0.9, nil)
	e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), Stabilization: time.Millisecond}, smp, s)
	count := func() (n int) {
		t.Helper()
		if err := v.db.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes WHERE strategy_name = 'memfix'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	tr := memoryPressure("emb", embID, 0.5)
	tr.UnknownKinds = []string{health.KindMemory}
	out, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusDeferred || !strings.Contains(out.Reason, "memory signals were not measured") || runs.Load() != 0 || count() != 0 {
		t.Fatalf("unmeasured memory: %s %q, %d runs, %d records; want deferred, nothing run or recorded", out.Status, out.Reason, runs.Load(), count())
	}

	tr.UnknownKinds = []string{health.KindPartitions}
	out, err = e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusVerified || runs.Load() != 1 || count() != 1 {
		t.Fatalf("memory measured, partitions not: %s %q, %d runs, %d records; want the memory remedy run and verified", out.Status, out.Reason, runs.Load(), count())
	}
}
