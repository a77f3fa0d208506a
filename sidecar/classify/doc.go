// Package classify turns the witness edges of an integrity-monitor minimum cut,
// together with plain system metrics, into a problem class that the healing
// engine can act on.
//
// It is the "Classify" step of detect → classify → remediate → verify → learn.
// The package does no I/O: collectors elsewhere fill [Metrics], the monitor
// supplies the witness edges, and [Classify] is a pure function of both plus
// [Thresholds]. Every [Decision] carries the rules that were evaluated and the
// numbers they compared, so that ruvector_healing_explain can show an operator
// why a problem was classified the way it was.
//
// # Rules
//
// The rules are those of the self-healing design, evaluated in its order; the
// first one that matches wins:
//
//  1. more than Thresholds.PartitionLinkEdges (3) partition_link witness edges → hotspot_congestion
//  2. more than Thresholds.CentroidNodes (5) distinct centroid nodes on witness edges → centroid_skew
//  3. more than Thresholds.ReplicationEdges (0) replication witness edges → replication_lag
//  4. more than Thresholds.DependencyEdges (2) dependency witness edges → maintenance_contention
//  5. memory usage above Thresholds.MemoryUsagePct (85%) → memory_pressure
//  6. highest index fragmentation above Thresholds.FragmentationPct (30%) → index_fragmentation
//  7. otherwise → unknown
//
// All comparisons are strict ("more than", "above"): a value exactly at its
// threshold does not fire, as in the design.
//
// # Definitions the design leaves open
//
// Witness edges are undirected (the monitor treats capacities as undirected),
// so node-based counts and lookups consider both endpoints of an edge.
// A node is identified by (kind, id); names are informational only.
//
// Load ratio of a partition = its load / mean load over every partition in
// Metrics.PartitionLoad (any unit, as long as it is the same for all
// partitions: rows/s or share of traffic). The hot partitions reported are the
// partitions that appear on partition_link witness edges with a load ratio of at
// least Thresholds.HotPartitionRatio (1.5), hottest first. If none of them
// reaches it (or loads are not collected), all witness partitions are reported,
// hottest first, because the cut itself is the evidence; the Decision notes the
// fallback. HotspotCongestion.LoadRatio is the highest load ratio among the
// reported partitions (0 when no load is known).
//
// Skew of a centroid = its list size / mean list size over every centroid in
// Metrics.CentroidListSizes. The skewed centroids reported are the witness
// centroids with a skew of at least Thresholds.SkewedCentroidRatio (1.5),
// largest first, with the same fallback to all witness centroids.
// CentroidSkew.SkewFactor is the highest skew among the reported centroids, the
// usual max/mean IVF imbalance measure restricted to what the cut implicates.
//
// Lagging replicas are the replica nodes on replication witness edges, most
// lagging first; ReplicationLag.LagSeconds is the largest lag among them.
//
// Contending job types are the job types of the maintenance_dep nodes on
// dependency witness edges (from Metrics.MaintenanceJobs, falling back to the
// node name), busiest first; QueueDepth is Metrics.MaintenanceQueueDepth.
//
// Memory and fragmentation are percentages in 0..100, as in the design's
// 85.0 and 30.0. The fragmentation rule compares the most fragmented index;
// the indexes reported are all those above the threshold, most fragmented
// first, and FragmentationPct is the highest.
//
// Ties in every ordering are broken by ascending id (or name) so that the same
// inputs always give the same Problem.
package classify
