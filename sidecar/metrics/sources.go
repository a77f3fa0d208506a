package metrics

import (
	"slices"
	"sync"

	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// RunnerStats follows the daemon's current collect.Runner: the daemon
// replaces the runner whenever the set of collections changes, while the
// registry lives as long as the process.
type RunnerStats struct {
	mu  sync.Mutex
	src StatsSource
}

// Set makes src the runner whose stats are reported (nil: none).
func (r *RunnerStats) Set(src StatsSource) {
	r.mu.Lock()
	r.src = src
	r.mu.Unlock()
}

// Stats implements StatsSource.
func (r *RunnerStats) Stats() []collect.CollectorStats {
	r.mu.Lock()
	src := r.src
	r.mu.Unlock()
	if src == nil {
		return nil
	}
	return src.Stats()
}

// SnapshotCache holds a copy of the integrity loop's snapshots for
// scrapes. monitor.Monitor.Snapshots reads the loop's state without a
// lock, so only the loop's own goroutine may call it; it hands the result
// to Store after each sample and scrapes read the copy.
type SnapshotCache struct {
	mu    sync.Mutex
	snaps []monitor.Snapshot
}

// Store replaces the cached snapshots. It keeps what the metrics use and
// drops the graph and the cut's side, which the loop's tracker owns.
func (c *SnapshotCache) Store(snaps []monitor.Snapshot) {
	cp := make([]monitor.Snapshot, len(snaps))
	for i, s := range snaps {
		s.Cut.Graph, s.Cut.Side = nil, nil
		s.Cut.Witness = slices.Clone(s.Cut.Witness)
		s.Cut.UnknownKinds = slices.Clone(s.Cut.UnknownKinds)
		cp[i] = s
	}
	c.mu.Lock()
	c.snaps = cp
	c.mu.Unlock()
}

// Snapshots implements SnapshotSource. The result is the caller's.
func (c *SnapshotCache) Snapshots() []monitor.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.snaps)
	for i := range out {
		out[i].Cut.Witness = slices.Clone(out[i].Cut.Witness)
		out[i].Cut.UnknownKinds = slices.Clone(out[i].Cut.UnknownKinds)
	}
	return out
}
