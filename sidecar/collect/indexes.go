package collect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Indexes measures the B-tree indexes of a collection's relations with
// pgstatindex() from the pgstattuple contrib extension: leaf fragmentation
// and average leaf density.
//
// The sidecar needs pgstattuple: the collector runs CREATE EXTENSION IF NOT
// EXISTS pgstattuple, which needs a superuser (it is not a trusted
// extension) the first time; pgstatindex itself needs pg_stat_scan_tables
// or superuser. When the extension cannot be created the collector fails
// (its kind is marked Unknown) rather than report anything else.
//
// pgstatindex reads every page of each index, so the cadence is slow
// (default 5 minutes) and the timeout long (default 2 minutes).
type Indexes struct {
	// Interval is the cadence (default 5 min).
	Interval time.Duration
	// MaxDuration is the timeout of one sample (default 2 min).
	MaxDuration time.Duration
	// MinLeafPages: smaller indexes are left out (default 32 pages, 256 kB).
	// On a dozen leaf pages one page split already puts pages out of order:
	// the product's own ivf_list indexes read 40-48% leaf_fragmentation
	// under plain inserts, which fired index_fragmentation with no fault
	// and made compact_indexes run again and again (bench/RESULTS.md,
	// scorecard run 1, finding 1). A REINDEX of such an index buys nothing.
	MinLeafPages int64
	// LockWait bounds how long the read of one index waits for its lock
	// (default DefaultIndexLockWait); a locked index is skipped this
	// sample. It is set as a transaction-local lock_timeout: called inside
	// the caller's own transaction, that lock_timeout stays in force until
	// the transaction ends.
	LockWait time.Duration

	mu     sync.Mutex
	schema string // where pgstattuple lives, once found
}

// DefaultMinLeafPages is Indexes.MinLeafPages by default. compact_indexes
// leaves out the same indexes: rebuilding one the sensor does not measure
// cannot change λ.
const DefaultMinLeafPages = 32

// NewIndexes returns the indexes collector.
func NewIndexes() *Indexes { return &Indexes{} }

func (x *Indexes) Name() string { return "indexes" }

func (x *Indexes) Cadence() time.Duration { return orDefault(x.Interval, 5*time.Minute) }

// Timeout implements TimeoutHinter.
func (x *Indexes) Timeout() time.Duration { return orDefault(x.MaxDuration, 2*time.Minute) }

func (x *Indexes) ensureExtension(ctx context.Context, q Querier) (string, error) {
	x.mu.Lock()
	schema := x.schema
	x.mu.Unlock()
	if schema != "" {
		return schema, nil
	}
	const find = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'`
	err := q.QueryRow(ctx, find).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := q.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pgstattuple`); err != nil {
			return "", fmt.Errorf("indexes: pgstattuple is missing and cannot be created (a superuser must run CREATE EXTENSION pgstattuple): %w", err)
		}
		err = q.QueryRow(ctx, find).Scan(&schema)
	}
	if err != nil {
		return "", fmt.Errorf("indexes: find pgstattuple: %w", err)
	}
	// Remembered only on success, so a failure is retried next sample.
	x.mu.Lock()
	x.schema = schema
	x.mu.Unlock()
	return schema, nil
}

// Collect runs pgstatindex on each valid B-tree index (partitioned parents
// have no storage and are skipped). An index with no leaf pages (empty)
// yields NaN from pgstatindex: there is nothing to measure and it is left
// out rather than reported with made-up values; so is an index below
// MinLeafPages, whose page order says nothing.
//
// Each index is read by its own statement that waits at most LockWait for
// the index's lock. An index someone holds exclusively (REINDEX, DROP
// INDEX, the drop of the old copy at the end of REINDEX CONCURRENTLY) keeps
// its previous measurement, or is left out if it has none; one that
// vanished between the listing and its read (a REINDEX CONCURRENTLY swap)
// is left out. Waiting instead stalled every collector of every collection
// behind one lock for up to the 2-minute timeout: the Runner calls them one
// at a time on one connection.
func (x *Indexes) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	schema, err := x.ensureExtension(ctx, q)
	if err != nil {
		return err
	}
	list, err := listIndexes(ctx, q, t)
	if err != nil {
		return err
	}
	prev := map[int64]health.IndexSignal{}
	for _, is := range s.Indexes {
		prev[is.RelID] = is
	}
	sql := fmt.Sprintf(`
SELECT st.leaf_fragmentation, st.avg_leaf_density, st.leaf_pages
FROM (SELECT set_config('lock_timeout', $2, true) AS lt) g
CROSS JOIN LATERAL %s.pgstatindex(CASE WHEN g.lt IS NOT NULL THEN $1::oid::regclass END) st`,
		pgx.Identifier{schema}.Sanitize())
	wait := fmt.Sprintf("%dms", max(x.lockWait().Milliseconds(), 1))
	minLeaf := x.MinLeafPages
	if minLeaf <= 0 {
		minLeaf = DefaultMinLeafPages
	}
	var out []health.IndexSignal
	for _, is := range list {
		var leafPages int64
		err := q.QueryRow(ctx, sql, is.RelID, wait).Scan(&is.FragmentationPct, &is.AvgLeafDensity, &leafPages)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "55P03": // lock_not_available
			if p, ok := prev[is.RelID]; ok {
				out = append(out, p)
			}
			continue
		case errors.As(err, &pgErr) && isVanished(pgErr):
			continue
		case err != nil:
			return fmt.Errorf("indexes: pgstatindex(%s): %w", is.Name, err)
		}
		if math.IsNaN(is.FragmentationPct) || math.IsNaN(is.AvgLeafDensity) || leafPages < minLeaf {
			continue
		}
		is.SampledAt = time.Now()
		out = append(out, is)
	}
	s.Indexes = out
	return nil
}

// DefaultIndexLockWait is Indexes.LockWait by default.
const DefaultIndexLockWait = 200 * time.Millisecond

func (x *Indexes) lockWait() time.Duration { return orDefault(x.LockWait, DefaultIndexLockWait) }

// listIndexes lists the valid B-tree indexes of the target's relations
// from the catalog alone (no lock on any index).
func listIndexes(ctx context.Context, q Querier, t Target) ([]health.IndexSignal, error) {
	rows, err := q.Query(ctx, `
SELECT c.oid::bigint, c.oid::regclass::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = ANY($1::oid[]) AND c.relkind = 'i' AND am.amname = 'btree' AND i.indisvalid
ORDER BY c.oid`, t.Relations)
	if err != nil {
		return nil, fmt.Errorf("indexes: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (health.IndexSignal, error) {
		var is health.IndexSignal
		err := r.Scan(&is.RelID, &is.Name)
		return is, err
	})
	if err != nil {
		return nil, fmt.Errorf("indexes: list: %w", err)
	}
	return out, nil
}

// isVanished: the index was dropped after it was listed (pgstatindex then
// cannot open it: "could not open relation with OID", an internal error
// XX000; 42P01 if the regclass cast itself fails).
func isVanished(e *pgconn.PgError) bool {
	return e.Code == "42P01" ||
		(e.Code == "XX000" && strings.HasPrefix(e.Message, "could not open relation with OID"))
}
