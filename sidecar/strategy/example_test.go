package strategy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// throttle sketches the design's throttle_ingestion: it records the previous
// throttle before changing it, so Rollback works from the durable record alone.
type throttle struct{ current map[string]int }

type throttleAction struct {
	Collection string `json:"collection"`
	Previous   int    `json:"previous_throttle"`
	New        int    `json:"new_throttle"`
}

func (t *throttle) Name() string { return "throttle_ingestion" }
func (t *throttle) Handles() []classify.Class {
	return []classify.Class{classify.ClassHotspotCongestion, classify.ClassMemoryPressure}
}
func (t *throttle) Impact() float64                  { return 0.4 }
func (t *throttle) EstimatedDuration() time.Duration { return 5 * time.Second }
func (t *throttle) Reversible() bool                 { return true }

func (t *throttle) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	pct := map[strategy.IntegrityState]int{strategy.StateStress: 50, strategy.StateCritical: 90}[rc.State]
	if pct == 0 {
		return strategy.NoopResult("collection is not degraded"), nil
	}
	a := throttleAction{Collection: rc.Collection, Previous: t.current[rc.Collection], New: pct}
	if err := rc.Record(a); err != nil {
		return strategy.Result{}, err // not recorded: do not act
	}
	t.current[rc.Collection] = pct
	return strategy.Result{Success: true, ActionsTaken: 1, Metadata: map[string]any{"throttle_pct": pct}}, nil
}

func (t *throttle) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	for i := len(acts) - 1; i >= 0; i-- {
		var a throttleAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			return fmt.Errorf("throttle rollback: %w", err)
		}
		t.current[a.Collection] = a.Previous
	}
	return nil
}

func Example() {
	th := &throttle{current: map[string]int{"embeddings": 10}}
	reg, _ := strategy.NewRegistry(th)

	p := classify.Problem{Class: classify.ClassMemoryPressure, MemoryPressure: &classify.MemoryPressure{CurrentUsagePct: 92}}
	sel := reg.Select(context.Background(), p, strategy.Limits{MaxImpact: 0.5})
	fmt.Print(sel.Explain())

	rc := &strategy.Context{Problem: p, Collection: "embeddings", State: strategy.StateCritical,
		Recorder: &strategy.MemoryRecorder{}}
	res, _ := sel.Strategy.Execute(context.Background(), rc)
	fmt.Println("throttle after execute:", th.current["embeddings"], "success:", res.Success)
	_ = sel.Strategy.Rollback(context.Background(), rc)
	fmt.Println("throttle after rollback:", th.current["embeddings"])
	// Output:
	// problem memory_pressure: chose throttle_ingestion
	//   - throttle_ingestion: chosen: rank 1: weight 1 (default), impact 0.4, reversible
	// throttle after execute: 90 success: true
	// throttle after rollback: 10
}
