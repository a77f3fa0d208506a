package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Healing holds the spec's ruvector_healing_* metrics. The engine feeds it
// through the small interface it defines (healing.Observer:
// RemediationStarted/RemediationFinished); the healing service adds what
// only it sees (whether healing is enabled, the cooldown, recoveries).
// It owns its vectors; Register it on the registry the daemon serves.
type Healing struct {
	attempts *prometheus.CounterVec
	success  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	active   *prometheus.GaugeVec
	cooldown *prometheus.Desc
	rate     *prometheus.GaugeVec
	improve  *prometheus.GaugeVec
	recovery *prometheus.GaugeVec
	enabled  prometheus.Gauge

	mu    sync.Mutex
	stats map[string]*healingStats
	now   func() time.Time
}

// healingStats are the finished remediations of one collection this
// process saw, from which the success rate and average improvement are
// derived (the same definitions as sidecar/learning: successes are
// verified, improvement averaged over attempts).
type healingStats struct {
	finished, verified int
	improvementSum     float64
	cooldownUntil      time.Time
}

// NewHealing builds the metrics; nothing is registered.
func NewHealing() *Healing {
	coll := []string{"collection"}
	collStrat := []string{"collection", "strategy"}
	return &Healing{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "healing",
			Name: "attempts_total", Help: "Remediations started, by collection and strategy."}, collStrat),
		success: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "healing",
			Name: "success_total", Help: "Remediations that succeeded and verified (λ rose by at least 10%)."}, collStrat),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "healing",
			Name: "duration_seconds", Help: "Duration of remediations, execution to recorded outcome.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}}, collStrat),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "healing",
			Name: "active", Help: "Remediations running now on the collection (0 or 1)."}, coll),
		cooldown: prometheus.NewDesc(prometheus.BuildFQName(namespace, "healing", "cooldown"),
			"1 while the collection is in its healing cooldown (min_healing_interval_seconds).", coll, nil),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "healing",
			Name: "success_rate", Help: "Verified remediations / finished remediations seen by this sidecar."}, coll),
		improve: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "healing",
			Name: "avg_improvement", Help: "Mean relative λ improvement of finished remediations (0.25 = 25%)."}, coll),
		recovery: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "healing",
			Name: "time_to_recovery_seconds", Help: "Seconds from leaving normal to returning to normal, last recovery."}, coll),
		enabled: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "healing",
			Name: "enabled", Help: "1 when automatic healing is enabled (healing_config enabled) and this sidecar is the active one."}),
		stats: map[string]*healingStats{},
		now:   time.Now,
	}
}

// Register adds the metrics to reg.
func (h *Healing) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{h.attempts, h.success, h.duration, h.active, cooldownCollector{h},
		h.rate, h.improve, h.recovery, h.enabled} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// RemediationStarted counts an attempt and marks the collection active.
func (h *Healing) RemediationStarted(collection, strategy string) {
	h.attempts.WithLabelValues(collection, strategy).Inc()
	h.active.WithLabelValues(collection).Inc()
	h.ensure(collection)
}

// HealingResult is what Finished needs of an outcome (healing.Outcome
// converts; metrics does not import the engine).
type HealingResult struct {
	Verified bool
	// Improvement is (λ_final − λ_initial) / λ_initial; 0 when λ was not
	// measured.
	Improvement float64
	Duration    time.Duration
}

// Finished records the end of a remediation.
func (h *Healing) Finished(collection, strategy string, r HealingResult) {
	if r.Verified {
		h.success.WithLabelValues(collection, strategy).Inc()
	}
	h.duration.WithLabelValues(collection, strategy).Observe(r.Duration.Seconds())
	h.active.WithLabelValues(collection).Dec()
	h.mu.Lock()
	s := h.ensureLocked(collection)
	s.finished++
	if r.Verified {
		s.verified++
	}
	s.improvementSum += r.Improvement
	rate, avg := float64(s.verified)/float64(s.finished), s.improvementSum/float64(s.finished)
	h.mu.Unlock()
	h.rate.WithLabelValues(collection).Set(rate)
	h.improve.WithLabelValues(collection).Set(avg)
}

// SetEnabled sets ruvector_healing_enabled.
func (h *Healing) SetEnabled(on bool) {
	if on {
		h.enabled.Set(1)
	} else {
		h.enabled.Set(0)
	}
}

// SetCooldownUntil records the end of the collection's cooldown; the gauge
// reads 1 until then (refreshed at scrape time).
func (h *Healing) SetCooldownUntil(collection string, until time.Time) {
	h.mu.Lock()
	h.ensureLocked(collection).cooldownUntil = until
	h.mu.Unlock()
}

// Recovered records a collection's return to normal after d degraded.
func (h *Healing) Recovered(collection string, d time.Duration) {
	h.ensure(collection)
	h.recovery.WithLabelValues(collection).Set(d.Seconds())
}

func (h *Healing) ensure(collection string) {
	h.mu.Lock()
	h.ensureLocked(collection)
	h.mu.Unlock()
}

// ensureLocked makes the collection's series exist from its first event,
// so that "no success yet" reads 0 rather than absent.
func (h *Healing) ensureLocked(collection string) *healingStats {
	s, ok := h.stats[collection]
	if !ok {
		s = &healingStats{}
		h.stats[collection] = s
		h.active.WithLabelValues(collection)
	}
	return s
}

// cooldownCollector reads the cooldowns at scrape time: a cooldown ends by
// the clock, not by an event.
type cooldownCollector struct{ h *Healing }

func (c cooldownCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.h.cooldown }
func (c cooldownCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.h.now()
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	for name, s := range c.h.stats {
		v := 0.0
		if now.Before(s.cooldownUntil) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.h.cooldown, prometheus.GaugeValue, v, name)
	}
}
