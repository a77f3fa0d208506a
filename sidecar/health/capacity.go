package health

import (
	"math"
	"slices"
	"strings"
)

// The capacity functions of CAPACITIES.md. Each returns a health in
// [Floor, 1]; NaN or negative inputs are read as "no evidence of trouble"
// only where a collector reports zero for idle, and otherwise clamp, so one
// bad value cannot take λ below the floor or above 1.

// clampCap bounds a capacity to [floor, 1]; NaN maps to the floor because a
// value we cannot read is no evidence of health.
func (c Config) clampCap(v float64) float64 {
	if math.IsNaN(v) || v < c.Floor {
		return c.Floor
	}
	return min(v, 1)
}

// effective applies an error rate: capacity × (1 − error_rate). Rates
// outside [0, 1] are clamped; NaN is ignored (unknown rate).
func (c Config) effective(capacity, errorRate float64) float64 {
	if math.IsNaN(errorRate) || errorRate <= 0 {
		return c.clampCap(capacity)
	}
	return c.clampCap(capacity * (1 - min(errorRate, 1)))
}

// ratioCapacity is the skew/load curve shared by partitions and centroids:
// 1 while ratio ≤ tolerance, then (tolerance/ratio)². The square makes a
// component at twice its tolerated share keep a quarter of its capacity:
// queueing delay grows faster than load, and a bundle of 16 with four
// partitions at 3× the median must read below 0.8.
func (c Config) ratioCapacity(ratio, tolerance float64) float64 {
	if math.IsNaN(ratio) || ratio <= tolerance {
		return c.clampCap(1)
	}
	r := tolerance / ratio
	return c.clampCap(r * r)
}

// median returns the median of vs (mean of the middle two for even counts),
// 0 for none. The median is the reference for load and skew ratios because
// a hotspot does not move it: with the mean, four hot partitions out of 16
// would raise the reference and hide themselves.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// nonNeg maps NaN and negative values to 0 (an idle or unreadable counter).
func nonNeg(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return v
}

// partitionLoad is the load the hotspot rule compares: rows written plus
// rows read per second.
func partitionLoad(p PartitionSignal) float64 {
	return nonNeg(p.WriteRowsPerSec) + nonNeg(p.ReadRowsPerSec)
}

// partitionCapacities returns each partition's partition_link capacity:
// ratio = load / max(median load, MinPartitionLoad).
func (c Config) partitionCapacities(ps []PartitionSignal) []float64 {
	loads := make([]float64, len(ps))
	for i, p := range ps {
		loads[i] = partitionLoad(p)
	}
	ref := max(median(loads), c.MinPartitionLoad)
	out := make([]float64, len(ps))
	for i, l := range loads {
		out[i] = c.ratioCapacity(l/ref, c.PartitionLoadTolerance)
	}
	return out
}

// centroidCapacities returns each IVF list's routing_link capacity:
// ratio = size / max(median size, MinCentroidListSize).
func (c Config) centroidCapacities(cs []CentroidSignal) []float64 {
	sizes := make([]float64, len(cs))
	for i, x := range cs {
		sizes[i] = nonNeg(float64(x.ListSize))
	}
	ref := max(median(sizes), c.MinCentroidListSize)
	out := make([]float64, len(cs))
	for i, s := range sizes {
		out[i] = c.ratioCapacity(s/ref, c.CentroidSkewTolerance)
	}
	return out
}

// replicaCapacity is 1 − lag/budget (the worse of the seconds and bytes
// budgets), or 1 while the lag is within LagToleranceSeconds (the bytes
// lag within the same share of its budget); a broken replica gets 0, i.e.
// the floor. The tolerance is a step, not a shift of the line, so a lag
// above it reads what it always did.
func (c Config) replicaCapacity(r ReplicaSignal) float64 {
	if r.Broken {
		return c.Floor
	}
	frac := nonNeg(r.LagSeconds) / c.LagBudgetSeconds
	if c.LagBudgetBytes > 0 {
		frac = max(frac, float64(max(r.LagBytes, 0))/c.LagBudgetBytes)
	}
	if frac <= c.LagToleranceSeconds/c.LagBudgetSeconds {
		return c.clampCap(1)
	}
	return c.clampCap(1 - frac)
}

// gatewayCapacity is the worse of 1 − wait/wait_budget and
// 1 − rejected/reject_budget: the gate either makes statements wait (latency)
// or turns them away (the queue is full).
func (c Config) gatewayCapacity(g GatewaySignal) float64 {
	wait := 1 - nonNeg(g.WaitFraction)/c.GateWaitBudget
	rej := 1 - nonNeg(g.RejectedPerSec)/c.RejectBudgetPerSec
	return c.clampCap(min(wait, rej))
}

// jobCapacities returns each job's dependency capacity: 1.0 healthy,
// JobDegradedCapacity when it waits on a lock or when another running job
// works on the same relation (they will serialise on its locks).
func (c Config) jobCapacities(js []JobSignal) []float64 {
	running := map[string]int{}
	for _, j := range js {
		if j.Running && j.Relation != "" {
			running[strings.ToLower(j.Relation)]++
		}
	}
	out := make([]float64, len(js))
	for i, j := range js {
		degraded := j.WaitingFor != "" || (j.Running && j.Relation != "" && running[strings.ToLower(j.Relation)] > 1)
		if degraded {
			out[i] = c.clampCap(c.JobDegradedCapacity)
		} else {
			out[i] = c.clampCap(1)
		}
	}
	return out
}

// linearAbove is 1 up to tol, then falls linearly to 0 at limit.
func (c Config) linearAbove(v, tol, limit float64) float64 {
	if math.IsNaN(v) || v <= tol {
		return c.clampCap(1)
	}
	return c.clampCap(1 - (v-tol)/(limit-tol))
}

// indexCapacity falls with leaf fragmentation.
func (c Config) indexCapacity(ix IndexSignal) float64 {
	return c.linearAbove(ix.FragmentationPct, c.FragmentationTolerancePct, c.FragmentationLimitPct)
}

// memoryUsagePct is UsagePct, or used/limit when only the bytes are known.
func memoryUsagePct(m MemorySignal) float64 {
	if m.UsagePct > 0 || m.LimitBytes <= 0 {
		return nonNeg(m.UsagePct)
	}
	return 100 * float64(max(m.UsedBytes, 0)) / float64(m.LimitBytes)
}

// memoryCapacity falls with memory usage.
func (c Config) memoryCapacity(m MemorySignal) float64 {
	return c.linearAbove(memoryUsagePct(m), c.MemoryTolerancePct, c.MemoryLimitPct)
}
