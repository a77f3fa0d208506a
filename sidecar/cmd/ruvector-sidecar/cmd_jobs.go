package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// runJobs lists the maintenance jobs (open ones, then those that ended in
// the last 24 hours) with a progress bar; --watch refreshes until Ctrl-C.
func runJobs(ctx context.Context, args []string, stdout io.Writer) error {
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
