// Package metrics exposes the sidecar to Prometheus. As in
// postgres_exporter, each concern is one prometheus.Collector that reads its
// source at scrape time (the shared segment, the collectors' runner, the
// integrity loop's snapshots), so a scrape always shows the present and
// nothing is kept twice. Nothing is registered globally: Register takes the
// registry the caller serves.
//
// The healing metrics of the spec (ruvector_healing_*) are Healing's: the
// engine and the healing service feed them as remediations happen.
package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ruvector/ruvector-healing/shmproto"
)

const namespace = "ruvector"

// Sources are what the collectors read. Segment is required; the others
// may be nil (their metrics are then absent).
type Sources struct {
	Segment Segment
	// DatabaseOID, when non-zero, limits the per-collection metrics to the
	// collections of that database (the one the sidecar monitors), so two
	// databases registering the same name cannot collide.
	DatabaseOID uint32
	// Stats gives the collectors' counters (a *collect.Runner, or a
	// *RunnerStats that follows the runner across restarts).
	Stats StatsSource
	// Snapshots gives the integrity loop's last cuts (a *SnapshotCache fed
	// by the loop).
	Snapshots SnapshotSource
}

// Segment is what the collectors read of the shared segment
// (*shmproto.Segment).
type Segment interface {
	Info() (shmproto.Info, error)
	Collections() ([]shmproto.Collection, error)
	ReadIntegrity(slot int) (shmproto.Integrity, error)
	ReadThrottle(slot int, op shmproto.Op) (shmproto.Throttle, error)
	ReadCounters(slot int, op shmproto.Op) (shmproto.Counters, error)
}

// Register adds the Go and process collectors and the sidecar's own to reg.
func Register(reg prometheus.Registerer, src Sources) error {
	if src.Segment == nil {
		return fmt.Errorf("metrics: register: no segment")
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		NewSegmentCollector(src.Segment),
		NewIntegrityCollector(src.Segment, src.DatabaseOID, src.Snapshots),
		NewGateCollector(src.Segment, src.DatabaseOID),
	}
	if src.Stats != nil {
		cs = append(cs, NewRunnerCollector(src.Stats))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: register: %w", err)
		}
	}
	return nil
}

// collections lists the segment's collections of one database (all when
// dbOID is 0).
func collections(seg Segment, dbOID uint32) ([]shmproto.Collection, error) {
	all, err := seg.Collections()
	if err != nil {
		return nil, fmt.Errorf("collections: %w", err)
	}
	if dbOID == 0 {
		return all, nil
	}
	out := all[:0]
	for _, c := range all {
		if c.DatabaseOID == dbOID {
			out = append(out, c)
		}
	}
	return out, nil
}
