package remedy

import (
	"context"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// settle ends one integrity sample after the partition rates cover only
// time after the change, and never later than its limit.
func TestSettleWaitsForRatesMeasuredAfterTheChange(t *testing.T) {
	ctx := context.Background()
	since := time.Now()
	fresh := since.Add(400 * time.Millisecond) // when the next window's rates arrive
	rc := &strategy.Context{Current: func() (classify.Metrics, bool) {
		if time.Now().Before(fresh) {
			return classify.Metrics{PartitionRatesSince: since.Add(-4 * time.Second)}, true
		}
		return classify.Metrics{PartitionRatesSince: since.Add(100 * time.Millisecond)}, true
	}}
	start := time.Now()
	if err := settle(ctx, rc, since, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond+settleMargin || took > 8*time.Second { // the 10 s limit is what it must not wait
		t.Fatalf("fresh rates after 400 ms: settled after %v, want about %v", took, 400*time.Millisecond+settleMargin)
	}

	// Never fresh, or no current metrics at all: the limit.
	for name, cur := range map[string]func() (classify.Metrics, bool){
		"stale": func() (classify.Metrics, bool) {
			return classify.Metrics{PartitionRatesSince: since.Add(-time.Second)}, true
		},
		"none": nil,
	} {
		rc := &strategy.Context{Current: cur}
		start := time.Now()
		if err := settle(ctx, rc, time.Now(), 700*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 700*time.Millisecond || took > 8*time.Second {
			t.Fatalf("%s: settled after %v, want the 700 ms limit", name, took)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := settle(cctx, &strategy.Context{}, time.Now(), time.Minute); err == nil {
		t.Fatal("a cancelled settle returned no error")
	}
}
