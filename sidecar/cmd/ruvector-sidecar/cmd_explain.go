package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// explanation is the part of ruvector_healing_explain's document the
// command prints.
type explanation struct {
	OutcomeID  int64  `json:"outcome_id"`
	Collection string `json:"collection"`
	Kind       string `json:"kind"`
	State      string `json:"state"`
	Status     string `json:"status"`
	Strategy   string `json:"strategy"`
	Problem    struct {
		Class   string          `json:"class"`
		Details json.RawMessage `json:"details"`
	} `json:"problem"`
	Trigger struct {
		Lambda       *float64      `json:"lambda"`
		WitnessEdges []witnessEdge `json:"witness_edges"`
		State        string        `json:"state"`
		StateEvent   *struct {
			ID     int64     `json:"id"`
			At     time.Time `json:"at"`
			From   string    `json:"from"`
			To     string    `json:"to"`
			Reason string    `json:"reason"`
		} `json:"state_event"`
	} `json:"trigger"`
	Classification *struct {
		Rule   string      `json:"rule"`
		Fired  *ruleCheck  `json:"fired"`
		Checks []ruleCheck `json:"checks"`
		Notes  []string    `json:"notes"`
	} `json:"classification"`
	Selection *struct {
		Chosen           string          `json:"chosen"`
		RequiresApproval bool            `json:"requires_approval"`
		Limits           json.RawMessage `json:"limits"`
		Candidates       []struct {
			Name             string  `json:"name"`
			Verdict          string  `json:"verdict"`
			Rank             int     `json:"rank"`
			Weight           float64 `json:"weight"`
			Learned          bool    `json:"learned"`
			Impact           float64 `json:"impact"`
			RequiresApproval bool    `json:"requires_approval"`
			Reason           string  `json:"reason"`
		} `json:"candidates"`
	} `json:"selection"`
	Manual         string `json:"manual"`
	ApprovedAction *int64 `json:"approved_action"`
	Execution      struct {
		StartedAt    time.Time       `json:"started_at"`
		CompletedAt  *time.Time      `json:"completed_at"`
		DurationMS   *int64          `json:"duration_ms"`
		Success      bool            `json:"success"`
		ActionsTaken *int64          `json:"actions_taken"`
		Actions      json.RawMessage `json:"actions"`
		Error        string          `json:"error"`
	} `json:"execution"`
	Lambda struct {
		Before         *float64 `json:"before"`
		After          *float64 `json:"after"`
		ImprovementPct *float64 `json:"improvement_pct"`
	} `json:"lambda"`
	Signal *struct {
		Name   string          `json:"name"`
		Before json.RawMessage `json:"before"`
		After  json.RawMessage `json:"after"`
	} `json:"signal"`
	Verification struct {
		Verified     *bool    `json:"verified"`
		Criterion    string   `json:"criterion"`
		TargetLambda *float64 `json:"target_lambda"`
	} `json:"verification"`
	Rollback struct {
		RolledBack     bool   `json:"rolled_back"`
		By             string `json:"by"`
		RollbackOf     *int64 `json:"rollback_of"`
		Held           string `json:"held"`
		LaterRollbacks []struct {
			ID      int64 `json:"id"`
			Success bool  `json:"success"`
		} `json:"later_rollbacks"`
	} `json:"rollback"`
	Audit struct {
		Sealed   bool   `json:"sealed"`
		ChainSeq *int64 `json:"chain_seq"`
		Signed   bool   `json:"signed"`
	} `json:"audit"`
	NotRecorded []string `json:"not_recorded"`
}

type witnessEdge struct {
	Source   nodeRef `json:"source"`
	Target   nodeRef `json:"target"`
	EdgeType string  `json:"edge_type"`
	Capacity float64 `json:"capacity"`
}

type nodeRef struct {
	Kind string `json:"type"`
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

func (n nodeRef) String() string {
	if n.Name == "" {
		return fmt.Sprintf("%s:%d", n.Kind, n.ID)
	}
	return fmt.Sprintf("%s:%d(%s)", n.Kind, n.ID, n.Name)
}

type ruleCheck struct {
	Rule      string  `json:"rule"`
	Observed  float64 `json:"observed"`
	Threshold float64 `json:"threshold"`
	Matched   bool    `json:"matched"`
	Evaluated bool    `json:"evaluated"`
	Reason    string  `json:"reason"`
}

// runExplain prints, for a person, why a remediation happened.
func runExplain(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", os.Getenv("RUVECTOR_DSN"),
		"connection string (default: the standard PG* environment variables; env RUVECTOR_DSN)")
	asJSON := fs.Bool("json", false, "print the jsonb document of ruvector_healing_explain as it is")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: ruvector-sidecar explain [--json] OUTCOME_ID")
		fs.PrintDefaults()
	}
	// Accept the id before or after the flags.
	var idText string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		idText, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if idText == "" && len(rest) > 0 {
		idText, rest = rest[0], rest[1:]
	}
	if idText == "" {
		return errors.New("missing OUTCOME_ID (ruvector_healing_history() lists outcome ids)")
	}
	if len(rest) != 0 {
		return fmt.Errorf("unexpected arguments %q", rest)
	}
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("OUTCOME_ID %q: want a positive integer", idText)
	}
	conn, err := connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var doc []byte
	if err := conn.QueryRow(ctx, `SELECT ruvector.ruvector_healing_explain($1)::text`, id).Scan(&doc); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Hint != "" {
			return fmt.Errorf("%s (%s)\nhint: %s", pe.Message, pe.Code, pe.Hint)
		}
		return fmt.Errorf("explain outcome %d: %w", id, err)
	}
	if *asJSON {
		_, err := fmt.Fprintf(stdout, "%s\n", doc)
		return err
	}
	var e explanation
	if err := json.Unmarshal(doc, &e); err != nil {
		return fmt.Errorf("explain outcome %d: decode: %w", id, err)
	}
	return printExplanation(stdout, e, isTerminal(stdout))
}

// isTerminal reports whether w is a character device, where headings may
// be bold; pipes and files get plain text.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func printExplanation(w io.Writer, e explanation, tty bool) error {
	heading := func(s string) string {
		if tty {
			return "\033[1m" + s + "\033[0m"
		}
		return s
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, args...))
	}
	section := func(s string) {
		tw.Flush()
		fmt.Fprintf(w, "\n%s\n", heading(s))
	}
	status := e.Status
	if status == "" {
		status = e.State
	}
	fmt.Fprintf(w, "%s\n", heading(fmt.Sprintf("outcome %d: %s on %s, %s (%s)",
		e.OutcomeID, e.Strategy, orDash(e.Collection), status, e.Kind)))

	section("TRIGGER")
	row("problem", "%s %s", e.Problem.Class, compactJSON(e.Problem.Details))
	row("lambda", "%s", fnum(e.Trigger.Lambda))
	if ev := e.Trigger.StateEvent; ev != nil {
		row("state", "%s (event %d at %s: %s -> %s%s)", e.Trigger.State, ev.ID, ev.At.UTC().Format(time.RFC3339),
			orDash(ev.From), ev.To, prefixed(", ", ev.Reason))
	} else {
		row("state", "%s", orDash(e.Trigger.State))
	}
	row("witness edges", "%d", len(e.Trigger.WitnessEdges))
	const maxEdges = 20 // a cut can cross hundreds of edges; --json has them all
	for i, we := range e.Trigger.WitnessEdges {
		if i == maxEdges {
			row("", "... and %d more (--json lists them all)", len(e.Trigger.WitnessEdges)-maxEdges)
			break
		}
		row("", "%s %s -> %s capacity %.3f", we.EdgeType, we.Source, we.Target, we.Capacity)
	}

	section("CLASSIFICATION")
	if c := e.Classification; c != nil {
		if c.Fired != nil {
			row("rule fired", "%s: %s", c.Rule, c.Fired.Reason)
		} else {
			row("rule fired", "none (%s)", orDash(c.Rule))
		}
		for _, ch := range c.Checks {
			verdict := "did not fire"
			switch {
			case ch.Evaluated && ch.Matched:
				verdict = "FIRED"
			case !ch.Evaluated && ch.Matched:
				verdict = "also matched (lower precedence)"
			case !ch.Evaluated:
				verdict = "not reached"
			}
			row("  "+ch.Rule, "%s: %s", verdict, ch.Reason)
		}
		for _, n := range c.Notes {
			row("note", "%s", n)
		}
	} else {
		row("rule fired", "not recorded")
	}
	if e.Manual != "" {
		row("manual", "%s", e.Manual)
	}
	if e.ApprovedAction != nil {
		row("approved", "pending action %d, approved by an operator", *e.ApprovedAction)
	}

	section("SELECTION")
	if s := e.Selection; s != nil {
		approval := ""
		if s.RequiresApproval {
			approval = " (requires approval)"
		}
		row("chosen", "%s%s", orDash(s.Chosen), approval)
		if len(s.Limits) > 0 && string(s.Limits) != "null" {
			row("limits", "%s", compactJSON(s.Limits))
		}
		tw.Flush()
		ct := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(ct, "  STRATEGY\tVERDICT\tRANK\tWEIGHT\tIMPACT\tAPPROVAL\tWHY")
		for _, c := range s.Candidates {
			rank, weight := "-", fmt.Sprintf("%.3f", c.Weight)
			if c.Rank > 0 {
				rank = strconv.Itoa(c.Rank)
			}
			if c.Learned {
				weight += " (learned)"
			}
			fmt.Fprintf(ct, "  %s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", c.Name, c.Verdict, rank, weight, c.Impact,
				yesNo(c.RequiresApproval), c.Reason)
		}
		ct.Flush()
	} else {
		row("chosen", "%s (no selection recorded)", e.Strategy)
	}

	section("RESULT")
	row("started", "%s", e.Execution.StartedAt.UTC().Format(time.RFC3339Nano))
	if e.Execution.CompletedAt != nil {
		d := ""
		if e.Execution.DurationMS != nil {
			d = fmt.Sprintf(" (%s)", (time.Duration(*e.Execution.DurationMS) * time.Millisecond).String())
		}
		row("completed", "%s%s", e.Execution.CompletedAt.UTC().Format(time.RFC3339Nano), d)
	}
	row("success", "%s", yesNo(e.Execution.Success))
	if e.Execution.ActionsTaken != nil {
		row("actions", "%d", *e.Execution.ActionsTaken)
	}
	imp := ""
	if e.Lambda.ImprovementPct != nil {
		// healing_outcomes.improvement_pct holds a fraction (0.25 = +25%),
		// as the design's weight formula needs (sidecar/learning).
		imp = fmt.Sprintf(" (%+.1f%%)", 100**e.Lambda.ImprovementPct)
	}
	row("lambda", "%s -> %s%s", fnum(e.Lambda.Before), fnum(e.Lambda.After), imp)
	if s := e.Signal; s != nil {
		row(s.Name, "%s -> %s", rawOr(s.Before, "not recorded"), rawOr(s.After, "not recorded"))
	}
	v := "not measured"
	if e.Verification.Verified != nil {
		v = yesNo(*e.Verification.Verified)
	}
	row("verified", "%s (%s; target %s)", v, e.Verification.Criterion, fnum(e.Verification.TargetLambda))
	rb := yesNo(e.Rollback.RolledBack)
	if e.Rollback.By != "" {
		rb += " by the " + e.Rollback.By
	}
	if e.Rollback.RollbackOf != nil {
		rb += fmt.Sprintf(", of outcome %d", *e.Rollback.RollbackOf)
	}
	row("rolled back", "%s", rb)
	if e.Rollback.Held != "" {
		row("held", "kept in force for the next remedy: %s", e.Rollback.Held)
	}
	for _, l := range e.Rollback.LaterRollbacks {
		row("later", "rolled back by an operator: outcome %d (success %s)", l.ID, yesNo(l.Success))
	}
	if e.Execution.Error != "" {
		row("error", "%s", e.Execution.Error)
	}
	seal := "not sealed"
	if e.Audit.Sealed && e.Audit.ChainSeq != nil {
		seal = fmt.Sprintf("sealed, chain_seq %d, signed %s", *e.Audit.ChainSeq, yesNo(e.Audit.Signed))
	}
	row("audit", "%s", seal)
	if len(e.NotRecorded) > 0 {
		row("not recorded", "%s", strings.Join(e.NotRecorded, ", "))
	}
	return tw.Flush()
}

func fnum(f *float64) string {
	if f == nil {
		return "-"
	}
	return strconv.FormatFloat(*f, 'f', 3, 64)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func rawOr(r json.RawMessage, def string) string {
	if len(r) == 0 || string(r) == "null" {
		return def
	}
	var f float64
	if err := json.Unmarshal(r, &f); err == nil {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	return compactJSON(r)
}

func compactJSON(r json.RawMessage) string {
	if len(r) == 0 {
		return ""
	}
	var b strings.Builder
	var v any
	if err := json.Unmarshal(r, &v); err != nil {
		return string(r)
	}
	out, _ := json.Marshal(v) // sorted keys: stable for a person and a test
	b.Write(out)
	return b.String()
}
