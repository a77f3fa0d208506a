package learning

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)

func ptrB(b bool) *bool                   { return &b }
func ptrF(f float64) *float64             { return &f }
func ptrD(d time.Duration) *time.Duration { return &d }
func ago(d time.Duration) time.Time       { return now.Add(-d) }
func near(a, b float64) bool              { return math.Abs(a-b) < 1e-12 }
func oc(name string, ok bool, verified *bool, imp *float64) Outcome {
	return Outcome{Strategy: name, Success: ok, Verified: verified, ImprovementPct: imp, At: ago(time.Hour)}
}

func TestWeightsFormula(t *testing.T) {
	tests := []struct {
		name     string
		outcomes []Outcome
		want     map[string]float64
	}{
		{
			// success_rate 2/4 (an unverified success does not count);
			// avg_improvement (0.2+0.1+0.3)/4 = 0.15 (the null counts in the denominator);
			// weight 0.5 × 1.15 = 0.575
			name: "mixed outcomes",
			outcomes: []Outcome{
				oc("rebalance", true, ptrB(true), ptrF(0.2)),
				oc("rebalance", true, ptrB(false), ptrF(0.1)),
				oc("rebalance", false, nil, nil),
				oc("rebalance", true, ptrB(true), ptrF(0.3)),
			},
			want: map[string]float64{"rebalance": 0.575},
		},
		{name: "verified success, no improvement measured", outcomes: []Outcome{oc("pause", true, ptrB(true), nil)}, want: map[string]float64{"pause": 1}},
		{name: "success without verification counts as failure", outcomes: []Outcome{oc("throttle", true, nil, ptrF(0.5))}, want: map[string]float64{"throttle": 0}},
		{name: "verified but not successful", outcomes: []Outcome{oc("x", false, ptrB(true), ptrF(0.4))}, want: map[string]float64{"x": 0}},
		{
			// 1 × (1 + (−0.5 − 0.7)/2) = 0.4
			name:     "negative improvements lower the weight",
			outcomes: []Outcome{oc("compact", true, ptrB(true), ptrF(-0.5)), oc("compact", true, ptrB(true), ptrF(-0.7))},
			want:     map[string]float64{"compact": 0.4},
		},
		{
			// The formula is unbounded below: 1 × (1 − 2) = −1.
			name:     "improvement below -100% gives a negative weight",
			outcomes: []Outcome{oc("bad", true, ptrB(true), ptrF(-2))},
			want:     map[string]float64{"bad": -1},
		},
		{
			// (1/2) × (1 + 0.4/2) = 0.6: the NaN is treated as null.
			name:     "NaN and Inf improvements treated as null",
			outcomes: []Outcome{oc("n", true, ptrB(true), ptrF(0.4)), oc("n", false, ptrB(false), ptrF(math.NaN())), oc("m", true, ptrB(true), ptrF(math.Inf(1)))},
			want:     map[string]float64{"n": 0.6, "m": 1},
		},
		{
			// 3/3 × (1 + 0.9/3) = 1.3 for a; 1/2 × (1 + 0.1/2) = 0.525 for b
			name: "strategies are computed independently",
			outcomes: []Outcome{
				oc("a", true, ptrB(true), ptrF(0.3)), oc("b", true, ptrB(true), ptrF(0.1)),
				oc("a", true, ptrB(true), ptrF(0.3)), oc("b", false, ptrB(false), nil),
				oc("a", true, ptrB(true), ptrF(0.3)),
			},
			want: map[string]float64{"a": 1.3, "b": 0.525},
		},
		{name: "empty strategy name ignored", outcomes: []Outcome{oc("", true, ptrB(true), nil)}, want: map[string]float64{}},
		{name: "no outcomes", outcomes: nil, want: map[string]float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Weights(tc.outcomes, now, DefaultWindow)
			if got == nil || len(got) != len(tc.want) {
				t.Fatalf("weights %v, want %v", got, tc.want)
			}
			for name, w := range tc.want {
				g, ok := got[name]
				if !ok || !near(g, w) {
					t.Errorf("%s: %v (present %v), want %v", name, g, ok, w)
				}
			}
		})
	}
}

func TestWeightsWindow(t *testing.T) {
	at := func(t time.Time) []Outcome {
		return []Outcome{{Strategy: "s", Success: true, Verified: ptrB(true), At: t}}
	}
	tests := []struct {
		name   string
		at     time.Time
		window time.Duration
		in     bool
	}{
		{"exactly at window start", ago(DefaultWindow), DefaultWindow, true},
		{"just before window start", ago(DefaultWindow + time.Nanosecond), DefaultWindow, false},
		{"exactly now", now, DefaultWindow, true},
		{"after now", now.Add(time.Nanosecond), DefaultWindow, false},
		{"zero window means 30 days: inside", ago(29 * 24 * time.Hour), 0, true},
		{"zero window means 30 days: outside", ago(31 * 24 * time.Hour), 0, false},
		{"negative window means 30 days", ago(29 * 24 * time.Hour), -time.Hour, true},
		{"custom window: inside", ago(59 * time.Minute), time.Hour, true},
		{"custom window: outside", ago(61 * time.Minute), time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, got := Weights(at(tc.at), now, tc.window)["s"]
			if got != tc.in {
				t.Errorf("included %v, want %v", got, tc.in)
			}
		})
	}

	// Old failures drop out of the window: the weight recovers.
	hist := []Outcome{
		{Strategy: "s", Success: false, At: ago(40 * 24 * time.Hour)},
		{Strategy: "s", Success: false, At: ago(35 * 24 * time.Hour)},
		{Strategy: "s", Success: true, Verified: ptrB(true), ImprovementPct: ptrF(0.2), At: ago(24 * time.Hour)},
	}
	if w := Weights(hist, now, DefaultWindow)["s"]; !near(w, 1.2) {
		t.Errorf("weight %v, want 1.2", w)
	}
	// Replaying as of 34 days ago sees only the two failures; the success is in its future.
	past := now.Add(-34 * 24 * time.Hour)
	if w := Weights(hist, past, DefaultWindow)["s"]; w != 0 {
		t.Errorf("replayed weight %v, want 0", w)
	}
}

func TestWeightsDoNotMutateInput(t *testing.T) {
	in := []Outcome{oc("a", true, ptrB(true), ptrF(0.1)), oc("b", false, nil, nil)}
	cp := append([]Outcome(nil), in...)
	Weights(in, now, 0)
	Effectiveness(in, now, 0)
	if !reflect.DeepEqual(in, cp) {
		t.Error("input modified")
	}
}

func TestEffectiveness(t *testing.T) {
	outcomes := []Outcome{
		{Strategy: "rebalance", Success: true, Verified: ptrB(true), ImprovementPct: ptrF(0.2), At: ago(3 * time.Hour), TimeToRecovery: ptrD(100 * time.Second)},
		{Strategy: "rebalance", Success: true, Verified: ptrB(false), ImprovementPct: ptrF(0.1), At: ago(2 * time.Hour)},
		{Strategy: "rebalance", Success: false, At: ago(time.Hour)},
		{Strategy: "rebalance", Success: true, Verified: ptrB(true), ImprovementPct: ptrF(0.3), At: ago(4 * time.Hour), TimeToRecovery: ptrD(200 * time.Second)},
		{Strategy: "pause", Success: true, Verified: ptrB(true), At: ago(5 * time.Hour), TimeToRecovery: ptrD(60 * time.Second)},
		{Strategy: "zz_throttle", Success: true, Verified: ptrB(true), At: ago(6 * time.Hour), TimeToRecovery: ptrD(-time.Second)},
		{Strategy: "old", Success: true, Verified: ptrB(true), At: ago(60 * 24 * time.Hour), TimeToRecovery: ptrD(time.Hour)},
	}
	r := Effectiveness(outcomes, now, DefaultWindow)

	if r.WindowStart != ago(DefaultWindow) || r.WindowEnd != now {
		t.Errorf("window %v..%v", r.WindowStart, r.WindowEnd)
	}
	// 6 attempts in window; successes: rebalance 2, pause 1, zz_throttle 1 = 4.
	if r.Attempts != 6 || r.Successes != 4 || !near(r.OverallSuccessRate, 4.0/6) {
		t.Errorf("totals %d/%d rate %v", r.Successes, r.Attempts, r.OverallSuccessRate)
	}
	// Overall improvement: (0.2+0.1+0.3)/6 = 0.1.
	if !near(r.AvgImprovement, 0.1) {
		t.Errorf("avg improvement %v", r.AvgImprovement)
	}
	// Recovery: 100, 200, 60 (the negative one is discarded) → 120 s.
	if !near(r.AvgTimeToRecoverySeconds, 120) || r.RecoverySamples != 3 {
		t.Errorf("recovery %v over %d", r.AvgTimeToRecoverySeconds, r.RecoverySamples)
	}

	// Ordered by weight: pause 1, zz_throttle 1 (name order), rebalance 0.575.
	var names []string
	for _, s := range r.Strategies {
		names = append(names, s.Name)
	}
	if want := []string{"pause", "zz_throttle", "rebalance"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("order %v, want %v", names, want)
	}
	rb := r.Strategies[2]
	want := StrategyEffectiveness{
		Name: "rebalance", Weight: 0.575, Attempts: 4, Successes: 2, SuccessRate: 0.5,
		AvgImprovement: 0.15, ImprovementSamples: 3, AvgTimeToRecoverySeconds: 150, RecoverySamples: 2,
		LastAttempt: ago(time.Hour),
	}
	if rb.Name != want.Name || !near(rb.Weight, want.Weight) || rb.Attempts != want.Attempts || rb.Successes != want.Successes ||
		!near(rb.SuccessRate, want.SuccessRate) || !near(rb.AvgImprovement, want.AvgImprovement) ||
		rb.ImprovementSamples != want.ImprovementSamples || !near(rb.AvgTimeToRecoverySeconds, want.AvgTimeToRecoverySeconds) ||
		rb.RecoverySamples != want.RecoverySamples || !rb.LastAttempt.Equal(want.LastAttempt) {
		t.Errorf("rebalance\n got %+v\nwant %+v", rb, want)
	}

	// The report's weights are the weights selection uses.
	w := Weights(outcomes, now, DefaultWindow)
	for _, s := range r.Strategies {
		if w[s.Name] != s.Weight {
			t.Errorf("%s: report weight %v, Weights %v", s.Name, s.Weight, w[s.Name])
		}
	}
	if len(w) != len(r.Strategies) {
		t.Errorf("%d weights, %d report lines", len(w), len(r.Strategies))
	}

	data, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(data), `"overall_success_rate":0.6666666666666666`) {
		t.Errorf("json %s %v", data, err)
	}
}

func TestEffectivenessEmpty(t *testing.T) {
	r := Effectiveness(nil, now, time.Hour)
	if r.Attempts != 0 || r.OverallSuccessRate != 0 || r.AvgTimeToRecoverySeconds != 0 || r.Strategies == nil || len(r.Strategies) != 0 {
		t.Errorf("empty report %+v", r)
	}
	if r.WindowStart != ago(time.Hour) {
		t.Errorf("window start %v", r.WindowStart)
	}
	data, _ := json.Marshal(r)
	if !strings.Contains(string(data), `"strategies":[]`) {
		t.Errorf("empty strategies must be [] for SQL consumers: %s", data)
	}
}
