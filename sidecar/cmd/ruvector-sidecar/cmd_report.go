package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/report"
)

// runReport draws λ over time per collection with the state bands and every
// remediation into an SVG file (or stdout with -o -).
func runReport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", os.Getenv("RUVECTOR_DSN"),
		"connection string (default: the standard PG* environment variables; env RUVECTOR_DSN)")
	since := fs.Duration("since", time.Hour, "how far back the timeline starts")
	untilText := fs.String("until", "", "where the timeline ends, RFC 3339 (default: now)")
	collection := fs.String("collection", "", "draw only this collection (default: all)")
	out := fs.String("o", "report.svg", "output file, - for stdout")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: ruvector-sidecar report [--since 1h] [--until TIME] [--collection NAME] [-o report.svg]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *since <= 0 {
		return fmt.Errorf("--since %v must be positive", *since)
	}
	if *out == "" {
		return errors.New("-o must name a file, or - for stdout")
	}
	conn, err := connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	until := time.Time{}
	if *untilText != "" {
		if until, err = time.Parse(time.RFC3339, *untilText); err != nil {
			return fmt.Errorf("--until %q: want an RFC 3339 time such as 2026-11-27T06:00:00Z", *untilText)
		}
	} else if err := conn.QueryRow(ctx, `SELECT now()`).Scan(&until); err != nil {
		return fmt.Errorf("read the server's clock: %w", err)
	}
	tl, err := loadTimeline(ctx, conn, until.Add(-*since), until, *collection)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := report.Render(&buf, tl); err != nil {
		return err
	}
	if *out == "-" {
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	// Write beside the target and rename, so a reader never sees half a file.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".report-*.svg")
	if err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	return nil
}

// connect opens a plain connection for the read-only commands, which need
// neither the segment nor the sidecar.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--dsn: %w", err)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "ruvector-sidecar"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// querier is what the loaders need of a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// loadTimeline reads, for each collection (or only the named one), its
// thresholds, state transitions, λ points and remediations in [from, to].
// λ comes from the sampled history (ruvector.integrity_samples), the
// transitions, and the outcomes' initial and final λ, so a window without
// samples still shows what the loop measured when it acted.
func loadTimeline(ctx context.Context, q querier, from, to time.Time, only string) (report.Timeline, error) {
	tl := report.Timeline{From: from, To: to}
	type col struct {
		id        int64
		name      string
		high, low float64
	}
	var nameArg *string
	if only != "" {
		nameArg = &only
	}
	rows, err := q.Query(ctx, `SELECT c.collection_id, c.name,
			(ruvector._integrity_default_policy() || coalesce(p.config, '{}'))->>'threshold_high',
			(ruvector._integrity_default_policy() || coalesce(p.config, '{}'))->>'threshold_low'
		FROM ruvector.collections c LEFT JOIN ruvector.integrity_policies p USING (collection_id)
		WHERE $1::text IS NULL OR c.name = $1 ORDER BY c.name`, nameArg)
	if err != nil {
		return tl, fmt.Errorf("read collections: %w", err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
		var c col
		var hi, lo string
		if err := r.Scan(&c.id, &c.name, &hi, &lo); err != nil {
			return c, err
		}
		if _, err := fmt.Sscan(hi, &c.high); err != nil {
			return c, fmt.Errorf("collection %s: threshold_high %q: %w", c.name, hi, err)
		}
		if _, err := fmt.Sscan(lo, &c.low); err != nil {
			return c, fmt.Errorf("collection %s: threshold_low %q: %w", c.name, lo, err)
		}
		return c, nil
	})
	if err != nil {
		return tl, fmt.Errorf("read collections: %w", err)
	}
	if only != "" && len(cols) == 0 {
		return tl, fmt.Errorf("--collection %q: no such collection (SELECT name FROM ruvector.collections lists them)", only)
	}
	for _, c := range cols {
		p := report.Panel{Collection: c.name, ThresholdHigh: c.high, ThresholdLow: c.low}
		if err := loadPanel(ctx, q, c.id, from, to, &p); err != nil {
			return tl, fmt.Errorf("collection %s: %w", c.name, err)
		}
		tl.Panels = append(tl.Panels, p)
	}
	return tl, nil
}

func loadPanel(ctx context.Context, q querier, id int64, from, to time.Time, p *report.Panel) error {
	// The state at the start: the last transition before it.
	rows, err := q.Query(ctx, `SELECT new_state FROM ruvector.integrity_events
		WHERE collection_id = $1 AND event_type = 'state_transition' AND new_state IS NOT NULL AND created_at < $2
		ORDER BY created_at DESC, id DESC LIMIT 1`, id, from)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	states, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if len(states) == 1 {
		p.InitialState = states[0]
	}

	type event struct {
		id     int64
		at     time.Time
		state  *string
		lambda *float64
	}
	rows, err = q.Query(ctx, `SELECT id, created_at, new_state, lambda_cut FROM ruvector.integrity_events
		WHERE collection_id = $1 AND event_type = 'state_transition' AND created_at BETWEEN $2 AND $3
		ORDER BY created_at, id`, id, from, to)
	if err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
		var e event
		err := r.Scan(&e.id, &e.at, &e.state, &e.lambda)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	for _, e := range events {
		if e.state != nil {
			p.States = append(p.States, report.StateChange{At: e.at, State: *e.state, EventID: e.id})
		}
		if e.lambda != nil {
			p.Points = append(p.Points, report.Point{At: e.at, Lambda: *e.lambda})
		}
	}

	rows, err = q.Query(ctx, `SELECT sampled_at, lambda_cut FROM ruvector.integrity_samples
		WHERE collection_id = $1 AND sampled_at BETWEEN $2 AND $3 ORDER BY sampled_at`, id, from, to)
	if err != nil {
		return fmt.Errorf("read λ samples: %w", err)
	}
	samples, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (report.Point, error) {
		var pt report.Point
		err := r.Scan(&pt.At, &pt.Lambda)
		return pt, err
	})
	if err != nil {
		return fmt.Errorf("read λ samples: %w", err)
	}
	p.Points = append(p.Points, samples...)

	rows, err = q.Query(ctx, `SELECT id, strategy_name, problem_class, started_at, completed_at, state, success,
			verified, rolled_back, coalesce(metadata->>'kind', ''), initial_lambda::float8, final_lambda::float8,
			coalesce(error_message, '')
		FROM ruvector.healing_outcomes
		WHERE collection_id = $1 AND started_at <= $3
		  AND CASE WHEN state = 'pending_approval' THEN started_at >= $2 -- sealed: never completed, even once decided
		           ELSE coalesce(completed_at, 'infinity') >= $2 END
		ORDER BY started_at, id`, id, from, to)
	if err != nil {
		return fmt.Errorf("read outcomes: %w", err)
	}
	rems, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (report.Remediation, error) {
		var (
			m               report.Remediation
			end             *time.Time
			state, kind     string
			success, rolled bool
			verified        *bool
		)
		if err := r.Scan(&m.ID, &m.Strategy, &m.ProblemClass, &m.Start, &end, &state, &success, &verified, &rolled,
			&kind, &m.InitialLambda, &m.FinalLambda, &m.Error); err != nil {
			return m, err
		}
		if end != nil {
			m.End = *end
		}
		m.Result = report.OutcomeResult(state, success, verified, rolled, kind)
		return m, nil
	})
	if err != nil {
		return fmt.Errorf("read outcomes: %w", err)
	}
	p.Remediations = rems
	for _, m := range rems {
		if m.Result == report.ResultRollback || m.Result == report.ResultPending {
			continue // no λ measured by these records
		}
		if !m.Start.Before(from) {
			p.Points = append(p.Points, report.Point{At: m.Start, Lambda: m.InitialLambda})
		}
		if m.FinalLambda != nil && !m.End.IsZero() && !m.End.After(to) {
			p.Points = append(p.Points, report.Point{At: m.End, Lambda: *m.FinalLambda})
		}
	}
	return nil
}
