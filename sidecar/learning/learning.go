// Package learning turns recorded healing outcomes into the strategy weights
// that selection ranks by, and into the effectiveness report behind
// ruvector_healing_effectiveness() and the healing Prometheus gauges.
//
// Everything here is a pure function of the outcomes and an explicit "now", so
// the engine can recompute weights from healing_outcomes at any time and tests
// can replay history. Freezing learning (learning_enabled = false) means not
// calling Weights and keeping the previous weights; nothing in this package
// holds state to freeze.
package learning

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// DefaultWindow is the design's look-back for weight updates: 30 days.
const DefaultWindow = 30 * 24 * time.Hour

// Outcome is one healing attempt as the learning step sees it (a projection
// of a healing_outcomes row).
type Outcome struct {
	// Strategy is strategy_name.
	Strategy string
	// Success is what the strategy reported; Verified is the engine's
	// post-stabilisation check (nil when it never ran, e.g. after an error).
	Success  bool
	Verified *bool
	// ImprovementPct is the relative λ improvement as a fraction despite the
	// column name: 0.25 means λ rose by 25%, -0.1 means it fell by 10%. The
	// design's weight formula adds it to 1, which only makes sense for a
	// fraction. Nil when not measured.
	ImprovementPct *float64
	// At is when the attempt started (started_at); the window is applied to it.
	At time.Time
	// TimeToRecovery is from the degradation that triggered healing to the
	// verified recovery; nil when it did not recover or was not measured.
	TimeToRecovery *time.Duration
}

// counted reports whether the outcome counts as a success for learning:
// the design requires success && verified, an unverified success is not one.
func (o Outcome) counted() bool { return o.Success && o.Verified != nil && *o.Verified }

// improvement returns the usable improvement; NaN and infinities (a REAL
// column can hold them) are treated as not measured rather than allowed to
// poison every weight.
func (o Outcome) improvement() (float64, bool) {
	if o.ImprovementPct == nil {
		return 0, false
	}
	v := *o.ImprovementPct
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

type agg struct {
	attempts, successes int
	improvementSum      float64
	improvementSamples  int
	recoverySum         time.Duration
	recoverySamples     int
	last                time.Time
}

func (a *agg) add(o Outcome) {
	a.attempts++
	if o.counted() {
		a.successes++
	}
	if v, ok := o.improvement(); ok {
		a.improvementSum += v
		a.improvementSamples++
	}
	if o.TimeToRecovery != nil && *o.TimeToRecovery >= 0 {
		a.recoverySum += *o.TimeToRecovery
		a.recoverySamples++
	}
	if o.At.After(a.last) {
		a.last = o.At
	}
}

func (a *agg) successRate() float64 {
	if a.attempts == 0 {
		return 0
	}
	return float64(a.successes) / float64(a.attempts)
}

// avgImprovement divides by attempts, not by measured samples, exactly as the
// design does: an attempt without a measurement counts as no improvement.
func (a *agg) avgImprovement() float64 {
	if a.attempts == 0 {
		return 0
	}
	return a.improvementSum / float64(a.attempts)
}

func (a *agg) weight() float64 { return a.successRate() * (1 + a.avgImprovement()) }

func (a *agg) avgRecoverySeconds() float64 {
	if a.recoverySamples == 0 {
		return 0
	}
	return (a.recoverySum / time.Duration(a.recoverySamples)).Seconds()
}

// windowStart returns the first instant inside the window ending at now.
func windowStart(now time.Time, window time.Duration) time.Time {
	if window <= 0 {
		window = DefaultWindow
	}
	return now.Add(-window)
}

// inWindow: [now − window, now], both ends included. Outcomes after now are
// excluded so that weights "as of" a past instant can be replayed.
func inWindow(o Outcome, start, now time.Time) bool {
	return !o.At.Before(start) && !o.At.After(now)
}

func aggregate(outcomes []Outcome, now time.Time, window time.Duration) (map[string]*agg, *agg, time.Time) {
	start := windowStart(now, window)
	by := map[string]*agg{}
	total := &agg{}
	for _, o := range outcomes {
		if o.Strategy == "" || !inWindow(o, start, now) {
			continue
		}
		a := by[o.Strategy]
		if a == nil {
			a = &agg{}
			by[o.Strategy] = a
		}
		a.add(o)
		total.add(o)
	}
	return by, total, start
}

// Weights computes, per strategy with at least one outcome in the window
// ending at now, the design's weight:
//
//	success_rate × (1 + avg_improvement)
//
// where success_rate = (success && verified) / attempts and avg_improvement =
// sum of non-null improvements / attempts. A window ≤ 0 means DefaultWindow.
// Strategies with no outcome get no entry, so selection uses its default
// weight for them rather than punishing the untried. Outcomes with an empty
// strategy name are ignored.
func Weights(outcomes []Outcome, now time.Time, window time.Duration) map[string]float64 {
	by, _, _ := aggregate(outcomes, now, window)
	out := make(map[string]float64, len(by))
	for name, a := range by {
		out[name] = a.weight()
	}
	return out
}

// StrategyEffectiveness is one strategy's line of the report.
type StrategyEffectiveness struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
	// Attempts counts outcomes; Successes those with success && verified.
	Attempts    int     `json:"attempts"`
	Successes   int     `json:"successes"`
	SuccessRate float64 `json:"success_rate"`
	// AvgImprovement is the fraction used by the weight (sum / attempts);
	// ImprovementSamples says how many attempts were measured.
	AvgImprovement     float64 `json:"avg_improvement"`
	ImprovementSamples int     `json:"improvement_samples"`
	// AvgTimeToRecoverySeconds averages the outcomes that carry a time to
	// recovery (RecoverySamples of them); 0 when none do.
	AvgTimeToRecoverySeconds float64   `json:"avg_time_to_recovery_seconds"`
	RecoverySamples          int       `json:"recovery_samples"`
	LastAttempt              time.Time `json:"last_attempt"`
}

// Report is the effectiveness report over one window.
type Report struct {
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// Strategies is ordered by weight (highest first), then name.
	Strategies               []StrategyEffectiveness `json:"strategies"`
	Attempts                 int                     `json:"attempts"`
	Successes                int                     `json:"successes"`
	OverallSuccessRate       float64                 `json:"overall_success_rate"`
	AvgImprovement           float64                 `json:"avg_improvement"`
	AvgTimeToRecoverySeconds float64                 `json:"avg_time_to_recovery_seconds"`
	RecoverySamples          int                     `json:"recovery_samples"`
}

// Effectiveness builds the report over the same window and with the same
// definitions as Weights, so the weights it shows are the ones in use.
func Effectiveness(outcomes []Outcome, now time.Time, window time.Duration) Report {
	by, total, start := aggregate(outcomes, now, window)
	r := Report{
		WindowStart:              start,
		WindowEnd:                now,
		Strategies:               make([]StrategyEffectiveness, 0, len(by)),
		Attempts:                 total.attempts,
		Successes:                total.successes,
		OverallSuccessRate:       total.successRate(),
		AvgImprovement:           total.avgImprovement(),
		AvgTimeToRecoverySeconds: total.avgRecoverySeconds(),
		RecoverySamples:          total.recoverySamples,
	}
	for name, a := range by {
		r.Strategies = append(r.Strategies, StrategyEffectiveness{
			Name:                     name,
			Weight:                   a.weight(),
			Attempts:                 a.attempts,
			Successes:                a.successes,
			SuccessRate:              a.successRate(),
			AvgImprovement:           a.avgImprovement(),
			ImprovementSamples:       a.improvementSamples,
			AvgTimeToRecoverySeconds: a.avgRecoverySeconds(),
			RecoverySamples:          a.recoverySamples,
			LastAttempt:              a.last,
		})
	}
	slices.SortFunc(r.Strategies, func(x, y StrategyEffectiveness) int {
		if c := cmp.Compare(y.Weight, x.Weight); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	return r
}
