package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SegmentCollector reports the segment header: whether it is readable, its
// generation (bumped at every server start, so a step explains counters
// that restart from zero), the sidecar outages the watchdog counted, and
// how long ago the watchdog last ran.
type SegmentCollector struct {
	seg Segment
	now func() time.Time

	up, generation, outages, watchdogAge *prometheus.Desc
}

// NewSegmentCollector reads seg's header at every scrape.
func NewSegmentCollector(seg Segment) *SegmentCollector {
	return &SegmentCollector{
		seg: seg,
		now: time.Now,
		up: prometheus.NewDesc(namespace+"_segment_up",
			"1 if the shared segment's header could be read at this scrape, else 0.", nil, nil),
		generation: prometheus.NewDesc(namespace+"_segment_generation",
			"Generation of the shared segment, bumped at every server start including crash restarts (gate counters restart from zero with it).", nil, nil),
		outages: prometheus.NewDesc(namespace+"_sidecar_outages_total",
			"Sidecar outages the watchdog detected (heartbeat older than ruvector.sidecar_timeout) since the server started.", nil, nil),
		watchdogAge: prometheus.NewDesc(namespace+"_watchdog_heartbeat_age_seconds",
			"Seconds since the extension's watchdog last checked the segment.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *SegmentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.generation
	ch <- c.outages
	ch <- c.watchdogAge
}

// Collect implements prometheus.Collector.
func (c *SegmentCollector) Collect(ch chan<- prometheus.Metric) {
	in, err := c.seg.Info()
	if err != nil {
		// Like postgres_exporter's pg_up: the scrape still succeeds and
		// says the source is gone, which an alert can match.
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.generation, prometheus.GaugeValue, float64(in.Generation))
	ch <- prometheus.MustNewConstMetric(c.outages, prometheus.CounterValue, float64(in.SidecarOutages))
	// A watchdog that never beat (just started) has no age: leaving the
	// series out beats reporting 56 years.
	if !in.WatchdogBeat.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.watchdogAge, prometheus.GaugeValue,
			max(0, c.now().Sub(in.WatchdogBeat).Seconds()))
	}
}
