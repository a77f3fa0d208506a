// Package jobs runs the product's maintenance queue
// (ruvector.maintenance_jobs): it claims the highest-priority queued job
// with FOR UPDATE SKIP LOCKED (so two sidecars never run one job twice),
// runs it step by step, records progress and a resume point after each
// step, and ends it done or failed. A job set to 'paused' (by the
// pause_maintenance strategy) stops at its next step boundary with its
// progress kept; set back to 'queued' it is claimed again and resumes.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/ivf"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

// Kinds the runner executes. 'autovacuum' rows are markers of a paused
// autovacuum (owned by pause_maintenance) and are never claimed.
const (
	KindCentroidRebuild = "centroid_rebuild"
	KindCompaction      = "compaction"
	KindRebalance       = "rebalance"
	KindVacuum          = "vacuum"
	KindAnalyze         = "analyze"
)

// HeldSQL is an SQL condition, true when the queued job aliased alias is
// held back by a pause_maintenance in force: a job of its collection paused
// by a healing outcome (paused_by set) has a priority at least its own.
// The pause paused the jobs below its bar that were queued or running; a
// scheduler that keeps queuing work would otherwise have the runner start
// new jobs below the bar at once, and the contention the pause was to end
// went on (scorecard run 27: 803 product VACUUMs in 25 s through two
// pauses, each unverified). Every paused job is below the bar, so a job no
// more important than one of them is too. The condition lifts with the
// pause: its rollback queues the paused jobs again and clears paused_by.
// The collector reads a held job as paused, not as queued load.
func HeldSQL(alias string) string {
	return fmt.Sprintf(`EXISTS (SELECT FROM ruvector.maintenance_jobs held_by
  WHERE held_by.collection_id = %[1]s.collection_id AND held_by.state = 'paused' AND held_by.paused_by IS NOT NULL
    AND held_by.kind <> 'autovacuum' AND %[1]s.priority <= held_by.priority)`, alias)
}

// Outcome is how a RunOne ended.
type Outcome string

const (
	None    Outcome = "none"    // nothing queued
	Done    Outcome = "done"    // the job finished
	Failed  Outcome = "failed"  // the job failed; its error is recorded
	Stopped Outcome = "stopped" // paused (or taken away) at a step boundary
)

// Job is a claimed job.
type Job struct {
	ID           int64
	CollectionID *int
	Collection   string // name; "" when the job has no collection
	Kind         string
	Priority     int
	Progress     float64
	Params       json.RawMessage
}

// Runner claims and runs jobs on one connection (jobs run one at a time;
// run several Runners, each with its own connection, for parallelism).
type Runner struct {
	Conn  *pgx.Conn
	Owner string // recorded in maintenance_jobs.owner (e.g. host:pid)
	// Poll is how long Run sleeps when the queue is empty (default 1 s).
	Poll time.Duration
	// BatchSize is the reassign/rebalance batch (default 1000 / 500).
	BatchSize int
	// AfterStep, when set, is called after each step, before its
	// checkpoint: tests pause a job there to hit a step boundary.
	AfterStep func(ctx context.Context, job Job, step int)
	// Logf, when set, receives one line per job event.
	Logf func(format string, args ...any)
	// Own, when set, records a rebalance job's row moves (sidecar/ownload),
	// which the healer then does not judge as the application's load.
	Own *ownload.Ledger

	appName *string // the session's application_name before any job
}

// AppNamePrefix + the job id is the application_name of a runner's
// session while it works on a job, so that the maintenance collector can
// tell the runner's VACUUM or REINDEX from anyone else's (and count it
// once). collect.JobAppNamePrefix must equal it.
const AppNamePrefix = "ruvector job "

// errStopped is returned by a step's checkpoint when the job is no longer
// running for this owner.
var errStopped = errors.New("jobs: job paused or taken away")

func (r *Runner) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// Claim takes the highest-priority queued job (ties: oldest) that no
// pause holds back (HeldSQL) and marks it running for this owner, in one
// statement.
func (r *Runner) Claim(ctx context.Context) (Job, bool, error) {
	var j Job
	err := r.Conn.QueryRow(ctx, `
UPDATE ruvector.maintenance_jobs j
SET state = 'running', owner = $1, started_at = coalesce(j.started_at, now()), updated_at = now(), error = NULL
WHERE j.job_id = (SELECT q.job_id FROM ruvector.maintenance_jobs q
                  WHERE q.state = 'queued' AND q.kind <> 'autovacuum' AND NOT `+HeldSQL("q")+`
                  ORDER BY q.priority DESC, q.job_id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING j.job_id, j.collection_id, coalesce((SELECT c.name FROM ruvector.collections c WHERE c.collection_id = j.collection_id), ''),
          j.kind, j.priority, j.progress, j.params, set_config('application_name', $2 || j.job_id, false)`, r.Owner, AppNamePrefix).
		Scan(&j.ID, &j.CollectionID, &j.Collection, &j.Kind, &j.Priority, &j.Progress, &j.Params, new(string))
	if errors.Is(err, pgx.ErrNoRows) {
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("jobs: claim: %w", err)
	}
	return j, true, nil
}

// RequeueOwned puts this owner's 'running' jobs back in the queue: after a
// restart of the same sidecar they are orphans (their progress and resume
// point are kept).
func (r *Runner) RequeueOwned(ctx context.Context) (int64, error) {
	tag, err := r.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued', updated_at = now()
WHERE state = 'running' AND owner = $1`, r.Owner)
	if err != nil {
		return 0, fmt.Errorf("jobs: requeue: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Run claims and runs jobs until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	if _, err := r.RequeueOwned(ctx); err != nil {
		return err
	}
	poll := r.Poll
	if poll <= 0 {
		poll = time.Second
	}
	for {
		_, out, err := r.RunOne(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.logf("jobs: %v", err)
		}
		if out == None || err != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(poll):
			}
		}
	}
}

// RunOne claims one job and runs it to its end or its next pause. The
// error is about the runner's own database work (claim, checkpoints); a
// job that fails is recorded as failed and is not an error here.
func (r *Runner) RunOne(ctx context.Context) (Job, Outcome, error) {
	if r.appName == nil {
		var name string
		if err := r.Conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&name); err != nil {
			return Job{}, None, fmt.Errorf("jobs: read application_name: %w", err)
		}
		r.appName = &name
	}
	j, ok, err := r.Claim(ctx)
	if err != nil || !ok {
		return j, None, err
	}
	defer func() {
		// The session's own name back, so that pg_stat_activity does not
		// show a finished job as the session's work.
		if _, err := r.Conn.Exec(ctx, `SELECT set_config('application_name', $1, false)`, *r.appName); err != nil && ctx.Err() == nil {
			r.logf("jobs: restore application_name after job %d: %v", j.ID, err)
		}
	}()
	r.logf("jobs: job %d (%s, priority %d) claimed by %s at progress %.2f", j.ID, j.Kind, j.Priority, r.Owner, j.Progress)
	err = r.run(ctx, j)
	switch {
	case err == nil:
		tag, uerr := r.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs
SET state = 'done', progress = 1, finished_at = now(), updated_at = now()
WHERE job_id = $1 AND owner = $2 AND state = 'running'`, j.ID, r.Owner)
		if uerr != nil {
			return j, Failed, fmt.Errorf("jobs: finish job %d: %w", j.ID, uerr)
		}
		if tag.RowsAffected() == 0 {
			// Paused after its last step: it resumes with nothing to do.
			return j, Stopped, nil
		}
		r.logf("jobs: job %d done", j.ID)
		return j, Done, nil
	case errors.Is(err, errStopped):
		r.logf("jobs: job %d stopped at a step boundary", j.ID)
		return j, Stopped, nil
	case ctx.Err() != nil:
		// The sidecar is stopping: leave the job to RequeueOwned.
		return j, Stopped, ctx.Err()
	default:
		tag, uerr := r.Conn.Exec(ctx, `UPDATE ruvector.maintenance_jobs
SET state = 'failed', error = $3, finished_at = now(), updated_at = now()
WHERE job_id = $1 AND owner = $2 AND state = 'running'`, j.ID, r.Owner, err.Error())
		if uerr != nil {
			return j, Failed, fmt.Errorf("jobs: record failure of job %d (%v): %w", j.ID, err, uerr)
		}
		if tag.RowsAffected() == 0 {
			// Paused (or taken away) during the step, whose statement
			// pause_maintenance cancelled while it waited for a lock: the
			// job keeps its state and last checkpoint, and resumes there.
			r.logf("jobs: job %d stopped mid-step (%v)", j.ID, err)
			return j, Stopped, nil
		}
		r.logf("jobs: job %d failed: %v", j.ID, err)
		return j, Failed, nil
	}
}

// checkpoint records progress and the resume point and says whether the
// job is still running for us. The write does not depend on the state,
// so the progress of the step just done is kept even when the job was
// paused during it.
func (r *Runner) checkpoint(ctx context.Context, j Job, progress float64, resume any) error {
	b, err := json.Marshal(resume)
	if err != nil {
		return err
	}
	var state string
	err = r.Conn.QueryRow(ctx, `UPDATE ruvector.maintenance_jobs
SET progress = $3, params = params || jsonb_build_object('resume', $4::jsonb), updated_at = now()
WHERE job_id = $1 AND owner = $2 RETURNING state`, j.ID, r.Owner, min(1, max(0, progress)), string(b)).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return errStopped
	}
	if err != nil {
		return fmt.Errorf("jobs: checkpoint job %d: %w", j.ID, err)
	}
	if state != "running" {
		return errStopped
	}
	return nil
}

func (r *Runner) run(ctx context.Context, j Job) error {
	if j.CollectionID == nil || j.Collection == "" {
		return fmt.Errorf("job %d (%s) has no collection", j.ID, j.Kind)
	}
	switch j.Kind {
	case KindVacuum, KindAnalyze:
		return r.perRelation(ctx, j, partitionsSQL, map[string]string{KindVacuum: "VACUUM %s", KindAnalyze: "ANALYZE %s"}[j.Kind])
	case KindCompaction:
		return r.perRelation(ctx, j, indexesSQL, "REINDEX INDEX CONCURRENTLY %s")
	case KindCentroidRebuild:
		return r.centroidRebuild(ctx, j)
	case KindRebalance:
		return r.rebalance(ctx, j)
	default:
		return fmt.Errorf("job %d: kind %q is not run by the sidecar", j.ID, j.Kind)
	}
}

const partitionsSQL = `SELECT p.relid::regclass::text FROM ruvector.collections c, pg_partition_tree(c.relid) p
WHERE c.collection_id = $1 AND p.isleaf ORDER BY p.relid::regclass::text`

const indexesSQL = `SELECT i.indexrelid::regclass::text FROM ruvector.collections c, pg_partition_tree(c.relid) p
JOIN pg_index i ON i.indrelid = p.relid
WHERE c.collection_id = $1 AND p.isleaf ORDER BY i.indexrelid::regclass::text`

type relResume struct {
	Next int `json:"next"`
}

type params[T any] struct {
	Resume *T `json:"resume"`
}

// perRelation runs one statement per relation (partition or index), one
// step each, so that a pause takes effect between them.
func (r *Runner) perRelation(ctx context.Context, j Job, listSQL, stmt string) error {
	rows, err := r.Conn.Query(ctx, listSQL, *j.CollectionID)
	if err != nil {
		return err
	}
	rels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var p params[relResume]
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return fmt.Errorf("params %s: %w", j.Params, err)
	}
	start := 0
	if p.Resume != nil {
		start = p.Resume.Next
	}
	for i := start; i < len(rels); i++ {
		if _, err := r.Conn.Exec(ctx, fmt.Sprintf(stmt, rels[i])); err != nil {
			return fmt.Errorf("%s: %w", fmt.Sprintf(stmt, rels[i]), err)
		}
		if r.AfterStep != nil {
			r.AfterStep(ctx, j, i)
		}
		if err := r.checkpoint(ctx, j, float64(i+1)/float64(len(rels)), relResume{Next: i + 1}); err != nil {
			return err
		}
	}
	return nil
}

// RebuildParams are a centroid_rebuild job's params.
type RebuildParams struct {
	Lists      int    `json:"lists"`
	SampleRows int    `json:"sample_rows"`
	Seed       uint64 `json:"seed"`
	OutcomeID  *int64 `json:"outcome_id"`
	Resume     *struct {
		Version int        `json:"version"`
		Cursor  ivf.Cursor `json:"cursor"`
	} `json:"resume"`
}

// centroidRebuild: step 0 trains and activates a version (progress 0.1),
// then each reassign batch is a step.
func (r *Runner) centroidRebuild(ctx context.Context, j Job) error {
	var p RebuildParams
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return fmt.Errorf("params %s: %w", j.Params, err)
	}
	type resume struct {
		Version int        `json:"version"`
		Cursor  ivf.Cursor `json:"cursor"`
	}
	var version int
	var from ivf.Cursor
	if p.Resume != nil && p.Resume.Version > 0 {
		version, from = p.Resume.Version, p.Resume.Cursor
	} else {
		v, err := ivf.Train(ctx, r.Conn, j.Collection, ivf.TrainOptions{Lists: p.Lists, SampleRows: p.SampleRows, Seed: p.Seed, OutcomeID: p.OutcomeID})
		if err != nil {
			return err
		}
		version = v
		if r.AfterStep != nil {
			r.AfterStep(ctx, j, 0)
		}
		if err := r.checkpoint(ctx, j, 0.1, resume{Version: v}); err != nil {
			return err
		}
	}
	step := 1
	batch := r.BatchSize
	if batch <= 0 {
		batch = 1000
	}
	_, err := ivf.ReassignFrom(ctx, r.Conn, j.Collection, version, batch, from, func(pr ivf.Progress) error {
		if r.AfterStep != nil {
			r.AfterStep(ctx, j, step)
		}
		step++
		return r.checkpoint(ctx, j, 0.1+0.9*pr.Fraction(), resume{Version: version, Cursor: pr.Cursor})
	})
	return err
}

// RebalanceParams are a rebalance job's params. OutcomeID defaults to
// -job_id, so a job's moves have their own journal key and
// rebalance.Rollback(-job_id) undoes them.
type RebalanceParams struct {
	From      *int   `json:"from"`
	To        []int  `json:"to"`
	Rows      int    `json:"rows"`
	Batch     int    `json:"batch"`
	OutcomeID *int64 `json:"outcome_id"`
}

func (r *Runner) rebalance(ctx context.Context, j Job) error {
	var p RebalanceParams
	if err := json.Unmarshal(j.Params, &p); err != nil {
		return fmt.Errorf("params %s: %w", j.Params, err)
	}
	if p.From == nil {
		return fmt.Errorf("rebalance job %d: params need \"from\" (shard), \"to\" (shards) and \"rows\"", j.ID)
	}
	outcome := -j.ID
	if p.OutcomeID != nil {
		outcome = *p.OutcomeID
	}
	done, err := rebalance.Pending(ctx, r.Conn, outcome)
	if err != nil {
		return err
	}
	left := p.Rows - int(done)
	if left <= 0 && p.Rows > 0 {
		return nil
	}
	if p.Batch <= 0 {
		p.Batch = r.BatchSize
		if p.Batch <= 0 {
			p.Batch = 500
		}
	}
	step := 0
	moved := int(done)
	var stopped error
	_, err = rebalance.Move(ctx, r.Conn, rebalance.Plan{Collection: j.Collection, OutcomeID: outcome, From: *p.From, To: p.To, Rows: left, BatchSize: p.Batch, Ledger: r.Own},
		func(ctx context.Context, b rebalance.Batch) (rebalance.Decision, error) {
			if r.AfterStep != nil {
				r.AfterStep(ctx, j, step)
			}
			step++
			moved += b.Rows
			if err := r.checkpoint(ctx, j, float64(moved)/float64(p.Rows), map[string]int{"moved": moved}); err != nil {
				stopped = err
				return rebalance.Decision{Stop: true}, nil
			}
			return rebalance.Decision{}, nil
		})
	if err != nil {
		return err
	}
	return stopped
}
