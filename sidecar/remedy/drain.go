package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// ErrManualRouting is returned (wrapped) when the hot shard's routing
// weight was set by an operator: a human is steering it; not overridden.
var ErrManualRouting = errors.New("manual routing weight in force")

// DrainHotPartition is drain_hot_partition: it gives the hot shard routing
// weight 0 (ruvector_routing_set(collection, shard, 0, 'sidecar',
// outcome)), so new rows that take the collection's routing default go to
// the other shards; the weight is durable and in the segment at once.
// Existing rows stay (rebalance_partitions moves those), and rows inserted
// with an explicit shard value are not routed at all. Rollback restores
// the recorded previous weight (or the default, by reset).
//
// The watchdog puts sidecar weights back to 1 when the sidecar stops
// heartbeating, like its throttles.
type DrainHotPartition struct {
	Dial Dialer
}

func (*DrainHotPartition) Name() string { return "drain_hot_partition" }
func (*DrainHotPartition) Handles() []classify.Class {
	return []classify.Class{classify.ClassHotspotCongestion}
}

// Impact: nothing is moved or blocked; new rows go elsewhere.
func (*DrainHotPartition) Impact() float64                  { return 0.15 }
func (*DrainHotPartition) EstimatedDuration() time.Duration { return 5 * time.Second }
func (*DrainHotPartition) Reversible() bool                 { return true }

// Temporary: a drained shard is lifted once the collection has been normal
// long enough (strategy.Temporary).
func (*DrainHotPartition) Temporary() bool { return true }

// routeAction is recorded before the weight is set.
type routeAction struct {
	Kind       string `json:"kind"` // "route"
	Collection string `json:"collection"`
	Shard      int    `json:"shard"`
	// Previous is the routing_weights row before, nil when there was none
	// (the default weight 1).
	Previous *routingWeight `json:"previous"`
	Outcome  *int64         `json:"outcome_id"`
}

type routingWeight struct {
	Weight  float32 `json:"weight"`
	SetBy   string  `json:"set_by"`
	Outcome *int64  `json:"outcome_id"`
}

func readWeight(ctx context.Context, conn *pgx.Conn, collectionID int64, shard int) (*routingWeight, error) {
	var w routingWeight
	err := conn.QueryRow(ctx, `SELECT weight, set_by, outcome_id FROM ruvector.routing_weights
		WHERE collection_id = $1 AND shard = $2`, collectionID, shard).Scan(&w.Weight, &w.SetBy, &w.Outcome)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("drain_hot_partition: routing weight of shard %d: %w", shard, err)
	}
	return &w, nil
}

func (d *DrainHotPartition) prepare(ctx context.Context, conn *pgx.Conn, rc *strategy.Context) (shardLoad, *routingWeight, string, error) {
	shards, err := shardsOf(ctx, conn, rc)
	if err != nil {
		return shardLoad{}, nil, "", fmt.Errorf("drain_hot_partition: %w", err)
	}
	hot, err := hotShard(rc, shards)
	if err != nil {
		return shardLoad{}, nil, "", fmt.Errorf("drain_hot_partition: %w", err)
	}
	prev, err := readWeight(ctx, conn, rc.CollectionID, hot.Shard)
	if err != nil {
		return hot, nil, "", err
	}
	if prev != nil && prev.SetBy == "manual" {
		return hot, prev, "", fmt.Errorf("drain_hot_partition: shard %d of %q has a manual routing weight %g; not overriding it: %w",
			hot.Shard, rc.Collection, prev.Weight, ErrManualRouting)
	}
	if prev != nil && prev.Weight == 0 {
		return hot, prev, fmt.Sprintf("shard %d of %q already gets no new rows", hot.Shard, rc.Collection), nil
	}
	why, err := drainCannotCool(ctx, conn, rc, shards, hot)
	return hot, prev, why, err
}

// drainCannotCool says why draining would leave the shard hot, or "": a
// drain takes only the shard's routed rows out of its load, at most its
// routing weight's share of the routed inserts (the peers' median write
// rate per unit of weight); reads of the rows it holds and rows written
// with an explicit shard value stay. When what stays is still a hotspot
// (stillHotRatio × the median partition load), draining changes nothing λ
// can show, as a writer naming its shard or a shard grown large shows.
func drainCannotCool(ctx context.Context, conn *pgx.Conn, rc *strategy.Context, shards []shardLoad, hot shardLoad) (string, error) {
	wr, ok := writesOf(rc, shards, hot)
	if !ok || hot.Load <= 0 {
		return "", nil
	}
	rows, err := conn.Query(ctx, `SELECT shard, weight FROM ruvector.routing_weights WHERE collection_id = $1`, rc.CollectionID)
	if err != nil {
		return "", fmt.Errorf("drain_hot_partition: routing weights of %q: %w", rc.Collection, err)
	}
	weights := map[int]float64{}
	var shard int
	var weight float32
	if _, err := pgx.ForEachRow(rows, []any{&shard, &weight}, func() error {
		weights[shard] = float64(weight)
		return nil
	}); err != nil {
		return "", fmt.Errorf("drain_hot_partition: routing weights of %q: %w", rc.Collection, err)
	}
	weightOf := func(s int) float64 {
		if w, ok := weights[s]; ok {
			return w
		}
		return 1
	}
	var perWeight []float64
	for s, rate := range wr.peers {
		if w := weightOf(s); w > 0 {
			perWeight = append(perWeight, rate/w)
		}
	}
	routed := min(wr.hot, weightOf(hot.Shard)*medianOf(perWeight))
	left := hot.Load - routed
	if ratio := left / wr.refLoad; ratio > stillHotRatio {
		return fmt.Sprintf("draining shard %d of %q takes at most its routed share out of its load (about %.0f of the %.0f rows/s written to it); "+
			"the rest, %.0f rows/s (reads of the rows it holds and rows written with an explicit shard), stays %.1f× the median partition load: "+
			"routing cannot cool it", hot.Shard, rc.Collection, routed, wr.hot, left, ratio), nil
	}
	return "", nil
}

// Plan names the shard that would be drained.
func (d *DrainHotPartition) Plan(ctx context.Context, rc *strategy.Context) (Plan, error) {
	conn, err := d.Dial(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("drain_hot_partition: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	hot, prev, noop, err := d.prepare(ctx, conn, rc)
	if err != nil {
		return Plan{}, err
	}
	if noop != "" {
		return Plan{Strategy: d.Name(), Noop: true, Reason: noop, Steps: []Step{}}, nil
	}
	was := float32(1)
	if prev != nil {
		was = prev.Weight
	}
	return Plan{Strategy: d.Name(), Steps: []Step{{Action: "route", Target: fmt.Sprintf("%s shard %d", rc.Collection, hot.Shard),
		Detail: map[string]any{"weight_from": was, "weight_to": 0, "partition_relid": hot.RelID}}}}, nil
}

// Execute sets the hot shard's routing weight to 0.
func (d *DrainHotPartition) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	conn, err := d.Dial(ctx)
	if err != nil {
		return strategy.Result{}, fmt.Errorf("drain_hot_partition: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	hot, prev, noop, err := d.prepare(ctx, conn, rc)
	if err != nil {
		return strategy.Result{}, err
	}
	if noop != "" {
		return strategy.NoopResult(noop), nil
	}
	var outcome *int64
	if id, ok := outcomeID(rc); ok {
		outcome = &id
	}
	if err := rc.Record(routeAction{Kind: "route", Collection: rc.Collection, Shard: hot.Shard, Previous: prev, Outcome: outcome}); err != nil {
		return strategy.Result{}, err
	}
	if _, err := conn.Exec(ctx, `SELECT ruvector.ruvector_routing_set($1, $2, 0, 'sidecar', $3)`,
		rc.Collection, hot.Shard, outcome); err != nil {
		return strategy.Result{}, fmt.Errorf("drain_hot_partition: route new rows away from shard %d: %w", hot.Shard, err)
	}
	was := float32(1)
	if prev != nil {
		was = prev.Weight
	}
	res := strategy.Result{Success: true, ActionsTaken: 1, Metadata: map[string]any{
		"shard": hot.Shard, "partition_relid": hot.RelID, "weight_before": was, "weight_after": 0}}
	if rc.Sample != nil {
		if l, err := rc.SampleIntegrity(ctx); err == nil {
			res.Improvement = rc.Improvement(l)
		}
	}
	return res, nil
}

// Rollback restores each drained shard's previous weight, unless the
// weight was changed since by someone else (ErrChangedSince).
func (d *DrainHotPartition) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, conn, closeConn, err := rollbackConn(ctx, rc, d.Dial, "drain_hot_partition")
	if err != nil {
		return err
	}
	defer closeConn()
	var errs []error
	for i := len(acts) - 1; i >= 0; i-- {
		var a routeAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			errs = append(errs, fmt.Errorf("drain_hot_partition: action %d: %w", i, err))
			continue
		}
		if a.Kind != "route" {
			continue
		}
		cur, err := readWeight(ctx, conn, rc.CollectionID, a.Shard)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ours := cur != nil && cur.SetBy == "sidecar" && cur.Weight == 0 &&
			(a.Outcome == nil) == (cur.Outcome == nil) && (a.Outcome == nil || *a.Outcome == *cur.Outcome)
		// The watchdog resets sidecar weights when the sidecar stops: the
		// row may be gone already, which is the default again.
		if cur == nil && a.Previous == nil {
			continue
		}
		if !ours && cur != nil {
			errs = append(errs, fmt.Errorf("drain_hot_partition: shard %d of %q has weight %g set by %s since; not restoring %v: %w",
				a.Shard, a.Collection, cur.Weight, cur.SetBy, a.Previous, ErrChangedSince))
			continue
		}
		if a.Previous == nil {
			_, err = conn.Exec(ctx, `SELECT ruvector.ruvector_routing_reset($1, $2)`, a.Collection, a.Shard)
		} else {
			_, err = conn.Exec(ctx, `SELECT ruvector.ruvector_routing_set($1, $2, $3, $4, $5)`,
				a.Collection, a.Shard, a.Previous.Weight, a.Previous.SetBy, a.Previous.Outcome)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("drain_hot_partition: restore shard %d of %q: %w", a.Shard, a.Collection, err))
		}
	}
	return errors.Join(errs...)
}
