package ivf

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoQueries: the collection has no rows to draw query vectors from.
var ErrNoQueries = errors.New("ivf: no vectors to draw recall queries from")

// RecallOptions tune Recall. Zero values take the defaults.
type RecallOptions struct {
	// Queries is the number of query vectors (default 100).
	Queries int
	// K is the number of neighbours compared (default 10).
	K int
	// Probes is ruvector_ivf_search's probes (default 8, the SQL default).
	Probes int
	// Seed makes the query sample and its noise deterministic.
	Seed uint64
	// Noise is the standard deviation of the Gaussian noise added to each
	// sampled row, as a fraction of the sample's mean per-dimension
	// standard deviation (default 0.01; negative: none). Without noise a
	// query's nearest neighbour is itself, which flatters recall.
	Noise float64
}

func (o RecallOptions) withDefaults() RecallOptions {
	if o.Queries == 0 {
		o.Queries = 100
	}
	if o.K == 0 {
		o.K = 10
	}
	if o.Probes == 0 {
		o.Probes = 8
	}
	if o.Noise == 0 {
		o.Noise = 0.01
	}
	return o
}

// RecallReport is search quality and latency on one query sample.
type RecallReport struct {
	// RecallAtK is the mean over queries of |ivf ∩ exact| / |exact|.
	RecallAtK float64
	// MinRecall is the worst query's recall.
	MinRecall float64
	Queries   int
	K, Probes int
	// Version is the active centroid version searched (0: none, in which
	// case ruvector_ivf_search is itself an exact scan).
	Version int
	// Scanned is the mean number of rows a search examined (the rows of
	// its probed lists plus unassigned rows): the cost that skew raises.
	// At equal probes a skewed index can have the higher recall because
	// its big lists hold more candidates; compare recall with Scanned.
	Scanned float64
	// P50, P99: latency of ruvector_ivf_search (client round trip).
	P50, P99 time.Duration
	// ExactP50, ExactP99: latency of the exact scan.
	ExactP50, ExactP99 time.Duration
}

// Recall measures recall@k of ruvector_ivf_search(collection, q, k,
// probes) against an exact scan (ORDER BY ruvector._l2(embedding, q), id)
// on opts.Queries query vectors drawn from the collection's own rows (by a
// seeded hash of their ids: the same rows before and after a
// reassignment) plus small noise. Each query's searches run in one REPEATABLE READ READ ONLY
// transaction, so concurrent writes cannot make them disagree, and no
// snapshot is held across queries (vacuum is not held back for the whole
// measurement); conn must not be inside a transaction. The exact scans
// read every row: on a large collection this costs Queries sequential
// scans (plus one to pick the queries), so keep Queries small there.
//
// Comparing two centroid versions at the same probes is not comparing
// like with like: a skewed version's big lists hold more candidates, so
// it often has the higher recall at the higher cost (Scanned). Use
// RecallCurve and MatchedCost to compare at equal cost.
func Recall(ctx context.Context, conn *pgx.Conn, collection string, opts RecallOptions) (RecallReport, error) {
	o := opts.withDefaults()
	rs, err := RecallCurve(ctx, conn, collection, o, []int{o.Probes})
	if err != nil {
		return RecallReport{K: o.K, Probes: o.Probes}, err
	}
	return rs[0], nil
}

// RecallCurve is Recall at each probes value (opts.Probes is ignored) on
// the same query vectors and the same exact answers: one exact scan per
// query however many probes values, so a curve costs little more than one
// point. The reports are in the order of probes.
func RecallCurve(ctx context.Context, conn *pgx.Conn, collection string, opts RecallOptions, probes []int) ([]RecallReport, error) {
	o := opts.withDefaults()
	if len(probes) == 0 {
		return nil, fmt.Errorf("ivf: recall curve: no probes values")
	}
	for _, p := range probes {
		if p < 1 {
			return nil, fmt.Errorf("ivf: recall probes = %d, want at least 1", p)
		}
	}
	if o.Queries < 1 || o.Queries > 100000 {
		return nil, fmt.Errorf("ivf: recall queries = %d, want 1..100000", o.Queries)
	}
	if o.K < 1 || o.K > 10000 {
		return nil, fmt.Errorf("ivf: recall k = %d, want 1..10000", o.K)
	}
	if math.IsNaN(o.Noise) || math.IsInf(o.Noise, 0) {
		return nil, fmt.Errorf("ivf: recall noise = %v, want a finite fraction", o.Noise)
	}
	c, err := LoadCollection(ctx, conn, collection)
	if err != nil {
		return nil, err
	}
	version, err := ActiveVersion(ctx, conn, c.ID)
	if err != nil {
		return nil, err
	}
	queries, err := queryRows(ctx, conn, c, o.Queries, o.Seed)
	if err != nil {
		return nil, err
	}
	if len(queries) == 0 {
		return nil, fmt.Errorf("%w: %q is empty", ErrNoQueries, collection)
	}
	addNoise(queries, o.Noise, o.Seed)

	exactSQL := fmt.Sprintf(`SELECT id FROM %s ORDER BY ruvector._l2(embedding, $1), id LIMIT $2`, c.Table)
	// The same probe choice as ruvector_ivf_search.
	scannedSQL := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE t.ivf_list = ANY (ARRAY(
    SELECT c.list_id FROM ruvector.centroids c WHERE c.collection_id = $1 AND c.version = $2
    ORDER BY ruvector._l2(c.centroid, $3), c.list_id LIMIT $4)) OR t.ivf_list IS NULL`, c.Table)
	if version == 0 {
		scannedSQL = fmt.Sprintf(`SELECT count(*) FROM %s`, c.Table)
	}
	type acc struct {
		sum, minRec float64
		scanned     int64
		lat         []time.Duration
	}
	accs := make([]acc, len(probes))
	for i := range accs {
		accs[i].minRec = 1
	}
	var exactLat []time.Duration
	for i, q := range queries {
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			t0 := time.Now()
			want, err := ids(ctx, tx, exactSQL, q, o.K)
			if err != nil {
				return fmt.Errorf("exact scan: %w", err)
			}
			exactLat = append(exactLat, time.Since(t0))
			for j, p := range probes {
				t0 := time.Now()
				got, err := ids(ctx, tx, `SELECT id FROM ruvector.ruvector_ivf_search($1, $2, $3, $4)`, collection, q, o.K, p)
				if err != nil {
					return fmt.Errorf("ruvector_ivf_search probes %d: %w", p, err)
				}
				a := &accs[j]
				a.lat = append(a.lat, time.Since(t0))
				rec := overlap(got, want)
				a.sum += rec
				a.minRec = min(a.minRec, rec)
				var n int64
				args := []any{c.ID, version, q, p}
				if version == 0 {
					args = nil
				}
				if err := tx.QueryRow(ctx, scannedSQL, args...).Scan(&n); err != nil {
					return fmt.Errorf("count probed rows: %w", err)
				}
				a.scanned += n
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ivf: recall of %q, query %d: %w", collection, i, err)
		}
	}
	out := make([]RecallReport, len(probes))
	n := float64(len(queries))
	for j, a := range accs {
		out[j] = RecallReport{
			RecallAtK: a.sum / n, MinRecall: a.minRec, Queries: len(queries), K: o.K, Probes: probes[j],
			Version: version, Scanned: float64(a.scanned) / n,
			P50: Percentile(a.lat, 0.50), P99: Percentile(a.lat, 0.99),
			ExactP50: Percentile(exactLat, 0.50), ExactP99: Percentile(exactLat, 0.99),
		}
	}
	return out, nil
}

// MatchedCost picks from curve (a RecallCurve, probes ascending) the
// first report that scans at least scanned rows per search (ok), or the
// last when none does (not ok: the curve stops short of that cost): the point of comparison, at equal cost, for a report of
// another version that scanned that many rows. A rebuild whose matched
// recall is not lower than the old version's recall did not hurt search
// quality, even when its recall at the old probes is lower.
func MatchedCost(curve []RecallReport, scanned float64) (RecallReport, bool) {
	if len(curve) == 0 {
		return RecallReport{}, false
	}
	for _, r := range curve {
		if r.Scanned >= scanned {
			return r, true
		}
	}
	return curve[len(curve)-1], false
}

// queryRows picks n rows by a seeded hash of their id, not by their
// physical position (as TABLESAMPLE and ReadSample's reservoir do): a
// reassignment rewrites every row, and the measurement before it and the
// one after must search for the same vectors. One scan of the table with
// a top-n sort.
func queryRows(ctx context.Context, conn *pgx.Conn, c Collection, n int, seed uint64) ([][]float32, error) {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT embedding FROM %s ORDER BY hashint8extended(id, $1), id LIMIT $2`, c.Table),
		int64(seed), n)
	if err != nil {
		return nil, fmt.Errorf("ivf: recall queries of %s: %w", c.Table, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]float32])
	if err != nil {
		return nil, fmt.Errorf("ivf: recall queries of %s: %w", c.Table, err)
	}
	for _, v := range out {
		if len(v) != c.Dim {
			return nil, fmt.Errorf("ivf: %s holds a vector of dimension %d, want %d", c.Table, len(v), c.Dim)
		}
	}
	return out, nil
}

func ids(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]int64, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// overlap is |got ∩ want| / |want| (1 when want is empty: nothing to miss).
func overlap(got, want []int64) float64 {
	if len(want) == 0 {
		return 1
	}
	in := make(map[int64]bool, len(want))
	for _, id := range want {
		in[id] = true
	}
	hit := 0
	for _, id := range got {
		if in[id] {
			hit++
			delete(in, id) // a duplicate id in got counts once
		}
	}
	return float64(hit) / float64(len(want))
}

// addNoise adds N(0, (frac·s)²) to every element, s being the mean over
// dimensions of the sample's standard deviation.
func addNoise(vs [][]float32, frac float64, seed uint64) {
	if frac <= 0 || len(vs) < 2 {
		return
	}
	dim := len(vs[0])
	var s float64
	for d := range dim {
		var sum, sq float64
		for _, v := range vs {
			sum += float64(v[d])
		}
		mean := sum / float64(len(vs))
		for _, v := range vs {
			x := float64(v[d]) - mean
			sq += x * x
		}
		s += math.Sqrt(sq / float64(len(vs)))
	}
	sigma := frac * s / float64(max(dim, 1))
	rng := rand.New(rand.NewPCG(seed, 0xda3e39cb94b95bdb))
	for _, v := range vs {
		for d := range v {
			v[d] += float32(rng.NormFloat64() * sigma)
		}
	}
}

// Percentile is the nearest-rank p-quantile (0 < p <= 1) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
