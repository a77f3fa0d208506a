package strategy

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// DefaultWeight is the weight of a strategy with no learned weight.
const DefaultWeight = 1.0

// Registry holds the strategies the engine may use. It is safe for concurrent
// use.
type Registry struct {
	mu     sync.RWMutex
	list   []Strategy
	byName map[string]Strategy
}

// NewRegistry returns a registry holding strategies, in order.
func NewRegistry(strategies ...Strategy) (*Registry, error) {
	r := &Registry{byName: map[string]Strategy{}}
	for _, s := range strategies {
		if err := r.Register(s); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds s. A name already registered is rejected with ErrDuplicate,
// because outcomes, weights and configuration all refer to strategies by name.
// A strategy whose declared properties cannot be used safely (no name, impact
// outside 0..1, no or unknown classes, non-positive duration) is rejected with
// ErrInvalid.
func (r *Registry) Register(s Strategy) error {
	if s == nil {
		return fmt.Errorf("strategy: register nil: %w", ErrInvalid)
	}
	name := s.Name()
	if name == "" {
		return fmt.Errorf("strategy: register: empty name: %w", ErrInvalid)
	}
	if imp := s.Impact(); math.IsNaN(imp) || imp < 0 || imp > 1 {
		return fmt.Errorf("strategy: register %s: impact %v outside 0..1: %w", name, imp, ErrInvalid)
	}
	if d := s.EstimatedDuration(); d <= 0 {
		return fmt.Errorf("strategy: register %s: estimated duration %v must be positive: %w", name, d, ErrInvalid)
	}
	classes := s.Handles()
	if len(classes) == 0 {
		return fmt.Errorf("strategy: register %s: handles no problem class: %w", name, ErrInvalid)
	}
	for _, c := range classes {
		if !c.Valid() {
			return fmt.Errorf("strategy: register %s: handles %q: %w", name, c, ErrInvalid)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName == nil {
		r.byName = map[string]Strategy{}
	}
	if _, dup := r.byName[name]; dup {
		return fmt.Errorf("strategy: register %s: %w", name, ErrDuplicate)
	}
	r.byName[name] = s
	r.list = append(r.list, s)
	return nil
}

// Get returns the strategy registered under name, for manual execution
// (ruvector_healing_execute) which bypasses selection.
func (r *Registry) Get(name string) (Strategy, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.byName[name]
	return s, ok
}

// Strategies returns the registered strategies in registration order.
func (r *Registry) Strategies() []Strategy {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.list)
}

// Names returns the registered names in registration order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, len(r.list))
	for i, s := range r.list {
		out[i] = s.Name()
	}
	return out
}

// Limits is what selection must respect, taken from the healing configuration
// and the learned weights.
type Limits struct {
	// MaxImpact is max_auto_heal_impact: strategies with a higher impact are
	// never selected. Note that the zero value admits only zero-impact
	// strategies.
	MaxImpact float64
	// Weights are learned effectiveness weights by strategy name; a missing
	// name has DefaultWeight. A non-finite weight is treated as 0: a strategy
	// whose record cannot be read should not be preferred.
	Weights map[string]float64
	// ApprovalClasses are problem classes that need human approval
	// (require_approval): every strategy for them needs approval.
	ApprovalClasses []classify.Class
	// ApprovalStrategies are strategies that need human approval
	// (require_approval_strategies).
	ApprovalStrategies []string
	// Tried counts, by strategy name, the attempts already made in the
	// current episode (since the collection last was normal) for the same
	// problem. Each one halves the strategy's ranking weight: a remedy that
	// ran and left the problem in place, verified or not, yields to the
	// next one, as an operator escalates rather than repeat what did not
	// cure it. Once every candidate was tried, learned weight decides again.
	Tried map[string]int
	// Held maps a strategy to the outcome whose measure it keeps in force
	// on the collection after an unverified attempt (Holder). It is not
	// chosen again while held: its measure is already in place, and the
	// episode moves on to a remedy that acts under it.
	Held map[string]int64
	// Declined maps a strategy to the outcome in which it recently
	// declined the same problem (a noop) with nothing acting since. It is
	// not asked again until that decline is older than the engine's
	// backoff: asked every few seconds, it declined for the same reason
	// hundreds of times an hour, each a record.
	Declined map[string]int64
	// ReplayStalled, when set, says why replication lag comes from
	// replicas that receive WAL but replay none: only a ReplayStallRemedy
	// is eligible for a replication_lag problem then (less WAL on the
	// primary cannot help), and a ReplayStallRemedy is eligible only then.
	ReplayStalled string
}

// ReplayStallRemedy is implemented by strategies that act on a standby
// whose replay has stalled (resuming a paused replay), rather than on the
// WAL the primary generates.
type ReplayStallRemedy interface {
	// ReplayStallGrace is how long replay must have stalled before the
	// strategy acts: a pause may be a person's, on purpose, and they have
	// that long to be the one who ends it.
	ReplayStallGrace() time.Duration
}

// CuresStalledReplay reports whether s is a ReplayStallRemedy.
func CuresStalledReplay(s Strategy) bool {
	_, ok := s.(ReplayStallRemedy)
	return ok
}

// EscalationFactor is what each earlier attempt in the episode multiplies a
// strategy's ranking weight by.
const EscalationFactor = 0.5

// Verdict says what selection made of a candidate.
type Verdict string

// Verdicts, in the order the filters apply.
const (
	// VerdictClassNotHandled: the strategy does not handle the problem's class.
	VerdictClassNotHandled Verdict = "class_not_handled"
	// VerdictImpactTooHigh: impact above Limits.MaxImpact.
	VerdictImpactTooHigh Verdict = "impact_exceeds_limit"
	// VerdictNotApplicable: the class is handled, but not the problem's
	// cause (Limits.ReplayStalled).
	VerdictNotApplicable Verdict = "not_applicable"
	// VerdictUnavailable: Available reported false.
	VerdictUnavailable Verdict = "unavailable"
	// VerdictHeld: its measure is held in force (Limits.Held).
	VerdictHeld Verdict = "held_in_force"
	// VerdictDeclinedRecently: it declined this problem recently and
	// nothing acted since (Limits.Declined).
	VerdictDeclinedRecently Verdict = "declined_recently"
	// VerdictApprovalRequired: eligible, but needs approval while a strategy
	// that does not was chosen.
	VerdictApprovalRequired Verdict = "approval_required"
	// VerdictOutranked: eligible, ranked below the chosen strategy.
	VerdictOutranked Verdict = "outranked"
	// VerdictChosen: the selected strategy.
	VerdictChosen Verdict = "chosen"
)

// Candidate is one registered strategy as selection saw it.
type Candidate struct {
	Name       string  `json:"name"`
	Impact     float64 `json:"impact"`
	Reversible bool    `json:"reversible"`
	// Weight is the weight used for ranking; Learned says whether it came
	// from Limits.Weights rather than DefaultWeight.
	Weight  float64 `json:"weight"`
	Learned bool    `json:"learned"`
	// Tried is the number of earlier attempts in this episode (Limits.Tried)
	// and RankWeight the weight ranking uses: Weight × EscalationFactor^Tried.
	Tried      int     `json:"tried_this_episode,omitempty"`
	RankWeight float64 `json:"rank_weight"`
	// RequiresApproval is set for eligible strategies that need approval.
	RequiresApproval bool    `json:"requires_approval"`
	Verdict          Verdict `json:"verdict"`
	// Rank is the 1-based position among eligible strategies (those that
	// passed the class, impact and availability filters), 0 otherwise.
	Rank   int    `json:"rank"`
	Reason string `json:"reason"`
}

// Selection is the result of Select.
type Selection struct {
	// Strategy is the chosen strategy, nil when none qualifies.
	Strategy Strategy `json:"-"`
	// Chosen is its name, "" when none.
	Chosen string `json:"chosen"`
	// RequiresApproval is set when the chosen strategy must be approved by a
	// human before it runs; selection only falls back to such a strategy when
	// no eligible strategy can run automatically.
	RequiresApproval bool           `json:"requires_approval"`
	Class            classify.Class `json:"class"`
	// Candidates lists every registered strategy: eligible ones by rank, then
	// the filtered-out ones in registration order.
	Candidates []Candidate `json:"candidates"`
}

// Found reports whether a strategy was chosen.
func (s Selection) Found() bool { return s.Strategy != nil }

// Explain renders the selection for humans.
func (s Selection) Explain() string {
	var b strings.Builder
	switch {
	case s.Strategy == nil:
		fmt.Fprintf(&b, "problem %s: no strategy selected\n", s.Class)
	case s.RequiresApproval:
		fmt.Fprintf(&b, "problem %s: proposed %s, awaiting approval\n", s.Class, s.Chosen)
	default:
		fmt.Fprintf(&b, "problem %s: chose %s\n", s.Class, s.Chosen)
	}
	for _, c := range s.Candidates {
		fmt.Fprintf(&b, "  - %s: %s: %s\n", c.Name, c.Verdict, c.Reason)
	}
	return b.String()
}

// Select picks the strategy for problem p.
//
// Filters apply in this order, and a candidate's verdict names the first one
// it fails: the strategy must handle p's class, fit its cause (a stalled
// replay, Limits.ReplayStalled), have Impact() ≤ Limits.MaxImpact, and be
// available (Available is only asked of strategies
// that pass the first two, so a Kubernetes probe is not made for nothing).
//
// Eligible strategies are ranked by weight (highest first), then impact
// (lowest first: the design's graduated response), then reversible before
// irreversible, then name (ascending) so the result never depends on
// registration order or map iteration. The best-ranked strategy that needs no
// approval is chosen; if every eligible strategy needs approval, the
// best-ranked one is chosen with RequiresApproval set so the engine can queue
// it for ruvector_healing_approve.
func (r *Registry) Select(ctx context.Context, p classify.Problem, lim Limits) Selection {
	strategies := r.Strategies()
	sel := Selection{Class: p.Class}

	approvalClass := slices.Contains(lim.ApprovalClasses, p.Class)
	stalled := lim.ReplayStalled != "" && p.Class == classify.ClassReplicationLag
	var eligible []int // indexes into cands
	cands := make([]Candidate, len(strategies))
	for i, s := range strategies {
		c := Candidate{Name: s.Name(), Impact: s.Impact(), Reversible: s.Reversible()}
		c.Weight, c.Learned = DefaultWeight, false
		if w, ok := lim.Weights[c.Name]; ok {
			c.Weight, c.Learned = w, true
			if math.IsNaN(w) || math.IsInf(w, 0) {
				c.Weight = 0
			}
		}
		c.Tried = max(lim.Tried[c.Name], 0)
		c.RankWeight = c.Weight * math.Pow(EscalationFactor, float64(c.Tried))
		switch handles := s.Handles(); {
		case !slices.Contains(handles, p.Class):
			c.Verdict = VerdictClassNotHandled
			c.Reason = fmt.Sprintf("handles %s, not %s", joinClasses(handles), p.Class)
		case stalled && !CuresStalledReplay(s):
			c.Verdict = VerdictNotApplicable
			c.Reason = lim.ReplayStalled
		case !stalled && CuresStalledReplay(s):
			c.Verdict = VerdictNotApplicable
			c.Reason = "no replica's replay is stalled: it acts on a standby that does not replay"
		case c.Impact > lim.MaxImpact:
			c.Verdict = VerdictImpactTooHigh
			c.Reason = fmt.Sprintf("impact %s > max_auto_heal_impact %s", num(c.Impact), num(lim.MaxImpact))
		default:
			if av, ok := s.(Availability); ok {
				if up, why := av.Available(ctx); !up {
					c.Verdict = VerdictUnavailable
					c.Reason = "unavailable"
					if why != "" {
						c.Reason += ": " + why
					}
					break
				}
			}
			if held := lim.Held[c.Name]; held != 0 {
				c.Verdict = VerdictHeld
				c.Reason = fmt.Sprintf("its measure from outcome %d is held in force; another remedy acts under it", held)
				break
			}
			if d := lim.Declined[c.Name]; d != 0 {
				c.Verdict = VerdictDeclinedRecently
				c.Reason = fmt.Sprintf("it declined this problem in outcome %d and nothing has acted since; it is asked again later", d)
				break
			}
			var needs []string
			if approvalClass {
				needs = append(needs, fmt.Sprintf("problem class %s is in require_approval", p.Class))
			}
			if slices.Contains(lim.ApprovalStrategies, c.Name) {
				needs = append(needs, "strategy is in require_approval_strategies")
			}
			c.RequiresApproval = len(needs) > 0
			c.Reason = strings.Join(needs, "; ")
			eligible = append(eligible, i)
		}
		cands[i] = c
	}

	slices.SortFunc(eligible, func(a, b int) int { return compareRank(cands[a], cands[b]) })
	chosen := -1
	for _, i := range eligible {
		if !cands[i].RequiresApproval {
			chosen = i
			break
		}
	}
	if chosen < 0 && len(eligible) > 0 {
		chosen = eligible[0]
		sel.RequiresApproval = true
	}

	out := make([]Candidate, 0, len(cands))
	for rank, i := range eligible {
		c := cands[i]
		c.Rank = rank + 1
		approval := c.Reason
		switch {
		case i == chosen:
			c.Verdict = VerdictChosen
			c.Reason = fmt.Sprintf("rank %d: weight %s%s%s, impact %s, %s", c.Rank, num(c.Weight), learnedWord(c.Learned), triedWords(c), num(c.Impact), reversibleWord(c.Reversible))
			if c.RequiresApproval {
				c.Reason += "; needs approval (" + approval + ") and no eligible strategy runs without it"
			}
		case c.RequiresApproval && !sel.RequiresApproval:
			c.Verdict = VerdictApprovalRequired
			c.Reason = fmt.Sprintf("rank %d, needs approval (%s)", c.Rank, approval)
			if compareRank(c, cands[chosen]) < 0 {
				c.Reason += fmt.Sprintf("; would outrank %s (%s)", cands[chosen].Name, whyAbove(c, cands[chosen]))
			}
		default:
			c.Verdict = VerdictOutranked
			c.Reason = fmt.Sprintf("rank %d, below %s: %s", c.Rank, cands[chosen].Name, whyAbove(cands[chosen], c))
		}
		out = append(out, c)
	}
	for i, c := range cands {
		if !slices.Contains(eligible, i) {
			out = append(out, c)
		}
	}
	sel.Candidates = out
	if chosen >= 0 {
		sel.Strategy = strategies[chosen]
		sel.Chosen = cands[chosen].Name
	}
	return sel
}

// compareRank orders a before b when a ranks higher.
func compareRank(a, b Candidate) int {
	if c := cmp.Compare(b.RankWeight, a.RankWeight); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Impact, b.Impact); c != 0 {
		return c
	}
	if a.Reversible != b.Reversible {
		if a.Reversible {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Name, b.Name)
}

// whyAbove names the first ranking key on which hi beats lo.
func whyAbove(hi, lo Candidate) string {
	switch {
	case hi.RankWeight != lo.RankWeight && (hi.Tried > 0 || lo.Tried > 0):
		return fmt.Sprintf("ranking weight %s > %s (each earlier attempt this episode halves a weight: %s tried %d×, %s %d×)",
			num(hi.RankWeight), num(lo.RankWeight), hi.Name, hi.Tried, lo.Name, lo.Tried)
	case hi.RankWeight != lo.RankWeight:
		return fmt.Sprintf("weight %s > %s", num(hi.Weight), num(lo.Weight))
	case hi.Impact != lo.Impact:
		return fmt.Sprintf("same weight %s, impact %s < %s", num(hi.Weight), num(hi.Impact), num(lo.Impact))
	case hi.Reversible != lo.Reversible:
		return fmt.Sprintf("same weight %s and impact %s, reversible before irreversible", num(hi.Weight), num(hi.Impact))
	default:
		return fmt.Sprintf("same weight %s, impact %s and reversibility, name order", num(hi.Weight), num(hi.Impact))
	}
}

// triedWords says why a ranking weight is below the weight, "" when it is not.
func triedWords(c Candidate) string {
	if c.Tried == 0 {
		return ""
	}
	return fmt.Sprintf(", ranked at %s after %d earlier attempt(s) this episode", num(c.RankWeight), c.Tried)
}

func learnedWord(learned bool) string {
	if learned {
		return " (learned)"
	}
	return " (default)"
}

func reversibleWord(r bool) string {
	if r {
		return "reversible"
	}
	return "irreversible"
}

func joinClasses(cs []classify.Class) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = string(c)
	}
	return strings.Join(parts, ", ")
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
