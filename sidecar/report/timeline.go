// Package report draws what the healing loop saw and did as a standalone
// SVG timeline: λ over time per collection over the state bands, and every
// remediation from start to end with its result. It holds no database code
// and uses only the standard library, so the picture depends on the data
// alone: the same Timeline always renders to the same bytes.
package report

import (
	"errors"
	"fmt"
	"time"
)

// Result is how a remediation ended, as the timeline colours it.
type Result string

// Results.
const (
	ResultVerified   Result = "verified"    // executed and λ improved enough
	ResultRolledBack Result = "rolled_back" // undone by the engine or an operator
	ResultFailed     Result = "failed"      // error, timeout, panic (not rolled back)
	ResultUnverified Result = "unverified"  // executed, λ did not improve enough, nothing to undo
	ResultRunning    Result = "running"     // still in progress
	ResultPending    Result = "pending"     // waiting for a human's approval
	ResultRollback   Result = "rollback"    // an operator's rollback record of an earlier outcome
)

// OutcomeResult maps a healing_outcomes row to its Result.
func OutcomeResult(state string, success bool, verified *bool, rolledBack bool, kind string) Result {
	switch {
	case state == "pending_approval":
		return ResultPending
	case state == "running":
		return ResultRunning
	case kind == "rollback":
		return ResultRollback
	case rolledBack:
		return ResultRolledBack
	case !success:
		return ResultFailed
	case verified != nil && *verified:
		return ResultVerified
	default:
		return ResultUnverified
	}
}

// Point is one λ value at a time.
type Point struct {
	At     time.Time
	Lambda float64
}

// StateChange is the collection entering State at At.
type StateChange struct {
	At      time.Time
	State   string
	EventID int64
}

// Remediation is one healing outcome.
type Remediation struct {
	ID           int64
	Strategy     string
	ProblemClass string
	Start        time.Time
	// End is zero while the remediation runs (or waits for approval).
	End           time.Time
	Result        Result
	InitialLambda float64
	// FinalLambda is nil when λ was not measured after the action.
	FinalLambda *float64
	// Error is the recorded error message, if any.
	Error string
}

// Panel is one collection.
type Panel struct {
	Collection string
	// ThresholdHigh and ThresholdLow are the policy's bounds: λ at or above
	// high is normal, below low is critical, stress in between.
	ThresholdHigh float64
	ThresholdLow  float64
	// InitialState is the state at the timeline's start ("" when unknown).
	InitialState string
	States       []StateChange
	Points       []Point
	Remediations []Remediation
}

// Timeline is what Render draws.
type Timeline struct {
	From, To time.Time
	Panels   []Panel
}

// Validate rejects a timeline that cannot be drawn.
func (t Timeline) Validate() error {
	if t.From.IsZero() || t.To.IsZero() {
		return errors.New("report: the timeline needs a start and an end")
	}
	if !t.To.After(t.From) {
		return fmt.Errorf("report: the timeline ends (%s) before it starts (%s)",
			t.To.UTC().Format(time.RFC3339), t.From.UTC().Format(time.RFC3339))
	}
	for _, p := range t.Panels {
		if !(p.ThresholdLow <= p.ThresholdHigh) {
			return fmt.Errorf("report: collection %q: threshold_low %v above threshold_high %v",
				p.Collection, p.ThresholdLow, p.ThresholdHigh)
		}
	}
	return nil
}
