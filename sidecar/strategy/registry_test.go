package strategy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

type fake struct {
	name    string
	handles []classify.Class
	impact  float64
	dur     time.Duration
	rev     bool
}

func (f *fake) Name() string                     { return f.name }
func (f *fake) Handles() []classify.Class        { return f.handles }
func (f *fake) Impact() float64                  { return f.impact }
func (f *fake) EstimatedDuration() time.Duration { return f.dur }
func (f *fake) Reversible() bool                 { return f.rev }
func (f *fake) Execute(context.Context, *Context) (Result, error) {
	return Result{Success: true, ActionsTaken: 1}, nil
}
func (f *fake) Rollback(context.Context, *Context) error {
	if !f.rev {
		return fmt.Errorf("%s: %w", f.name, ErrNotReversible)
	}
	return nil
}

// gated is a fake whose availability is fixed, counting probes.
type gated struct {
	fake
	up     bool
	why    string
	probes atomic.Int32
}

func (g *gated) Available(context.Context) (bool, string) {
	g.probes.Add(1)
	return g.up, g.why
}

const (
	hot  = classify.ClassHotspotCongestion
	mem  = classify.ClassMemoryPressure
	frag = classify.ClassIndexFragmentation
	mnt  = classify.ClassMaintenanceContention
	skew = classify.ClassCentroidSkew
)

func s(name string, impact float64, rev bool, classes ...classify.Class) *fake {
	return &fake{name: name, handles: classes, impact: impact, dur: time.Minute, rev: rev}
}

func problem(c classify.Class) classify.Problem { return classify.Problem{Class: c} }

// builtins mirrors the design's built-in strategies and their declared impact.
func builtins() []Strategy {
	return []Strategy{
		s("rebalance_partitions", 0.3, true, hot),
		s("pause_maintenance", 0.1, true, mnt),
		s("throttle_ingestion", 0.4, true, hot, mem),
		s("scale_replicas", 0.2, true, hot),
		s("compact_indexes", 0.5, false, frag),
	}
}

func defaultLimits() Limits {
	return Limits{MaxImpact: 0.5, ApprovalStrategies: []string{"scale_replicas"}}
}

func mustRegistry(t *testing.T, ss ...Strategy) *Registry {
	t.Helper()
	r, err := NewRegistry(ss...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name       string
		strategies []Strategy
		class      classify.Class
		lim        Limits
		want       string // "" = none
		approval   bool
		verdicts   map[string]Verdict
	}{
		{
			name:       "design defaults, hotspot: scale_replicas needs approval, rebalance chosen",
			strategies: builtins(), class: hot, lim: defaultLimits(),
			want: "rebalance_partitions",
			verdicts: map[string]Verdict{
				"rebalance_partitions": VerdictChosen, "scale_replicas": VerdictApprovalRequired,
				"throttle_ingestion": VerdictOutranked, "pause_maintenance": VerdictClassNotHandled,
				"compact_indexes": VerdictClassNotHandled,
			},
		},
		{name: "design defaults, memory", strategies: builtins(), class: mem, lim: defaultLimits(), want: "throttle_ingestion"},
		{name: "design defaults, maintenance", strategies: builtins(), class: mnt, lim: defaultLimits(), want: "pause_maintenance"},
		{name: "impact equal to the limit is allowed", strategies: builtins(), class: frag, lim: defaultLimits(), want: "compact_indexes"},
		{
			name: "impact above the limit is filtered", strategies: builtins(), class: frag,
			lim: Limits{MaxImpact: 0.49}, want: "",
			verdicts: map[string]Verdict{"compact_indexes": VerdictImpactTooHigh},
		},
		{
			name: "no strategy handles the class", strategies: builtins(), class: skew, lim: defaultLimits(), want: "",
			verdicts: map[string]Verdict{"rebalance_partitions": VerdictClassNotHandled, "compact_indexes": VerdictClassNotHandled},
		},
		{name: "unknown problems have no strategy", strategies: builtins(), class: classify.ClassUnknown, lim: defaultLimits(), want: ""},
		{name: "empty registry", class: hot, lim: defaultLimits(), want: ""},
		{
			name: "all filtered out for different reasons",
			strategies: []Strategy{
				s("a", 0.9, true, hot),
				&gated{fake: *s("b", 0.1, true, hot), why: "no kubernetes"},
				s("c", 0.1, true, mem),
			},
			class: hot, lim: Limits{MaxImpact: 0.5}, want: "",
			verdicts: map[string]Verdict{"a": VerdictImpactTooHigh, "b": VerdictUnavailable, "c": VerdictClassNotHandled},
		},
		{
			name:       "tie on weight: lower impact wins",
			strategies: []Strategy{s("x", 0.4, true, hot), s("y", 0.2, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1}, want: "y",
		},
		{
			name:       "tie on weight and impact: reversible wins",
			strategies: []Strategy{s("a", 0.2, false, hot), s("b", 0.2, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1}, want: "b",
		},
		{
			name:       "full tie: name order, not registration order",
			strategies: []Strategy{s("zeta", 0.2, true, hot), s("alpha", 0.2, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1}, want: "alpha",
		},
		{
			name:       "learned weight overrides impact order",
			strategies: []Strategy{s("gentle", 0.1, true, hot), s("strong", 0.4, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Weights: map[string]float64{"strong": 1.2}}, want: "strong",
		},
		{
			name:       "learned weight below default loses to an untried strategy",
			strategies: []Strategy{s("tried", 0.1, true, hot), s("untried", 0.4, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Weights: map[string]float64{"tried": 0.6}}, want: "untried",
		},
		{
			name:       "zero weight is still chosen when alone",
			strategies: []Strategy{s("only", 0.1, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Weights: map[string]float64{"only": 0}}, want: "only",
		},
		{
			name:       "NaN weight ranks as zero",
			strategies: []Strategy{s("broken", 0.1, true, hot), s("sound", 0.3, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Weights: map[string]float64{"broken": math.NaN(), "sound": 0.01}}, want: "sound",
		},
		{
			name:       "weights of other strategies do not matter",
			strategies: []Strategy{s("a", 0.3, true, hot), s("b", 0.1, true, hot), s("m", 0.1, true, mem)},
			class:      hot, lim: Limits{MaxImpact: 1, Weights: map[string]float64{"m": 9, "a": 1}}, want: "b",
		},
		{
			name:       "unavailable strategy skipped for the next",
			strategies: []Strategy{&gated{fake: *s("k8s", 0.1, true, hot), why: "not in a cluster"}, s("local", 0.3, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1}, want: "local",
			verdicts: map[string]Verdict{"k8s": VerdictUnavailable, "local": VerdictChosen},
		},
		{
			name:       "a held measure is not chosen again: the next remedy acts under it",
			strategies: []Strategy{s("cap", 0.1, true, hot), s("move", 0.3, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Held: map[string]int64{"cap": 7}}, want: "move",
			verdicts: map[string]Verdict{"cap": VerdictHeld, "move": VerdictChosen},
		},
		{
			name:       "held and alone: nothing to choose",
			strategies: []Strategy{s("cap", 0.1, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, Held: map[string]int64{"cap": 7}}, want: "",
			verdicts: map[string]Verdict{"cap": VerdictHeld},
		},
		{
			name:       "available gated strategy can win",
			strategies: []Strategy{&gated{fake: *s("k8s", 0.1, true, hot), up: true}, s("local", 0.3, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1}, want: "k8s",
		},
		{
			name:       "only approval strategies: best proposed for approval",
			strategies: []Strategy{s("a", 0.3, true, hot), s("b", 0.2, true, hot)},
			class:      hot, lim: Limits{MaxImpact: 1, ApprovalStrategies: []string{"a", "b"}},
			want: "b", approval: true,
			verdicts: map[string]Verdict{"b": VerdictChosen, "a": VerdictOutranked},
		},
		{
			name:       "approval class: every strategy needs approval",
			strategies: builtins(), class: hot,
			lim:  Limits{MaxImpact: 0.5, ApprovalClasses: []classify.Class{hot}, ApprovalStrategies: []string{"scale_replicas"}},
			want: "scale_replicas", approval: true,
		},
		{
			name:       "approval class for another class does not apply",
			strategies: builtins(), class: mem,
			lim:  Limits{MaxImpact: 0.5, ApprovalClasses: []classify.Class{hot}},
			want: "throttle_ingestion",
		},
		{
			name:       "zero limits admit only zero-impact strategies",
			strategies: []Strategy{s("free", 0, true, hot), s("cheap", 0.01, true, hot)},
			class:      hot, lim: Limits{}, want: "free",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRegistry(t, tc.strategies...)
			sel := r.Select(context.Background(), problem(tc.class), tc.lim)
			if sel.Chosen != tc.want || sel.Found() != (tc.want != "") {
				t.Fatalf("chose %q (found %v), want %q\n%s", sel.Chosen, sel.Found(), tc.want, sel.Explain())
			}
			if sel.Found() && sel.Strategy.Name() != tc.want {
				t.Fatalf("Strategy %s, Chosen %s", sel.Strategy.Name(), sel.Chosen)
			}
			if sel.RequiresApproval != tc.approval {
				t.Errorf("requires approval %v, want %v", sel.RequiresApproval, tc.approval)
			}
			if len(sel.Candidates) != len(tc.strategies) {
				t.Fatalf("%d candidates for %d strategies", len(sel.Candidates), len(tc.strategies))
			}
			got := map[string]Verdict{}
			chosen := 0
			for _, c := range sel.Candidates {
				got[c.Name] = c.Verdict
				if c.Verdict == VerdictChosen {
					chosen++
				}
				if c.Reason == "" {
					t.Errorf("%s has no reason", c.Name)
				}
			}
			if chosen != map[bool]int{true: 1, false: 0}[tc.want != ""] {
				t.Errorf("%d chosen verdicts", chosen)
			}
			for name, v := range tc.verdicts {
				if got[name] != v {
					t.Errorf("%s verdict %s, want %s\n%s", name, got[name], v, sel.Explain())
				}
			}
		})
	}
}

func TestSelectRegistrationOrderIrrelevant(t *testing.T) {
	a := []Strategy{s("a", 0.2, true, hot), s("b", 0.2, false, hot), s("c", 0.1, true, hot), s("d", 0.2, true, hot)}
	lim := Limits{MaxImpact: 1, Weights: map[string]float64{"c": 0.5}}
	want := mustRegistry(t, a...).Select(context.Background(), problem(hot), lim)
	rev := []Strategy{a[3], a[2], a[1], a[0]}
	got := mustRegistry(t, rev...).Select(context.Background(), problem(hot), lim)
	if !reflect.DeepEqual(got.Candidates, want.Candidates) || got.Chosen != "a" {
		t.Fatalf("order matters:\n%s\n%s", want.Explain(), got.Explain())
	}
	// Ranking: a (1, 0.2, rev) < d by name < b (irreversible) < c (weight 0.5).
	var names []string
	for _, c := range got.Candidates {
		names = append(names, fmt.Sprintf("%s#%d", c.Name, c.Rank))
	}
	if want := []string{"a#1", "d#2", "b#3", "c#4"}; !reflect.DeepEqual(names, want) {
		t.Errorf("ranking %v, want %v", names, want)
	}
}

func TestSelectReasons(t *testing.T) {
	r := mustRegistry(t, append(builtins(), &gated{fake: *s("k8s_thing", 0.1, true, hot), why: "KUBERNETES_SERVICE_HOST not set"})...)
	lim := defaultLimits()
	lim.Weights = map[string]float64{"throttle_ingestion": 0.75}
	sel := r.Select(context.Background(), problem(hot), lim)
	reasons := map[string]string{}
	for _, c := range sel.Candidates {
		reasons[c.Name] = c.Reason
	}
	want := map[string]string{
		"rebalance_partitions": "rank 2: weight 1 (default), impact 0.3, reversible",
		"scale_replicas":       "rank 1, needs approval (strategy is in require_approval_strategies); would outrank rebalance_partitions (same weight 1, impact 0.2 < 0.3)",
		"throttle_ingestion":   "rank 3, below rebalance_partitions: weight 1 > 0.75",
		"pause_maintenance":    "handles maintenance_contention, not hotspot_congestion",
		"k8s_thing":            "unavailable: KUBERNETES_SERVICE_HOST not set",
	}
	for name, w := range want {
		if reasons[name] != w {
			t.Errorf("%s reason\n got %q\nwant %q", name, reasons[name], w)
		}
	}
	ex := sel.Explain()
	if !strings.HasPrefix(ex, "problem hotspot_congestion: chose rebalance_partitions\n  - scale_replicas: approval_required:") {
		t.Errorf("explanation order:\n%s", ex)
	}
	data, err := json.Marshal(sel)
	if err != nil || !strings.Contains(string(data), `"chosen":"rebalance_partitions"`) {
		t.Errorf("json %s %v", data, err)
	}

	none := mustRegistry(t, builtins()...).Select(context.Background(), problem(frag), Limits{MaxImpact: 0.2})
	if ex := none.Explain(); !strings.Contains(ex, "no strategy selected") || !strings.Contains(ex, "compact_indexes: impact_exceeds_limit: impact 0.5 > max_auto_heal_impact 0.2") {
		t.Errorf("explanation:\n%s", ex)
	}
	appr := mustRegistry(t, builtins()...).Select(context.Background(), problem(hot), Limits{MaxImpact: 1, ApprovalClasses: []classify.Class{hot}})
	if ex := appr.Explain(); !strings.Contains(ex, "proposed scale_replicas, awaiting approval") ||
		!strings.Contains(ex, "needs approval (problem class hotspot_congestion is in require_approval) and no eligible strategy runs without it") {
		t.Errorf("explanation:\n%s", ex)
	}
}

func TestAvailabilityProbedOnlyWhenOtherwiseEligible(t *testing.T) {
	wrongClass := &gated{fake: *s("wrong_class", 0.1, true, mem), up: true}
	tooBig := &gated{fake: *s("too_big", 0.9, true, hot), up: true}
	fits := &gated{fake: *s("fits", 0.1, true, hot), up: true}
	r := mustRegistry(t, wrongClass, tooBig, fits)
	r.Select(context.Background(), problem(hot), Limits{MaxImpact: 0.5})
	if wrongClass.probes.Load() != 0 || tooBig.probes.Load() != 0 || fits.probes.Load() != 1 {
		t.Errorf("probes: wrong_class %d too_big %d fits %d", wrongClass.probes.Load(), tooBig.probes.Load(), fits.probes.Load())
	}
}

func TestRegister(t *testing.T) {
	tests := []struct {
		name string
		s    Strategy
		want error
	}{
		{"valid", s("ok", 0.5, true, hot), nil},
		{"impact bounds inclusive", s("edge", 1, true, hot), nil},
		{"nil", nil, ErrInvalid},
		{"empty name", s("", 0.1, true, hot), ErrInvalid},
		{"negative impact", s("neg", -0.1, true, hot), ErrInvalid},
		{"impact above 1", s("big", 1.01, true, hot), ErrInvalid},
		{"NaN impact", s("nan", math.NaN(), true, hot), ErrInvalid},
		{"no classes", s("none", 0.1, true), ErrInvalid},
		{"unknown class", s("bad", 0.1, true, "gremlins"), ErrInvalid},
		{"zero duration", &fake{name: "instant", handles: []classify.Class{hot}, impact: 0.1}, ErrInvalid},
		{"duplicate", s("taken", 0.1, true, mem), ErrDuplicate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRegistry(t, s("taken", 0.2, true, hot))
			err := r.Register(tc.s)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			wantNames := []string{"taken"}
			if tc.want == nil {
				wantNames = append(wantNames, tc.s.Name())
			}
			if got := r.Names(); !reflect.DeepEqual(got, wantNames) {
				t.Errorf("names %v, want %v", got, wantNames)
			}
		})
	}
	if _, err := NewRegistry(s("a", 0.1, true, hot), s("a", 0.2, true, mem)); !errors.Is(err, ErrDuplicate) {
		t.Errorf("NewRegistry duplicate: %v", err)
	}
	var zero Registry
	if err := zero.Register(s("z", 0.1, true, hot)); err != nil {
		t.Errorf("zero Registry unusable: %v", err)
	}
	if got, ok := zero.Get("z"); !ok || got.Name() != "z" {
		t.Errorf("Get after zero-value Register: %v %v", got, ok)
	}
	if _, ok := zero.Get("missing"); ok {
		t.Error("Get of a missing name succeeded")
	}
	if n := len(zero.Strategies()); n != 1 {
		t.Errorf("%d strategies", n)
	}
}

func TestConcurrentSelectAndRegister(t *testing.T) {
	r := mustRegistry(t, builtins()...)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			if err := r.Register(s(fmt.Sprintf("extra_%d", i), 0.45, true, hot)); err != nil {
				t.Error(err)
			}
		}(i)
		go func() {
			defer wg.Done()
			if sel := r.Select(context.Background(), problem(hot), defaultLimits()); sel.Chosen != "rebalance_partitions" {
				t.Errorf("chose %s", sel.Chosen)
			}
		}()
	}
	wg.Wait()
	if n := len(r.Names()); n != 13 {
		t.Errorf("%d strategies after concurrent registration", n)
	}
}

// An episode escalates: a strategy that already ran for the problem yields
// to one that has not, even at a lower learned weight, and once all were
// tried the learned weight decides again.
func TestSelectEscalatesWithinEpisode(t *testing.T) {
	r := mustRegistry(t, builtins()...)
	lim := defaultLimits()
	lim.Weights = map[string]float64{"rebalance_partitions": 1.3, "throttle_ingestion": 0.9}
	ctx := context.Background()

	if got := r.Select(ctx, problem(hot), lim).Chosen; got != "rebalance_partitions" {
		t.Fatalf("fresh episode chose %q, want the highest weight rebalance_partitions", got)
	}
	lim.Tried = map[string]int{"rebalance_partitions": 1}
	sel := r.Select(ctx, problem(hot), lim)
	if sel.Chosen != "throttle_ingestion" {
		t.Fatalf("after one rebalance this episode chose %q, want throttle_ingestion\n%s", sel.Chosen, sel.Explain())
	}
	var reb Candidate
	for _, c := range sel.Candidates {
		if c.Name == "rebalance_partitions" {
			reb = c
		}
	}
	if reb.Tried != 1 || reb.RankWeight != 0.65 || reb.Verdict != VerdictOutranked ||
		!strings.Contains(reb.Reason, "ranking weight 0.9 > 0.65") {
		t.Fatalf("rebalance candidate %+v", reb)
	}
	lim.Tried = map[string]int{"rebalance_partitions": 1, "throttle_ingestion": 1}
	if got := r.Select(ctx, problem(hot), lim).Chosen; got != "rebalance_partitions" {
		t.Fatalf("both tried once: chose %q, want the learned order again", got)
	}
	// A negative count (a bad read) never raises a weight.
	lim.Tried = map[string]int{"throttle_ingestion": -3}
	if got := r.Select(ctx, problem(hot), lim).Chosen; got != "rebalance_partitions" {
		t.Fatalf("negative tried count chose %q", got)
	}
}

// resumer is a fake that acts on a stalled standby.
type resumer struct{ gated }

func (*resumer) ReplayStallGrace() time.Duration { return time.Minute }

// A stalled replay (Limits.ReplayStalled) leaves only the strategies that
// act on the standby eligible, with the stall as the others' reason; with
// no stall, those are the ones not applicable. Neither is probed for
// availability when it does not fit.
func TestSelectReplayStall(t *testing.T) {
	lag := classify.ClassReplicationLag
	throttle := &gated{fake: *s("throttle_ingestion", 0.4, true, hot, lag), up: true}
	resume := &resumer{gated{fake: *s("resume_replay", 0.05, true, lag), up: true}}
	r := mustRegistry(t, throttle, resume)
	verdicts := func(sel Selection) map[string]string {
		out := map[string]string{}
		for _, c := range sel.Candidates {
			out[c.Name] = string(c.Verdict) + ": " + c.Reason
		}
		return out
	}
	why := "replay stalled on sb: replay_lsn has not moved for 130s while WAL is received; reducing WAL on the primary cannot help"
	sel := r.Select(context.Background(), problem(lag), Limits{MaxImpact: 0.5, ReplayStalled: why})
	if v := verdicts(sel); sel.Chosen != "resume_replay" || v["throttle_ingestion"] != "not_applicable: "+why {
		t.Fatalf("stalled: chose %q, verdicts %v", sel.Chosen, v)
	}
	if throttle.probes.Load() != 0 {
		t.Errorf("throttle_ingestion probed %d times while not applicable", throttle.probes.Load())
	}
	sel = r.Select(context.Background(), problem(lag), Limits{MaxImpact: 0.5})
	if v := verdicts(sel); sel.Chosen != "throttle_ingestion" || !strings.HasPrefix(v["resume_replay"], "not_applicable: no replica's replay is stalled") {
		t.Fatalf("replaying: chose %q, verdicts %v", sel.Chosen, v)
	}
	if resume.probes.Load() != 1 {
		t.Errorf("resume_replay probed %d times, want once (only when it fit)", resume.probes.Load())
	}
	// Another class: the stall is not its cause, and class_not_handled
	// comes first.
	sel = r.Select(context.Background(), problem(hot), Limits{MaxImpact: 0.5, ReplayStalled: why})
	if v := verdicts(sel); sel.Chosen != "throttle_ingestion" || !strings.HasPrefix(v["resume_replay"], "class_not_handled") {
		t.Fatalf("hotspot: verdicts %v", v)
	}
	if !CuresStalledReplay(resume) || CuresStalledReplay(throttle) {
		t.Error("CuresStalledReplay")
	}
}
