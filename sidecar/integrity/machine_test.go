package integrity

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sample is one observation at t0 + at seconds; lambda NaN = unknown.
type sample struct {
	at     float64
	lambda float64
}

// expect: the reported state after each sample, and the samples (by index)
// that must report a transition.
type machineCase struct {
	name   string
	policy func(*Policy)
	start  State // state reached first by a known sample at -1000 s
	steps  []sample
	want   []State
	trans  []int
}

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// started returns a machine already in state st, its last transition long
// enough ago that the cooldown does not interfere.
func started(t *testing.T, p Policy, st State) *Machine {
	t.Helper()
	m := NewMachine(p)
	lam := map[State]float64{Normal: 1, Stress: 0.5, Critical: 0.1}[st]
	if st == Unknown {
		return m
	}
	if got, tr := m.Observe(lam, at(-1000)); got != st || tr == nil || tr.From != Unknown {
		t.Fatalf("setup: state %v transition %+v", got, tr)
	}
	return m
}

func TestMachineRules(t *testing.T) {
	nan := math.NaN()
	hiOff := 0.8 + 0.1 // what the machine computes for high + offset
	loOff := 0.3 + 0.1
	cases := []machineCase{
		{name: "normal stays normal exactly at threshold_high", start: Normal,
			steps: []sample{{0, 0.8}, {10, 0.8}, {20, 0.8}, {30, 0.8}},
			want:  []State{Normal, Normal, Normal, Normal}},
		{name: "normal->stress after degrade_samples below high", start: Normal,
			steps: []sample{{0, 0.79}, {10, 0.79}, {20, 0.79}},
			want:  []State{Normal, Normal, Stress}, trans: []int{2}},
		{name: "one sample short of degrade_samples", start: Normal,
			steps: []sample{{0, 0.5}, {10, 0.5}, {20, 0.9}, {30, 0.5}, {40, 0.5}},
			want:  []State{Normal, Normal, Normal, Normal, Normal}},
		{name: "normal->critical directly when the last critical_samples were low", start: Normal,
			steps: []sample{{0, 0.5}, {10, 0.2}, {20, 0.2}},
			want:  []State{Normal, Normal, Critical}, trans: []int{2}},
		{name: "normal->stress when only one of the degrade samples was low", start: Normal,
			steps: []sample{{0, 0.5}, {10, 0.5}, {20, 0.2}},
			want:  []State{Normal, Normal, Stress}, trans: []int{2}},
		{name: "stress->critical after critical_samples at threshold_low exactly", start: Stress,
			steps: []sample{{0, 0.3}, {10, 0.3}},
			want:  []State{Stress, Critical}, trans: []int{1}},
		{name: "stress: one low sample short of critical", start: Stress,
			steps: []sample{{0, 0.3}, {10, 0.31}, {20, 0.3}},
			want:  []State{Stress, Stress, Stress}},
		{name: "low samples seen while normal count for critical after the cooldown", start: Normal,
			// stress at 20 (3 below high, 1 low); lows at 30, 40 ... but the
			// cooldown (60 s) holds critical until 80.
			steps: []sample{{0, 0.5}, {10, 0.5}, {20, 0.25}, {30, 0.25}, {79, 0.25}, {80, 0.25}},
			want:  []State{Normal, Normal, Stress, Stress, Stress, Critical}, trans: []int{2, 5}},
		{name: "critical->stress after the hold above low+offset (exactly at hold)", start: Critical,
			steps: []sample{{0, 0.5}, {299, 0.5}, {300, 0.5}},
			want:  []State{Critical, Critical, Stress}, trans: []int{2}},
		{name: "critical: hold one second short, then one second long", start: Critical,
			steps: []sample{{0, 0.5}, {299, 0.5}, {301, 0.5}},
			want:  []State{Critical, Critical, Stress}, trans: []int{2}},
		{name: "critical: λ exactly at low+offset does not start the hold", start: Critical,
			steps: []sample{{0, loOff}, {400, loOff}, {800, loOff}},
			want:  []State{Critical, Critical, Critical}},
		{name: "critical: a dip restarts the hold", start: Critical,
			steps: []sample{{0, 0.5}, {200, 0.35}, {250, 0.5}, {500, 0.5}, {550, 0.5}},
			want:  []State{Critical, Critical, Critical, Critical, Stress}, trans: []int{4}},
		{name: "stress->normal after the hold above high+offset", start: Stress,
			steps: []sample{{0, 0.95}, {150, 0.95}, {299, 0.95}, {300, 0.95}},
			want:  []State{Stress, Stress, Stress, Normal}, trans: []int{3}},
		{name: "stress: λ exactly at high+offset does not restore", start: Stress,
			steps: []sample{{0, hiOff}, {400, hiOff}},
			want:  []State{Stress, Stress}},
		{name: "stress: above high but not above high+offset never restores", start: Stress,
			steps: []sample{{0, 0.85}, {400, 0.85}, {800, 0.85}},
			want:  []State{Stress, Stress, Stress}},
		{name: "critical recovers one step at a time, second step after the cooldown", start: Critical,
			steps: []sample{{0, 1}, {300, 1}, {330, 1}, {359, 1}, {360, 1}},
			want:  []State{Critical, Stress, Stress, Stress, Normal}, trans: []int{1, 4}},
		{name: "cooldown: degrade condition met 1 s early waits, fires exactly at 60 s", start: Stress,
			// stress->normal at 300, then λ collapses; the 3 below-high
			// samples are done at 320 but the cooldown ends at 360.
			steps: []sample{{0, 1}, {300, 1}, {310, 0.5}, {315, 0.5}, {320, 0.5}, {359, 0.5}, {360, 0.5}},
			want:  []State{Stress, Normal, Normal, Normal, Normal, Normal, Stress}, trans: []int{1, 6}},
		{name: "unknown sample moves to unknown at once, even in cooldown", start: Normal,
			steps: []sample{{0, 0.5}, {10, 0.5}, {20, 0.5}, {21, nan}},
			want:  []State{Normal, Normal, Stress, Unknown}, trans: []int{2, 3}},
		{name: "from unknown straight to what the sample says", start: Normal,
			steps: []sample{{0, nan}, {1, 0.2}, {2, nan}, {3, 0.5}, {4, nan}, {5, 0.8}},
			want:  []State{Unknown, Critical, Unknown, Stress, Unknown, Normal}, trans: []int{0, 1, 2, 3, 4, 5}},
		{name: "after unknown the degrade count starts over", start: Normal,
			steps: []sample{{0, 0.9}, {100, 0.5}, {110, 0.5}, {120, nan}, {130, 0.9}, {200, 0.5}, {210, 0.5}},
			want:  []State{Normal, Normal, Normal, Unknown, Normal, Normal, Normal}, trans: []int{3, 4}},
		{name: "new machine starts unknown", start: Unknown,
			steps: []sample{{0, 0.1}},
			want:  []State{Critical}, trans: []int{0}},
		{name: "degrade_samples 1 and critical_samples 1", start: Normal,
			policy: func(p *Policy) { p.Hysteresis.DegradeSamples, p.Hysteresis.CriticalSamples = 1, 1 },
			steps:  []sample{{0, 0.79}},
			want:   []State{Stress}, trans: []int{0}},
		{name: "zero cooldown and zero hold restore on the next sample", start: Critical,
			policy: func(p *Policy) {
				p.Hysteresis.CooldownAfterTransitionSeconds, p.Hysteresis.RestoreHoldSeconds = 0, 0
			},
			steps: []sample{{0, 0.95}, {1, 0.95}},
			want:  []State{Stress, Normal}, trans: []int{0, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			m := started(t, p, tc.start)
			if len(tc.want) != len(tc.steps) {
				t.Fatal("bad case")
			}
			for i, s := range tc.steps {
				got, tr := m.Observe(s.lambda, at(s.at))
				if got != tc.want[i] {
					t.Fatalf("sample %d (t=%vs λ=%v): state %s, want %s", i, s.at, s.lambda, StateName(got), StateName(tc.want[i]))
				}
				wantTr := false
				for _, j := range tc.trans {
					wantTr = wantTr || j == i
				}
				if (tr != nil) != wantTr {
					t.Fatalf("sample %d: transition %+v, want one: %v", i, tr, wantTr)
				}
				if tr != nil {
					if tr.To != got || tr.From == tr.To || !tr.At.Equal(at(s.at)) || tr.Reason == "" {
						t.Fatalf("sample %d: bad transition %+v", i, tr)
					}
					if !math.IsNaN(s.lambda) && tr.Lambda != s.lambda {
						t.Fatalf("sample %d: transition λ %v, sample %v", i, tr.Lambda, s.lambda)
					}
				}
			}
		})
	}
}

func TestStateValuesAreShmproto(t *testing.T) {
	if Normal != shmproto.StateNormal || Stress != shmproto.StateStress || Critical != shmproto.StateCritical || Unknown != shmproto.StateUnknown {
		t.Fatal("state numbering differs from shmproto")
	}
	for i, name := range shmproto.StateNames {
		st, err := ParseState(strings.ToUpper(name))
		if err != nil || st != State(i) || StateName(st) != name {
			t.Fatalf("%s: %v %v", name, st, err)
		}
	}
	if _, err := ParseState("panic"); !errors.Is(err, ErrRange) {
		t.Fatalf("bad state accepted: %v", err)
	}
}

func TestOverride(t *testing.T) {
	m := started(t, DefaultPolicy(), Normal)
	tr, err := m.Override(Critical, at(100), at(0), "incident 42")
	if err != nil || tr == nil || tr.From != Normal || tr.To != Critical || !strings.Contains(tr.Reason, "incident 42") {
		t.Fatalf("override: %+v %v", tr, err)
	}
	// Pinned: healthy samples do not move the reported state, the rules
	// keep running underneath.
	for _, s := range []float64{0, 50, 99} {
		if st, tr := m.Observe(1, at(s)); st != Critical || tr != nil {
			t.Fatalf("t=%v: %s %+v during override", s, StateName(st), tr)
		}
	}
	if m.Underlying() != Normal {
		t.Fatalf("underlying %s", StateName(m.Underlying()))
	}
	// Expiry at exactly until: back to the underlying state, reported.
	st, tr := m.Observe(1, at(100))
	if st != Normal || tr == nil || tr.From != Critical || tr.To != Normal {
		t.Fatalf("expiry: %s %+v", StateName(st), tr)
	}
	if _, _, _, ok := m.ActiveOverride(); ok {
		t.Fatal("override still active")
	}
	// An indefinite override lasts until cleared.
	if _, err := m.Override(Stress, time.Time{}, at(200), ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Observe(1, at(100000)); st != Stress {
		t.Fatalf("indefinite override lost: %s", StateName(st))
	}
	if tr := m.ClearOverride(at(100001)); tr == nil || tr.To != Normal {
		t.Fatalf("clear: %+v", tr)
	}
	// Invalid overrides.
	if _, err := m.Override(State(9), at(1e6), at(0), ""); !errors.Is(err, ErrRange) {
		t.Fatalf("state 9: %v", err)
	}
	if _, err := m.Override(Critical, at(10), at(10), ""); !errors.Is(err, ErrRange) {
		t.Fatalf("until == now: %v", err)
	}
	// Overriding to the current state reports no transition.
	if tr, err := m.Override(Normal, at(1e6), at(0), ""); err != nil || tr != nil {
		t.Fatalf("same-state override: %+v %v", tr, err)
	}
}

func TestMachineBookkeeping(t *testing.T) {
	m := NewMachine(DefaultPolicy())
	if m.State() != Unknown || !math.IsNaN(m.LastLambda()) {
		t.Fatal("new machine not unknown")
	}
	m.Observe(0.9, at(0))
	m.ObserveUnknown(at(10))
	m.Observe(math.Inf(1), at(20))
	if m.Samples() != 3 || m.LastLambda() != 0.9 || !m.LastSample().Equal(at(20)) || m.State() != Unknown {
		t.Fatalf("samples %d λ %v last %v state %s", m.Samples(), m.LastLambda(), m.LastSample(), StateName(m.State()))
	}
	bad := DefaultPolicy()
	bad.ThresholdLow = 0.9
	if err := m.SetPolicy(bad); err == nil || !errors.Is(err, ErrRange) {
		t.Fatalf("bad policy accepted: %v", err)
	}
	if NewMachine(bad).Policy() != DefaultPolicy() {
		t.Fatal("invalid policy not replaced by the default")
	}
}

func TestParsePolicy(t *testing.T) {
	full := `{"threshold_high":0.8,"threshold_low":0.3,"hysteresis":{"degrade_samples":3,"critical_samples":2,
		"restore_threshold_offset":0.1,"restore_hold_seconds":300,"cooldown_after_transition_seconds":60}}`
	p, err := ParsePolicy([]byte(full))
	if err != nil || p != DefaultPolicy() {
		t.Fatalf("spec defaults: %+v %v", p, err)
	}
	// Round trip through the struct's own JSON.
	b, _ := json.Marshal(DefaultPolicy())
	if p, err := ParsePolicy(b); err != nil || p != DefaultPolicy() {
		t.Fatalf("round trip %s: %v", b, err)
	}
	p, err = ParsePolicy([]byte(`{"threshold_high": 0.9, "hysteresis": {"degrade_samples": 5}}`))
	if err != nil || p.ThresholdHigh != 0.9 || p.Hysteresis.DegradeSamples != 5 || p.ThresholdLow != 0.3 || p.Hysteresis.CriticalSamples != 2 {
		t.Fatalf("partial: %+v %v", p, err)
	}
	for _, tc := range []struct {
		doc  string
		key  string
		kind error
	}{
		{`{"threshold_hihg":0.8}`, "threshold_hihg", ErrUnknownKey},
		{`{"hysteresis":{"degrade":3}}`, "hysteresis.degrade", ErrUnknownKey},
		{`{"threshold_high":"0.8"}`, "threshold_high", ErrType},
		{`{"threshold_high":null}`, "threshold_high", ErrType},
		{`{"hysteresis":null}`, "hysteresis", ErrType},
		{`{"hysteresis":{"degrade_samples":2.5}}`, "hysteresis.degrade_samples", ErrType},
		{`{"threshold_high":0}`, "threshold_high", ErrRange},
		{`{"threshold_high":1.01}`, "threshold_high", ErrRange},
		{`{"threshold_low":0.8}`, "threshold_low", ErrRange},
		{`{"threshold_low":-0.1}`, "threshold_low", ErrRange},
		{`{"hysteresis":{"degrade_samples":0}}`, "hysteresis.degrade_samples", ErrRange},
		{`{"hysteresis":{"critical_samples":-1}}`, "hysteresis.critical_samples", ErrRange},
		{`{"hysteresis":{"restore_threshold_offset":-0.1}}`, "hysteresis.restore_threshold_offset", ErrRange},
		{`{"hysteresis":{"restore_hold_seconds":-1}}`, "hysteresis.restore_hold_seconds", ErrRange},
		{`{"hysteresis":{"cooldown_after_transition_seconds":-5}}`, "hysteresis.cooldown_after_transition_seconds", ErrRange},
		{`{"threshold_high":0.8,"threshold_high":0.9}`, "threshold_high", ErrSyntax},
		{`{"threshold_high":0.8`, "", ErrSyntax},
		{`[0.8]`, "", ErrType},
		{`{"threshold_high":0.8} {}`, "", ErrSyntax},
	} {
		_, err := ParsePolicy([]byte(tc.doc))
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Key != tc.key || !errors.Is(err, tc.kind) {
			t.Errorf("%s: error %v (key %q), want key %q kind %v", tc.doc, err, keyOf(pe), tc.key, tc.kind)
			continue
		}
		if tc.key != "" && !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: message %q does not name the key", tc.doc, err)
		}
	}
	// The boundaries themselves are accepted.
	if _, err := ParsePolicy([]byte(`{"threshold_high":1,"threshold_low":0.99,"hysteresis":{"degrade_samples":1,"critical_samples":1,"restore_threshold_offset":0,"restore_hold_seconds":0,"cooldown_after_transition_seconds":0}}`)); err != nil {
		t.Fatalf("boundaries rejected: %v", err)
	}
}

func keyOf(pe *PolicyError) string {
	if pe == nil {
		return "<nil>"
	}
	return pe.Key
}
