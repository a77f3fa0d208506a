package collect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

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
func (x *Indexes) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	schema, err := x.ensureExtension(ctx, q)
	if err != nil {
		return err
	}
	sql := fmt.Sprintf(`
SELECT c.oid::bigint, c.oid::regclass::text, st.leaf_fragmentation, st.avg_leaf_density, st.leaf_pages
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
CROSS JOIN LATERAL %s.pgstatindex(c.oid::regclass) st
WHERE i.indrelid = ANY($1::oid[]) AND c.relkind = 'i' AND am.amname = 'btree' AND i.indisvalid
ORDER BY c.oid`, pgx.Identifier{schema}.Sanitize())
	rows, err := q.Query(ctx, sql, t.Relations)
	if err != nil {
		return fmt.Errorf("indexes: pgstatindex: %w", err)
	}
	defer rows.Close()
	now := time.Now()
	var out []health.IndexSignal
	minLeaf := x.MinLeafPages
	if minLeaf <= 0 {
		minLeaf = DefaultMinLeafPages
	}
	for rows.Next() {
		var is health.IndexSignal
		var leafPages int64
		if err := rows.Scan(&is.RelID, &is.Name, &is.FragmentationPct, &is.AvgLeafDensity, &leafPages); err != nil {
			return fmt.Errorf("indexes: scan: %w", err)
		}
		if math.IsNaN(is.FragmentationPct) || math.IsNaN(is.AvgLeafDensity) || leafPages < minLeaf {
			continue
		}
		is.SampledAt = now
		out = append(out, is)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("indexes: read rows: %w", err)
	}
	s.Indexes = out
	return nil
}
