package remedy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// RebuildCentroids is rebuild_centroids: it retrains the collection's IVF
// centroids (k-means on a sample, sidecar/ivf), activates the new version
// (new rows get its lists at once) and reassigns the existing rows in
// batches. The previous version stays in ruvector.centroid_versions;
// Rollback re-activates it and reassigns every row back to it, which also
// repairs an interrupted reassignment.
//
// A rebuild is verified by search quality as well as by λ: recall@k of
// ruvector_ivf_search against an exact scan (ivf.Recall) is measured
// before training and after reassigning. A rebuild that lowers recall
// beyond the sampling error is rolled back by the strategy itself and
// reported as failed (ErrRecallLowered), so the engine never verifies it.
//
// Reassignment updates every row's ivf_list, an indexed column, so every
// index of the collection gets a second entry per row: half-empty, out of
// order leaf pages that the indexes collector reads as fragmentation (and
// that made λ fall again right after a rebuild had cured the skew, so the
// engine rolled the rebuild back). The strategy therefore ends, after a
// kept rebuild and after a rollback's reassignment alike, by rebuilding
// the collection's indexes with REINDEX INDEX CONCURRENTLY (writes go on),
// dropping any invalid leftover an interruption leaves.
//
// Recall is compared at equal cost, not at equal probes: a skewed
// version's big lists hold more candidates, so at the same probes it often
// has the higher recall at a higher price (ivf.MatchedCost). The new
// version's recall is taken at the fewest probes that scan at least as many
// rows per search as the old version did at the recall probes. Recall and
// search latency at the old probes are reported too.
type RebuildCentroids struct {
	Dial Dialer
	// Train tunes training (sample size, iterations, seed, list size
	// bound). MaxListRatio 0 means ivf.DefaultMaxListRatio here: a rebuild
	// always bounds the largest list relative to the median.
	Train ivf.TrainOptions
	// BatchSize is rows per reassignment batch (default 1000).
	BatchSize int
	// Recall tunes the recall check. Zero values: 50 queries, k = 10,
	// probes 8 (ruvector_ivf_search's default), seed 0x5eed. Each query
	// costs one exact scan of the collection, before and after. A manual
	// execution's parameters recall_queries, recall_probes and recall_seed
	// override them.
	Recall ivf.RecallOptions
	// RecallTolerance is how far the new version's recall may fall below
	// the old one's before the rebuild counts as lowering it (parameter
	// recall_tolerance). 0: two standard errors of the difference
	// (recallTolerance). Negative: recall is not checked.
	RecallTolerance float64

	// afterReassign, when set (tests), runs between the reassignment and
	// the recall measured after it.
	afterReassign func(ctx context.Context, conn *pgx.Conn, version int) error
}

// ErrRecallLowered: the rebuilt version searched worse than the one it
// replaced; the strategy rolled it back.
var ErrRecallLowered = errors.New("the rebuild lowered recall")

func (*RebuildCentroids) Name() string { return "rebuild_centroids" }
func (*RebuildCentroids) Handles() []classify.Class {
	return []classify.Class{classify.ClassCentroidSkew}
}

// Impact: reads stay correct throughout (every row always has a list of
// some version and searches use the active one), but reassignment
// rewrites every row: WAL, dead tuples, and recall dips while rows wait
// for their new list.
func (*RebuildCentroids) Impact() float64                  { return 0.35 }
func (*RebuildCentroids) EstimatedDuration() time.Duration { return 2 * time.Minute }
func (*RebuildCentroids) Reversible() bool                 { return true }

type centroidsAction struct {
	// "centroids": the version about to be replaced (recorded before
	// training). "centroids_restored": Execute already put Previous back
	// (the recall check), so Rollback has nothing left to do.
	Kind       string `json:"kind"`
	Collection string `json:"collection"`
	Previous   int    `json:"previous_version"`
}

// recallCheck is the recall measurement's settings for one execution.
type recallCheck struct {
	opts      ivf.RecallOptions
	tolerance float64 // < 0: no check; 0: computed from the samples
}

func (r *RebuildCentroids) recallCheck(rc *strategy.Context) (recallCheck, error) {
	c := recallCheck{opts: r.Recall, tolerance: r.RecallTolerance}
	if c.opts.Queries == 0 {
		c.opts.Queries = 50
	}
	if c.opts.K == 0 {
		c.opts.K = 10
	}
	if c.opts.Probes == 0 {
		c.opts.Probes = 8
	}
	if c.opts.Seed == 0 {
		c.opts.Seed = 0x5eed
	}
	if len(rc.Params) > 0 {
		var p struct {
			Queries   *int     `json:"recall_queries"`
			Probes    *int     `json:"recall_probes"`
			Seed      *uint64  `json:"recall_seed"`
			Tolerance *float64 `json:"recall_tolerance"`
		}
		if err := json.Unmarshal(rc.Params, &p); err != nil {
			return c, fmt.Errorf("rebuild_centroids: parameters: %w", err)
		}
		if p.Queries != nil {
			if *p.Queries < 1 || *p.Queries > 10000 {
				return c, fmt.Errorf("rebuild_centroids: parameter recall_queries %d is out of range 1..10000", *p.Queries)
			}
			c.opts.Queries = *p.Queries
		}
		if p.Probes != nil {
			if *p.Probes < 1 || *p.Probes > 4096 {
				return c, fmt.Errorf("rebuild_centroids: parameter recall_probes %d is out of range 1..4096", *p.Probes)
			}
			c.opts.Probes = *p.Probes
		}
		if p.Seed != nil {
			c.opts.Seed = *p.Seed
		}
		if p.Tolerance != nil {
			if math.IsNaN(*p.Tolerance) || *p.Tolerance > 1 {
				return c, fmt.Errorf("rebuild_centroids: parameter recall_tolerance %v is out of range (at most 1; 0: computed; negative: no check)", *p.Tolerance)
			}
			c.tolerance = *p.Tolerance
		}
	}
	return c, nil
}

// recallTolerance is two standard errors of the difference of two mean
// recalls, counting each of a sample's queries·k neighbours as a Bernoulli
// trial. The query samples before and after are not the same rows
// (reassignment rewrites every row and the sample follows the physical
// order), so a difference inside this band is sampling noise, not a worse
// index. At recall 0.9 with 50 queries and k = 10 it is 0.038; at 0.98,
// 0.018; at recall 1 on both sides, 0.
func recallTolerance(before, after ivf.RecallReport) float64 {
	v := func(r ivf.RecallReport) float64 {
		n := float64(max(r.Queries*r.K, 1))
		return r.RecallAtK * (1 - r.RecallAtK) / n
	}
	return 2 * math.Sqrt(v(before)+v(after))
}

// probesCurve is probes, 2·probes, 4·probes … and lists (an exact search,
// so some point of the curve scans at least as many rows as any version
// did at any probes).
func probesCurve(probes, lists int) []int {
	out := []int{probes}
	for p := probes * 2; p < lists; p *= 2 {
		out = append(out, p)
	}
	if probes < lists {
		out = append(out, lists)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *RebuildCentroids) batch() int {
	if r.BatchSize > 0 {
		return r.BatchSize
	}
	return 1000
}

func collectionName(ctx context.Context, conn *pgx.Conn, id int64) (string, error) {
	var name string
	if err := conn.QueryRow(ctx, `SELECT name FROM ruvector.collections WHERE collection_id = $1`, id).Scan(&name); err != nil {
		return "", fmt.Errorf("collection %d: %w", id, err)
	}
	return name, nil
}

// Plan reports the current skew and the version that would be replaced.
func (r *RebuildCentroids) Plan(ctx context.Context, rc *strategy.Context) (Plan, error) {
	conn, err := r.Dial(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("rebuild_centroids: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name, err := collectionName(ctx, conn, rc.CollectionID)
	if err != nil {
		return Plan{}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	sk, err := ivf.Skew(ctx, conn, name)
	if errors.Is(err, ivf.ErrNoVersion) {
		return Plan{Strategy: r.Name(), Noop: true, Reason: fmt.Sprintf("%q has no IVF centroids to rebuild", name), Steps: []Step{}}, nil
	}
	if err != nil {
		return Plan{}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	chk, err := r.recallCheck(rc)
	if err != nil {
		return Plan{}, err
	}
	steps := []Step{
		{Action: "train", Target: name, Detail: map[string]any{"replaces_version": sk.Version, "lists": len(sk.Sizes),
			"max_list_ratio": cmp.Or(r.Train.MaxListRatio, ivf.DefaultMaxListRatio)}},
		{Action: "reassign", Target: name, Detail: map[string]any{"skew_factor": sk.Factor, "batch_size": r.batch()}},
	}
	if chk.tolerance >= 0 {
		tol := any("two standard errors of the samples")
		if chk.tolerance > 0 {
			tol = chk.tolerance
		}
		steps = append(steps, Step{Action: "verify_recall", Target: name, Detail: map[string]any{
			"queries": chk.opts.Queries, "k": chk.opts.K, "probes": chk.opts.Probes, "tolerance": tol,
			"rule": "measured before training and after reassigning; rolled back if recall at equal rows scanned falls by more than the tolerance"}})
	}
	return Plan{Strategy: r.Name(), Steps: steps}, nil
}

// Execute measures recall, trains, activates, reassigns, measures recall
// again and rolls its own rebuild back if recall fell.
func (r *RebuildCentroids) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	chk, err := r.recallCheck(rc)
	if err != nil {
		return strategy.Result{}, err
	}
	conn, err := r.Dial(ctx)
	if err != nil {
		return strategy.Result{}, fmt.Errorf("rebuild_centroids: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name, err := collectionName(ctx, conn, rc.CollectionID)
	if err != nil {
		return strategy.Result{}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	before, err := ivf.Skew(ctx, conn, name)
	if errors.Is(err, ivf.ErrNoVersion) {
		return strategy.NoopResult(fmt.Sprintf("%q has no IVF centroids to rebuild", name)), nil
	}
	if err != nil {
		return strategy.Result{}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	meta := map[string]any{"previous_version": before.Version, "skew_factor_before": before.Factor}
	var recallBefore ivf.RecallReport
	if chk.tolerance >= 0 {
		// Before anything changes: a failure here leaves nothing to undo.
		if recallBefore, err = ivf.Recall(ctx, conn, name, chk.opts); err != nil {
			return strategy.Result{Metadata: meta}, fmt.Errorf("rebuild_centroids: recall before: %w", err)
		}
		meta["recall_k"], meta["recall_queries"], meta["recall_probes"] = chk.opts.K, recallBefore.Queries, chk.opts.Probes
		meta["recall_before"] = recallBefore.RecallAtK
		meta["rows_scanned_before"] = recallBefore.Scanned
		meta["search_p50_before_ms"], meta["search_p99_before_ms"] = ms(recallBefore.P50), ms(recallBefore.P99)
	}
	// Before Train: Train activates the new version at once.
	if err := rc.Record(centroidsAction{Kind: "centroids", Collection: name, Previous: before.Version}); err != nil {
		return strategy.Result{Metadata: meta}, err
	}
	opts := r.Train
	// Size-bounded: plain k-means gives a dense drift blob one list, which
	// stays the largest however often it is retrained.
	opts.MaxListRatio = cmp.Or(opts.MaxListRatio, ivf.DefaultMaxListRatio)
	meta["max_list_ratio"] = opts.MaxListRatio
	if id, ok := outcomeID(rc); ok {
		opts.OutcomeID = &id
	}
	v, err := ivf.Train(ctx, conn, name, opts)
	if err != nil {
		return strategy.Result{ActionsTaken: 0, Metadata: meta}, fmt.Errorf("rebuild_centroids: train: %w", err)
	}
	meta["new_version"] = v
	p, err := ivf.Reassign(ctx, conn, name, v, r.batch(), nil)
	meta["rows_reassigned"] = p.Seen
	if err != nil {
		return strategy.Result{ActionsTaken: 1, Metadata: meta}, fmt.Errorf("rebuild_centroids: reassign to version %d: %w", v, err)
	}
	if r.afterReassign != nil {
		if err := r.afterReassign(ctx, conn, v); err != nil {
			return strategy.Result{ActionsTaken: 2, Metadata: meta}, fmt.Errorf("rebuild_centroids: test hook: %w", err)
		}
	}
	after, err := ivf.Skew(ctx, conn, name)
	if err != nil {
		return strategy.Result{ActionsTaken: 2, Metadata: meta}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	meta["skew_factor_after"] = after.Factor
	if chk.tolerance >= 0 {
		if err := r.verifyRecall(ctx, conn, rc, chk, name, before.Version, v, len(after.Sizes), recallBefore, meta); err != nil {
			return strategy.Result{ActionsTaken: 2, Metadata: meta}, err
		}
	}
	rebuilt, err := reindexCollection(ctx, conn, rc.CollectionID)
	meta["indexes_rebuilt"] = len(rebuilt)
	if err != nil {
		// The rebuild stands; only the clean-up of its index bloat failed.
		meta["reindex_error"] = err.Error()
	}
	res := strategy.Result{Success: true, ActionsTaken: 2, Metadata: meta}
	if rc.Sample != nil {
		if l, err := rc.SampleIntegrity(ctx); err == nil {
			res.Improvement = rc.Improvement(l)
		}
	}
	return res, nil
}

// verifyRecall measures the new version's recall curve and, when recall at
// the old version's cost fell by more than the tolerance, re-activates the
// previous version (every row reassigned back to it) and returns
// ErrRecallLowered. It fills meta either way.
func (r *RebuildCentroids) verifyRecall(ctx context.Context, conn *pgx.Conn, rc *strategy.Context, chk recallCheck,
	name string, previous, version, lists int, before ivf.RecallReport, meta map[string]any) error {
	curve, err := ivf.RecallCurve(ctx, conn, name, chk.opts, probesCurve(chk.opts.Probes, lists))
	if err != nil {
		return fmt.Errorf("rebuild_centroids: recall after: %w", err)
	}
	same := curve[0]
	matched, _ := ivf.MatchedCost(curve, before.Scanned)
	tol := chk.tolerance
	if tol == 0 {
		tol = recallTolerance(before, matched)
	}
	meta["recall_after"] = same.RecallAtK
	meta["rows_scanned_after"] = same.Scanned
	meta["search_p50_after_ms"], meta["search_p99_after_ms"] = ms(same.P50), ms(same.P99)
	meta["recall_after_matched_cost"] = matched.RecallAtK
	meta["recall_matched_probes"] = matched.Probes
	meta["rows_scanned_matched"] = matched.Scanned
	meta["search_p99_matched_ms"] = ms(matched.P99)
	meta["recall_tolerance"] = tol
	if matched.RecallAtK >= before.RecallAtK-tol {
		return nil
	}
	reason := fmt.Sprintf("recall@%d of version %d is %.3f at %d probes (%.0f rows scanned per search), below %.3f of version %d at %d probes (%.0f rows) by more than the tolerance %.3f",
		chk.opts.K, version, matched.RecallAtK, matched.Probes, matched.Scanned, before.RecallAtK, previous, before.Probes, before.Scanned, tol)
	meta["recall_rejected"] = reason
	if err := ivf.RollbackTo(ctx, conn, name, previous, r.batch(), nil); err != nil {
		return fmt.Errorf("rebuild_centroids: %w: %s; re-activating version %d failed (the engine's rollback retries it): %w",
			ErrRecallLowered, reason, previous, err)
	}
	meta["restored_version"] = previous
	if rebuilt, err := reindexCollection(ctx, conn, rc.CollectionID); err != nil {
		meta["reindex_error"] = err.Error()
	} else {
		meta["indexes_rebuilt"] = len(rebuilt)
	}
	// Tells Rollback it is done. If this record fails, the engine's
	// rollback only repeats the (idempotent) reassignment.
	_ = rc.Record(centroidsAction{Kind: "centroids_restored", Collection: name, Previous: previous})
	return fmt.Errorf("rebuild_centroids: %w: %s; version %d re-activated and every row reassigned to it",
		ErrRecallLowered, reason, previous)
}

// Rollback re-activates the recorded previous version and reassigns every
// row to it.
func (r *RebuildCentroids) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	// The first "centroids" record is the version before this attempt; a
	// "centroids_restored" record for it means Execute already put it back.
	var first *centroidsAction
	for _, raw := range acts {
		var a centroidsAction
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("rebuild_centroids: action: %w", err)
		}
		switch {
		case a.Kind == "centroids" && first == nil:
			first = &a
		case a.Kind == "centroids_restored" && first != nil && a.Previous == first.Previous && a.Collection == first.Collection:
			return nil
		}
	}
	if a := first; a != nil {
		conn, err := r.Dial(ctx)
		if err != nil {
			return fmt.Errorf("rebuild_centroids: connect: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if err := ivf.RollbackTo(ctx, conn, a.Collection, a.Previous, r.batch(), nil); err != nil {
			return fmt.Errorf("rebuild_centroids: re-activate version %d of %q: %w", a.Previous, a.Collection, err)
		}
		if _, err := reindexCollection(ctx, conn, rc.CollectionID); err != nil {
			return fmt.Errorf("rebuild_centroids: version %d of %q re-activated and every row reassigned, but: %w", a.Previous, a.Collection, err)
		}
		return nil
	}
	return nil
}

// reindexCollection rebuilds every valid index of the collection's
// partitions with REINDEX INDEX CONCURRENTLY and returns their names; on an
// error it drops the invalid leftover the interrupted rebuild left.
func reindexCollection(ctx context.Context, conn *pgx.Conn, collectionID int64) ([]string, error) {
	rows, err := conn.Query(ctx, `
SELECT c.oid::regclass::text
FROM ruvector.collection_relations r
JOIN pg_index i ON i.indrelid = r.relid
JOIN pg_class c ON c.oid = i.indexrelid
WHERE r.collection_id = $1 AND i.indisvalid AND c.relkind = 'i'
ORDER BY c.oid`, collectionID)
	if err != nil {
		return nil, fmt.Errorf("indexes of collection %d: %w", collectionID, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("indexes of collection %d: %w", collectionID, err)
	}
	var done []string
	for _, n := range names {
		if _, err := conn.Exec(ctx, `REINDEX INDEX CONCURRENTLY `+n); err != nil {
			c := &CompactIndexes{}
			dropped, derr := c.dropLeftovers(context.WithoutCancel(ctx), conn, collectionID)
			return done, errors.Join(fmt.Errorf("REINDEX INDEX CONCURRENTLY %s: %w (invalid leftovers dropped: %v)", n, err, dropped), derr)
		}
		done = append(done, n)
	}
	return done, nil
}
