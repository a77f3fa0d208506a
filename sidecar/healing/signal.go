package healing

import (
	"math"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// Signal is the problem's own measure before the remediation and after the
// stabilisation wait, for the record (ruvector_healing_explain shows it next
// to λ): the value a reader checks to see whether the symptom itself went
// away, not just the cut.
type Signal struct {
	// Name is the problem details field it is: load_ratio, skew_factor,
	// lag_seconds, queue_depth, fragmentation_pct or current_usage_pct.
	Name   string   `json:"name"`
	Before *float64 `json:"before"`
	// After is nil when no measurement after the wait was available.
	After *float64 `json:"after"`
	// AfterAt is when the metrics After was computed from were current.
	AfterAt *time.Time `json:"after_at,omitempty"`
	// Of names what the value is measured over (the problem's entities).
	Of string `json:"of"`
}

// signalOf measures problem p's signal in metrics m over the entities the
// problem named (so that "after" is about the same partitions, lists,
// replicas or indexes as "before"), the way the classifier computes it.
// ok is false for a class without a signal (unknown) or when m holds no
// value for any of the entities.
func signalOf(p classify.Problem, m classify.Metrics) (name, of string, v float64, ok bool) {
	switch {
	case p.HotspotCongestion != nil:
		v, ok = maxRelative(p.HotspotCongestion.PartitionIDs, m.PartitionLoad)
		return "load_ratio", "highest load / mean load among the problem's partitions", v, ok
	case p.CentroidSkew != nil:
		sizes := make(map[int64]float64, len(m.CentroidListSizes))
		for id, s := range m.CentroidListSizes {
			sizes[id] = float64(s)
		}
		v, ok = maxRelative(p.CentroidSkew.CentroidIDs, sizes)
		return "skew_factor", "largest list size / mean list size among the problem's centroids", v, ok
	case p.ReplicationLag != nil:
		v, ok = maxOf(p.ReplicationLag.ReplicaIDs, m.ReplicaLagSeconds)
		return "lag_seconds", "largest lag among the problem's replicas", v, ok
	case p.MaintenanceContention != nil:
		return "queue_depth", "maintenance queue depth", float64(max(m.MaintenanceQueueDepth, 0)), true
	case p.IndexFragmentation != nil:
		v, ok = maxOf(p.IndexFragmentation.IndexIDs, m.IndexFragmentationPct)
		return "fragmentation_pct", "highest fragmentation among the problem's indexes", v, ok
	case p.MemoryPressure != nil:
		u := m.MemoryUsagePct
		return "current_usage_pct", "memory usage", u, !math.IsNaN(u) && !math.IsInf(u, 0) && u >= 0
	}
	return "", "", 0, false
}

func usable(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }

// maxRelative is the classifier's ratio: the highest value among ids over
// the mean of every usable value.
func maxRelative(ids []int64, values map[int64]float64) (float64, bool) {
	sum, n := 0.0, 0
	for _, v := range values {
		if usable(v) {
			sum += v
			n++
		}
	}
	if n == 0 || sum == 0 {
		return 0, false
	}
	mean := sum / float64(n)
	best, ok := 0.0, false
	for _, id := range ids {
		if v, found := values[id]; found && usable(v) {
			best, ok = max(best, v/mean), true
		}
	}
	return best, ok
}

func maxOf(ids []int64, values map[int64]float64) (float64, bool) {
	best, ok := 0.0, false
	for _, id := range ids {
		if v, found := values[id]; found && usable(v) {
			best, ok = max(best, v), true
		}
	}
	return best, ok
}

// measureSignal records p's signal before (from the trigger's metrics) and,
// when after is given, after the wait.
func measureSignal(p classify.Problem, before classify.Metrics, after *classify.Metrics, afterAt time.Time) *Signal {
	name, of, b, okB := signalOf(p, before)
	if name == "" {
		return nil
	}
	s := &Signal{Name: name, Of: of}
	if okB {
		s.Before = &b
	}
	if after != nil {
		if _, _, a, okA := signalOf(p, *after); okA {
			s.After, s.AfterAt = &a, &afterAt
		}
	}
	return s
}
