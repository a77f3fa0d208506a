// Package plan holds what a remediation strategy reports it would do: the
// [Plan] of a dry run (ruvector_healing_execute(..., '{"dry_run": true}')).
//
// It is a leaf package so that the healing engine can ask any strategy for
// its plan without depending on the strategies themselves (package remedy
// and its Kubernetes client).
package plan

import (
	"context"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Planner is implemented by strategies that can say what they would do.
// Plan must not change anything: no SQL that writes, no system call that
// alters state, nothing recorded.
type Planner interface {
	Plan(ctx context.Context, rc *strategy.Context) (Plan, error)
}

// Plan is what a strategy would do now.
type Plan struct {
	Strategy string `json:"strategy"`
	// Noop is set when there is nothing to do; Reason says why.
	Noop   bool   `json:"noop"`
	Reason string `json:"reason,omitempty"`
	Steps  []Step `json:"steps"`
}

// Step is one planned action.
type Step struct {
	// Action is a short verb ("reindex", "evict", "scale").
	Action string `json:"action"`
	// Target is what it acts on (an index, a partition, a workload).
	Target string         `json:"target"`
	Detail map[string]any `json:"detail,omitempty"`
}
