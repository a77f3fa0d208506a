package workload

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AutovacOptions shape AutovacuumStorm. Zero values take the defaults.
type AutovacOptions struct {
	// CostDelayMS and CostLimit are the partitions'
	// autovacuum_vacuum_cost_delay (ms) and autovacuum_vacuum_cost_limit
	// reloptions (default 100 and 1, the slowest PostgreSQL allows: about
	// ten pages a second), so each autovacuum worker stays visible in
	// pg_stat_progress_vacuum for seconds, as one on a large table does.
	CostDelayMS int
	CostLimit   int
	// Churn rows per second are rewritten with their own values (default
	// 200): dead tuples for autovacuum, whose threshold and scale factor
	// are set to 0 on the partitions so that any dead tuple qualifies.
	Churn float64
	// Jobs is the backlog of low-priority product jobs of Kind the storm
	// keeps (default 40 'vacuum' jobs at priority 10, below
	// pause_maintenance's default bar of 50), on the same partitions as
	// autovacuum: as a runner (the daemon's --jobs) finishes them, new ones
	// are queued so that Jobs of them are queued, running or paused, the
	// way a scheduler keeps adding work. Its VACUUM waits on the
	// autovacuum worker's lock and the rest are a queued flood. Paused
	// jobs count, so a pause is not undone by new jobs.
	Jobs     int
	Kind     string
	Priority int
	// Naptime, when > 0, sets autovacuum_naptime for the storm (ALTER
	// SYSTEM and a reload: superuser, the whole server, restored by Undo)
	// so that autovacuum comes back to the partitions within Naptime
	// instead of the default minute. Zero leaves the server's setting.
	Naptime time.Duration
}

func (o *AutovacOptions) defaults() {
	if o.CostDelayMS == 0 {
		o.CostDelayMS = 100
	}
	if o.CostLimit == 0 {
		o.CostLimit = 1
	}
	if o.Churn == 0 {
		o.Churn = 200
	}
	if o.Jobs == 0 {
		o.Jobs = 40
	}
	if o.Kind == "" {
		o.Kind = "vacuum"
	}
	if o.Priority == 0 {
		o.Priority = 10
	}
}

// AutovacStorm is a running AutovacuumStorm. Undo ends it.
type AutovacStorm struct {
	w *Workload
	// Tables are the partitions, with their reloptions before the storm
	// (nil: none).
	Tables  map[string][]string
	keys    []string
	naptime *string // auto.conf value of autovacuum_naptime before (nil: none); set only when the storm changed it
	setNap  bool
	stop    context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	churned int
	bgErr   error
	jobIDs  []int64 // every job it queued
	undone  bool
}

// AutovacReport is what the storm did, from Undo.
type AutovacReport struct {
	Churned int
	// Jobs is the number of jobs the storm queued in all.
	Jobs int
	// JobsDeleted are the storm's jobs still queued or paused at Undo
	// (deleted); JobsRan ended done or failed; JobsRunning were still
	// running when Undo gave up waiting for them (left to their runner).
	JobsDeleted, JobsRan, JobsRunning int
}

// AutovacuumStorm creates maintenance contention made only of work the
// product may pause: PostgreSQL's autovacuum on the collection's
// partitions, made continuous and slow by reloptions and fed by update
// churn, and a backlog of the product's own low-priority jobs on the same
// partitions, kept topped up. No manual VACUUM of anyone else is
// involved. The jobs need a runner (the daemon's --jobs, or a
// jobs.Runner): it is what makes them wait on autovacuum's locks; without
// one only the queued flood and autovacuum show. The churn rewrites rows
// with their own values, so checksums do not change and the ledger
// records nothing. The storm runs in the background until Undo, which
// restores every reloption it set exactly (never autovacuum_enabled,
// which is pause_maintenance's), stops the churn and the backlog, deletes
// its jobs still queued or paused and restores autovacuum_naptime.
// Naptime is applied in whole seconds.
func (w *Workload) AutovacuumStorm(ctx context.Context, o AutovacOptions) (*AutovacStorm, error) {
	o.defaults()
	if o.CostDelayMS < 0 || o.CostDelayMS > 100 {
		return nil, fmt.Errorf("workload: autovacuum storm: cost delay %d ms is out of range 0..100", o.CostDelayMS)
	}
	if o.CostLimit < 1 || o.CostLimit > 10000 {
		return nil, fmt.Errorf("workload: autovacuum storm: cost limit %d is out of range 1..10000", o.CostLimit)
	}
	if o.Jobs < 0 || o.Churn < 0 {
		return nil, fmt.Errorf("workload: autovacuum storm: jobs %d and churn %v must not be negative", o.Jobs, o.Churn)
	}
	if o.Naptime < 0 || (o.Naptime > 0 && o.Naptime < time.Second) {
		return nil, fmt.Errorf("workload: autovacuum storm: naptime %v: 0 (leave it) or at least 1s", o.Naptime)
	}
	parts, err := w.partitions(ctx)
	if err != nil {
		return nil, err
	}
	s := &AutovacStorm{w: w, Tables: map[string][]string{}, done: make(chan struct{})}
	opts := []string{
		"autovacuum_vacuum_threshold=0", "autovacuum_vacuum_scale_factor=0",
		"autovacuum_vacuum_cost_delay=" + strconv.Itoa(o.CostDelayMS),
		"autovacuum_vacuum_cost_limit=" + strconv.Itoa(o.CostLimit),
	}
	for _, kv := range opts {
		s.keys = append(s.keys, strings.SplitN(kv, "=", 2)[0])
	}
	for _, p := range parts {
		var ro []string
		if err := w.Pool.QueryRow(ctx, `SELECT reloptions FROM pg_class WHERE oid = $1::regclass`, p).Scan(&ro); err != nil {
			return nil, fmt.Errorf("workload: autovacuum storm: reloptions of %s: %w", p, err)
		}
		s.Tables[p] = ro
	}
	// From here on every change is undone on failure.
	fail := func(err error) (*AutovacStorm, error) {
		s.done = nil
		if _, uerr := s.Undo(context.WithoutCancel(ctx)); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
		return nil, err
	}
	for _, p := range parts {
		if _, err := w.Pool.Exec(ctx, `ALTER TABLE `+p+` SET (`+strings.Join(opts, ", ")+`)`); err != nil {
			return fail(fmt.Errorf("workload: autovacuum storm: reloptions of %s: %w", p, err))
		}
	}
	if o.Naptime > 0 {
		if err := w.Pool.QueryRow(ctx, `SELECT (SELECT setting FROM pg_file_settings
			WHERE name = 'autovacuum_naptime' AND sourcefile LIKE '%postgresql.auto.conf' AND applied)`).Scan(&s.naptime); err != nil {
			return fail(fmt.Errorf("workload: autovacuum storm: read autovacuum_naptime: %w", err))
		}
		s.setNap = true
		if _, err := w.Pool.Exec(ctx, fmt.Sprintf(`ALTER SYSTEM SET autovacuum_naptime = '%ds'`, int(o.Naptime/time.Second))); err != nil {
			return fail(fmt.Errorf("workload: autovacuum storm: set autovacuum_naptime: %w", err))
		}
		if _, err := w.Pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			return fail(fmt.Errorf("workload: autovacuum storm: reload: %w", err))
		}
	}
	if err := s.topUp(ctx, o); err != nil {
		return fail(err)
	}
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	churnDone := make(chan struct{})
	go func() {
		defer close(s.done)
		defer func() { <-churnDone }()
		for {
			if err := sleepCtx(cctx, 250*time.Millisecond); err != nil {
				return
			}
			if err := s.topUp(cctx, o); err != nil && cctx.Err() == nil {
				s.fail(err)
				return
			}
		}
	}()
	go func() {
		defer close(churnDone)
		if o.Churn == 0 {
			<-cctx.Done()
			return
		}
		_, err := pace(cctx, o.Churn, 1<<62, func(n int) error {
			tag, err := w.Pool.Exec(cctx, fmt.Sprintf(`UPDATE %s SET embedding = embedding
				WHERE id IN (SELECT id FROM %s ORDER BY random() LIMIT $1)`, w.Table, w.Table), n)
			if err == nil {
				s.mu.Lock()
				s.churned += int(tag.RowsAffected())
				s.mu.Unlock()
			}
			if err != nil && cctx.Err() != nil {
				return cctx.Err()
			}
			return err
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			s.fail(fmt.Errorf("churn: %w", err))
		}
	}()
	return s, nil
}

func (s *AutovacStorm) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bgErr = errors.Join(s.bgErr, err)
}

// topUp queues jobs until o.Jobs of the storm's are queued, running or
// paused.
func (s *AutovacStorm) topUp(ctx context.Context, o AutovacOptions) error {
	ids := s.JobIDs()
	var pending int
	if err := s.w.Pool.QueryRow(ctx, `SELECT count(*) FROM ruvector.maintenance_jobs
		WHERE job_id = ANY($1) AND state IN ('queued', 'running', 'paused')`, ids).Scan(&pending); err != nil {
		return fmt.Errorf("workload: autovacuum storm: count jobs: %w", err)
	}
	for range o.Jobs - pending {
		var id int64
		if err := s.w.Pool.QueryRow(ctx, `SELECT ruvector.ruvector_maintenance_enqueue($1, $2, $3, '{}'::jsonb)`,
			s.w.Name, o.Kind, o.Priority).Scan(&id); err != nil {
			return fmt.Errorf("workload: autovacuum storm: enqueue %s job: %w", o.Kind, err)
		}
		s.mu.Lock()
		s.jobIDs = append(s.jobIDs, id)
		s.mu.Unlock()
	}
	return nil
}

// JobIDs are the jobs the storm queued so far.
func (s *AutovacStorm) JobIDs() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.jobIDs)
}

// Churned is the number of rows rewritten so far.
func (s *AutovacStorm) Churned() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.churned
}

// Err is the error the churn or the backlog stopped on, if any.
func (s *AutovacStorm) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bgErr
}

// reloptionKey is the name of a "name=value" reloption.
func reloptionKey(kv string) string { return strings.SplitN(kv, "=", 2)[0] }

// Undo ends the storm: the churn stops; every reloption the storm set is
// put back as it was (RESET when it was not set) and no other is touched,
// so a concurrent pause_maintenance's autovacuum_enabled stays as that
// strategy left it; the storm's jobs still queued or paused are deleted,
// and those running are waited for (up to 30 s) and reported;
// autovacuum_naptime is restored. It may be called once.
func (s *AutovacStorm) Undo(ctx context.Context) (AutovacReport, error) {
	var rep AutovacReport
	if s.undone {
		return rep, errors.New("workload: autovacuum storm already undone")
	}
	s.undone = true
	if s.stop != nil {
		s.stop()
	}
	if s.done != nil {
		<-s.done
	}
	rep.Churned = s.Churned()
	var errs []error
	if err := s.Err(); err != nil {
		errs = append(errs, err)
	}
	ids := s.JobIDs()
	rep.Jobs = len(ids)
	for _, p := range slices.Sorted(maps.Keys(s.Tables)) {
		prev := map[string]string{}
		for _, kv := range s.Tables[p] {
			if k := reloptionKey(kv); slices.Contains(s.keys, k) {
				prev[k] = kv
			}
		}
		var set, reset []string
		for _, k := range s.keys {
			if kv, ok := prev[k]; ok {
				set = append(set, kv)
			} else {
				reset = append(reset, k)
			}
		}
		stmt := `ALTER TABLE ` + p
		if len(reset) > 0 {
			stmt += ` RESET (` + strings.Join(reset, ", ") + `)`
		}
		if len(set) > 0 {
			if len(reset) > 0 {
				stmt += `,`
			}
			stmt += ` SET (` + strings.Join(set, ", ") + `)`
		}
		// The partition's lock may be held by an autovacuum worker for a
		// while: ALTER TABLE ... SET waits for it, which is bounded by the
		// worker (a cancelled one ends at once).
		if _, err := s.w.Pool.Exec(ctx, stmt); err != nil {
			errs = append(errs, fmt.Errorf("restore reloptions of %s: %w", p, err))
		}
	}
	if len(ids) > 0 {
		tag, err := s.w.Pool.Exec(ctx, `DELETE FROM ruvector.maintenance_jobs WHERE job_id = ANY($1) AND state IN ('queued', 'paused')`, ids)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete queued jobs: %w", err))
		} else {
			rep.JobsDeleted = int(tag.RowsAffected())
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := s.w.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('done', 'failed')),
				count(*) FILTER (WHERE state = 'running') FROM ruvector.maintenance_jobs WHERE job_id = ANY($1)`,
				ids).Scan(&rep.JobsRan, &rep.JobsRunning)
			if err != nil {
				errs = append(errs, fmt.Errorf("count jobs: %w", err))
				break
			}
			if rep.JobsRunning == 0 || time.Now().After(deadline) {
				break
			}
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if s.setNap {
		stmt := `ALTER SYSTEM RESET autovacuum_naptime`
		if s.naptime != nil {
			stmt = `ALTER SYSTEM SET autovacuum_naptime = '` + strings.ReplaceAll(*s.naptime, "'", "''") + `'`
		}
		if _, err := s.w.Pool.Exec(ctx, stmt); err != nil {
			errs = append(errs, fmt.Errorf("restore autovacuum_naptime: %w", err))
		} else if _, err := s.w.Pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			errs = append(errs, fmt.Errorf("reload: %w", err))
		}
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("workload: autovacuum storm undo: %w", errors.Join(errs...))
	}
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
