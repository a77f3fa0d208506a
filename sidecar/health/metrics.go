package health

import (
	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// MetricsFrom fills the classifier's Metrics from the same sample the graph
// was built from, keyed by the node ids the graph uses, so that the
// classifier's per-node details (hot partitions, skewed lists, lagging
// replicas, job types) line up with the witness edges. Kinds marked unknown
// are left out: the classifier treats missing metrics as "not collected"
// rather than as zero load.
//
//   - partition load = WriteRowsPerSec + ReadRowsPerSec (as the capacity),
//     and the same over the long window;
//   - list sizes, replica lag seconds (a broken replica reports its last
//     lag; its capacity is already at the floor), index fragmentation;
//   - queue depth = Σ Queued + number of running jobs; one MaintenanceJob
//     per job node (Running 0 or 1, Queued as reported);
//   - memory usage pct (UsagePct, or used/limit) and the consumers.
func MetricsFrom(s Signals) classify.Metrics {
	var m classify.Metrics
	if !s.Unknown[KindPartitions] && len(s.Partitions) > 0 {
		m.PartitionLoad = make(map[int64]float64, len(s.Partitions))
		m.PartitionWrites = make(map[int64]float64, len(s.Partitions))
		m.PartitionLoadLong = make(map[int64]float64, len(s.Partitions))
		for _, p := range s.Partitions {
			m.PartitionLoad[p.RelID] = partitionLoad(p)
			m.PartitionWrites[p.RelID] = nonNeg(p.WriteRowsPerSec)
			m.PartitionLoadLong[p.RelID] = nonNeg(p.LongWriteRowsPerSec) + nonNeg(p.LongReadRowsPerSec)
		}
		m.PartitionRatesSince, m.PartitionLongSince = s.PartitionsSince, s.PartitionsLongSince
	}
	if !s.Unknown[KindCentroids] && len(s.Centroids) > 0 {
		m.CentroidListSizes = make(map[int64]int64, len(s.Centroids))
		for _, c := range s.Centroids {
			m.CentroidListSizes[c.ID] = c.ListSize
		}
	}
	if !s.Unknown[KindReplicas] && len(s.Replicas) > 0 {
		m.ReplicaLagSeconds = make(map[int64]float64, len(s.Replicas))
		m.ReplicaNames = make(map[int64]string, len(s.Replicas))
		for _, r := range s.Replicas {
			m.ReplicaLagSeconds[r.ID] = r.LagSeconds
			m.ReplicaNames[r.ID] = r.Name
			switch {
			case r.ReplayStalled:
				if m.ReplicaReplayStalledSeconds == nil {
					m.ReplicaReplayStalledSeconds = map[int64]float64{}
				}
				m.ReplicaReplayStalledSeconds[r.ID] = r.ReplayStalledSeconds
			case r.ReplayStalledSeconds > 0:
				if m.ReplicaReplayWaitingSeconds == nil {
					m.ReplicaReplayWaitingSeconds = map[int64]float64{}
				}
				m.ReplicaReplayWaitingSeconds[r.ID] = r.ReplayStalledSeconds
			}
		}
	}
	if !s.Unknown[KindMaintenance] {
		for _, j := range s.Maintenance {
			running := 0
			if j.Running {
				running = 1
			}
			m.MaintenanceQueueDepth += max(j.Queued, 0) + running
			m.MaintenanceJobs = append(m.MaintenanceJobs, classify.MaintenanceJob{
				NodeID: j.ID, Type: j.Type, Queued: j.Queued, Running: running,
			})
		}
	}
	if !s.Unknown[KindMemory] {
		m.MemoryUsagePct = memoryUsagePct(s.Memory)
		for _, c := range s.Memory.Consumers {
			m.MemoryConsumers = append(m.MemoryConsumers, classify.MemoryConsumer{Name: c.Name, Bytes: c.Bytes})
		}
	}
	if !s.Unknown[KindIndexes] && len(s.Indexes) > 0 {
		m.IndexFragmentationPct = make(map[int64]float64, len(s.Indexes))
		for _, ix := range s.Indexes {
			m.IndexFragmentationPct[ix.RelID] = ix.FragmentationPct
		}
	}
	return m
}
