package collect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Lists measures the sizes of a vector collection's IVF lists (the active
// centroid version's lists 0..n-1, empty ones included) for
// health.Signals.Centroids; the change feed adds their insert/delete rates.
//
// The sizes are an exact count grouped by ivf_list, which the collection's
// ivf_list index serves as an index-only scan once the visibility map is
// set (a scan of the index, not of the heap). That is why the cadence is
// slow (default 30 s). A collection that is not a vector collection, or
// has no active version yet, has no lists (Centroids nil, no error).
type Lists struct {
	// Interval is the cadence (default 30 s).
	Interval time.Duration
}

// NewLists returns the IVF list collector.
func NewLists() *Lists { return &Lists{} }

func (l *Lists) Name() string { return health.KindCentroids }

func (l *Lists) Cadence() time.Duration { return orDefault(l.Interval, 30*time.Second) }

// Collect counts the rows of each list.
func (l *Lists) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	var lists int
	err := q.QueryRow(ctx, `SELECT v.lists FROM ruvector.centroid_versions v
JOIN ruvector.vector_collections c USING (collection_id)
WHERE v.collection_id = $1 AND v.state = 'active'`, t.ID).Scan(&lists)
	if errors.Is(err, pgx.ErrNoRows) {
		s.Centroids = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("lists: active centroid version of %s: %w", t.Name, err)
	}
	var table string
	if err := q.QueryRow(ctx, `SELECT $1::oid::regclass::text`, t.RelID).Scan(&table); err != nil {
		return fmt.Errorf("lists: table of %s: %w", t.Name, err)
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT ivf_list, count(*) FROM %s WHERE ivf_list IS NOT NULL GROUP BY 1`, table))
	if err != nil {
		return fmt.Errorf("lists: count %s by ivf_list: %w", table, err)
	}
	defer rows.Close()
	sizes := make([]int64, lists)
	for rows.Next() {
		var list, n int64
		if err := rows.Scan(&list, &n); err != nil {
			return fmt.Errorf("lists: scan: %w", err)
		}
		// A list outside the active version's range belongs to rows not
		// yet reassigned after a rebuild to fewer lists: not a list now.
		if list >= 0 && list < int64(lists) {
			sizes[list] = n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lists: read rows: %w", err)
	}
	out := make([]health.CentroidSignal, lists)
	for i, n := range sizes {
		out[i] = health.CentroidSignal{ID: int64(i), ListSize: n}
	}
	s.Centroids = out
	return nil
}
