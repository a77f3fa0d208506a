package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ruvector/ruvector-healing/sidecar/collect"
)

// StatsSource gives the collectors' counters (*collect.Runner).
type StatsSource interface {
	Stats() []collect.CollectorStats
}

// RunnerCollector reports how the collectors fare, like postgres_exporter's
// scrape metrics: a failing collector leaves its kind unknown in the health
// graph, so the integrity state alone cannot tell a blind spot from a
// sick component.
type RunnerCollector struct {
	src StatsSource

	duration, success, errors, timeouts *prometheus.Desc
}

// NewRunnerCollector reads src at every scrape.
func NewRunnerCollector(src StatsSource) *RunnerCollector {
	l := []string{"collector"}
	return &RunnerCollector{
		src: src,
		duration: prometheus.NewDesc(namespace+"_collector_last_duration_seconds",
			"Duration of the collector's last call.", l, nil),
		success: prometheus.NewDesc(namespace+"_collector_success",
			"1 if the collector's last call succeeded, 0 if it failed or timed out (absent until its first result).", l, nil),
		errors: prometheus.NewDesc(namespace+"_collector_errors_total",
			"Failed collector calls, timeouts and panics included, since the collectors last started.", l, nil),
		timeouts: prometheus.NewDesc(namespace+"_collector_timeouts_total",
			"Collector calls that exceeded their timeout, since the collectors last started.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *RunnerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.duration
	ch <- c.success
	ch <- c.errors
	ch <- c.timeouts
}

// Collect implements prometheus.Collector.
func (c *RunnerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.src.Stats() {
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.Errors), st.Name)
		ch <- prometheus.MustNewConstMetric(c.timeouts, prometheus.CounterValue, float64(st.Timeouts), st.Name)
		// Before the first result (or after only warm-up samples, which
		// are neither) there is no last call to speak of: a 0 would fire
		// the failing-collector alert on a collector that is merely slow.
		if st.LastSuccessAt.IsZero() && st.LastErrorAt.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, st.LastDuration.Seconds(), st.Name)
		ok := 0.0
		if !st.LastErrorAt.After(st.LastSuccessAt) {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, ok, st.Name)
	}
}
