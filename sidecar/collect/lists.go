package collect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Lists measures the sizes of a vector collection's IVF lists (the active
// centroid version's lists 0..n-1, empty ones included) for
// health.Signals.Centroids; the change feed adds their insert/delete rates.
//
// With a segment (NewListsFromSegment) the sizes are the extension's exact
// per-list counters, read without SQL; the collector counts the table only
// when they are not valid (the first sample after a server start, after
// TRUNCATE or a partition change), through ruvector._list_counts_rebaseline,
// which blocks writers for the length of that one count. Without a segment,
// or when the collection has more lists than the segment counts
// (ruvector.max_lists), every sample is an exact count grouped by ivf_list,
// which the ivf_list index serves as an index-only scan once the visibility
// map is set; that is why the cadence is then slow (default 30 s, 5 s with
// a segment). A collection that is not a vector collection, or has no
// active version yet, has no lists (Centroids nil, no error).
type Lists struct {
	// Interval is the cadence (default 30 s without a segment, 5 s with).
	Interval time.Duration
	// LockWait bounds how long a rebaseline waits for its table lock, during
	// which new writers queue behind it (default 1 s). A rebaseline that
	// times out is retried at the next sample; that sample is a scan.
	LockWait time.Duration

	seg *shmproto.Segment
}

// NewLists returns the IVF list collector that counts by a scan.
func NewLists() *Lists { return &Lists{} }

// NewListsFromSegment returns the IVF list collector that reads the
// segment's list counters.
func NewListsFromSegment(seg *shmproto.Segment) *Lists { return &Lists{seg: seg} }

func (l *Lists) Name() string { return health.KindCentroids }

func (l *Lists) Cadence() time.Duration {
	if l.seg != nil {
		return orDefault(l.Interval, 5*time.Second)
	}
	return orDefault(l.Interval, 30*time.Second)
}

// Collect reads or counts the rows of each list.
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
	var sizes []int64
	if l.seg != nil {
		sizes, err = l.fromSegment(ctx, q, t, lists)
		if err != nil {
			return err
		}
	}
	if sizes == nil {
		if sizes, err = countLists(ctx, q, t, lists); err != nil {
			return err
		}
	}
	out := make([]health.CentroidSignal, lists)
	for i, n := range sizes {
		out[i] = health.CentroidSignal{ID: int64(i), ListSize: n}
	}
	s.Centroids = out
	return nil
}

// fromSegment reads the list counters, rebaselining them first when they
// are not valid. It returns nil sizes (and no error) when the segment
// cannot give them this sample: more lists than it counts, or a rebaseline
// that gave up waiting for its lock.
func (l *Lists) fromSegment(ctx context.Context, q Querier, t Target, lists int) ([]int64, error) {
	col, err := l.seg.Find(t.Name, t.DatabaseOID)
	if err != nil {
		return nil, fmt.Errorf("lists: %w", err)
	}
	for attempt := 0; attempt < 2; attempt++ {
		lc, err := l.seg.ReadListCounts(col.Slot, lists)
		if errors.Is(err, shmproto.ErrListsUncounted) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("lists: counters of %s: %w", t.Name, err)
		}
		if lc.Valid {
			return lc.Counts, nil
		}
		if attempt > 0 {
			break // made stale again at once (a TRUNCATE): count this time
		}
		wait := orDefault(l.LockWait, time.Second)
		_, err = q.Exec(ctx, `SELECT ruvector._list_counts_rebaseline($1, $2::interval)`,
			t.Name, fmt.Sprintf("%d ms", wait.Milliseconds()))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, nil // writers held the table: try again next sample
		}
		if err != nil {
			return nil, fmt.Errorf("lists: rebaseline %s: %w", t.Name, err)
		}
	}
	return nil, nil
}

// countLists counts the rows of lists 0..lists-1 by a scan.
func countLists(ctx context.Context, q Querier, t Target, lists int) ([]int64, error) {
	var table string
	if err := q.QueryRow(ctx, `SELECT $1::oid::regclass::text`, t.RelID).Scan(&table); err != nil {
		return nil, fmt.Errorf("lists: table of %s: %w", t.Name, err)
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT ivf_list, count(*) FROM %s WHERE ivf_list IS NOT NULL GROUP BY 1`, table))
	if err != nil {
		return nil, fmt.Errorf("lists: count %s by ivf_list: %w", table, err)
	}
	defer rows.Close()
	sizes := make([]int64, lists)
	for rows.Next() {
		var list, n int64
		if err := rows.Scan(&list, &n); err != nil {
			return nil, fmt.Errorf("lists: scan: %w", err)
		}
		// A list outside the active version's range belongs to rows not
		// yet reassigned after a rebuild to fewer lists: not a list now.
		if list >= 0 && list < int64(lists) {
			sizes[list] = n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lists: read rows: %w", err)
	}
	return sizes, nil
}
