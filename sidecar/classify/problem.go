package classify

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Class is a problem class. Its string value is what is stored in
// healing_outcomes.problem_class and accepted in configuration.
type Class string

// The seven problem classes of the self-healing design.
const (
	ClassHotspotCongestion     Class = "hotspot_congestion"
	ClassCentroidSkew          Class = "centroid_skew"
	ClassReplicationLag        Class = "replication_lag"
	ClassMaintenanceContention Class = "maintenance_contention"
	ClassIndexFragmentation    Class = "index_fragmentation"
	ClassMemoryPressure        Class = "memory_pressure"
	ClassUnknown               Class = "unknown"
)

// Classes lists every class in the design's declaration order.
func Classes() []Class {
	return []Class{ClassHotspotCongestion, ClassCentroidSkew, ClassReplicationLag,
		ClassMaintenanceContention, ClassIndexFragmentation, ClassMemoryPressure, ClassUnknown}
}

// Valid reports whether c is one of the seven classes.
func (c Class) Valid() bool {
	for _, v := range Classes() {
		if c == v {
			return true
		}
	}
	return false
}

// ErrUnknownClass is returned (wrapped) for a string that is not a Class.
var ErrUnknownClass = errors.New("unknown problem class")

// ParseClass converts s to a Class, rejecting anything that is not one of the
// seven classes.
func ParseClass(s string) (Class, error) {
	c := Class(s)
	if !c.Valid() {
		return "", fmt.Errorf("classify: %q: %w", s, ErrUnknownClass)
	}
	return c, nil
}

// HotspotCongestion: hot partitions overloaded.
type HotspotCongestion struct {
	PartitionIDs []int64 `json:"partition_ids"`
	// LoadRatio is the highest load / mean load among PartitionIDs; 0 if unknown.
	LoadRatio float64 `json:"load_ratio"`
}

// CentroidSkew: IVF list imbalance.
type CentroidSkew struct {
	CentroidIDs []int64 `json:"centroid_ids"`
	// SkewFactor is the highest list size / mean list size among CentroidIDs; 0 if unknown.
	SkewFactor float64 `json:"skew_factor"`
}

// ReplicationLag: replicas behind the primary.
type ReplicationLag struct {
	ReplicaIDs []int64 `json:"replica_ids"`
	// LagSeconds is the largest lag among ReplicaIDs; 0 if unknown.
	LagSeconds float64 `json:"lag_seconds"`
}

// MaintenanceContention: background jobs competing with the workload.
type MaintenanceContention struct {
	JobTypes   []string `json:"job_types"`
	QueueDepth int      `json:"queue_depth"`
}

// IndexFragmentation: indexes above the fragmentation threshold.
type IndexFragmentation struct {
	IndexIDs []int64 `json:"index_ids"`
	// FragmentationPct is the highest fragmentation among IndexIDs, 0..100.
	FragmentationPct float64 `json:"fragmentation_pct"`
}

// MemoryPressure: memory usage above the threshold.
type MemoryPressure struct {
	CurrentUsagePct  float64          `json:"current_usage_pct"`
	LargestConsumers []MemoryConsumer `json:"largest_consumers"`
}

// Unknown: no rule matched; a human has to look.
type Unknown struct {
	WitnessSummary string `json:"witness_summary"`
}

// Problem is a classified problem: Class says which one, and exactly the
// matching detail field is set. This shape (rather than an interface) keeps it
// plain data that marshals to problem_details jsonb and back without a type
// registry.
type Problem struct {
	Class                 Class                  `json:"class"`
	HotspotCongestion     *HotspotCongestion     `json:"hotspot_congestion,omitempty"`
	CentroidSkew          *CentroidSkew          `json:"centroid_skew,omitempty"`
	ReplicationLag        *ReplicationLag        `json:"replication_lag,omitempty"`
	MaintenanceContention *MaintenanceContention `json:"maintenance_contention,omitempty"`
	IndexFragmentation    *IndexFragmentation    `json:"index_fragmentation,omitempty"`
	MemoryPressure        *MemoryPressure        `json:"memory_pressure,omitempty"`
	Unknown               *Unknown               `json:"unknown,omitempty"`
}

// ErrInvalidProblem is returned (wrapped) when a Problem's class and details
// disagree.
var ErrInvalidProblem = errors.New("invalid problem")

// Validate checks that Class is known and that exactly its detail is set.
func (p Problem) Validate() error {
	if !p.Class.Valid() {
		return fmt.Errorf("classify: class %q: %w", p.Class, ErrInvalidProblem)
	}
	set := map[Class]bool{
		ClassHotspotCongestion:     p.HotspotCongestion != nil,
		ClassCentroidSkew:          p.CentroidSkew != nil,
		ClassReplicationLag:        p.ReplicationLag != nil,
		ClassMaintenanceContention: p.MaintenanceContention != nil,
		ClassIndexFragmentation:    p.IndexFragmentation != nil,
		ClassMemoryPressure:        p.MemoryPressure != nil,
		ClassUnknown:               p.Unknown != nil,
	}
	if !set[p.Class] {
		return fmt.Errorf("classify: class %s without its details: %w", p.Class, ErrInvalidProblem)
	}
	for _, c := range Classes() {
		if c != p.Class && set[c] {
			return fmt.Errorf("classify: class %s also carries %s details: %w", p.Class, c, ErrInvalidProblem)
		}
	}
	return nil
}

// UnmarshalJSON decodes a problem and rejects one whose class and details
// disagree, so a corrupted problem_details row fails loudly instead of
// reaching a strategy with nil details.
func (p *Problem) UnmarshalJSON(data []byte) error {
	type plain Problem // drops the method set to avoid recursion
	var v plain
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if err := Problem(v).Validate(); err != nil {
		return err
	}
	*p = Problem(v)
	return nil
}
