package classify

import (
	"fmt"
	"math"
	"time"
)

// NodeKind is the kind of a node of the contracted graph.
type NodeKind string

// Node kinds of the contracted graph (integrity-monitor spec). Root is the
// collection's root node that every component is connected to.
const (
	NodePartition      NodeKind = "partition"
	NodeCentroid       NodeKind = "centroid"
	NodeShard          NodeKind = "shard"
	NodeMaintenanceDep NodeKind = "maintenance_dep"
	NodeReplica        NodeKind = "replica"
	NodeIndex          NodeKind = "index"
	NodeMemory         NodeKind = "memory"
	NodeGateway        NodeKind = "gateway"
	NodeRoot           NodeKind = "root"
)

// NodeKinds lists every known node kind, in the order summaries print them.
func NodeKinds() []NodeKind {
	return []NodeKind{NodePartition, NodeCentroid, NodeShard, NodeMaintenanceDep,
		NodeReplica, NodeIndex, NodeMemory, NodeGateway, NodeRoot}
}

// Valid reports whether k is one of the known node kinds.
func (k NodeKind) Valid() bool {
	for _, v := range NodeKinds() {
		if k == v {
			return true
		}
	}
	return false
}

// EdgeType is the type of an edge of the contracted graph.
type EdgeType string

// Edge types of the contracted graph (integrity-monitor spec).
const (
	EdgePartitionLink EdgeType = "partition_link"
	EdgeRoutingLink   EdgeType = "routing_link"
	EdgeDependency    EdgeType = "dependency"
	EdgeReplication   EdgeType = "replication"
)

// EdgeTypes lists every known edge type, in the order summaries print them.
func EdgeTypes() []EdgeType {
	return []EdgeType{EdgePartitionLink, EdgeRoutingLink, EdgeDependency, EdgeReplication}
}

// Valid reports whether t is one of the known edge types.
func (t EdgeType) Valid() bool {
	for _, v := range EdgeTypes() {
		if t == v {
			return true
		}
	}
	return false
}

// NodeRef identifies a node of the contracted graph. The JSON shape is the
// monitor's {type, id, name}.
type NodeRef struct {
	Kind NodeKind `json:"type"`
	ID   int64    `json:"id"`
	Name string   `json:"name"`
}

// String renders the node as kind:id(name) for explanations.
func (n NodeRef) String() string {
	if n.Name == "" {
		return fmt.Sprintf("%s:%d", n.Kind, n.ID)
	}
	return fmt.Sprintf("%s:%d(%s)", n.Kind, n.ID, n.Name)
}

// WitnessEdge is an edge that crosses a minimum cut, as reported by the
// integrity monitor. Capacity is the edge's effective health in 0..1.
type WitnessEdge struct {
	Source   NodeRef  `json:"source"`
	Target   NodeRef  `json:"target"`
	EdgeType EdgeType `json:"edge_type"`
	Capacity float64  `json:"capacity"`
	Flow     float64  `json:"flow"`
}

// MaintenanceJob describes one maintenance dependency as seen by collectors.
type MaintenanceJob struct {
	// NodeID is the id of the job's maintenance_dep node in the contracted
	// graph; it is how witness edges are mapped to job types.
	NodeID int64 `json:"node_id"`
	// Type is the job type, e.g. "vacuum", "reindex", "centroid_rebuild".
	Type string `json:"type"`
	// Queued and Running count jobs of this dependency; they order the
	// contending job types (busiest first).
	Queued  int `json:"queued"`
	Running int `json:"running"`
}

// MemoryConsumer is one entry of the largest memory consumers.
type MemoryConsumer struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Metrics is the system state the classifier reads. It is plain data filled by
// collectors elsewhere; zero values mean "not collected". Maps are keyed by the
// same ids the contracted graph uses for the corresponding node kind.
//
// Negative and non-finite values are ignored (and noted in the Decision)
// rather than trusted, because one bad sample must not invent a hotspot.
type Metrics struct {
	// PartitionLoad is the load of each partition, in any unit that is the same
	// for all partitions (rows/s or share of traffic).
	PartitionLoad map[int64]float64 `json:"partition_load,omitempty"`
	// PartitionWrites is the part of PartitionLoad that is rows written
	// per second: the strategies that move or route rows judge by it
	// whether they can act on a hotspot at all.
	PartitionWrites map[int64]float64 `json:"partition_writes,omitempty"`
	// PartitionRatesSince is when the window the partition rates were
	// measured over began: a change made before it shows in them whole.
	PartitionRatesSince time.Time `json:"partition_rates_since,omitzero"`
	// PartitionLoadLong is PartitionLoad over a longer window (a minute in
	// the daemon), from PartitionLongSince on. The classifier does not
	// read it: a strategy deciding where rows should go does, because a
	// partition's counters can trail its activity by up to 10 s and read
	// idle in one short window.
	PartitionLoadLong  map[int64]float64 `json:"partition_load_long,omitempty"`
	PartitionLongSince time.Time         `json:"partition_long_since,omitzero"`
	// CentroidListSizes is the number of vectors in each IVF list.
	CentroidListSizes map[int64]int64 `json:"centroid_list_sizes,omitempty"`
	// ReplicaLagSeconds is the replication lag of each replica.
	ReplicaLagSeconds map[int64]float64 `json:"replica_lag_seconds,omitempty"`
	// ReplicaNames names each replica of ReplicaLagSeconds as
	// pg_stat_replication does (its slot, or its application_name): what
	// an operator configures a replica's connection under.
	ReplicaNames map[int64]string `json:"replica_names,omitempty"`
	// ReplicaReplayStalledSeconds lists the replicas whose replay is
	// stalled (they receive WAL but apply none; see
	// health.ReplicaSignal.ReplayStalled) with how long replay has not
	// moved. The classifier does not read it: it tells the engine that
	// reducing WAL on the primary cannot help those replicas.
	ReplicaReplayStalledSeconds map[int64]float64 `json:"replica_replay_stalled_seconds,omitempty"`
	// ReplicaReplayWaitingSeconds lists the replicas whose replay_lsn has
	// stood still with received WAL waiting, not yet long enough to be
	// read as stalled, with for how long. The engine waits for the stall
	// judgement rather than act on a replica that may be paused.
	ReplicaReplayWaitingSeconds map[int64]float64 `json:"replica_replay_waiting_seconds,omitempty"`
	// MaintenanceQueueDepth is the number of queued maintenance jobs.
	MaintenanceQueueDepth int `json:"maintenance_queue_depth"`
	// MaintenanceJobs maps maintenance_dep nodes to job types.
	MaintenanceJobs []MaintenanceJob `json:"maintenance_jobs,omitempty"`
	// MemoryUsagePct is memory in use, 0..100.
	MemoryUsagePct float64 `json:"memory_usage_pct"`
	// MemoryConsumers are the known memory consumers, in any order.
	MemoryConsumers []MemoryConsumer `json:"memory_consumers,omitempty"`
	// IndexFragmentationPct is the fragmentation of each index, 0..100.
	IndexFragmentationPct map[int64]float64 `json:"index_fragmentation_pct,omitempty"`
}

// Thresholds configures the classifier rules. Count thresholds fire when the
// count is strictly greater; percentage thresholds when the value is strictly
// above.
type Thresholds struct {
	// PartitionLinkEdges: hotspot when partition_link witness edges > this.
	PartitionLinkEdges int `json:"partition_link_edges"`
	// CentroidNodes: centroid skew when distinct witness centroids > this.
	CentroidNodes int `json:"centroid_nodes"`
	// ReplicationEdges: replication lag when replication witness edges > this.
	ReplicationEdges int `json:"replication_edges"`
	// DependencyEdges: maintenance contention when dependency witness edges > this.
	DependencyEdges int `json:"dependency_edges"`
	// MemoryUsagePct: memory pressure when usage > this (0..100).
	MemoryUsagePct float64 `json:"memory_usage_pct"`
	// FragmentationPct: index fragmentation when the worst index > this (0..100).
	FragmentationPct float64 `json:"fragmentation_pct"`
	// HotPartitionRatio: a witness partition is hot when load/mean ≥ this.
	HotPartitionRatio float64 `json:"hot_partition_ratio"`
	// SkewedCentroidRatio: a witness centroid is skewed when size/mean ≥ this.
	SkewedCentroidRatio float64 `json:"skewed_centroid_ratio"`
	// MaxMemoryConsumers caps how many of the largest consumers are reported.
	MaxMemoryConsumers int `json:"max_memory_consumers"`
}

// DefaultThresholds returns the thresholds of the self-healing design, plus
// this package's choices for the ratios it leaves open.
func DefaultThresholds() Thresholds {
	return Thresholds{
		PartitionLinkEdges:  3,
		CentroidNodes:       5,
		ReplicationEdges:    0,
		DependencyEdges:     2,
		MemoryUsagePct:      85,
		FragmentationPct:    30,
		HotPartitionRatio:   1.5,
		SkewedCentroidRatio: 1.5,
		MaxMemoryConsumers:  5,
	}
}

// Limits of each threshold, exported so that configuration layers validate with
// the same bounds as [Thresholds.Validate].
const (
	MaxCountThreshold     = 100000 // the contracted graph is planned for 100,000 nodes
	MinRatioThreshold     = 1.0    // below 1, an average partition would count as hot
	MaxRatioThreshold     = 1000.0
	MinMemoryConsumersCap = 1
	MaxMemoryConsumersCap = 100
)

// ThresholdError reports an invalid threshold. Field is the JSON name.
type ThresholdError struct {
	Field  string
	Value  float64
	Reason string
}

func (e *ThresholdError) Error() string {
	return fmt.Sprintf("classify: threshold %s = %v: %s", e.Field, e.Value, e.Reason)
}

// Validate checks every threshold against its bounds and returns the first
// violation, in field order, as a *ThresholdError.
func (t Thresholds) Validate() error {
	counts := []struct {
		name string
		v    int
	}{
		{"partition_link_edges", t.PartitionLinkEdges},
		{"centroid_nodes", t.CentroidNodes},
		{"replication_edges", t.ReplicationEdges},
		{"dependency_edges", t.DependencyEdges},
	}
	for _, c := range counts {
		if c.v < 0 || c.v > MaxCountThreshold {
			return &ThresholdError{Field: c.name, Value: float64(c.v),
				Reason: fmt.Sprintf("must be between 0 and %d", MaxCountThreshold)}
		}
	}
	pcts := []struct {
		name string
		v    float64
	}{
		{"memory_usage_pct", t.MemoryUsagePct},
		{"fragmentation_pct", t.FragmentationPct},
	}
	for _, p := range pcts {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 100 {
			return &ThresholdError{Field: p.name, Value: p.v, Reason: "must be a percentage between 0 and 100"}
		}
	}
	ratios := []struct {
		name string
		v    float64
	}{
		{"hot_partition_ratio", t.HotPartitionRatio},
		{"skewed_centroid_ratio", t.SkewedCentroidRatio},
	}
	for _, r := range ratios {
		if math.IsNaN(r.v) || r.v < MinRatioThreshold || r.v > MaxRatioThreshold {
			return &ThresholdError{Field: r.name, Value: r.v,
				Reason: fmt.Sprintf("must be a ratio between %g and %g", MinRatioThreshold, MaxRatioThreshold)}
		}
	}
	if t.MaxMemoryConsumers < MinMemoryConsumersCap || t.MaxMemoryConsumers > MaxMemoryConsumersCap {
		return &ThresholdError{Field: "max_memory_consumers", Value: float64(t.MaxMemoryConsumers),
			Reason: fmt.Sprintf("must be between %d and %d", MinMemoryConsumersCap, MaxMemoryConsumersCap)}
	}
	return nil
}
