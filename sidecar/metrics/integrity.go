package metrics

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// SnapshotSource gives the integrity loop's latest view of each
// collection. *monitor.Monitor has this method but is not safe to call
// beside its running loop: the daemon passes a *SnapshotCache the loop
// fills.
type SnapshotSource interface {
	Snapshots() []monitor.Snapshot
}

// IntegrityCollector reports each collection's integrity. State, λ and the
// sample time come from the segment, not from the loop: the watchdog marks
// states unknown there when the sidecar is away, and that is what the
// gate acts on. The witness edges exist only in the loop.
type IntegrityCollector struct {
	seg   Segment
	dbOID uint32
	snaps SnapshotSource

	state, lambda, lastSample, witness *prometheus.Desc
}

// NewIntegrityCollector reads seg (and snaps, if not nil) at every scrape.
func NewIntegrityCollector(seg Segment, dbOID uint32, snaps SnapshotSource) *IntegrityCollector {
	col := []string{"collection"}
	return &IntegrityCollector{
		seg: seg, dbOID: dbOID, snaps: snaps,
		state: prometheus.NewDesc(namespace+"_integrity_state",
			"Integrity state published in the segment: 0 normal, 1 stress, 2 critical, 3 unknown (not yet sampled, or the sidecar is away).", col, nil),
		lambda: prometheus.NewDesc(namespace+"_integrity_lambda_cut",
			"Normalised minimum cut of the collection's health graph, in [0, 1] (0.8 and 0.3 are the default stress and critical thresholds).", col, nil),
		lastSample: prometheus.NewDesc(namespace+"_integrity_last_sample_timestamp_seconds",
			"Unix time of the last integrity sample the sidecar published.", col, nil),
		witness: prometheus.NewDesc(namespace+"_integrity_witness_edges",
			"Edges crossing the health graph's minimum cut at the last sample, by edge type: they name the weakest components.", []string{"collection", "edge_type"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *IntegrityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.lambda
	ch <- c.lastSample
	ch <- c.witness
}

// Collect implements prometheus.Collector.
func (c *IntegrityCollector) Collect(ch chan<- prometheus.Metric) {
	cols, err := collections(c.seg, c.dbOID)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.state, err)
		return
	}
	present := make(map[string]bool, len(cols))
	for _, col := range cols {
		present[col.Name] = true
		in, err := c.seg.ReadIntegrity(col.Slot)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.state, fmt.Errorf("collection %s: %w", col.Name, err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(in.State), col.Name)
		// Never sampled: λ reads 0 in the segment, which would look
		// critical; the series stays absent until a real value exists.
		if in.Updated.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.lambda, prometheus.GaugeValue, in.Lambda, col.Name)
		ch <- prometheus.MustNewConstMetric(c.lastSample, prometheus.GaugeValue,
			float64(in.Updated.UnixMicro())/1e6, col.Name)
	}
	if c.snaps == nil {
		return
	}
	for _, s := range c.snaps.Snapshots() {
		// A collection the loop still holds but that was unregistered, or
		// one it has not sampled yet, has no cut to report.
		if !present[s.Collection] || s.Cut.Stats.Samples == 0 || math.IsNaN(s.Cut.LambdaNorm) {
			continue
		}
		counts := map[classify.EdgeType]int{}
		for _, w := range s.Cut.Witness {
			counts[w.EdgeType]++
		}
		// Every known type, zeros included, so a series does not vanish
		// when the cut moves elsewhere; an unexpected type is still shown.
		for _, t := range classify.EdgeTypes() {
			ch <- prometheus.MustNewConstMetric(c.witness, prometheus.GaugeValue, float64(counts[t]), s.Collection, string(t))
			delete(counts, t)
		}
		for t, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.witness, prometheus.GaugeValue, float64(n), s.Collection, string(t))
		}
	}
}
