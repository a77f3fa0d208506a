package remedy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// CompactIndexes is the design's compact_indexes: REINDEX INDEX
// CONCURRENTLY on the collection's B-tree indexes (every partition's), most
// fragmented first, as measured by pgstatindex (pgstattuple, the extension
// the index collector already relies on).
//
// It stops at half its timeout (so the last rebuild, which can take as long
// as the ones before it, still fits) or as soon as λ reaches the target.
// A rebuild interrupted by cancellation or an error leaves an invalid
// transient index (…_ccnew) or, if it failed while swapping, an invalid old
// one (…_ccold); both are dropped CONCURRENTLY on a fresh connection before
// Execute returns, and leftovers of an earlier crashed run are dropped
// before it starts.
//
// A rebuild cannot be undone (the old index is gone), so Rollback returns
// ErrNotReversible; the engine never calls it for an irreversible strategy.
type CompactIndexes struct {
	Dial Dialer
	// MinFragmentationPct: indexes at or below it are left alone (default 10).
	// A freshly built B-tree has 0; rebuilding one that is barely
	// fragmented costs a full index build for nothing.
	MinFragmentationPct float64
	// MinLeafPages: smaller indexes are left alone (default
	// collect.DefaultMinLeafPages, the indexes collector's own floor). The
	// sensor does not measure them, so rebuilding one cannot raise λ, and
	// on a dozen pages one split reads as 40-48% fragmentation again
	// within minutes of inserts: counted, they made compact_indexes
	// rebuild the ivf_list indexes first and report them as the worst
	// fragmentation left after it.
	MinLeafPages int64
	// CleanupTimeout bounds the clean-up of an interrupted rebuild, which
	// runs after ctx is done (default 60 s).
	CleanupTimeout time.Duration
}

func (*CompactIndexes) Name() string { return "compact_indexes" }
func (*CompactIndexes) Handles() []classify.Class {
	return []classify.Class{classify.ClassIndexFragmentation}
}
func (*CompactIndexes) Impact() float64                  { return 0.5 }
func (*CompactIndexes) EstimatedDuration() time.Duration { return 2 * time.Minute }
func (*CompactIndexes) Reversible() bool                 { return false }

// Rollback cannot rebuild the fragmented index that was replaced.
func (c *CompactIndexes) Rollback(context.Context, *strategy.Context) error {
	return fmt.Errorf("compact_indexes rebuilt indexes in place: %w", strategy.ErrNotReversible)
}

// indexStat is one index as pgstatindex saw it.
type indexStat struct {
	RelID            int64   `json:"relid"`
	Name             string  `json:"index"`
	FragmentationPct float64 `json:"fragmentation_pct"`
	AvgLeafDensity   float64 `json:"avg_leaf_density"`
	LeafPages        int64   `json:"leaf_pages"`
}

// reindexAction is recorded before each rebuild: not for rollback (there is
// none) but so the outcome's actions say what was rebuilt even if the
// process dies mid-way.
type reindexAction struct {
	Kind             string  `json:"kind"` // "reindex"
	RelID            int64   `json:"relid"`
	Index            string  `json:"index"`
	FragmentationPct float64 `json:"fragmentation_pct_before"`
}

func (c *CompactIndexes) minFrag() float64 {
	if c.MinFragmentationPct > 0 {
		return c.MinFragmentationPct
	}
	return 10
}

func (c *CompactIndexes) minLeafPages() int64 {
	if c.MinLeafPages > 0 {
		return c.MinLeafPages
	}
	return collect.DefaultMinLeafPages
}

// sensed keeps the indexes the index collector measures (MinLeafPages).
func (c *CompactIndexes) sensed(all []indexStat) []indexStat {
	var out []indexStat
	for _, s := range all {
		if s.LeafPages >= c.minLeafPages() {
			out = append(out, s)
		}
	}
	return out
}

// pgstattupleSchema finds pgstattuple, creating it when missing (needs a
// superuser the first time, exactly as the index collector does).
func pgstattupleSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	const find = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'`
	var schema string
	err := conn.QueryRow(ctx, find).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pgstattuple`); err != nil {
			return "", fmt.Errorf("compact_indexes: pgstattuple is missing and cannot be created (a superuser must run CREATE EXTENSION pgstattuple): %w", err)
		}
		err = conn.QueryRow(ctx, find).Scan(&schema)
	}
	if err != nil {
		return "", fmt.Errorf("compact_indexes: find pgstattuple: %w", err)
	}
	return schema, nil
}

// measure runs pgstatindex on the collection's valid B-tree indexes, most
// fragmented first. Empty indexes (NaN) have nothing to compact.
// only names one index; nil measures all (NULL, not ”: to_regclass(”)
// raises, and OR does not guarantee which side is evaluated first).
func measure(ctx context.Context, conn *pgx.Conn, schema string, collectionID int64, only *string) ([]indexStat, error) {
	sql := fmt.Sprintf(`
SELECT c.oid::int8, c.oid::regclass::text, st.leaf_fragmentation, st.avg_leaf_density, st.leaf_pages
FROM ruvector.collection_relations r
JOIN pg_index i ON i.indrelid = r.relid
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
CROSS JOIN LATERAL %s.pgstatindex(c.oid::regclass) st
WHERE r.collection_id = $1 AND c.relkind = 'i' AND am.amname = 'btree' AND i.indisvalid
  AND ($2::text IS NULL OR c.oid = to_regclass($2::text))
ORDER BY st.leaf_fragmentation DESC NULLS LAST, c.oid`, pgx.Identifier{schema}.Sanitize())
	rows, err := conn.Query(ctx, sql, collectionID, only)
	if err != nil {
		return nil, fmt.Errorf("compact_indexes: pgstatindex: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (indexStat, error) {
		var s indexStat
		return s, r.Scan(&s.RelID, &s.Name, &s.FragmentationPct, &s.AvgLeafDensity, &s.LeafPages)
	})
	if err != nil {
		return nil, fmt.Errorf("compact_indexes: pgstatindex: %w", err)
	}
	out := all[:0]
	for _, s := range all {
		if !math.IsNaN(s.FragmentationPct) && !math.IsNaN(s.AvgLeafDensity) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (c *CompactIndexes) candidates(ctx context.Context, conn *pgx.Conn, rc *strategy.Context) (string, []indexStat, []indexStat, error) {
	schema, err := pgstattupleSchema(ctx, conn)
	if err != nil {
		return "", nil, nil, err
	}
	measured, err := measure(ctx, conn, schema, rc.CollectionID, nil)
	if err != nil {
		return "", nil, nil, err
	}
	all := c.sensed(measured)
	var todo []indexStat
	for _, s := range all {
		if s.FragmentationPct > c.minFrag() {
			todo = append(todo, s)
		}
	}
	return schema, all, todo, nil
}

func (c *CompactIndexes) noopReason(n int, collection string) string {
	return fmt.Sprintf("none of the %d indexes of %q with at least %d leaf pages is more than %.0f%% fragmented",
		n, collection, c.minLeafPages(), c.minFrag())
}

// Plan lists the indexes Execute would rebuild, in order.
func (c *CompactIndexes) Plan(ctx context.Context, rc *strategy.Context) (Plan, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("compact_indexes: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, all, todo, err := c.candidates(ctx, conn, rc)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Strategy: c.Name(), Steps: []Step{}}
	if len(todo) == 0 {
		p.Noop = true
		p.Reason = c.noopReason(len(all), rc.Collection)
		return p, nil
	}
	for _, s := range todo {
		p.Steps = append(p.Steps, Step{Action: "reindex_concurrently", Target: s.Name,
			Detail: map[string]any{"fragmentation_pct": s.FragmentationPct, "avg_leaf_density": s.AvgLeafDensity}})
	}
	return p, nil
}

// Execute rebuilds the most fragmented indexes first within its budget.
func (c *CompactIndexes) Execute(ctx context.Context, rc *strategy.Context) (res strategy.Result, err error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return res, fmt.Errorf("compact_indexes: connect: %w", err)
	}
	defer func() { conn.Close(context.WithoutCancel(ctx)) }()
	pid := conn.PgConn().PID()

	// An earlier run that died mid-rebuild may have left invalid indexes.
	dropped, err := c.dropLeftovers(ctx, conn, rc.CollectionID)
	if err != nil {
		return res, err
	}
	schema, all, todo, err := c.candidates(ctx, conn, rc)
	if err != nil {
		return res, err
	}
	if len(todo) == 0 {
		res = strategy.NoopResult(c.noopReason(len(all), rc.Collection))
		if len(dropped) > 0 {
			res.Metadata["dropped_invalid_leftovers"] = dropped
		}
		return res, nil
	}
	deadline := c.budgetEnd(ctx, rc)
	type rebuilt struct {
		Index        string   `json:"index"`
		FragBefore   float64  `json:"fragmentation_pct_before"`
		FragAfter    *float64 `json:"fragmentation_pct_after"`
		DensBefore   float64  `json:"avg_leaf_density_before"`
		DensAfter    *float64 `json:"avg_leaf_density_after"`
		DurationSecs float64  `json:"duration_seconds"`
	}
	var done []rebuilt
	stopped := "all candidates rebuilt"
	var lambda float64
	haveLambda := false
	meta := func() map[string]any {
		m := map[string]any{"rebuilt": done, "candidates": len(todo), "stopped": stopped,
			"worst_fragmentation_pct_before": todo[0].FragmentationPct}
		if len(dropped) > 0 {
			m["dropped_invalid_leftovers"] = dropped
		}
		return m
	}
	defer func() {
		// Whatever stopped us, leave no invalid index behind.
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cleanupTimeout())
		defer cancel()
		left, cerr := c.cleanupAfter(cctx, pid, rc.CollectionID)
		if res.Metadata == nil {
			res.Metadata = meta()
		}
		res.Metadata["dropped_invalid_leftovers"] = append(dropped, left...)
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("compact_indexes: clean up after the interrupted rebuild: %w", cerr))
		}
	}()
	for i, s := range todo {
		if err := ctx.Err(); err != nil {
			res = strategy.Result{ActionsTaken: len(done), Metadata: meta()}
			return res, err
		}
		if i > 0 && !deadline.IsZero() && time.Now().After(deadline) {
			stopped = "half of the timeout spent"
			break
		}
		if i > 0 && rc.TargetLambda > 0 && rc.Sample != nil {
			l, serr := rc.SampleIntegrity(ctx)
			if serr == nil {
				lambda, haveLambda = l, true
				if l >= rc.TargetLambda {
					stopped = fmt.Sprintf("λ %.3f reached the target %.3f", l, rc.TargetLambda)
					break
				}
			}
		}
		if err := rc.Record(reindexAction{Kind: "reindex", RelID: s.RelID, Index: s.Name, FragmentationPct: s.FragmentationPct}); err != nil {
			res = strategy.Result{ActionsTaken: len(done), Metadata: meta()}
			return res, err
		}
		started := time.Now()
		// By oid: the name from the catalog is already quoted.
		var name string
		if err := conn.QueryRow(ctx, `SELECT $1::oid::regclass::text`, s.RelID).Scan(&name); err != nil {
			res = strategy.Result{ActionsTaken: len(done), Metadata: meta()}
			return res, fmt.Errorf("compact_indexes: index %s: %w", s.Name, err)
		}
		if _, err := conn.Exec(ctx, `REINDEX INDEX CONCURRENTLY `+name); err != nil {
			res = strategy.Result{ActionsTaken: len(done), Metadata: meta()}
			return res, fmt.Errorf("compact_indexes: REINDEX INDEX CONCURRENTLY %s: %w", name, err)
		}
		r := rebuilt{Index: name, FragBefore: s.FragmentationPct, DensBefore: s.AvgLeafDensity,
			DurationSecs: time.Since(started).Seconds()}
		// By name: REINDEX CONCURRENTLY swaps in a new index under the old
		// name, with a new oid. Left nil if it cannot be measured (empty).
		if after, err := measure(ctx, conn, schema, rc.CollectionID, &name); err == nil && len(after) == 1 {
			r.FragAfter, r.DensAfter = &after[0].FragmentationPct, &after[0].AvgLeafDensity
		}
		done = append(done, r)
	}
	res = strategy.Result{Success: len(done) > 0, ActionsTaken: len(done), Metadata: meta()}
	// The worst the sensor will read: over the indexes it measures.
	if rest, err := measure(ctx, conn, schema, rc.CollectionID, nil); err == nil {
		worst := 0.0
		for _, s := range c.sensed(rest) {
			worst = max(worst, s.FragmentationPct)
		}
		res.Metadata["worst_fragmentation_pct_after"] = worst
	}
	if rc.Sample != nil {
		if l, serr := rc.SampleIntegrity(ctx); serr == nil {
			lambda, haveLambda = l, true
		}
	}
	// λ as the last rebuild ends. The indexes collector measures the
	// rebuilt indexes only at its next sample (5 min by default), so this
	// is usually still the fault's λ; the engine's verification, which
	// waits for that sample, is the judgement (measured: 0.505 here, 1.0
	// verified, compact_lambda_test.go). Named apart so the record does
	// not read as "λ did not rise".
	if haveLambda {
		res.Improvement = rc.Improvement(lambda)
		res.Metadata["lambda_at_end_before_resample"] = lambda
	}
	return res, nil
}

func (c *CompactIndexes) cleanupTimeout() time.Duration {
	if c.CleanupTimeout > 0 {
		return c.CleanupTimeout
	}
	return time.Minute
}

// budgetEnd is when no new rebuild may start: half the attempt's timeout,
// or half of what ctx leaves when the engine set no Timeout.
func (c *CompactIndexes) budgetEnd(ctx context.Context, rc *strategy.Context) time.Time {
	if rc.Timeout > 0 {
		start := rc.Started
		if start.IsZero() {
			start = time.Now()
		}
		return start.Add(rc.Timeout / 2)
	}
	if d, ok := ctx.Deadline(); ok {
		return time.Now().Add(time.Until(d) / 2)
	}
	return time.Time{}
}

// cleanupAfter makes sure the backend that ran the rebuild is gone (a
// cancelled client may have only dropped its socket, leaving the server
// still building), then drops the invalid leftovers.
func (c *CompactIndexes) cleanupAfter(ctx context.Context, pid uint32, collectionID int64) ([]string, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)); err != nil {
		return nil, fmt.Errorf("terminate backend %d: %w", pid, err)
	}
	for {
		var alive bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, int32(pid)).Scan(&alive); err != nil {
			return nil, err
		}
		if !alive {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("backend %d still alive: %w", pid, ctx.Err())
		}
	}
	return c.dropLeftovers(ctx, conn, collectionID)
}

// dropLeftovers drops the invalid transient (…_ccnew) and old (…_ccold)
// indexes REINDEX CONCURRENTLY leaves when interrupted, on the collection's
// relations. A table another session is building an index on right now is
// skipped: its _ccnew index is invalid because it is still being built.
func (c *CompactIndexes) dropLeftovers(ctx context.Context, conn *pgx.Conn, collectionID int64) ([]string, error) {
	rows, err := conn.Query(ctx, `
SELECT c.oid::regclass::text
FROM ruvector.collection_relations r
JOIN pg_index i ON i.indrelid = r.relid
JOIN pg_class c ON c.oid = i.indexrelid
WHERE r.collection_id = $1 AND NOT i.indisvalid AND c.relkind = 'i'
  AND c.relname ~ '_cc(new|old)[0-9]*$'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                  WHERE p.relid = r.relid AND p.pid <> pg_backend_pid())
ORDER BY c.oid`, collectionID)
	if err != nil {
		return nil, fmt.Errorf("compact_indexes: find invalid leftovers: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("compact_indexes: find invalid leftovers: %w", err)
	}
	var dropped []string
	for _, n := range names {
		if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+n); err != nil {
			return dropped, fmt.Errorf("compact_indexes: drop invalid leftover %s: %w", n, err)
		}
		dropped = append(dropped, n)
	}
	return dropped, nil
}
