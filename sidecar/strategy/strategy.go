// Package strategy defines the remediation strategy contract of the healing
// engine and the registry that picks, for a classified problem, the strategy to
// run, explaining every choice.
//
// It holds no database code: strategies reach PostgreSQL, shared memory or
// Kubernetes through their own dependencies, and everything the engine knows
// about one healing attempt travels in [Context].
package strategy

import (
	"context"
	"errors"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// Strategy is a remediation strategy: the design's RemediationStrategy.
//
// Implementations must be safe for concurrent use; the engine serialises
// healing per collection but may heal several collections at once.
type Strategy interface {
	// Name is the stable identifier stored in healing_outcomes.strategy_name
	// and used in configuration (require_approval_strategies) and learning.
	Name() string
	// Handles lists the problem classes the strategy remediates.
	Handles() []classify.Class
	// Impact estimates disruption in 0..1 (higher = more disruptive); it is
	// compared with max_auto_heal_impact.
	Impact() float64
	// EstimatedDuration is the expected run time; the engine derives its
	// timeout from it, so it must be positive.
	EstimatedDuration() time.Duration
	// Reversible reports whether Rollback can undo Execute.
	Reversible() bool
	// Execute remediates. It must honour ctx (the engine's timeout and abort)
	// and record, through rc.Record, everything Rollback needs before each
	// change is made, since the process may die between two steps.
	Execute(ctx context.Context, rc *Context) (Result, error)
	// Rollback undoes what Execute recorded in rc. Irreversible strategies
	// return an error wrapping ErrNotReversible.
	Rollback(ctx context.Context, rc *Context) error
}

// Availability is implemented by strategies that depend on their environment
// (for example scaling replicas needs a Kubernetes API). An unavailable
// strategy is never selected; the reason appears in the selection's
// explanation. Strategies that do not implement it are always available.
type Availability interface {
	Available(ctx context.Context) (ok bool, reason string)
}

// Temporary is implemented by strategies whose effect holds a problem back
// rather than removing its cause: a throttle or shard cap, a pause of
// maintenance, a routing weight. Verified, such a measure is still lifted
// (rolled back, as a record of its own) once the collection has been normal
// for the daemon's --lift-temporary-after, so that autovacuum is not left
// off and a shard not left capped for good; if the problem comes back, the
// engine acts again.
type Temporary interface {
	Temporary() bool
}

// IsTemporary reports whether s is a Temporary strategy.
func IsTemporary(s Strategy) bool {
	t, ok := s.(Temporary)
	return ok && t.Temporary()
}

// Holder is implemented by temporary strategies whose measure can hold a
// problem's cause in check without raising λ by itself: a shard cap stops
// a runaway writer, but the shard stays as large as it grew and searches
// keep reading it, so λ rises only once a second remedy (rebalancing) acts
// under the cap — and that remedy alone cannot outrun the writer. After an
// unverified attempt the engine asks Holds; when the measure demonstrably
// acts on the cause, it is kept in force ("held") instead of rolled back,
// the episode's next attempt chooses another strategy (Limits.Held), and
// the held measure is lifted like a verified temporary one once the
// collection has been normal long enough, or after a bounded hold when it
// never recovers.
type Holder interface {
	// Holds measures, changing nothing, whether what Execute did still acts
	// on the problem's cause; why says what was measured either way.
	Holds(ctx context.Context, rc *Context) (ok bool, why string, err error)
}

// Approval is deliberately not a strategy property: which strategies need a
// human is operator policy (require_approval_strategies and
// require_approval in the healing configuration), passed to Select in Limits,
// so there is one place that decides it.

// Result is the outcome of Execute.
type Result struct {
	Success      bool `json:"success"`
	ActionsTaken int  `json:"actions_taken"`
	// Improvement is the relative change of λ the strategy observed, as a
	// fraction: (λ_after − λ_initial) / λ_initial, so 0.25 means 25% better.
	// Preventive strategies report 0 and let the engine measure.
	Improvement float64        `json:"improvement"`
	Metadata    map[string]any `json:"metadata,omitempty"`
	// Noop is set when the strategy found nothing to do (for example the
	// replica count is already at its cap). Nothing changed, so there is
	// nothing to roll back.
	Noop bool `json:"noop"`
	// LastChange, when set, is when the strategy last changed the system,
	// set only by a strategy that then waited and judged the effect itself
	// (rebalance_partitions' settle after each batch). The engine's
	// stabilization wait before verification counts from it, not from the
	// end of Execute: waiting again only re-measured what the strategy
	// had already waited for (11 s of a hotspot's 90 s in scorecard run 12).
	LastChange time.Time `json:"last_change,omitzero"`
}

// NoopResult reports that nothing was done, and why. It is not a success:
// doing nothing cannot be what repaired the collection, and learning should
// not credit it.
func NoopResult(reason string) Result {
	return Result{Noop: true, Metadata: map[string]any{"noop_reason": reason}}
}

// Errors callers branch on.
var (
	// ErrNotReversible is returned (wrapped) by Rollback of an irreversible strategy.
	ErrNotReversible = errors.New("strategy is not reversible")
	// ErrDuplicate is returned (wrapped) when registering a name twice.
	ErrDuplicate = errors.New("duplicate strategy name")
	// ErrInvalid is returned (wrapped) when registering a malformed strategy.
	ErrInvalid = errors.New("invalid strategy")
	// ErrNoSampler is returned when a strategy samples integrity and the
	// engine injected no sampler.
	ErrNoSampler = errors.New("no integrity sampler in context")
	// ErrNoRecorder is returned when a strategy records an action and the
	// engine injected no recorder.
	ErrNoRecorder = errors.New("no action recorder in context")
)
