package health

import (
	"errors"
	"fmt"
	"math"
)

// Config holds the budgets and tolerances that turn signals into capacities.
// The functions are tabled in CAPACITIES.md; the zero value is not usable,
// start from DefaultConfig.
type Config struct {
	// Floor is the smallest capacity an edge gets (0.01): a dead component
	// still keeps its edge so the graph stays connected and λ stays
	// comparable, and 0 would make every failure look the same.
	Floor float64 `json:"floor"`
	// UnknownCapacity is the capacity of the edges of a kind whose collector
	// failed this sample (Signals.Unknown). 0.5: a blind spot is neither
	// health nor failure; it pulls λ_norm down to stress (look at it) but
	// never to critical, so a broken collector cannot by itself trigger the
	// critical gate. The nodes are flagged unknown in the snapshot.
	UnknownCapacity float64 `json:"unknown_capacity"`

	// PartitionLoadTolerance: a partition whose load ratio (load / median
	// partition load) is at most this is fully healthy; above it capacity
	// falls as (tolerance/ratio)².
	PartitionLoadTolerance float64 `json:"partition_load_tolerance"`
	// MinPartitionLoad (rows/s) is the smallest reference load: below it
	// an idle collection's noise would otherwise look like hotspots.
	MinPartitionLoad float64 `json:"min_partition_load"`

	// CentroidSkewTolerance: an IVF list whose size ratio (size / median
	// list size) is at most this is healthy; k-means lists routinely differ
	// by 2×, hence the larger default.
	CentroidSkewTolerance float64 `json:"centroid_skew_tolerance"`
	// MinCentroidListSize is the smallest reference list size.
	MinCentroidListSize float64 `json:"min_centroid_list_size"`

	// LagBudgetSeconds: replication capacity is 1 − lag/budget.
	LagBudgetSeconds float64 `json:"lag_budget_seconds"`
	// LagToleranceSeconds: a replica whose replay lag is at most this (and
	// whose bytes lag, when budgeted, is within the same share of its
	// budget) is fully healthy, as every other capacity has a tolerance.
	// Without one, the few milliseconds of lag of a replica that streams
	// normally made it the weakest component of a graph otherwise at full
	// health, so a trigger taken while the state was still degraded (its
	// restore hold) blamed replication lag and acted on it. Above the
	// tolerance the capacity is unchanged (1 − lag/budget), so the stress
	// and critical levels stay where they were (12 s and 42 s at 60 s).
	LagToleranceSeconds float64 `json:"lag_tolerance_seconds"`
	// LagBudgetBytes, when > 0, is a second budget on replay lag in bytes;
	// the worse of the two fractions counts.
	LagBudgetBytes float64 `json:"lag_budget_bytes"`

	// GateWaitBudget is the gate wait fraction (backend-seconds waited per
	// second, summed over backends) at which the gateway's routing_link
	// reaches 0.
	GateWaitBudget float64 `json:"gate_wait_budget"`
	// RejectBudgetPerSec is the rejected statements per second at which
	// the gateway's routing_link reaches 0.
	RejectBudgetPerSec float64 `json:"reject_budget_per_sec"`

	// JobDegradedCapacity is the capacity of a maintenance job that waits
	// on a lock or contends with another running job on its relation.
	JobDegradedCapacity float64 `json:"job_degraded_capacity"`

	// Index capacity is 1 up to FragmentationTolerancePct, then falls
	// linearly to 0 at FragmentationLimitPct.
	FragmentationTolerancePct float64 `json:"fragmentation_tolerance_pct"`
	FragmentationLimitPct     float64 `json:"fragmentation_limit_pct"`

	// Memory capacity is 1 up to MemoryTolerancePct, then falls linearly to
	// 0 at MemoryLimitPct.
	MemoryTolerancePct float64 `json:"memory_tolerance_pct"`
	MemoryLimitPct     float64 `json:"memory_limit_pct"`

	// BundleWorstFraction: a multi-component bundle (partitions, IVF lists,
	// jobs) is as healthy as the mean of its worst ceil(n × fraction)
	// members. 1 is the plain mean, under which one hot partition among 16
	// barely moved λ (it read 0.94 with every write on it); 0.25 lets one
	// bad member in four count fully while one noisy member among many
	// (ratio 1.6 → capacity 0.56) still reads normal (0.89 of 16).
	BundleWorstFraction float64 `json:"bundle_worst_fraction"`
}

// DefaultConfig returns the documented defaults (CAPACITIES.md).
func DefaultConfig() Config {
	return Config{
		Floor:                     0.01,
		UnknownCapacity:           0.5,
		PartitionLoadTolerance:    1.2,
		MinPartitionLoad:          10,
		CentroidSkewTolerance:     2,
		MinCentroidListSize:       100,
		LagBudgetSeconds:          60,
		LagToleranceSeconds:       2,
		LagBudgetBytes:            0,
		GateWaitBudget:            1,
		RejectBudgetPerSec:        10,
		JobDegradedCapacity:       0.1,
		FragmentationTolerancePct: 20,
		FragmentationLimitPct:     80,
		MemoryTolerancePct:        70,
		MemoryLimitPct:            100,
		BundleWorstFraction:       0.25,
	}
}

// ErrConfig is wrapped by every error Config.Validate returns.
var ErrConfig = errors.New("health: invalid config")

// Validate checks every field and returns the first violation, naming the
// field by its JSON key.
func (c Config) Validate() error {
	bad := func(key string, v float64, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrConfig, key, v, why)
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !finite(c.Floor) || c.Floor <= 0 || c.Floor >= 1 {
		return bad("floor", c.Floor, "must be in (0, 1)")
	}
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"unknown_capacity", c.UnknownCapacity},
		{"job_degraded_capacity", c.JobDegradedCapacity},
	} {
		if !finite(f.v) || f.v < c.Floor || f.v > 1 {
			return bad(f.key, f.v, "must be between floor and 1")
		}
	}
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"partition_load_tolerance", c.PartitionLoadTolerance},
		{"centroid_skew_tolerance", c.CentroidSkewTolerance},
	} {
		if !finite(f.v) || f.v < 1 {
			return bad(f.key, f.v, "must be a ratio >= 1")
		}
	}
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"min_partition_load", c.MinPartitionLoad},
		{"min_centroid_list_size", c.MinCentroidListSize},
		{"lag_budget_seconds", c.LagBudgetSeconds},
		{"gate_wait_budget", c.GateWaitBudget},
		{"reject_budget_per_sec", c.RejectBudgetPerSec},
	} {
		if !finite(f.v) || f.v <= 0 {
			return bad(f.key, f.v, "must be > 0")
		}
	}
	if !finite(c.BundleWorstFraction) || c.BundleWorstFraction <= 0 || c.BundleWorstFraction > 1 {
		return bad("bundle_worst_fraction", c.BundleWorstFraction, "must be in (0, 1]")
	}
	if !finite(c.LagToleranceSeconds) || c.LagToleranceSeconds < 0 || c.LagToleranceSeconds >= c.LagBudgetSeconds {
		return bad("lag_tolerance_seconds", c.LagToleranceSeconds, fmt.Sprintf("must be >= 0 and below lag_budget_seconds (%v)", c.LagBudgetSeconds))
	}
	if !finite(c.LagBudgetBytes) || c.LagBudgetBytes < 0 {
		return bad("lag_budget_bytes", c.LagBudgetBytes, "must be >= 0 (0 disables it)")
	}
	for _, p := range []struct {
		tol, limit   float64
		loKey, hiKey string
	}{
		{c.FragmentationTolerancePct, c.FragmentationLimitPct, "fragmentation_tolerance_pct", "fragmentation_limit_pct"},
		{c.MemoryTolerancePct, c.MemoryLimitPct, "memory_tolerance_pct", "memory_limit_pct"},
	} {
		if !finite(p.tol) || p.tol < 0 || p.tol >= 100 {
			return bad(p.loKey, p.tol, "must be a percentage in [0, 100)")
		}
		if !finite(p.limit) || p.limit <= p.tol || p.limit > 100 {
			return bad(p.hiKey, p.limit, fmt.Sprintf("must be above %s (%v) and at most 100", p.loKey, p.tol))
		}
	}
	return nil
}
