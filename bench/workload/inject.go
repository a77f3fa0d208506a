package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pace calls step every tick with the number of rows due at rate rows/s,
// until d passes or ctx ends.
func pace(ctx context.Context, rate float64, d time.Duration, step func(n int) error) (int, error) {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	deadline := time.Now().Add(d)
	var due float64
	total := 0
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-t.C:
		}
		due += rate * tick.Seconds()
		n := int(due)
		if n == 0 {
			continue
		}
		due -= float64(n)
		if err := step(n); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// HotPartition inserts at rate rows/s for d, every row with the explicit
// shard value (COPY batches each tick), so one partition takes all the
// writes: the partitions collector's write rate of that shard rises and the
// others' do not.
func (w *Workload) HotPartition(ctx context.Context, shard int, rate float64, d time.Duration) (int, error) {
	if shard < 0 || shard >= w.Partitions {
		return 0, fmt.Errorf("workload: hot shard %d, collection %q has shards 0..%d", shard, w.Name, w.Partitions-1)
	}
	return pace(ctx, rate, d, func(n int) error {
		return w.CopyInsert(ctx, n, func(int) int { return shard })
	})
}

// DriftCenter is where Drift moves the distribution by default: a corner
// outside the initial clusters' [-10, 10] box, so the new rows all fall in
// the list of one (outermost) centroid.
func (w *Workload) DriftCenter() []float32 {
	c := make([]float32, w.Dim)
	for i := range c {
		c[i] = 30
	}
	return c
}

// Drift moves the vector distribution to a narrow blob around center
// (DriftCenter when nil) and inserts n rows from it; later inserts keep
// drawing from it. The active centroid version assigns them all to the
// nearest list(s), which grow: the skew factor rises.
func (w *Workload) Drift(ctx context.Context, n int, center []float32, spread float64) error {
	if center == nil {
		center = w.DriftCenter()
	}
	if len(center) != w.Dim {
		return fmt.Errorf("workload: drift center has dimension %d, collection %q has %d", len(center), w.Name, w.Dim)
	}
	if spread <= 0 {
		spread = 0.5
	}
	w.SetDistribution(&Clusters{Centers: [][]float32{center}, Spread: spread})
	for done := 0; done < n; {
		b := min(5000, n-done)
		if err := w.CopyInsert(ctx, b, nil); err != nil {
			return err
		}
		done += b
	}
	return nil
}

// MaintenanceOptions shape HeavyMaintenance.
type MaintenanceOptions struct {
	// Jobs low-priority jobs of Kind (default 20 'vacuum' jobs at priority
	// 10) are put in the product's queue.
	Jobs     int
	Kind     string
	Priority int
	// Sessions run throttled VACUUM (ANALYZE) over the partitions in a
	// loop for Duration (default 2 sessions). Throttled with
	// vacuum_cost_delay so each VACUUM stays visible in
	// pg_stat_progress_vacuum, as a background vacuum of a large table is.
	Sessions  int
	Duration  time.Duration
	CostDelay string // default "20ms"
	// Churn rows per second are updated in the meantime so each VACUUM
	// has dead tuples to clean (default 200).
	Churn float64
}

// MaintenanceReport is what HeavyMaintenance did.
type MaintenanceReport struct {
	JobIDs   []int64
	Vacuums  int
	Churned  int
	Duration time.Duration
}

// HeavyMaintenance floods the collection with maintenance: queued jobs
// and continuously running (throttled) VACUUMs with update churn feeding
// them. It blocks for o.Duration.
func (w *Workload) HeavyMaintenance(ctx context.Context, o MaintenanceOptions) (MaintenanceReport, error) {
	var rep MaintenanceReport
	if o.Kind == "" {
		o.Kind = "vacuum"
	}
	if o.Jobs == 0 {
		o.Jobs = 20
	}
	if o.Priority == 0 {
		o.Priority = 10
	}
	if o.Sessions == 0 {
		o.Sessions = 2
	}
	if o.CostDelay == "" {
		o.CostDelay = "20ms"
	}
	if o.Churn == 0 {
		o.Churn = 200
	}
	for range o.Jobs {
		var id int64
		if err := w.Pool.QueryRow(ctx, `SELECT ruvector.ruvector_maintenance_enqueue($1, $2, $3, '{}'::jsonb)`, w.Name, o.Kind, o.Priority).Scan(&id); err != nil {
			return rep, fmt.Errorf("workload: enqueue %s job: %w", o.Kind, err)
		}
		rep.JobIDs = append(rep.JobIDs, id)
	}
	parts, err := w.partitions(ctx)
	if err != nil {
		return rep, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for s := range o.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := w.Pool.Acquire(ctx)
			if err != nil {
				return
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, fmt.Sprintf("SET vacuum_cost_delay = '%s'; SET vacuum_cost_limit = 10", o.CostDelay)); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer conn.Exec(context.Background(), "RESET vacuum_cost_delay; RESET vacuum_cost_limit")
			for i := s; ctx.Err() == nil; i++ {
				if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) "+parts[i%len(parts)]); err != nil && ctx.Err() == nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if ctx.Err() == nil {
					mu.Lock()
					rep.Vacuums++
					mu.Unlock()
				}
			}
		}()
	}
	n, cerr := pace(ctx, o.Churn, o.Duration, func(n int) error {
		_, err := w.Pool.Exec(ctx, fmt.Sprintf(`UPDATE %s SET embedding = embedding WHERE id IN (SELECT id FROM %s ORDER BY random() LIMIT $1)`, w.Table, w.Table), n)
		return err
	})
	wg.Wait()
	rep.Churned = n
	rep.Duration = time.Since(start)
	if cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) && !errors.Is(cerr, context.Canceled) {
		errs = append(errs, cerr)
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("workload: heavy maintenance: %w", errors.Join(errs...))
	}
	return rep, nil
}

// partitions are the collection's leaf partitions.
func (w *Workload) partitions(ctx context.Context) ([]string, error) {
	rows, err := w.Pool.Query(ctx, `SELECT relid::regclass::text FROM pg_partition_tree($1::regclass) WHERE isleaf ORDER BY 1`, w.Table)
	if err != nil {
		return nil, fmt.Errorf("workload: partitions of %s: %w", w.Table, err)
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(parts) == 0 {
		return nil, fmt.Errorf("workload: partitions of %s: %v (%d)", w.Table, err, len(parts))
	}
	return parts, nil
}

// BloatColumn is the user column IndexBloat churns, with its B-tree index
// <collection>_bloat_key_idx.
const BloatColumn = "bloat_key"

// BloatOptions shape IndexBloat.
type BloatOptions struct {
	// Rounds of random updates of the indexed column over every row
	// (default 3): random inserts into the B-tree split pages everywhere.
	Rounds int
	// DeleteFraction of the rows is then deleted (default 0.6) and the
	// table vacuumed, which empties index pages without merging them.
	DeleteFraction float64
}

// BloatReport is what IndexBloat did.
type BloatReport struct {
	Updated, Deleted int64
}

// IndexBloat adds (if missing) an indexed user column and churns it with
// random updates, then deletes a fraction of the rows (recorded in the
// ledger) and vacuums: pgstatindex shows lower average leaf density and
// higher leaf fragmentation on the collection's indexes.
func (w *Workload) IndexBloat(ctx context.Context, o BloatOptions) (BloatReport, error) {
	var rep BloatReport
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.DeleteFraction == 0 {
		o.DeleteFraction = 0.6
	}
	// ADD COLUMN IF NOT EXISTS takes an ACCESS EXCLUSIVE lock even when
	// the column is there, queueing the live workload behind whatever
	// transaction is open: a second injection checks the catalog first.
	var have bool
	if err := w.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped)
		AND to_regclass($3) IS NOT NULL`, w.Table, BloatColumn, w.Name+"_bloat_key_idx").Scan(&have); err != nil {
		return rep, fmt.Errorf("workload: index bloat column: %w", err)
	}
	if !have {
		if _, err := w.Pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s bigint;
CREATE INDEX IF NOT EXISTS %s ON %s (%s)`, w.Table, BloatColumn, pgx.Identifier{w.Name + "_bloat_key_idx"}.Sanitize(), w.Table, BloatColumn)); err != nil {
			return rep, fmt.Errorf("workload: index bloat column: %w", err)
		}
	}
	for range o.Rounds {
		var n int64
		err := retryMoved(ctx, func() error {
			tag, err := w.Pool.Exec(ctx, fmt.Sprintf(`UPDATE %s SET %s = (random() * 9e15)::bigint`, w.Table, BloatColumn))
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("workload: index bloat updates: %w", err)
		}
		rep.Updated += n
	}
	// The ledger learns of the deleted rows only once the DELETE has
	// committed: a statement that fails part way deleted nothing.
	type gone struct {
		shard int
		text  string
	}
	var deleted []gone
	err := retryMoved(ctx, func() error {
		deleted = deleted[:0]
		rows, err := w.Pool.Query(ctx, fmt.Sprintf(`DELETE FROM %s WHERE random() < $1 RETURNING shard, embedding::text`, w.Table), o.DeleteFraction)
		if err != nil {
			return err
		}
		for rows.Next() {
			var g gone
			if err := rows.Scan(&g.shard, &g.text); err != nil {
				rows.Close()
				return err
			}
			deleted = append(deleted, g)
		}
		return rows.Err()
	})
	if err != nil {
		return rep, fmt.Errorf("workload: index bloat deletes: %w", err)
	}
	for _, g := range deleted {
		w.Ledger.RemoveText(g.shard, g.text)
		rep.Deleted++
	}
	if _, err := w.Pool.Exec(ctx, "VACUUM "+w.Table); err != nil {
		return rep, fmt.Errorf("workload: index bloat vacuum: %w", err)
	}
	return rep, nil
}

// retryMoved runs fn again (up to 5 times) when a row it touched was
// moved to another partition by a concurrent statement (SQLSTATE 40001:
// the healer's rebalance moves rows while a fault is injected); fn's
// statement rolled back whole, so running it again is safe.
func retryMoved(ctx context.Context, fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return err
}

// MemoryHold is a backend holding a large sort in memory.
type MemoryHold struct {
	PID  int
	conn *pgx.Conn
}

// Release frees the memory (closes the cursor and its session).
func (h *MemoryHold) Release(ctx context.Context) error {
	return h.conn.Close(ctx)
}

// MemoryPressure makes one backend hold about mb MiB of private memory:
// with work_mem large enough, a cursor over an in-memory sort of
// generated rows keeps its sorted tuples (malloc'd, so RssAnon of that
// process) until the cursor closes. That is what the memory collector
// measures: private resident memory of the largest server processes and
// the machine's/cgroup's used memory.
func (w *Workload) MemoryPressure(ctx context.Context, dsn string, mb int) (*MemoryHold, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("workload: memory pressure connect: %w", err)
	}
	h := &MemoryHold{conn: conn}
	// About 100 bytes of sort memory per row of (int, 32-char text).
	rows := int64(mb) << 20 / 100
	sql := fmt.Sprintf(`SET work_mem = '%dMB';
BEGIN;
DECLARE ruvector_memory_pressure NO SCROLL CURSOR FOR
  SELECT g, md5(g::text) AS h FROM generate_series(1, %d) g ORDER BY h;
FETCH 1 FROM ruvector_memory_pressure;`, 2*mb+64, rows)
	if _, err := conn.Exec(ctx, sql); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("workload: memory pressure sort: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&h.PID); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return h, nil
}

// SteadyOptions shape Steady.
type SteadyOptions struct {
	Rate         float64 // rows per second (default 100)
	CopyFraction float64 // share of rows loaded by COPY batches, 0..1
	SearchRate   float64 // searches per second (0 = none)
	K, Probes    int     // default 10, 8
	Duration     time.Duration
}

// Stats is what Steady did.
type Stats struct {
	Routed, Copied, Searches int
	SearchP50, SearchP99     time.Duration
}

// Steady drives the collection: routed single-row inserts and COPY
// batches at the given rate, searches at theirs, for Duration.
func (w *Workload) Steady(ctx context.Context, o SteadyOptions) (Stats, error) {
	var st Stats
	if o.Rate == 0 {
		o.Rate = 100
	}
	if o.K == 0 {
		o.K = 10
	}
	if o.Probes == 0 {
		o.Probes = 8
	}
	var wg sync.WaitGroup
	var searchErr error
	var lat []time.Duration
	if o.SearchRate > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, searchErr = pace(ctx, o.SearchRate, o.Duration, func(n int) error {
				for range n {
					_, d, err := w.Search(ctx, o.K, o.Probes)
					if err != nil {
						return err
					}
					lat = append(lat, d)
				}
				return nil
			})
		}()
	}
	var copyDue float64
	_, err := pace(ctx, o.Rate, o.Duration, func(n int) error {
		copyDue += float64(n) * o.CopyFraction
		c := int(copyDue)
		copyDue -= float64(c)
		if c > 0 {
			if err := w.CopyInsert(ctx, c, nil); err != nil {
				return err
			}
			st.Copied += c
		}
		if err := w.InsertRouted(ctx, n-c); err != nil {
			return err
		}
		st.Routed += n - c
		return nil
	})
	wg.Wait()
	st.Searches = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		st.SearchP50 = lat[len(lat)/2]
		st.SearchP99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	if err == nil {
		err = searchErr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return st, err
}
