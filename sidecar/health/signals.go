// Package health builds a collection's health graph from collected signals
// and keeps its exact minimum cut (lambda_cut) and witness edges current.
package health

import "time"

// Signals is one sample of everything the collectors measured for one
// collection. Each collector fills its own part; a collector that failed
// marks its kind in Unknown, and the graph builder degrades those nodes to
// "unknown" (capacity floor) instead of inventing values.
type Signals struct {
	Collection   string
	CollectionID int
	At           time.Time

	Gateway    GatewaySignal
	Partitions []PartitionSignal
	// PartitionsSince is the start of the window the partitions' rates
	// were measured over (the collector's previous sample); zero before
	// the collector has two samples.
	PartitionsSince time.Time
	// PartitionsLongSince is the start of the window the partitions'
	// long rates were measured over (collect.Partitions.LongWindow).
	PartitionsLongSince time.Time
	Centroids           []CentroidSignal
	Replicas            []ReplicaSignal
	Maintenance         []JobSignal
	Indexes             []IndexSignal
	Memory              MemorySignal

	// Unknown lists the signal kinds whose collector failed this sample
	// ("partitions", "replicas", "maintenance", "indexes", "memory",
	// "changefeed", "gateway").
	Unknown map[string]bool
}

// GatewaySignal is the ingestion entry point, from the write gate's
// counters in the shared segment (no SQL).
type GatewaySignal struct {
	WriteRowsPerSec float64
	// DelayedPerSec and RejectedPerSec are statements per second.
	DelayedPerSec  float64
	RejectedPerSec float64
	// WaitFraction is the share of wall time statements spent waiting in
	// the gate (wait_ms delta / interval), summed over backends.
	WaitFraction float64
	// HealerWaitFraction and HealerRejectedPerSec are the waits and
	// refusals under the sidecar's own throttles (a remediation's), left
	// out of the three fields above and of the gateway's capacity.
	HealerWaitFraction   float64
	HealerRejectedPerSec float64
}

// PartitionSignal is one partition (or the table itself when the
// collection is not partitioned).
type PartitionSignal struct {
	RelID           int64
	Name            string
	Shard           int64 // the LIST value when known, else -1
	WriteRowsPerSec float64
	ReadRowsPerSec  float64 // rows read per second: sequential scans, plus index scans (heap fetches or index entries, index-only scans included)
	ScansPerSec     float64 // seq + index scans per second
	// LongWriteRowsPerSec and LongReadRowsPerSec are the same rates over
	// a longer window (Signals.PartitionsLongSince on), which the
	// counters' late flushes do not make read as idle.
	LongWriteRowsPerSec float64
	LongReadRowsPerSec  float64
	LiveRows            int64
	DeadRows            int64
}

// CentroidSignal is one IVF list.
type CentroidSignal struct {
	ID       int64
	ListSize int64
	// InsertsPerSec and DeletesPerSec come from the change feed.
	InsertsPerSec float64
	DeletesPerSec float64
}

// ReplicaSignal is one streaming replica or logical slot.
type ReplicaSignal struct {
	ID         int64 // walsender pid, or a stable hash of the slot name
	Name       string
	State      string
	LagSeconds float64 // replay lag
	LagBytes   int64
	Broken     bool // not streaming, or an inactive slot
	// ReplayStalled: the standby receives WAL (its walsender streams and
	// its flush_lsn is ahead of its replay_lsn) but has applied none of it
	// for ReplayStalledSeconds (pg_wal_replay_pause, a recovery conflict
	// waiting on a standby query, a hung startup process). Less WAL on the
	// primary cannot help such a replica; a slow one (replay moving, just
	// slower than the WAL arrives) is not stalled.
	ReplayStalled bool
	// ReplayStalledSeconds is how long replay_lsn has stayed where it is
	// with received WAL waiting behind it (0 when nothing waits or replay
	// just moved); ReplayStalled once it reaches the collector's bar.
	ReplayStalledSeconds float64
	// ReplayBytesPerSec is how fast replay_lsn advanced between the
	// collector's last two samples (0 on the first sample or for a slot).
	ReplayBytesPerSec float64
}

// JobSignal is one maintenance job: autovacuum/analyze workers, manual
// VACUUM/CREATE INDEX/REINDEX in progress, or the product's own jobs.
type JobSignal struct {
	ID         int64
	Type       string // "autovacuum", "vacuum", "analyze", "create_index", "reindex", "product:<kind>"
	Relation   string
	Running    bool
	WaitingFor string // lock wait event, empty when not waiting
	Progress   float64
	Priority   int // higher is more important; anti-wraparound vacuum is highest
	Queued     int
}

// IndexSignal is one index of the collection.
type IndexSignal struct {
	RelID            int64
	Name             string
	FragmentationPct float64 // pgstatindex leaf_fragmentation
	AvgLeafDensity   float64 // pgstatindex avg_leaf_density (percent)
	SampledAt        time.Time
}

// MemorySignal is the host's or cgroup's memory.
type MemorySignal struct {
	UsedBytes  int64
	LimitBytes int64
	UsagePct   float64
	Source     string // "cgroup v2", "cgroup v1", "/proc/meminfo"
	Consumers  []MemoryConsumer
}

// MemoryConsumer is one large memory user.
type MemoryConsumer struct {
	Name  string
	Bytes int64
}
