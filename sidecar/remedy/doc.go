// Package remedy holds remediation strategies that act on the real system
// beyond the shared segment:
//
//	compact_indexes       index_fragmentation  0.5   irreversible  REINDEX INDEX CONCURRENTLY
//	evict_cold_data       memory_pressure      0.2   reversible    page cache of the coldest partitions
//	scale_replicas        hotspot_congestion   0.2   reversible    Kubernetes scale subresource
//	drain_hot_partition   hotspot_congestion   0.15  reversible    routing weight 0 for the hot shard
//	rebalance_partitions  hotspot_congestion   0.3   reversible    journaled row moves (sidecar/rebalance)
//	rebuild_centroids     centroid_skew        0.35  reversible    IVF retrain + reassign (sidecar/ivf), kept only if recall@10 holds
//	resume_replay         replication_lag      0.05  reversible    pg_wal_replay_resume on a paused standby named with --standby
//
// Each records what its rollback needs through rc.Record before the change
// it describes, and its Rollback works from those JSON records alone (a
// fresh value of the strategy after a restart).
//
// Every strategy implements strategy.Strategy and [Planner]: Plan reports
// what Execute would do, measured on the live system, without changing
// anything, which is what a dry run (ruvector_healing_execute(...,
// '{"dry_run": true}')) shows.
//
// Database strategies open their own connection per call through a
// [Dialer]: a cancelled REINDEX may leave its connection unusable, and a
// strategy must still be able to clean up after itself on a fresh one.
package remedy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/remedy/plan"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Dialer opens a connection the caller owns (and closes).
type Dialer func(ctx context.Context) (*pgx.Conn, error)

// rollbackConn is what a database strategy's Rollback starts with: the
// recorded actions and a connection of its own, closed by the returned
// func even when ctx is already cancelled (a rollback runs after aborts).
func rollbackConn(ctx context.Context, rc *strategy.Context, dial Dialer, name string) ([]json.RawMessage, *pgx.Conn, func(), error) {
	acts, err := rc.Actions()
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: connect: %w", name, err)
	}
	return acts, conn, func() { conn.Close(context.WithoutCancel(ctx)) }, nil
}

// Planner, Plan and Step live in package plan, which the healing engine
// imports to serve dry runs without depending on this package.
type (
	Planner = plan.Planner
	Plan    = plan.Plan
	Step    = plan.Step
)
