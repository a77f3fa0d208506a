package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

// runJobs lists the maintenance jobs (open ones, then those that ended in
// the last 24 hours) with a progress bar; --watch refreshes until Ctrl-C.
// "jobs start ..." enqueues one (runJobStart).
func runJobs(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "start" {
		return runJobStart(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", os.Getenv("RUVECTOR_DSN"),
		"connection string (default: the standard PG* environment variables; env RUVECTOR_DSN)")
	watch := fs.Bool("watch", false, "refresh until interrupted")
	every := fs.Duration("interval", time.Second, "refresh period with --watch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *every <= 0 {
		return fmt.Errorf("--interval %v must be positive", *every)
	}
	conn, err := connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	clear := *watch && isTerminal(stdout)
	for {
		jobs, now, err := loadJobs(ctx, conn)
		if err != nil {
			if ctx.Err() != nil && *watch {
				return nil // interrupted mid-query
			}
			return err
		}
		if clear {
			fmt.Fprint(stdout, "\033[H\033[2J")
		} else if *watch {
			fmt.Fprintf(stdout, "--- %s\n", now.UTC().Format(time.RFC3339))
		}
		if err := printJobs(stdout, jobs, now); err != nil {
			return err
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

type job struct {
	id         int64
	collection string
	kind       string
	priority   int32
	state      string
	progress   float32
	owner      string
	errText    string
	created    time.Time
	started    *time.Time
	finished   *time.Time
}

func loadJobs(ctx context.Context, q querier) ([]job, time.Time, error) {
	rows, err := q.Query(ctx, `SELECT job_id, coalesce(collection, '-'), kind, priority, state, progress,
			coalesce(owner, ''), coalesce(error, ''), created_at, started_at, finished_at, now()
		FROM ruvector.ruvector_maintenance_status()`)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read maintenance jobs: %w", err)
	}
	var now time.Time
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
		var j job
		err := r.Scan(&j.id, &j.collection, &j.kind, &j.priority, &j.state, &j.progress, &j.owner, &j.errText,
			&j.created, &j.started, &j.finished, &now)
		return j, err
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read maintenance jobs: %w", err)
	}
	if now.IsZero() {
		now = time.Now()
	}
	return jobs, now, nil
}

func printJobs(w io.Writer, jobs []job, now time.Time) error {
	if len(jobs) == 0 {
		_, err := fmt.Fprintln(w, "no maintenance jobs (open, or ended in the last 24 hours)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tCOLLECTION\tKIND\tPRIO\tSTATE\tPROGRESS\tOWNER\tAGE\tNOTE")
	for _, j := range jobs {
		age := now.Sub(j.created)
		note := ""
		switch {
		case j.errText != "":
			note = j.errText
		case j.finished != nil:
			note = "took " + fmtAge(j.finished.Sub(startOr(j.started, j.created)))
		case j.started != nil:
			note = "running for " + fmtAge(now.Sub(*j.started))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", j.id, j.collection, j.kind, j.priority, j.state,
			progressBar(j.progress, 20), orDash(j.owner), fmtAge(age), note)
	}
	return tw.Flush()
}

func startOr(t *time.Time, def time.Time) time.Time {
	if t != nil {
		return *t
	}
	return def
}

// progressBar draws p (0..1) as [#####-----] and a percentage.
func progressBar(p float32, width int) string {
	f := math.Max(0, math.Min(1, float64(p)))
	if math.IsNaN(f) {
		f = 0
	}
	n := int(math.Round(f * float64(width)))
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat("-", width-n), f*100)
}

func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// jobStartUsage is the synopsis of "jobs start".
const jobStartUsage = "usage: ruvector-sidecar jobs start KIND COLLECTION [--priority N] [--param key=value ...] [--wait]"

// jobKinds are the kinds a runner executes, with the params each takes:
// the runner's own param types, so that a key or a type the runner would
// not understand is refused before the job is queued.
var jobKinds = map[string]func() any{
	jobs.KindCentroidRebuild: func() any { return &jobs.RebuildParams{} },
	jobs.KindCompaction:      func() any { return &struct{}{} },
	jobs.KindRebalance:       func() any { return &jobs.RebalanceParams{} },
	jobs.KindVacuum:          func() any { return &struct{}{} },
	jobs.KindAnalyze:         func() any { return &struct{}{} },
}

func kindNames() string {
	names := make([]string, 0, len(jobKinds))
	for k := range jobKinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// paramFlag collects repeated --param key=value. A value that is valid
// JSON (5, [1,2], true, "x") is taken as JSON, anything else as a string.
type paramFlag map[string]json.RawMessage

func (p paramFlag) String() string { return "" }

func (p paramFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	if k == "resume" {
		return errors.New(`"resume" is the runner's own resume point, not a param`)
	}
	if _, dup := p[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	if v != "" && json.Valid([]byte(v)) {
		p[k] = json.RawMessage(v)
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	p[k] = b
	return nil
}

// jobFailedError is a followed job that ended failed.
type jobFailedError struct {
	ID   int64
	Kind string
	Msg  string
}

func (e *jobFailedError) Error() string {
	return fmt.Sprintf("job %d (%s) failed: %s", e.ID, e.Kind, e.Msg)
}

// runJobStart enqueues a maintenance job through
// ruvector_maintenance_enqueue; with --wait it follows the job's progress
// until it is done (nil) or failed (*jobFailedError). Ctrl-C stops the
// following, not the job.
func runJobStart(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("jobs start", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", os.Getenv("RUVECTOR_DSN"),
		"connection string (default: the standard PG* environment variables; env RUVECTOR_DSN)")
	priority := fs.Int("priority", 100, "0 to 1000; higher runs first")
	params := paramFlag{}
	fs.Var(params, "param", "a job parameter key=value (repeatable; JSON values such as 5 or [1,2] are taken as JSON)")
	wait := fs.Bool("wait", false, "follow the job's progress until it is done or failed")
	every := fs.Duration("interval", 500*time.Millisecond, "how often --wait reads the job's progress")
	fs.Usage = func() {
		fmt.Fprintln(stdout, jobStartUsage)
		fmt.Fprintln(stdout, "kinds:", kindNames())
		fs.PrintDefaults()
	}
	// Flags may come before, between or after KIND and COLLECTION.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 2 {
		return fmt.Errorf("want KIND and COLLECTION, got %q\n%s", pos, jobStartUsage)
	}
	kind, collection := pos[0], pos[1]
	newParams, ok := jobKinds[kind]
	if !ok {
		return fmt.Errorf("job kind %q is not run by the sidecar; kinds: %s", kind, kindNames())
	}
	if *every <= 0 {
		return fmt.Errorf("--interval %v must be positive", *every)
	}
	doc, err := json.Marshal(params)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(newParams()); err != nil {
		return fmt.Errorf("params %s for a %s job: %w", doc, kind, err)
	}

	conn, err := connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var id int64
	if err := conn.QueryRow(ctx, `SELECT ruvector.ruvector_maintenance_enqueue($1, $2, $3, $4::jsonb)`,
		collection, kind, *priority, string(doc)).Scan(&id); err != nil {
		return withHint(fmt.Errorf("enqueue %s on %q: %w", kind, collection, err))
	}
	fmt.Fprintf(stdout, "job %d queued: %s on %s, priority %d, params %s\n", id, kind, collection, *priority, doc)
	if !*wait {
		fmt.Fprintln(stdout, "follow it with: ruvector-sidecar jobs --watch")
		return nil
	}
	return followJob(ctx, conn, stdout, id, *every)
}

// withHint appends the server's HINT, which pgconn's message leaves out.
func withHint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Hint != "" {
		return fmt.Errorf("%w\nhint: %s", err, pe.Hint)
	}
	return err
}

// queuedNote is how long a job may wait in the queue before --wait says
// that no runner seems to be taking jobs.
const queuedNote = 15 * time.Second

// followJob prints the job's progress until it ends. A terminal gets one
// line redrawn in place; a pipe or file gets a line per change of state or
// percentage, so that logs stay short.
func followJob(ctx context.Context, conn *pgx.Conn, stdout io.Writer, id int64, every time.Duration) error {
	tty := isTerminal(stdout)
	began := time.Now()
	last, noted := "", false
	for {
		var kind, state, errText, owner string
		var progress float32
		err := conn.QueryRow(ctx, `SELECT kind, state, progress, coalesce(error, ''), coalesce(owner, '')
			FROM ruvector.ruvector_maintenance_status() WHERE job_id = $1`, id).
			Scan(&kind, &state, &progress, &errText, &owner)
		if ctx.Err() != nil {
			if tty {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "stopped following job %d; the job goes on (ruvector-sidecar jobs --watch)\n", id)
			return nil
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("job %d no longer exists (deleted, or its collection was dropped)", id)
		}
		if err != nil {
			return fmt.Errorf("read job %d: %w", id, err)
		}
		line := fmt.Sprintf("job %d %s: %-7s %s", id, kind, state, progressBar(progress, 20))
		if owner != "" && state == "running" {
			line += " on " + owner
		}
		switch {
		case tty:
			fmt.Fprintf(stdout, "\r\033[K%s  %s", line, fmtAge(time.Since(began)))
		case line != last:
			fmt.Fprintf(stdout, "%s  %s\n", line, fmtAge(time.Since(began)))
		}
		last = line
		switch state {
		case "done":
			if tty {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "job %d done in %s\n", id, fmtAge(time.Since(began)))
			return nil
		case "failed":
			if tty {
				fmt.Fprintln(stdout)
			}
			return &jobFailedError{ID: id, Kind: kind, Msg: errText}
		case "queued":
			if !noted && time.Since(began) > queuedNote {
				noted = true
				if tty {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "job %d still queued after %s: is a sidecar running (ruvector-sidecar run takes jobs), or are higher-priority jobs ahead?\n",
					id, fmtAge(time.Since(began)))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
}
