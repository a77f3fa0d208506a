package integrity

import (
	"fmt"
	"math"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
)

// Transition is a change of a collection's integrity state.
type Transition struct {
	From   State     `json:"from"`
	To     State     `json:"to"`
	At     time.Time `json:"at"`
	Lambda float64   `json:"lambda"`
	Reason string    `json:"reason"`
}

// Machine is one collection's integrity state machine. Rules (policy p,
// high = p.ThresholdHigh, low = p.ThresholdLow, h = p.Hysteresis):
//
//   - Evidence: λ < high is a "below high" sample, λ ≤ low a "low" sample
//     (a low sample is also below high). λ exactly at high is normal
//     evidence, exactly at low is critical evidence, as in the design's
//     "normal if λ ≥ high; stress if λ > low; critical otherwise".
//   - normal → stress after h.DegradeSamples consecutive below-high samples;
//     if by then the last h.CriticalSamples or more were also low, normal
//     → critical directly: a collapse is not made to wait for the cooldown
//     of an intermediate stress transition.
//   - stress → critical after h.CriticalSamples consecutive low samples
//     (low samples seen while still normal count).
//   - critical → stress once λ has stayed > low + offset for
//     h.RestoreHoldSeconds; stress → normal once λ has stayed > high +
//     offset for the hold. Recovery is one step at a time, but the hold is
//     measured from when λ rose above the level, so a sharp recovery
//     reaches normal one cooldown after stress. "Stayed" means every
//     sample since; a single dip restarts the hold. Held means
//     now − since ≥ hold.
//   - No transition less than h.CooldownAfterTransitionSeconds after the
//     previous one (exactly at the cooldown is allowed). Counters keep
//     counting during the cooldown, so a condition still true when it ends
//     fires on the next sample.
//   - An unknown sample (ObserveUnknown, or NaN/±Inf λ) moves to unknown at
//     once, ignoring the cooldown (the state must not claim knowledge it
//     lacks) and resets counters and holds. From unknown, the first known
//     sample goes straight to the state its λ says (≥ high normal, > low
//     stress, else critical), also ignoring cooldown and counts. A new
//     Machine starts unknown.
//   - An operator override (Override) pins the reported state until it
//     expires; the rules keep running underneath, and on expiry the
//     reported state becomes the underlying one.
//
// A Machine is not safe for concurrent use; the caller owns the clock.
type Machine struct {
	p Policy

	state          State // underlying state, from the rules
	lastTransition time.Time
	hasTransition  bool

	belowHigh, low int // consecutive sample counts
	// aboveLowSince / aboveHighSince: start of the current run of samples
	// above low+offset / high+offset (zero when not in such a run).
	aboveLowSince, aboveHighSince time.Time

	override *override

	samples    int
	lastLambda float64
	lastSample time.Time
}

type override struct {
	state  State
	until  time.Time // zero: until cleared
	reason string
}

// NewMachine returns a machine in the unknown state. The policy must be
// valid (see Policy.Validate); an invalid one is replaced by DefaultPolicy,
// since a monitor that stops on a bad policy protects nothing. Use
// SetPolicy to get the error.
func NewMachine(p Policy) *Machine {
	if p.Validate() != nil {
		p = DefaultPolicy()
	}
	return &Machine{p: p, state: Unknown, lastLambda: math.NaN()}
}

// Policy returns the machine's policy.
func (m *Machine) Policy() Policy { return m.p }

// SetPolicy replaces the policy (ruvector_integrity_policy_set). Counters and
// holds are kept: they describe the samples, not the policy, and the next
// sample is judged by the new thresholds.
func (m *Machine) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("integrity: set policy: %w", err)
	}
	m.p = p
	return nil
}

// State returns the reported state (the override's while one is active at
// the last observation).
func (m *Machine) State() State {
	if m.override != nil {
		return m.override.state
	}
	return m.state
}

// Underlying returns the rules' state, ignoring any override.
func (m *Machine) Underlying() State { return m.state }

// Samples returns the number of observations, LastLambda the last known λ
// (NaN if none) and LastSample the time of the last observation.
func (m *Machine) Samples() int              { return m.samples }
func (m *Machine) LastLambda() float64       { return m.lastLambda }
func (m *Machine) LastSample() time.Time     { return m.lastSample }
func (m *Machine) LastTransition() time.Time { return m.lastTransition }

// Observe folds one λ_norm sample taken at now into the state and returns
// the reported state and the transition of the reported state, if any.
// NaN and ±Inf are unknown samples.
func (m *Machine) Observe(lambda float64, now time.Time) (State, *Transition) {
	if math.IsNaN(lambda) || math.IsInf(lambda, 0) {
		return m.ObserveUnknown(now)
	}
	m.samples++
	m.lastLambda, m.lastSample = lambda, now
	t := m.step(lambda, now)
	return m.report(t, lambda, now)
}

// ObserveUnknown records a sample whose λ could not be measured.
func (m *Machine) ObserveUnknown(now time.Time) (State, *Transition) {
	m.samples++
	m.lastSample = now
	m.belowHigh, m.low = 0, 0
	m.aboveLowSince, m.aboveHighSince = time.Time{}, time.Time{}
	var t *Transition
	if m.state != Unknown {
		t = m.transition(Unknown, math.NaN(), now, "λ unknown: no measurement this sample")
	}
	return m.report(t, math.NaN(), now)
}

// report turns an underlying transition into the reported one, applying
// the override and its expiry.
func (m *Machine) report(t *Transition, lambda float64, now time.Time) (State, *Transition) {
	if m.override != nil && !m.override.until.IsZero() && !now.Before(m.override.until) {
		o := m.override
		m.override = nil
		if o.state != m.state {
			return m.state, &Transition{From: o.state, To: m.state, At: now, Lambda: lambda,
				Reason: fmt.Sprintf("override to %s expired at %s", StateName(o.state), o.until.Format(time.RFC3339))}
		}
		return m.state, nil
	}
	if m.override != nil {
		return m.override.state, nil
	}
	return m.state, t
}

// step applies the rules to a known sample.
func (m *Machine) step(lambda float64, now time.Time) *Transition {
	p, h := m.p, m.p.Hysteresis
	if lambda < p.ThresholdHigh {
		m.belowHigh++
	} else {
		m.belowHigh = 0
	}
	if lambda <= p.ThresholdLow {
		m.low++
	} else {
		m.low = 0
	}
	m.aboveLowSince = runStart(m.aboveLowSince, lambda > p.ThresholdLow+h.RestoreThresholdOffset, now)
	m.aboveHighSince = runStart(m.aboveHighSince, lambda > p.ThresholdHigh+h.RestoreThresholdOffset, now)

	if m.state == Unknown {
		to, why := Normal, fmt.Sprintf("first known sample: λ %.4g ≥ threshold_high %g", lambda, p.ThresholdHigh)
		switch {
		case lambda <= p.ThresholdLow:
			to, why = Critical, fmt.Sprintf("first known sample: λ %.4g ≤ threshold_low %g", lambda, p.ThresholdLow)
		case lambda < p.ThresholdHigh:
			to, why = Stress, fmt.Sprintf("first known sample: λ %.4g below threshold_high %g", lambda, p.ThresholdHigh)
		}
		return m.transition(to, lambda, now, why)
	}
	if m.hasTransition && now.Sub(m.lastTransition) < seconds(h.CooldownAfterTransitionSeconds) {
		return nil
	}
	hold := seconds(h.RestoreHoldSeconds)
	held := func(since time.Time) bool { return !since.IsZero() && now.Sub(since) >= hold }
	switch m.state {
	case Normal:
		if m.belowHigh >= h.DegradeSamples {
			if m.low >= h.CriticalSamples {
				return m.transition(Critical, lambda, now, fmt.Sprintf("%d consecutive samples below threshold_high %g, the last %d at or below threshold_low %g",
					m.belowHigh, p.ThresholdHigh, m.low, p.ThresholdLow))
			}
			return m.transition(Stress, lambda, now, fmt.Sprintf("%d consecutive samples below threshold_high %g", m.belowHigh, p.ThresholdHigh))
		}
	case Stress:
		if m.low >= h.CriticalSamples {
			return m.transition(Critical, lambda, now, fmt.Sprintf("%d consecutive samples at or below threshold_low %g", m.low, p.ThresholdLow))
		}
		if held(m.aboveHighSince) {
			return m.transition(Normal, lambda, now, fmt.Sprintf("λ above %g (threshold_high + offset) for %s", p.ThresholdHigh+h.RestoreThresholdOffset, now.Sub(m.aboveHighSince)))
		}
	case Critical:
		if held(m.aboveLowSince) {
			return m.transition(Stress, lambda, now, fmt.Sprintf("λ above %g (threshold_low + offset) for %s", p.ThresholdLow+h.RestoreThresholdOffset, now.Sub(m.aboveLowSince)))
		}
	}
	return nil
}

// runStart keeps the start of a run of samples satisfying a condition.
func runStart(since time.Time, ok bool, now time.Time) time.Time {
	switch {
	case !ok:
		return time.Time{}
	case since.IsZero():
		return now
	}
	return since
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (m *Machine) transition(to State, lambda float64, now time.Time, why string) *Transition {
	t := &Transition{From: m.state, To: to, At: now, Lambda: lambda, Reason: why}
	m.state = to
	m.lastTransition, m.hasTransition = now, true
	return t
}

// Override pins the reported state to state until the given time (zero:
// until ClearOverride), for ruvector_integrity_override. It returns the
// reported transition, if the reported state changes.
func (m *Machine) Override(state State, until, now time.Time, reason string) (*Transition, error) {
	if state >= shmproto.NumStates {
		return nil, fmt.Errorf("integrity: override: state %d: %w", uint32(state), ErrRange)
	}
	if !until.IsZero() && !until.After(now) {
		return nil, fmt.Errorf("integrity: override until %s: %w: must be after now (%s)", until.Format(time.RFC3339), ErrRange, now.Format(time.RFC3339))
	}
	before := m.State()
	m.override = &override{state: state, until: until, reason: reason}
	if before == state {
		return nil, nil
	}
	why := "operator override"
	if reason != "" {
		why += ": " + reason
	}
	if !until.IsZero() {
		why += " (until " + until.Format(time.RFC3339) + ")"
	}
	return &Transition{From: before, To: state, At: now, Lambda: m.lastLambda, Reason: why}, nil
}

// ClearOverride ends an override before it expires and returns the reported
// transition back to the underlying state, if any.
func (m *Machine) ClearOverride(now time.Time) *Transition {
	if m.override == nil {
		return nil
	}
	o := m.override
	m.override = nil
	if o.state == m.state {
		return nil
	}
	return &Transition{From: o.state, To: m.state, At: now, Lambda: m.lastLambda, Reason: "override cleared"}
}

// ActiveOverride returns the override in force at the last observation.
func (m *Machine) ActiveOverride() (state State, until time.Time, reason string, ok bool) {
	if m.override == nil {
		return Unknown, time.Time{}, "", false
	}
	return m.override.state, m.override.until, m.override.reason, true
}
