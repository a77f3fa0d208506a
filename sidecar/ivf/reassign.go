package ivf

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Cursor is a keyset position: the last (shard, id) done. The zero Cursor
// starts at the beginning (ids are positive bigserials).
type Cursor struct {
	Shard int
	ID    int64
}

// Progress is reported after each committed batch.
type Progress struct {
	Cursor  Cursor
	Seen    int64 // rows read so far
	Changed int64 // rows whose list changed
	Total   int64 // rows in the collection when the pass started
}

// Fraction is how far the pass is, 0..1.
func (p Progress) Fraction() float64 {
	if p.Total <= 0 {
		return 1
	}
	return min(1, float64(p.Seen)/float64(p.Total))
}

// ProgressFunc is called after each batch's commit; an error stops the pass
// there (the committed batches stay) and is returned wrapped.
type ProgressFunc func(Progress) error

// Reassign sets every row's ivf_list to its nearest centroid of version,
// in batches of batchSize rows, each its own transaction, keyset by
// (shard, id), so that it never holds many row locks and a stop loses at
// most one batch.
func Reassign(ctx context.Context, conn *pgx.Conn, collection string, version, batchSize int, progress ProgressFunc) (Progress, error) {
	return ReassignFrom(ctx, conn, collection, version, batchSize, Cursor{}, progress)
}

// ReassignFrom is Reassign resumed after from (a Progress.Cursor).
func ReassignFrom(ctx context.Context, conn *pgx.Conn, collection string, version, batchSize int, from Cursor, progress ProgressFunc) (Progress, error) {
	if batchSize <= 0 {
		batchSize = 1000
	}
	c, err := LoadCollection(ctx, conn, collection)
	if err != nil {
		return Progress{}, err
	}
	cents, err := LoadCentroids(ctx, conn, c.ID, version)
	if err != nil {
		return Progress{}, err
	}
	p := Progress{Cursor: from}
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s`, c.Table)).Scan(&p.Total); err != nil {
		return p, fmt.Errorf("ivf: count %s: %w", c.Table, err)
	}
	sel := fmt.Sprintf(`SELECT id, embedding FROM %s WHERE shard = $1 AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE`, c.Table)
	upd := fmt.Sprintf(`UPDATE %s t SET ivf_list = u.l FROM unnest($2::bigint[], $3::int[]) u(id, l)
WHERE t.shard = $1 AND t.id = u.id AND t.ivf_list IS DISTINCT FROM u.l`, c.Table)
	for shard := from.Shard; shard < c.Partitions; shard++ {
		last := int64(0)
		if shard == from.Shard {
			last = from.ID
		}
		for {
			var n int
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, sel, shard, last, batchSize)
				if err != nil {
					return err
				}
				var ids []int64
				var lists []int32
				for rows.Next() {
					var id int64
					var v []float32
					if err := rows.Scan(&id, &v); err != nil {
						rows.Close()
						return err
					}
					if len(v) != len(cents[0]) {
						rows.Close()
						return fmt.Errorf("row %d has dimension %d, centroids %d", id, len(v), len(cents[0]))
					}
					j, _ := Nearest(cents, v)
					ids = append(ids, id)
					lists = append(lists, int32(j))
				}
				if err := rows.Err(); err != nil {
					return err
				}
				n = len(ids)
				if n == 0 {
					return nil
				}
				tag, err := tx.Exec(ctx, upd, shard, ids, lists)
				if err != nil {
					return err
				}
				p.Changed += tag.RowsAffected()
				last = ids[n-1]
				return nil
			})
			if err != nil {
				return p, fmt.Errorf("ivf: reassign %q shard %d after id %d: %w", collection, shard, last, err)
			}
			if n == 0 {
				break
			}
			p.Seen += int64(n)
			p.Cursor = Cursor{Shard: shard, ID: last}
			if progress != nil {
				if err := progress(p); err != nil {
					return p, fmt.Errorf("ivf: reassign %q stopped at %+v: %w", collection, p.Cursor, err)
				}
			}
			if n < batchSize {
				break
			}
		}
	}
	p.Cursor = Cursor{Shard: c.Partitions, ID: 0}
	return p, nil
}

// Rebuild is Train then Reassign: the whole centroid rebuild.
func Rebuild(ctx context.Context, conn *pgx.Conn, collection string, opts TrainOptions, batchSize int, progress ProgressFunc) (int, error) {
	v, err := Train(ctx, conn, collection, opts)
	if err != nil {
		return v, err
	}
	_, err = Reassign(ctx, conn, collection, v, batchSize, progress)
	return v, err
}

// PreviousVersion is the version that was active before the current one:
// the retired version activated last.
func PreviousVersion(ctx context.Context, conn *pgx.Conn, collectionID int) (int, error) {
	var v int
	err := conn.QueryRow(ctx, `SELECT version FROM ruvector.centroid_versions
WHERE collection_id = $1 AND state = 'retired' AND activated_at IS NOT NULL
ORDER BY activated_at DESC, version DESC LIMIT 1`, collectionID).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: collection %d has no previously active version", ErrNoVersion, collectionID)
	}
	if err != nil {
		return 0, fmt.Errorf("ivf: previous version: %w", err)
	}
	return v, nil
}

// Rollback re-activates the previously active version (PreviousVersion)
// and reassigns every row back to it. It returns the version now active.
// It is not a stack: a second Rollback flips back to the version the first
// one left. A caller that knows which version it replaced (a healing
// strategy records the active version before its rebuild) should use
// RollbackTo.
func Rollback(ctx context.Context, conn *pgx.Conn, collection string, batchSize int, progress ProgressFunc) (int, error) {
	c, err := LoadCollection(ctx, conn, collection)
	if err != nil {
		return 0, err
	}
	prev, err := PreviousVersion(ctx, conn, c.ID)
	if err != nil {
		return 0, err
	}
	return prev, RollbackTo(ctx, conn, collection, prev, batchSize, progress)
}

// RollbackTo activates version and reassigns every row to it.
func RollbackTo(ctx context.Context, conn *pgx.Conn, collection string, version, batchSize int, progress ProgressFunc) error {
	if err := Activate(ctx, conn, collection, version); err != nil {
		return err
	}
	_, err := Reassign(ctx, conn, collection, version, batchSize, progress)
	return err
}

// SkewReport is the distribution of rows over the active version's lists.
type SkewReport struct {
	Version int
	// Sizes[l] is the number of rows in list l (0 for an empty list).
	Sizes      []int64
	Unassigned int64 // rows with a NULL (or out-of-range) ivf_list
	Median     float64
	Max        int64
	// Factor is max / median (the median floored at 1): the same ratio the
	// health graph's centroid capacities use (size / median), taken at the
	// largest list. This is the skew factor the centroid_skew class reports.
	Factor float64
	// CV is the coefficient of variation (stddev / mean) of the sizes, for
	// operators who prefer a whole-distribution measure.
	CV float64
}

// Skew counts the rows of each list (a full scan: an on-demand check, not
// the monitor's cadence) and computes the skew factor.
func Skew(ctx context.Context, conn *pgx.Conn, collection string) (SkewReport, error) {
	c, err := LoadCollection(ctx, conn, collection)
	if err != nil {
		return SkewReport{}, err
	}
	var r SkewReport
	var lists int
	err = conn.QueryRow(ctx, `SELECT version, lists FROM ruvector.centroid_versions
WHERE collection_id = $1 AND state = 'active'`, c.ID).Scan(&r.Version, &lists)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("%w: %q has no active centroid version", ErrNoVersion, collection)
	}
	if err != nil {
		return r, fmt.Errorf("ivf: skew: %w", err)
	}
	r.Sizes = make([]int64, lists)
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT ivf_list, count(*) FROM %s GROUP BY 1`, c.Table))
	if err != nil {
		return r, fmt.Errorf("ivf: skew: %w", err)
	}
	for rows.Next() {
		var l *int64
		var n int64
		if err := rows.Scan(&l, &n); err != nil {
			rows.Close()
			return r, fmt.Errorf("ivf: skew: %w", err)
		}
		if l == nil || *l < 0 || *l >= int64(lists) {
			r.Unassigned += n
			continue
		}
		r.Sizes[*l] = n
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("ivf: skew: %w", err)
	}
	r.Median, r.Max, r.Factor, r.CV = SkewStats(r.Sizes)
	return r, nil
}

// SkewStats computes median, max, max/median (median floored at 1) and the
// coefficient of variation of list sizes.
func SkewStats(sizes []int64) (median float64, maxSize int64, factor, cv float64) {
	if len(sizes) == 0 {
		return 0, 0, 0, 0
	}
	s := slices.Clone(sizes)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		median = float64(s[n/2])
	} else {
		median = float64(s[n/2-1]+s[n/2]) / 2
	}
	maxSize = s[n-1]
	factor = float64(maxSize) / max(median, 1)
	var sum, sq float64
	for _, x := range s {
		sum += float64(x)
	}
	mean := sum / float64(n)
	for _, x := range s {
		d := float64(x) - mean
		sq += d * d
	}
	if mean > 0 {
		cv = math.Sqrt(sq/float64(n)) / mean
	}
	return median, maxSize, factor, cv
}
