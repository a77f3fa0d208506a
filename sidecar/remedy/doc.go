// Package remedy holds remediation strategies that act on the real system
// beyond the shared segment:
//
//	compact_indexes       index_fragmentation  0.5   irreversible  REINDEX INDEX CONCURRENTLY
//	evict_cold_data       memory_pressure      0.2   reversible    page cache of the coldest partitions
//	scale_replicas        hotspot_congestion   0.2   reversible    Kubernetes scale subresource
//	drain_hot_partition   hotspot_congestion   0.15  reversible    routing weight 0 for the hot shard
//	rebalance_partitions  hotspot_congestion   0.3   reversible    journaled row moves (sidecar/rebalance)
//	rebuild_centroids     centroid_skew        0.35  reversible    IVF retrain + reassign (sidecar/ivf)
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

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Dialer opens a connection the caller owns (and closes).
type Dialer func(ctx context.Context) (*pgx.Conn, error)

// Planner is implemented by strategies that can say what they would do.
// Plan must not change anything: no SQL that writes, no system call that
// alters state, nothing recorded.
type Planner interface {
	Plan(ctx context.Context, rc *strategy.Context) (Plan, error)
}

// Plan is what a strategy would do now.
type Plan struct {
	Strategy string `json:"strategy"`
	// Noop is set when there is nothing to do; Reason says why.
	Noop   bool   `json:"noop"`
	Reason string `json:"reason,omitempty"`
	Steps  []Step `json:"steps"`
}

// Step is one planned action.
type Step struct {
	// Action is a short verb ("reindex", "evict", "scale").
	Action string `json:"action"`
	// Target is what it acts on (an index, a partition, a workload).
	Target string         `json:"target"`
	Detail map[string]any `json:"detail,omitempty"`
}
