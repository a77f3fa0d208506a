package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healconfig"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// PauseMaintenance is the design's pause_maintenance. It pauses the
// product's own maintenance queue (ruvector.maintenance_jobs of the
// collection below a priority bar, queued or running → paused, paused_by =
// the outcome id) and PostgreSQL's: it turns autovacuum off on the
// collection's tables (each partition), cancels the non-wraparound
// autovacuum workers running on them and waits, bounded, for them to go.
// Tables close to an anti-wraparound vacuum are never touched: pausing
// those trades a slow query for a database that stops accepting writes.
//
// It also handles replication_lag, for which the design names no strategy:
// vacuum, index rebuilds and compaction are large WAL producers, and a
// replica that lags is usually replaying exactly that volume, so pausing
// them is the cheapest reversible way to let it catch up.
type PauseMaintenance struct {
	conn *pgx.Conn
	lock chan struct{}
	// WraparoundFraction: a table whose relfrozenxid (or relminmxid) age
	// exceeds this fraction of its effective freeze max age is near
	// wraparound (default 0.8).
	WraparoundFraction float64
	// DrainTimeout bounds the wait for cancelled workers (default 30 s).
	DrainTimeout time.Duration
	// The priority bar of paused jobs is the healing configuration's
	// maintenance_pause_priority_below, read at every execution so that a
	// change through ruvector_healing_configure applies at once; a manual
	// execution may override it with {"priority_below": n}.
}

// jobAction is the rollback record of one paused maintenance job.
type jobAction struct {
	Kind      string `json:"kind"` // "job"
	JobID     int64  `json:"job_id"`
	PrevState string `json:"prev_state"`
	PausedBy  int64  `json:"paused_by"`
}

// outcomeIDer is implemented by the engine's recorder.
type outcomeIDer interface{ OutcomeID() int64 }

// NewPauseMaintenance uses conn, which it owns from now on (it sets a
// lock_timeout on it so that ALTER TABLE never queues behind a long lock).
func NewPauseMaintenance(conn *pgx.Conn) *PauseMaintenance {
	return &PauseMaintenance{conn: conn, lock: make(chan struct{}, 1), WraparoundFraction: 0.8, DrainTimeout: 30 * time.Second}
}

type pauseAction struct {
	RelID int64  `json:"relid"`
	Table string `json:"table"`
	// Previous is the table's autovacuum_enabled reloption before, nil when
	// it was not set (restored with RESET).
	Previous *string `json:"previous"`
}

func (*PauseMaintenance) Name() string { return "pause_maintenance" }
func (*PauseMaintenance) Handles() []classify.Class {
	return []classify.Class{classify.ClassMaintenanceContention, classify.ClassReplicationLag}
}
func (*PauseMaintenance) Impact() float64                  { return 0.1 }
func (*PauseMaintenance) EstimatedDuration() time.Duration { return 45 * time.Second }
func (*PauseMaintenance) Reversible() bool                 { return true }

// Temporary: autovacuum must not stay off once the contention is over
// (strategy.Temporary).
func (*PauseMaintenance) Temporary() bool { return true }

func (p *PauseMaintenance) with(ctx context.Context, fn func(*pgx.Conn) error) error {
	select {
	case p.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.lock }()
	return fn(p.conn)
}

const cancelWorkersSQL = `SELECT a.pid, pg_cancel_backend(a.pid) FROM pg_stat_activity a
	WHERE a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%to prevent wraparound%'
	  AND (a.pid IN (SELECT pid FROM pg_stat_progress_vacuum WHERE relid = ANY($1))
	    OR a.pid IN (SELECT pid FROM pg_stat_progress_analyze WHERE relid = ANY($1)))`

// pausableWorkersSQL counts the autovacuum workers cancelWorkersSQL
// cancels.
const pausableWorkersSQL = `SELECT count(*) FROM pg_stat_activity a
	WHERE a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%to prevent wraparound%'
	  AND (a.pid IN (SELECT pid FROM pg_stat_progress_vacuum WHERE relid = ANY($1))
	    OR a.pid IN (SELECT pid FROM pg_stat_progress_analyze WHERE relid = ANY($1)))`

// Execute pauses autovacuum on the collection's tables.
func (p *PauseMaintenance) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	var res strategy.Result
	err := p.with(ctx, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `SET lock_timeout = '5s'`); err != nil {
			return err
		}
		rows, err := c.Query(ctx, `
			SELECT cl.oid::int8, cl.oid::regclass::text,
			       (SELECT split_part(o, '=', 2) FROM unnest(cl.reloptions) o WHERE o LIKE 'autovacuum_enabled=%'),
			       age(cl.relfrozenxid)::float8 > $2 * least(current_setting('autovacuum_freeze_max_age')::float8,
			           coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(cl.reloptions) o
			                     WHERE o LIKE 'autovacuum_freeze_max_age=%'), 'Infinity'))
			    OR mxid_age(cl.relminmxid)::float8 > $2 * least(current_setting('autovacuum_multixact_freeze_max_age')::float8,
			           coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(cl.reloptions) o
			                     WHERE o LIKE 'autovacuum_multixact_freeze_max_age=%'), 'Infinity'))
			FROM ruvector.collection_relations r JOIN pg_class cl ON cl.oid = r.relid
			WHERE r.collection_id = $1 AND cl.relkind IN ('r', 'm')
			ORDER BY cl.oid`, rc.CollectionID, p.WraparoundFraction)
		if err != nil {
			return err
		}
		type table struct {
			relid    int64
			name     string
			previous *string
			nearWrap bool
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
			var t table
			err := r.Scan(&t.relid, &t.name, &t.previous, &t.nearWrap)
			return t, err
		})
		if err != nil {
			return err
		}
		var paused, skipped, locked []string
		var relids []int64
		for _, t := range tables {
			if t.nearWrap {
				skipped = append(skipped, t.name)
				continue
			}
			relids = append(relids, t.relid)
		}
		jobs, bar, err := p.pauseJobs(ctx, c, rc)
		if err != nil {
			return err
		}
		res.ActionsTaken += len(jobs)
		if len(relids) == 0 {
			if len(jobs) == 0 {
				res = strategy.NoopResult("no table of the collection may be paused and no job is below the priority bar")
				res.Metadata = map[string]any{"skipped_near_wraparound": skipped, "priority_below": bar}
				return nil
			}
			res.Success = true
			res.Metadata = map[string]any{"paused_jobs": jobs, "skipped_near_wraparound": skipped, "priority_below": bar}
			return nil
		}
		// Cancel first: ALTER TABLE waits for the worker's lock otherwise.
		if _, err := c.Exec(ctx, cancelWorkersSQL, relids); err != nil {
			return err
		}
		for _, t := range tables {
			if t.nearWrap {
				continue
			}
			if err := rc.Record(pauseAction{RelID: t.relid, Table: t.name, Previous: t.previous}); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, `ALTER TABLE `+t.name+` SET (autovacuum_enabled = false)`); err != nil {
				// Held past lock_timeout by work pause_maintenance may not
				// touch (a manual VACUUM, an anti-wraparound vacuum, a
				// long transaction's lock): autovacuum cannot run there
				// meanwhile either (it needs the same lock), so the table
				// is left as it is (its recorded action restores the value
				// it still has) and the rest is paused.
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "55P03" { // lock_not_available
					locked = append(locked, t.name)
					continue
				}
				return fmt.Errorf("pause autovacuum on %s: %w", t.name, err)
			}
			paused = append(paused, t.name)
			res.ActionsTaken++
		}
		// Workers that started between the first cancel and the ALTERs.
		if _, err := c.Exec(ctx, cancelWorkersSQL, relids); err != nil {
			return err
		}
		deadline := time.Now().Add(p.DrainTimeout)
		for {
			// Only the workers it cancelled: a manual VACUUM (someone
			// else's work, or a paused job's last step) or an
			// anti-wraparound one is left to run and is not waited for.
			var left int
			if err := c.QueryRow(ctx, pausableWorkersSQL, relids).Scan(&left); err != nil {
				return err
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d vacuum workers still running on the collection after %v", left, p.DrainTimeout)
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		res.Success = true
		res.Metadata = map[string]any{"paused_tables": paused, "paused_jobs": jobs, "skipped_near_wraparound": skipped,
			"skipped_locked": locked, "priority_below": bar}
		return nil
	})
	return res, err
}

var reloptionValue = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)

// Rollback restores each table's previous reloption exactly: RESET when it
// was not set, else the previous value.
func (p *PauseMaintenance) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	return p.with(ctx, func(c *pgx.Conn) error {
		var errs []error
		for i := len(acts) - 1; i >= 0; i-- {
			var j jobAction
			if err := json.Unmarshal(acts[i], &j); err == nil && j.Kind == "job" {
				// Only a job still paused by this very outcome resumes: one
				// paused since by someone else, or finished, is left alone.
				if _, err := c.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'queued', paused_by = NULL,
					updated_at = now() WHERE job_id = $1 AND state = 'paused' AND paused_by = $2`, j.JobID, j.PausedBy); err != nil {
					errs = append(errs, fmt.Errorf("resume job %d: %w", j.JobID, err))
				}
				continue
			}
			var a pauseAction
			if err := json.Unmarshal(acts[i], &a); err != nil {
				errs = append(errs, fmt.Errorf("action %d: %w", i, err))
				continue
			}
			// By oid: the table may have been renamed since.
			var name, current *string
			var set bool
			if err := c.QueryRow(ctx, `SELECT (SELECT oid::regclass::text FROM pg_class WHERE oid = $1),
				(SELECT split_part(o, '=', 2) FROM pg_class, unnest(reloptions) o WHERE oid = $1 AND o LIKE 'autovacuum_enabled=%'),
				EXISTS (SELECT FROM pg_class, unnest(reloptions) o WHERE oid = $1 AND o LIKE 'autovacuum_enabled=%')`,
				a.RelID).Scan(&name, &current, &set); err != nil {
				errs = append(errs, err)
				continue
			}
			if name == nil {
				continue // dropped: nothing to restore
			}
			if (a.Previous == nil && !set) || (a.Previous != nil && current != nil && *a.Previous == *current) {
				// Already as it was (a table the pause found locked and
				// left): no ALTER, which would queue for that lock again.
				continue
			}
			stmt := `ALTER TABLE ` + *name + ` RESET (autovacuum_enabled)`
			if a.Previous != nil {
				if !reloptionValue.MatchString(*a.Previous) {
					errs = append(errs, fmt.Errorf("action %d: implausible previous value %q", i, *a.Previous))
					continue
				}
				stmt = `ALTER TABLE ` + *name + ` SET (autovacuum_enabled = ` + *a.Previous + `)`
			}
			if _, err := c.Exec(ctx, stmt); err != nil {
				errs = append(errs, fmt.Errorf("restore autovacuum on %s: %w", *name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// priorityBar is the priority below which jobs are paused: the manual
// execution's priority_below when given, else the configuration's
// maintenance_pause_priority_below.
func priorityBar(ctx context.Context, c *pgx.Conn, params json.RawMessage) (int, error) {
	if len(params) > 0 {
		var prm struct {
			PriorityBelow *int `json:"priority_below"`
		}
		if err := json.Unmarshal(params, &prm); err != nil {
			return 0, fmt.Errorf("pause_maintenance parameters: %w", err)
		}
		if prm.PriorityBelow != nil {
			// 1001: every job, whatever its priority (0..1000).
			if *prm.PriorityBelow < 0 || *prm.PriorityBelow > healconfig.MaxPausePriorityBelow+1 {
				return 0, fmt.Errorf("pause_maintenance parameter priority_below %d is out of range 0..%d",
					*prm.PriorityBelow, healconfig.MaxPausePriorityBelow+1)
			}
			return *prm.PriorityBelow, nil
		}
	}
	var doc []byte
	err := c.QueryRow(ctx, `SELECT config::text FROM ruvector.healing_config`).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return healconfig.Default().MaintenancePausePriorityBelow, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pause_maintenance: read healing configuration: %w", err)
	}
	cfg, err := healconfig.Parse(doc)
	if err != nil {
		return 0, fmt.Errorf("pause_maintenance: stored healing configuration: %w", err)
	}
	return cfg.MaintenancePausePriorityBelow, nil
}

// pauseJobs pauses the collection's queued or running maintenance jobs
// below the priority bar, recording each before it is paused. It returns
// the jobs paused and the bar used.
func (p *PauseMaintenance) pauseJobs(ctx context.Context, c *pgx.Conn, rc *strategy.Context) ([]int64, int, error) {
	bar, err := priorityBar(ctx, c, rc.Params)
	if err != nil {
		return nil, 0, err
	}
	var outcome int64
	if o, ok := rc.Recorder.(outcomeIDer); ok {
		outcome = o.OutcomeID()
	}
	rows, err := c.Query(ctx, `SELECT job_id, state, kind FROM ruvector.maintenance_jobs
		WHERE collection_id = $1 AND state IN ('queued', 'running') AND priority < $2 ORDER BY job_id`,
		rc.CollectionID, bar)
	if err != nil {
		return nil, bar, fmt.Errorf("list maintenance jobs: %w", err)
	}
	type job struct {
		id          int64
		state, kind string
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
		var j job
		return j, r.Scan(&j.id, &j.state, &j.kind)
	})
	if err != nil {
		return nil, bar, fmt.Errorf("list maintenance jobs: %w", err)
	}
	var paused []int64
	for _, j := range jobs {
		if err := rc.Record(jobAction{Kind: "job", JobID: j.id, PrevState: j.state, PausedBy: outcome}); err != nil {
			return paused, bar, err
		}
		tag, err := c.Exec(ctx, `UPDATE ruvector.maintenance_jobs SET state = 'paused', paused_by = $2, updated_at = now()
			WHERE job_id = $1 AND state IN ('queued', 'running')`, j.id, outcome)
		if err != nil {
			return paused, bar, fmt.Errorf("pause job %d: %w", j.id, err)
		}
		if tag.RowsAffected() == 1 {
			paused = append(paused, j.id)
			if j.state == "running" && j.kind != "compaction" {
				if _, err := c.Exec(ctx, cancelBlockedStepSQL, collect.JobAppNamePrefix, j.id); err != nil {
					return paused, bar, fmt.Errorf("release paused job %d from its lock wait: %w", j.id, err)
				}
			}
		}
	}
	return paused, bar, nil
}

// cancelBlockedStepSQL cancels the statement of a paused job's runner
// while it waits for a relation lock. A runner stops a paused job only at
// its next step boundary, and a step blocked behind a lock reaches none
// until the holder lets go: when that is someone else's long VACUUM or an
// anti-wraparound vacuum (which pause_maintenance never cancels), the
// paused job would keep its place in the lock queue, stay visible as
// contention, and resume its work the moment the lock came free, pause or
// not. Cancelling is safe there: the step has not started (a statement
// waiting for its first lock did nothing), each step is idempotent or
// transactional and resumes from the last checkpoint, and the runner
// leaves a job that is no longer 'running' as it is (paused, with its
// progress). A REINDEX CONCURRENTLY (compaction) is never cancelled: one
// cancelled past its first phase leaves an invalid index behind. A job
// working (not waiting) is left to reach its boundary.
const cancelBlockedStepSQL = `SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a
	WHERE a.application_name = $1 || $2::int8
	  AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND a.wait_event_type = 'Lock' AND a.wait_event = 'relation'`
