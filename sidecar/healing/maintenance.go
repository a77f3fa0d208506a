package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// PauseMaintenance is the design's pause_maintenance for PostgreSQL's own
// maintenance: it turns autovacuum off on the collection's tables (each
// partition), cancels the non-wraparound autovacuum workers running on them
// and waits, bounded, for them to go. Tables close to an anti-wraparound
// vacuum are never touched: pausing those trades a slow query for a
// database that stops accepting writes.
type PauseMaintenance struct {
	conn *pgx.Conn
	lock chan struct{}
	// WraparoundFraction: a table whose relfrozenxid (or relminmxid) age
	// exceeds this fraction of its effective freeze max age is near
	// wraparound (default 0.8).
	WraparoundFraction float64
	// DrainTimeout bounds the wait for cancelled workers (default 30 s).
	DrainTimeout time.Duration
}

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
	return []classify.Class{classify.ClassMaintenanceContention}
}
func (*PauseMaintenance) Impact() float64                  { return 0.1 }
func (*PauseMaintenance) EstimatedDuration() time.Duration { return 45 * time.Second }
func (*PauseMaintenance) Reversible() bool                 { return true }

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
		var paused, skipped []string
		var relids []int64
		for _, t := range tables {
			if t.nearWrap {
				skipped = append(skipped, t.name)
				continue
			}
			relids = append(relids, t.relid)
		}
		if len(relids) == 0 {
			res = strategy.NoopResult("no table of the collection may be paused")
			res.Metadata = map[string]any{"skipped_near_wraparound": skipped}
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
			var left int
			if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid = ANY($1)`,
				relids).Scan(&left); err != nil {
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
		res.Metadata = map[string]any{"paused_tables": paused, "skipped_near_wraparound": skipped}
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
			var a pauseAction
			if err := json.Unmarshal(acts[i], &a); err != nil {
				errs = append(errs, fmt.Errorf("action %d: %w", i, err))
				continue
			}
			// By oid: the table may have been renamed since.
			var name *string
			if err := c.QueryRow(ctx, `SELECT (SELECT oid::regclass::text FROM pg_class WHERE oid = $1)`, a.RelID).Scan(&name); err != nil {
				errs = append(errs, err)
				continue
			}
			if name == nil {
				continue // dropped: nothing to restore
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
