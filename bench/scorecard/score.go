// Package scorecard scores the whole healing loop: a seeded campaign
// injects known faults (one per problem class, fault-free periods and
// mixed faults) into a real server under a steady workload with the real
// sidecar daemon, and measures what the healer did about each one:
// classification, time to detect / act / recover, false actions, whether
// the fault's own signal came back, whether rollbacks undid their effect,
// and throughput and latency before, during and after.
//
// This file holds the scoring and the report, which are pure; the campaign
// itself is the test TestScorecard (make scorecard, make bench-load).
package scorecard

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Episode kinds.
const (
	KindFault = "fault" // one injected problem
	KindQuiet = "quiet" // a fault-free period
	KindMixed = "mixed" // two problems at once
)

// NoDecision is the named class when the engine named none.
const NoDecision = "none"

// Phase is workload throughput and latency over one interval.
type Phase struct {
	Seconds     float64
	Rows        int
	Searches    int
	Throttled   int // inserts refused or timed out by the write gate (SQLSTATE 53000)
	Errors      int // other failed statements
	InsertP50   time.Duration
	InsertP99   time.Duration
	SearchP50   time.Duration
	SearchP99   time.Duration
	InsertCount int // statements measured for the insert latencies
}

// RowsPerSec is the admitted insert rate.
func (p Phase) RowsPerSec() float64 { return rate(p.Rows, p.Seconds) }

// SearchesPerSec is the completed search rate.
func (p Phase) SearchesPerSec() float64 { return rate(p.Searches, p.Seconds) }

func rate(n int, s float64) float64 {
	if s <= 0 {
		return 0
	}
	return float64(n) / s
}

// Outcome is one row of ruvector.healing_outcomes seen in an episode.
type Outcome struct {
	ID                 int64
	Collection         string
	Class, Strategy    string
	State              string
	Started            time.Time
	Completed          *time.Time
	Verified           *bool
	RolledBack         bool
	Noop               bool   // declined: recorded, nothing changed
	NoopReason         string // why it declined, as the strategy said
	RollbackUndone     *bool  // checked on the remediation's own effect after the rollback; nil = not a rollback
	RollbackUndoneNote string // what was checked
}

// Episode is what happened to one injection or fault-free period.
type Episode struct {
	N        int
	Kind     string
	Injected []string // problem classes injected (empty for quiet)
	Start    time.Time
	End      time.Time
	// Named is the class the engine named: the first outcome's
	// problem_class, else the class of a decision that found no strategy
	// (daemon log), else the classifier's label on the first degrading
	// transition (integrity_events), else NoDecision.
	Named       string
	NamedSource string
	// Offsets from Start; nil when it did not happen.
	Detect  *time.Duration // state left normal
	Act     *time.Duration // first remediation started
	Recover *time.Duration // state back at normal
	// RecoveredBy: "healer" (back at normal while the fault was still in
	// place), "lifted" (only after the harness removed the fault at the
	// cap), "" (not recovered).
	RecoveredBy string
	Lifted      *time.Duration
	// Signal is the fault's own signal at the end of the fault window
	// (healer recovery, or the cap) with its healthy band.
	Signal       string
	SignalBefore string
	EffectProven *bool // nil: no measurement
	Outcomes     []Outcome
	Transitions  int
	Before       Phase
	During       Phase
	After        Phase
	Notes        []string
}

func (e *Episode) Note(format string, args ...any) {
	e.Notes = append(e.Notes, fmt.Sprintf(format, args...))
}

// Correct reports whether the named class is one of the injected ones.
func (e Episode) Correct() bool { return slices.Contains(e.Injected, e.Named) }

// Targets are the targets.
type Targets struct {
	Accuracy       float64       // on single faults
	FastClasses    []string      // recovered within FastRecovery
	FastRecovery   time.Duration // 60 s
	RecoveryBudget time.Duration // every class, 5 min
}

// DefaultTargets are the targets of issue 10.
func DefaultTargets() Targets {
	return Targets{Accuracy: 0.95, FastClasses: []string{"hotspot_congestion", "maintenance_contention"},
		FastRecovery: time.Minute, RecoveryBudget: 5 * time.Minute}
}

// ClassScore aggregates the single-fault episodes of one class.
type ClassScore struct {
	Class                  string
	Injections             int
	Detected, Correct      int
	Acted                  int
	HealedByHealer, Lifted int
	EffectProven, Measured int
	Rollbacks, Undone      int
	Detect, Act, Recover   []time.Duration
}

// Accuracy is correct / injections.
func (c ClassScore) Accuracy() float64 { return ratio(c.Correct, c.Injections) }

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// Score is the whole campaign's scoring.
type Score struct {
	Classes     []ClassScore
	Confusion   map[string]map[string]int // injected → named → count (single faults)
	Named       []string                  // confusion columns
	Quiet       int
	QuietTime   time.Duration
	FalseAction int // remediations started in fault-free periods
	// FalseNoop is how many of FalseAction were declines (noops) that
	// changed nothing; they still count.
	FalseNoop   int
	Mixed       []Episode
	Single      int
	SingleRight int
}

// Compute scores episodes; classes fixes the row order.
func Compute(eps []Episode, classes []string) Score {
	s := Score{Confusion: map[string]map[string]int{}}
	byClass := map[string]*ClassScore{}
	for _, c := range classes {
		byClass[c] = &ClassScore{Class: c}
		s.Confusion[c] = map[string]int{}
	}
	named := map[string]bool{}
	for _, e := range eps {
		switch e.Kind {
		case KindQuiet:
			s.Quiet++
			s.QuietTime += e.End.Sub(e.Start)
			s.FalseAction += len(e.Outcomes)
			for _, o := range e.Outcomes {
				if o.Noop {
					s.FalseNoop++
				}
			}
			continue
		case KindMixed:
			s.Mixed = append(s.Mixed, e)
			continue
		}
		if len(e.Injected) != 1 {
			continue
		}
		c := byClass[e.Injected[0]]
		if c == nil {
			c = &ClassScore{Class: e.Injected[0]}
			byClass[c.Class] = c
			classes = append(classes, c.Class)
			s.Confusion[c.Class] = map[string]int{}
		}
		s.Single++
		c.Injections++
		s.Confusion[c.Class][e.Named]++
		named[e.Named] = true
		if e.Correct() {
			c.Correct++
			s.SingleRight++
		}
		if e.Detect != nil {
			c.Detected++
			c.Detect = append(c.Detect, *e.Detect)
		}
		if e.Act != nil {
			c.Acted++
			c.Act = append(c.Act, *e.Act)
		}
		if e.Recover != nil {
			c.Recover = append(c.Recover, *e.Recover)
		}
		switch e.RecoveredBy {
		case "healer":
			c.HealedByHealer++
		case "lifted":
			c.Lifted++
		}
		if e.EffectProven != nil {
			c.Measured++
			if *e.EffectProven {
				c.EffectProven++
			}
		}
		for _, o := range e.Outcomes {
			if o.RollbackUndone != nil {
				c.Rollbacks++
				if *o.RollbackUndone {
					c.Undone++
				}
			}
		}
	}
	for _, c := range classes {
		s.Classes = append(s.Classes, *byClass[c])
	}
	// Columns: the classes in order, then whatever else was named.
	s.Named = append(s.Named, classes...)
	var extra []string
	for n := range named {
		if !slices.Contains(classes, n) {
			extra = append(extra, n)
		}
	}
	slices.Sort(extra)
	s.Named = append(s.Named, extra...)
	return s
}

// Percentile returns the p-quantile (0..1, nearest rank) of ds; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(len(s)-1, i))]
}

func fmtDurs(ds []time.Duration) string {
	if len(ds) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s", fmtD(Percentile(ds, 0.5)), fmtD(slices.Max(ds)))
}

func fmtD(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%.0fs", d.Seconds())
}

func fmtOpt(d *time.Duration) string {
	if d == nil {
		return "—"
	}
	return fmtD(*d)
}

func fmtLat(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000)
}

func fmtRatio(a, b int) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%d/%d", a, b)
}

// short abbreviates a class name for the confusion matrix's columns.
func short(c string) string {
	switch c {
	case "hotspot_congestion":
		return "hotspot"
	case "centroid_skew":
		return "skew"
	case "replication_lag":
		return "repl_lag"
	case "maintenance_contention":
		return "maint"
	case "index_fragmentation":
		return "index_frag"
	case "memory_pressure":
		return "memory"
	}
	return c
}

// WriteScorecard renders the scorecard tables in Markdown.
func WriteScorecard(w io.Writer, s Score, t Targets) {
	fmt.Fprintln(w, "| class | injections | detected | named right | accuracy | acted | detect p50/max | act p50/max | recover p50/max | recovered by healer / after lift | effect proven | rollbacks undone |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range s.Classes {
		acc := "—"
		if c.Injections > 0 {
			acc = fmt.Sprintf("%.0f%%", 100*c.Accuracy())
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %s | %d | %s | %s | %s | %d / %d | %s | %s |\n", c.Class, c.Injections, c.Detected, c.Correct, acc,
			c.Acted, fmtDurs(c.Detect), fmtDurs(c.Act), fmtDurs(c.Recover), c.HealedByHealer, c.Lifted,
			fmtRatio(c.EffectProven, c.Measured), fmtRatio(c.Undone, c.Rollbacks))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Confusion matrix (single faults; rows: injected, columns: the class the engine named):")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| injected \\ named |")
	for _, n := range s.Named {
		fmt.Fprintf(w, " %s |", short(n))
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|")
	for range s.Named {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, c := range s.Classes {
		fmt.Fprintf(w, "| %s |", short(c.Class))
		for _, n := range s.Named {
			fmt.Fprintf(w, " %d |", s.Confusion[c.Class][n])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	if len(s.Mixed) > 0 {
		fmt.Fprintln(w, "Mixed faults:")
		fmt.Fprintln(w)
		for _, e := range s.Mixed {
			fmt.Fprintf(w, "- #%d %s: named %s (%s), detect %s, act %s, recover %s (%s)\n", e.N, strings.Join(e.Injected, " + "),
				e.Named, map[bool]string{true: "one of the injected", false: "neither injected class"}[e.Correct()],
				fmtOpt(e.Detect), fmtOpt(e.Act), fmtOpt(e.Recover), orDash(e.RecoveredBy))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "False actions: %d remediations started in %d fault-free periods (%s in all; %d of them declines that changed nothing, counted too); target 0.\n\n",
		s.FalseAction, s.Quiet, fmtD(s.QuietTime), s.FalseNoop)
	WriteTargets(w, s, t)
}

func orDash(s string) string {
	if s == "" {
		return "not recovered"
	}
	return s
}

// WriteTargets states each target as met or missed with the measured value.
func WriteTargets(w io.Writer, s Score, t Targets) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	acc := ratio(s.SingleRight, s.Single)
	fmt.Fprintf(w, "- accuracy on single faults ≥ %.0f%%: %s (%d/%d = %.0f%%)\n", 100*t.Accuracy,
		verdict(s.Single > 0 && acc >= t.Accuracy), s.SingleRight, s.Single, 100*nanZero(acc))
	fmt.Fprintf(w, "- 0 false actions: %s (%d)\n", verdict(s.FalseAction == 0 && s.Quiet > 0), s.FalseAction)
	for _, c := range s.Classes {
		budget := t.RecoveryBudget
		if slices.Contains(t.FastClasses, c.Class) {
			budget = t.FastRecovery
		}
		healed := c.HealedByHealer == c.Injections && c.Injections > 0
		worst := "—"
		ok := healed
		if len(c.Recover) > 0 {
			m := slices.Max(c.Recover)
			worst = fmtD(m)
			ok = ok && m <= budget
		}
		fmt.Fprintf(w, "- %s recovered by the healer within %s: %s (max %s; %d of %d healed, %d only after the harness lifted the fault)\n",
			c.Class, fmtD(budget), verdict(ok), worst, c.HealedByHealer, c.Injections, c.Lifted)
	}
}

func nanZero(f float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return f
}

// WriteEpisodes lists every episode, one line each.
func WriteEpisodes(w io.Writer, eps []Episode) {
	fmt.Fprintln(w, "| # | kind | injected | named (source) | detect | act | recover | by | signal before → at end of fault window | outcomes |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range eps {
		var outs []string
		for _, o := range e.Outcomes {
			s := fmt.Sprintf("%d %s:%s/%s %s", o.ID, o.Collection, short(o.Class), o.Strategy, o.State)
			if o.Verified != nil {
				s += fmt.Sprintf(" verified=%v", *o.Verified)
			}
			if o.Noop {
				s += " noop"
				if o.NoopReason != "" {
					s += " (" + clip(o.NoopReason, 160) + ")"
				}
			}
			if o.RolledBack {
				s += " rolled_back"
				if o.RollbackUndone != nil {
					s += fmt.Sprintf(" (undone: %v, %s)", *o.RollbackUndone, o.RollbackUndoneNote)
				}
			}
			outs = append(outs, s)
		}
		inj := strings.Join(e.Injected, " + ")
		if inj == "" {
			inj = "—"
		}
		sig := e.Signal
		if e.SignalBefore != "" {
			sig = e.SignalBefore + " → " + sig
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s |\n", e.N, e.Kind, inj, e.Named, e.NamedSource,
			fmtOpt(e.Detect), fmtOpt(e.Act), fmtOpt(e.Recover), e.RecoveredBy, sig, strings.Join(outs, "; "))
	}
}

// WriteLoad renders throughput and latency before, during and after each
// episode.
func WriteLoad(w io.Writer, eps []Episode) {
	fmt.Fprintln(w, "| # | injected | phase | seconds | rows/s | searches/s | insert p50 / p99 ms | search p50 / p99 ms | throttled | errors | time to recovery |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range eps {
		inj := strings.Join(e.Injected, " + ")
		if inj == "" {
			inj = "(fault-free)"
		}
		for i, p := range []Phase{e.Before, e.During, e.After} {
			name := []string{"before", "during", "after"}[i]
			ttr := ""
			if i == 1 {
				ttr = fmtOpt(e.Recover)
				if e.RecoveredBy != "" && e.RecoveredBy != "healer" {
					ttr += " (" + e.RecoveredBy + ")"
				}
			}
			fmt.Fprintf(w, "| %d | %s | %s | %.0f | %.1f | %.1f | %s / %s | %s / %s | %d | %d | %s |\n", e.N, inj, name, p.Seconds,
				p.RowsPerSec(), p.SearchesPerSec(), fmtLat(p.InsertP50), fmtLat(p.InsertP99), fmtLat(p.SearchP50), fmtLat(p.SearchP99),
				p.Throttled, p.Errors, ttr)
		}
	}
}

// clip keeps a reason to one table cell: at most n runes, no pipe or line
// break that would end the cell.
func clip(s string, n int) string {
	s = strings.NewReplacer("|", "/", "\n", " ").Replace(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
