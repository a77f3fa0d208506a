package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ruvector/ruvector-healing/shmproto"
)

// GateCollector reports the write gate's throttles and live counters from
// the segment, per collection and op. The counters restart from zero with
// the segment (ruvector_segment_generation steps), which rate() treats as
// a counter reset.
type GateCollector struct {
	seg   Segment
	dbOID uint32

	throttle, admitted, delayed, rejected, wait, baseline *prometheus.Desc
}

// NewGateCollector reads seg at every scrape.
func NewGateCollector(seg Segment, dbOID uint32) *GateCollector {
	l := []string{"collection", "op"}
	return &GateCollector{
		seg: seg, dbOID: dbOID,
		throttle: prometheus.NewDesc(namespace+"_throttle_percent",
			"Throttle of an op in percent (0 none, 100 refuses writes) and who set it (none, sidecar, manual).",
			[]string{"collection", "op", "set_by"}, nil),
		admitted: prometheus.NewDesc(namespace+"_gate_admitted_rows_total",
			"Rows the write gate admitted.", l, nil),
		delayed: prometheus.NewDesc(namespace+"_gate_delayed_statements_total",
			"Statements the write gate made wait for their turn under a throttle.", l, nil),
		rejected: prometheus.NewDesc(namespace+"_gate_rejected_statements_total",
			"Statements the write gate refused (throttle 100, or a wait beyond ruvector.throttle_max_wait).", l, nil),
		wait: prometheus.NewDesc(namespace+"_gate_wait_seconds_total",
			"Seconds statements spent waiting in the write gate.", l, nil),
		baseline: prometheus.NewDesc(namespace+"_gate_baseline_rows_per_second",
			"The unthrottled write rate the gate measured, from which a throttle's admitted rate is derived.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *GateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.throttle
	ch <- c.admitted
	ch <- c.delayed
	ch <- c.rejected
	ch <- c.wait
	ch <- c.baseline
}

// Collect implements prometheus.Collector.
func (c *GateCollector) Collect(ch chan<- prometheus.Metric) {
	cols, err := collections(c.seg, c.dbOID)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.throttle, err)
		return
	}
	for _, col := range cols {
		for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
			opName := shmproto.OpNames[op]
			th, err := c.seg.ReadThrottle(col.Slot, op)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(c.throttle, fmt.Errorf("collection %s op %s: %w", col.Name, opName, err))
				continue
			}
			setBy := "unknown"
			if int(th.SetBy) < len(shmproto.SetByNames) {
				setBy = shmproto.SetByNames[th.SetBy]
			}
			ch <- prometheus.MustNewConstMetric(c.throttle, prometheus.GaugeValue, float64(th.Pct), col.Name, opName, setBy)

			ct, err := c.seg.ReadCounters(col.Slot, op)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(c.admitted, fmt.Errorf("collection %s op %s: %w", col.Name, opName, err))
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.admitted, prometheus.CounterValue, float64(ct.AdmittedRows), col.Name, opName)
			ch <- prometheus.MustNewConstMetric(c.delayed, prometheus.CounterValue, float64(ct.DelayedStatements), col.Name, opName)
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(ct.RejectedStatements), col.Name, opName)
			ch <- prometheus.MustNewConstMetric(c.wait, prometheus.CounterValue, float64(ct.WaitMicros)/1e6, col.Name, opName)
			ch <- prometheus.MustNewConstMetric(c.baseline, prometheus.GaugeValue, ct.BaselineRowsPerSec, col.Name, opName)
		}
	}
}
