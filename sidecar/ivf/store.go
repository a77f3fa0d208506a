package ivf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// ErrUnknownCollection: the name is not a vector collection.
var ErrUnknownCollection = errors.New("ivf: unknown vector collection")

// ErrNoVersion: the collection has no such (or no previous) centroid version.
var ErrNoVersion = errors.New("ivf: no such centroid version")

// Collection is what the IVF code needs to know about a vector collection.
type Collection struct {
	ID         int
	Name       string
	Table      string // the table, quoted and schema-qualified as regclass prints it
	Dim        int
	Partitions int
	Lists      int
}

// LoadCollection reads a vector collection from the catalog.
func LoadCollection(ctx context.Context, conn *pgx.Conn, name string) (Collection, error) {
	c := Collection{Name: name}
	err := conn.QueryRow(ctx, `
SELECT c.collection_id, c.relid::regclass::text, v.dim, v.partitions, v.lists
FROM ruvector.collections c JOIN ruvector.vector_collections v USING (collection_id)
WHERE c.name = $1`, name).Scan(&c.ID, &c.Table, &c.Dim, &c.Partitions, &c.Lists)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("%w: %q", ErrUnknownCollection, name)
	}
	if err != nil {
		return c, fmt.Errorf("ivf: load collection %q: %w", name, err)
	}
	return c, nil
}

// TrainOptions tune Train.
type TrainOptions struct {
	// Lists is the number of centroids (default: the collection's lists).
	Lists int
	// SampleRows caps the vectors k-means is trained on (default 20000).
	// A larger collection is sampled with TABLESAMPLE BERNOULLI (repeatable
	// with Seed) and a seeded reservoir on top of it.
	SampleRows int
	// MaxIter bounds Lloyd iterations (default 25).
	MaxIter int
	// Seed makes sampling and seeding deterministic.
	Seed uint64
	// OutcomeID is recorded on the version when a healing outcome made it.
	OutcomeID *int64
	// MaxListRatio, when > 0, trains with BalancedKMeans: lists are split
	// and merged until the largest holds at most this many times the
	// median list's vectors (DefaultMaxListRatio is the usual choice; ≥ 1).
	// 0: plain k-means.
	MaxListRatio float64
}

// ReadSample streams the collection's embeddings with COPY and keeps a
// seeded reservoir of at most n of them.
func ReadSample(ctx context.Context, conn *pgx.Conn, c Collection, n int, seed uint64) ([][]float32, error) {
	var est float64
	if err := conn.QueryRow(ctx, `
SELECT coalesce(sum(greatest(pc.reltuples, 0)), 0)
FROM pg_partition_tree($1::regclass) p JOIN pg_class pc ON pc.oid = p.relid
WHERE p.isleaf`, c.Table).Scan(&est); err != nil {
		return nil, fmt.Errorf("ivf: estimate rows of %s: %w", c.Table, err)
	}
	from := c.Table
	if est > float64(2*n) {
		// Twice the sample, so the reservoir still has a choice when the
		// statistics are stale.
		pct := min(100, 200*float64(n)/est)
		from += fmt.Sprintf(" TABLESAMPLE BERNOULLI (%g) REPEATABLE (%d)", pct, int64(seed&0x7fffffff))
	}
	rng := rand.New(rand.NewPCG(seed, 0x5851f42d4c957f2d))
	w := &lineWriter{}
	out := make([][]float32, 0, min(n, 1<<16))
	seen := 0
	w.line = func(line []byte) error {
		v, err := ParseRealArray(line)
		if err != nil {
			return err
		}
		if len(v) != c.Dim {
			return fmt.Errorf("ivf: %s holds a vector of dimension %d, want %d", c.Table, len(v), c.Dim)
		}
		seen++
		if len(out) < n {
			out = append(out, v)
		} else if j := rng.IntN(seen); j < n {
			out[j] = v
		}
		return nil
	}
	sql := fmt.Sprintf("COPY (SELECT embedding FROM %s WHERE embedding IS NOT NULL) TO STDOUT", from)
	if _, err := conn.PgConn().CopyTo(ctx, w, sql); err != nil {
		return nil, fmt.Errorf("ivf: copy vectors of %s: %w", c.Table, err)
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// lineWriter hands COPY's text output to line one line at a time. The
// error of line is returned from Write, which aborts the COPY.
type lineWriter struct {
	buf  []byte
	line func([]byte) error
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if err := w.line(w.buf[:i]); err != nil {
			return 0, err
		}
		w.buf = w.buf[i+1:]
	}
	// Keep the partial line in a fresh buffer so the one above can be reused.
	w.buf = append([]byte(nil), w.buf...)
	return len(p), nil
}

func (w *lineWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.line(w.buf)
	w.buf = nil
	return err
}

// ParseRealArray parses the text form of a one-dimensional real[]
// ("{1,2.5,-3e-05}").
func ParseRealArray(b []byte) ([]float32, error) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("ivf: %.40q is not a real[] literal", b)
	}
	body := b[1 : len(b)-1]
	if len(body) == 0 {
		return []float32{}, nil
	}
	out := make([]float32, 0, bytes.Count(body, []byte{','})+1)
	for len(body) > 0 {
		i := bytes.IndexByte(body, ',')
		tok := body
		if i >= 0 {
			tok, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		f, err := strconv.ParseFloat(string(tok), 32)
		if err != nil {
			return nil, fmt.Errorf("ivf: element %q of a real[]: %w", tok, err)
		}
		out = append(out, float32(f))
	}
	return out, nil
}

// Train trains a new centroid version on (a sample of) the collection,
// stores it in state 'training', then activates it: new rows get lists of
// the new version from then on; existing rows keep their lists until
// Reassign. It returns the new version.
func Train(ctx context.Context, conn *pgx.Conn, collection string, opts TrainOptions) (int, error) {
	c, err := LoadCollection(ctx, conn, collection)
	if err != nil {
		return 0, err
	}
	lists := opts.Lists
	if lists == 0 {
		lists = c.Lists
	}
	if lists < 1 || lists > 4096 {
		return 0, fmt.Errorf("ivf: lists = %d, want 1..4096", lists)
	}
	sampleRows := opts.SampleRows
	if sampleRows <= 0 {
		sampleRows = 20000
	}
	sampleRows = max(sampleRows, lists)
	sample, err := ReadSample(ctx, conn, c, sampleRows, opts.Seed)
	if err != nil {
		return 0, err
	}
	var res KMeansResult
	if opts.MaxListRatio != 0 {
		res, _, err = BalancedKMeans(sample, lists, opts.MaxIter, opts.Seed, BalanceOptions{MaxRatio: opts.MaxListRatio})
	} else {
		res, err = KMeans(sample, lists, opts.MaxIter, opts.Seed)
	}
	if err != nil {
		return 0, fmt.Errorf("ivf: train %q: %w", collection, err)
	}
	version, err := store(ctx, conn, c, res, len(sample), opts.OutcomeID)
	if err != nil {
		return 0, err
	}
	if err := Activate(ctx, conn, collection, version); err != nil {
		return version, err
	}
	return version, nil
}

func store(ctx context.Context, conn *pgx.Conn, c Collection, res KMeansResult, sampleRows int, outcome *int64) (int, error) {
	var version int
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Serialise version numbering among concurrent trainers.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM ruvector.vector_collections WHERE collection_id = $1 FOR UPDATE`, c.ID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists, sample_rows, inertia, outcome_id)
SELECT $1, coalesce(max(version), 0) + 1, 'training', $2, $3, $4, $5
FROM ruvector.centroid_versions WHERE collection_id = $1
RETURNING version`, c.ID, len(res.Centroids), sampleRows, res.Inertia, outcome).Scan(&version); err != nil {
			return err
		}
		rows := make([][]any, len(res.Centroids))
		for j, cen := range res.Centroids {
			rows[j] = []any{c.ID, version, j, cen}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"ruvector", "centroids"},
			[]string{"collection_id", "version", "list_id", "centroid"}, pgx.CopyFromRows(rows))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ivf: store centroids of %q: %w", c.Name, err)
	}
	return version, nil
}

// Activate makes version the collection's active one (the previous active
// version is retired by the extension) and publishes it to the backends.
func Activate(ctx context.Context, conn *pgx.Conn, collection string, version int) error {
	if _, err := conn.Exec(ctx, `SELECT ruvector._centroids_activate($1, $2)`, collection, version); err != nil {
		return fmt.Errorf("ivf: activate version %d of %q: %w", version, collection, err)
	}
	return nil
}

// LoadCentroids reads a version's centroids, indexed by list id.
func LoadCentroids(ctx context.Context, conn *pgx.Conn, collectionID, version int) ([][]float32, error) {
	rows, err := conn.Query(ctx, `SELECT list_id, centroid FROM ruvector.centroids
WHERE collection_id = $1 AND version = $2 ORDER BY list_id`, collectionID, version)
	if err != nil {
		return nil, fmt.Errorf("ivf: load centroids: %w", err)
	}
	var out [][]float32
	for rows.Next() {
		var id int
		var v []float32
		if err := rows.Scan(&id, &v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ivf: load centroids: %w", err)
		}
		if id != len(out) {
			rows.Close()
			return nil, fmt.Errorf("ivf: version %d has list %d after %d lists: lists must be 0..n-1", version, id, len(out))
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ivf: load centroids: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: version %d of collection %d", ErrNoVersion, version, collectionID)
	}
	return out, nil
}

// ActiveVersion is the collection's active version (0 when none).
func ActiveVersion(ctx context.Context, conn *pgx.Conn, collectionID int) (int, error) {
	var v int
	err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM ruvector.centroid_versions
WHERE collection_id = $1 AND state = 'active'`, collectionID).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("ivf: active version: %w", err)
	}
	return v, nil
}
