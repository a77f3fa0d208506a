package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
type RebuildCentroids struct {
	Dial Dialer
	// Train tunes training (sample size, iterations, seed).
	Train ivf.TrainOptions
	// BatchSize is rows per reassignment batch (default 1000).
	BatchSize int
}

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
	Kind       string `json:"kind"` // "centroids"
	Collection string `json:"collection"`
	Previous   int    `json:"previous_version"`
}

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
	return Plan{Strategy: r.Name(), Steps: []Step{
		{Action: "train", Target: name, Detail: map[string]any{"replaces_version": sk.Version, "lists": len(sk.Sizes)}},
		{Action: "reassign", Target: name, Detail: map[string]any{"skew_factor": sk.Factor, "batch_size": r.batch()}},
	}}, nil
}

// Execute trains, activates and reassigns.
func (r *RebuildCentroids) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
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
	// Before Train: Train activates the new version at once.
	if err := rc.Record(centroidsAction{Kind: "centroids", Collection: name, Previous: before.Version}); err != nil {
		return strategy.Result{}, err
	}
	opts := r.Train
	if id, ok := outcomeID(rc); ok {
		opts.OutcomeID = &id
	}
	v, err := ivf.Train(ctx, conn, name, opts)
	meta := map[string]any{"previous_version": before.Version, "skew_factor_before": before.Factor}
	if err != nil {
		return strategy.Result{ActionsTaken: 0, Metadata: meta}, fmt.Errorf("rebuild_centroids: train: %w", err)
	}
	meta["new_version"] = v
	p, err := ivf.Reassign(ctx, conn, name, v, r.batch(), nil)
	meta["rows_reassigned"] = p.Seen
	if err != nil {
		return strategy.Result{ActionsTaken: 1, Metadata: meta}, fmt.Errorf("rebuild_centroids: reassign to version %d: %w", v, err)
	}
	after, err := ivf.Skew(ctx, conn, name)
	if err != nil {
		return strategy.Result{ActionsTaken: 2, Metadata: meta}, fmt.Errorf("rebuild_centroids: %w", err)
	}
	meta["skew_factor_after"] = after.Factor
	res := strategy.Result{Success: true, ActionsTaken: 2, Metadata: meta}
	if rc.Sample != nil {
		if l, err := rc.SampleIntegrity(ctx); err == nil {
			res.Improvement = rc.Improvement(l)
		}
	}
	return res, nil
}

// Rollback re-activates the recorded previous version and reassigns every
// row to it.
func (r *RebuildCentroids) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	conn, err := r.Dial(ctx)
	if err != nil {
		return fmt.Errorf("rebuild_centroids: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The first record is the version before this attempt; later ones (none
	// today) would be intermediate.
	for _, raw := range acts {
		var a centroidsAction
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("rebuild_centroids: action: %w", err)
		}
		if a.Kind != "centroids" {
			continue
		}
		if err := ivf.RollbackTo(ctx, conn, a.Collection, a.Previous, r.batch(), nil); err != nil {
			return fmt.Errorf("rebuild_centroids: re-activate version %d of %q: %w", a.Previous, a.Collection, err)
		}
		return nil
	}
	return nil
}
