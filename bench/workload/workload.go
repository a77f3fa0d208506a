// Package workload drives a vector collection the way an application
// would (routed single-row inserts, COPY batches, IVF searches) and creates
// each problem the healing layer handles on purpose: a hot partition, a
// drifting distribution, heavy maintenance, index bloat, a lagging replica
// and memory pressure. It keeps a ledger of every row it inserted so tests
// can prove that nothing was lost.
package workload

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrUnknownCollection: the name is not a vector collection.
var ErrUnknownCollection = errors.New("workload: unknown vector collection")

// Create makes a collection with ruvector_collection_create.
func Create(ctx context.Context, pool *pgxpool.Pool, name string, dim, partitions, lists int) error {
	if _, err := pool.Exec(ctx, `SELECT ruvector.ruvector_collection_create($1, $2, $3, $4)`, name, dim, partitions, lists); err != nil {
		return fmt.Errorf("workload: create collection %q: %w", name, err)
	}
	return nil
}

// Workload drives one collection. Safe for concurrent use.
type Workload struct {
	Pool       *pgxpool.Pool
	Name       string
	Table      string // schema-qualified, quoted as regclass prints it
	ID         int
	Dim        int
	Partitions int
	Lists      int
	Ledger     *Ledger

	mu  sync.Mutex
	rng *rand.Rand
	gen Distribution
}

// Open attaches to an existing collection. seed makes the vectors
// reproducible.
func Open(ctx context.Context, pool *pgxpool.Pool, name string, seed uint64) (*Workload, error) {
	w := &Workload{Pool: pool, Name: name, Ledger: NewLedger(),
		rng: rand.New(rand.NewPCG(seed, 0xdeadbeef))}
	err := pool.QueryRow(ctx, `
SELECT c.collection_id, c.relid::regclass::text, v.dim, v.partitions, v.lists
FROM ruvector.collections c JOIN ruvector.vector_collections v USING (collection_id)
WHERE c.name = $1`, name).Scan(&w.ID, &w.Table, &w.Dim, &w.Partitions, &w.Lists)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCollection, name)
	}
	if err != nil {
		return nil, fmt.Errorf("workload: open %q: %w", name, err)
	}
	w.gen = NewClusters(w.Dim, 8, seed)
	return w, nil
}

// Distribution makes vectors.
type Distribution interface {
	Next(rng *rand.Rand) []float32
}

// SetDistribution replaces the vector distribution (Drift uses it).
func (w *Workload) SetDistribution(d Distribution) {
	w.mu.Lock()
	w.gen = d
	w.mu.Unlock()
}

// Vector draws one vector from the current distribution.
func (w *Workload) Vector() []float32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen.Next(w.rng)
}

// Clusters is a mixture of Gaussian blobs with equal weights, values
// quantised to 1/256 so that the server's text form of a stored real[] is
// exactly the Go text form (the ledger's checksums compare them).
type Clusters struct {
	Centers [][]float32
	Weights []float64 // relative; nil = equal
	Spread  float64
}

// NewClusters places n centers uniformly in [-10, 10]^dim.
func NewClusters(dim, n int, seed uint64) *Clusters {
	rng := rand.New(rand.NewPCG(seed, 77))
	c := &Clusters{Spread: 1}
	for range n {
		v := make([]float32, dim)
		for d := range v {
			v[d] = quantise(rng.Float64()*20 - 10)
		}
		c.Centers = append(c.Centers, v)
	}
	return c
}

// Next draws a vector.
func (c *Clusters) Next(rng *rand.Rand) []float32 {
	i := 0
	if c.Weights == nil {
		i = rng.IntN(len(c.Centers))
	} else {
		var total float64
		for _, w := range c.Weights {
			total += w
		}
		r := rng.Float64() * total
		for i = 0; i < len(c.Weights)-1; i++ {
			r -= c.Weights[i]
			if r < 0 {
				break
			}
		}
	}
	cen := c.Centers[i]
	v := make([]float32, len(cen))
	for d := range v {
		v[d] = quantise(float64(cen[d]) + rng.NormFloat64()*c.Spread)
	}
	return v
}

func quantise(x float64) float32 {
	x = max(-1000, min(1000, x))
	return float32(math.Round(x*256) / 256)
}

// VectorText is the text form of v as the server prints a real[].
func VectorText(v []float32) string {
	b := make([]byte, 0, len(v)*8+2)
	b = append(b, '{')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(x), 'g', -1, 32)
	}
	return string(append(b, '}'))
}

// InsertRouted inserts n rows one statement each, letting the server route
// them (the shard column's default), and records where they landed.
func (w *Workload) InsertRouted(ctx context.Context, n int) error {
	for range n {
		v := w.Vector()
		var id int64
		var shard int
		if err := w.Pool.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s (embedding) VALUES ($1) RETURNING id, shard`, w.Table), v).
			Scan(&id, &shard); err != nil {
			return fmt.Errorf("workload: insert into %s: %w", w.Table, err)
		}
		w.Ledger.Add(shard, v)
	}
	return nil
}

// InsertShard inserts n rows one statement each with an explicit shard.
func (w *Workload) InsertShard(ctx context.Context, shard, n int) error {
	for range n {
		v := w.Vector()
		if _, err := w.Pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (embedding, shard) VALUES ($1, $2)`, w.Table), v, shard); err != nil {
			return fmt.Errorf("workload: insert into %s shard %d: %w", w.Table, shard, err)
		}
		w.Ledger.Add(shard, v)
	}
	return nil
}

// CopyInsert loads n rows with COPY. shardOf picks each row's shard (COPY
// cannot return where the server's routing put a row, so the tool routes
// COPY batches itself: uniformly when shardOf is nil).
func (w *Workload) CopyInsert(ctx context.Context, n int, shardOf func(i int) int) error {
	rows := make([][]any, n)
	vecs := make([][]float32, n)
	shards := make([]int, n)
	for i := range rows {
		vecs[i] = w.Vector()
		if shardOf != nil {
			shards[i] = shardOf(i)
		} else {
			w.mu.Lock()
			shards[i] = w.rng.IntN(w.Partitions)
			w.mu.Unlock()
		}
		rows[i] = []any{vecs[i], shards[i]}
	}
	ident := pgx.Identifier{w.Table}
	if s, t, ok := splitQualified(w.Table); ok {
		ident = pgx.Identifier{s, t}
	}
	if _, err := w.Pool.CopyFrom(ctx, ident, []string{"embedding", "shard"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("workload: copy into %s: %w", w.Table, err)
	}
	for i := range vecs {
		w.Ledger.Add(shards[i], vecs[i])
	}
	return nil
}

// splitQualified splits a regclass text "s.t" (identifiers unquoted only
// when they need no quoting; the collection name check forbids quotes and
// dots) into its parts.
func splitQualified(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '.' {
			return unquote(s[:i]), unquote(s[i+1:]), true
		}
	}
	return "", "", false
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// Search runs one ruvector_ivf_search for a vector of the current
// distribution and returns how many ids came back and how long it took.
func (w *Workload) Search(ctx context.Context, k, probes int) (int, time.Duration, error) {
	q := w.Vector()
	start := time.Now()
	rows, err := w.Pool.Query(ctx, `SELECT id FROM ruvector.ruvector_ivf_search($1, $2, $3, $4)`, w.Name, q, k, probes)
	if err != nil {
		return 0, 0, fmt.Errorf("workload: search %q: %w", w.Name, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, 0, fmt.Errorf("workload: search %q: %w", w.Name, err)
	}
	return len(ids), time.Since(start), nil
}

// Uniform draws each coordinate uniformly from [Min, Max).
type Uniform struct {
	Dim      int
	Min, Max float64
}

// Next draws a vector.
func (u Uniform) Next(rng *rand.Rand) []float32 {
	v := make([]float32, u.Dim)
	for d := range v {
		v[d] = quantise(u.Min + rng.Float64()*(u.Max-u.Min))
	}
	return v
}
