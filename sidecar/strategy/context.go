package strategy

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// IntegrityState is the integrity monitor's state of the collection.
type IntegrityState string

// Integrity states (integrity-monitor spec).
const (
	StateNormal   IntegrityState = "normal"
	StateStress   IntegrityState = "stress"
	StateCritical IntegrityState = "critical"
)

// Valid reports whether s is a known state.
func (s IntegrityState) Valid() bool {
	return s == StateNormal || s == StateStress || s == StateCritical
}

// SampleFunc measures the collection's current λ (normalised lambda_cut).
type SampleFunc func(ctx context.Context) (float64, error)

// Recorder durably records the actions a strategy takes, so that a rollback
// can undo them even after the process that executed them is gone.
//
// Actions come back as JSON, not as the values recorded: after a restart the
// engine can only return what it persisted, and a strategy that relied on
// getting its own Go values back would roll back correctly only until the
// first crash. Strategies decode their own action type from each message.
type Recorder interface {
	// Record persists one action; it must be durable when it returns, and the
	// strategy must not perform the action if it fails.
	Record(action any) error
	// Actions returns the recorded actions in recording order.
	Actions() ([]json.RawMessage, error)
}

// MemoryRecorder is a Recorder kept in memory, for tests and dry runs. It
// marshals on Record exactly like a durable recorder would, so strategies see
// the same behaviour.
type MemoryRecorder struct {
	mu      sync.Mutex
	actions []json.RawMessage
}

// Record marshals action and keeps it.
func (r *MemoryRecorder) Record(action any) error {
	data, err := json.Marshal(action)
	if err != nil {
		return fmt.Errorf("strategy: record action: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions = append(r.actions, data)
	return nil
}

// Actions returns a copy of the recorded actions.
func (r *MemoryRecorder) Actions() ([]json.RawMessage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]json.RawMessage, len(r.actions))
	copy(out, r.actions)
	return out, nil
}

// Context is everything a strategy knows about one healing attempt. The engine
// builds it; strategies read it and use its hooks. The same Context is passed
// to Rollback, so what Execute recorded is there.
type Context struct {
	Problem      classify.Problem
	Collection   string
	CollectionID int64
	State        IntegrityState
	// InitialLambda is λ when healing started; improvements are relative to it.
	InitialLambda float64
	// TargetLambda is the λ that ends the problem: the collection's restore
	// level (threshold_high + restore offset), and at least the 1.1 × initial
	// λ verification requires. Strategies that work in steps stop once it
	// is reached. Zero means "not set".
	TargetLambda float64
	// Metrics are the metrics the problem was classified from.
	Metrics classify.Metrics
	// Params are strategy_params of a manual execution (e.g. dry_run,
	// max_moves); nil for automatic healing.
	Params json.RawMessage
	// Sample measures λ now. Injected by the engine.
	Sample SampleFunc
	// Current returns the collection's metrics of the integrity loop's
	// latest sample (false when there is none), from the same sample as
	// the λ Sample reads then. Injected by the engine; nil outside it.
	Current func() (classify.Metrics, bool)
	// Recorder persists rollback records. Injected by the engine.
	Recorder Recorder
	// OutcomeID is the healing_outcomes row of this attempt (0 outside the
	// engine, e.g. a dry run): strategies leave it where the system shows
	// who acted (the write gate's errors, paused_by, routing outcome_id).
	OutcomeID int64
	// Started and Timeout bound the attempt; the engine also enforces the
	// timeout through ctx, these let a strategy budget its steps.
	Started time.Time
	Timeout time.Duration
	// Now is the clock; nil means time.Now. Injected for tests.
	Now func() time.Time
}

func (c *Context) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Elapsed is the time since Started.
func (c *Context) Elapsed() time.Duration { return c.now().Sub(c.Started) }

// Remaining is the time left before Timeout, never negative. With no Timeout
// it is zero, which strategies must read as "no budget to plan with", not as
// "out of time"; ctx still carries the real deadline.
func (c *Context) Remaining() time.Duration {
	if c.Timeout <= 0 {
		return 0
	}
	return max(c.Timeout-c.Elapsed(), 0)
}

// SampleIntegrity measures λ through the injected sampler.
func (c *Context) SampleIntegrity(ctx context.Context) (float64, error) {
	if c.Sample == nil {
		return 0, ErrNoSampler
	}
	v, err := c.Sample(ctx)
	if err != nil {
		return 0, fmt.Errorf("strategy: sample integrity of %s: %w", c.Collection, err)
	}
	return v, nil
}

// Record persists a rollback record through the injected recorder.
func (c *Context) Record(action any) error {
	if c.Recorder == nil {
		return ErrNoRecorder
	}
	if err := c.Recorder.Record(action); err != nil {
		return fmt.Errorf("strategy: record action for %s: %w", c.Collection, err)
	}
	return nil
}

// Actions returns the recorded rollback records.
func (c *Context) Actions() ([]json.RawMessage, error) {
	if c.Recorder == nil {
		return nil, ErrNoRecorder
	}
	a, err := c.Recorder.Actions()
	if err != nil {
		return nil, fmt.Errorf("strategy: read actions for %s: %w", c.Collection, err)
	}
	return a, nil
}

// Improvement is the relative change from InitialLambda to lambda, as a
// fraction. With no meaningful initial λ (≤ 0) there is nothing to be relative
// to and it returns 0 rather than an infinity that would poison learning.
func (c *Context) Improvement(lambda float64) float64 {
	if c.InitialLambda <= 0 {
		return 0
	}
	return (lambda - c.InitialLambda) / c.InitialLambda
}
