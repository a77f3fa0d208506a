package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHealingMetricsMove(t *testing.T) {
	h := NewHealing()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	if err := h.Register(reg); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "ruvector_healing_attempts_total"); err != nil || n != 0 {
		t.Fatalf("attempts before any remediation: %d %v", n, err)
	}
	h.SetEnabled(true)
	h.RemediationStarted("emb", "throttle_ingestion")
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ruvector_healing_active Remediations running now on the collection (0 or 1).
# TYPE ruvector_healing_active gauge
ruvector_healing_active{collection="emb"} 1
`), "ruvector_healing_active"); err != nil {
		t.Fatal(err)
	}
	h.Finished("emb", "throttle_ingestion", HealingResult{Verified: true, Improvement: 0.4, Duration: 3 * time.Second})
	h.RemediationStarted("emb", "throttle_ingestion")
	h.Finished("emb", "throttle_ingestion", HealingResult{Verified: false, Improvement: 0.0, Duration: 20 * time.Second})
	h.SetCooldownUntil("emb", now.Add(time.Minute))
	h.Recovered("emb", 90*time.Second)
	want := `
# HELP ruvector_healing_active Remediations running now on the collection (0 or 1).
# TYPE ruvector_healing_active gauge
ruvector_healing_active{collection="emb"} 0
# HELP ruvector_healing_attempts_total Remediations started, by collection and strategy.
# TYPE ruvector_healing_attempts_total counter
ruvector_healing_attempts_total{collection="emb",strategy="throttle_ingestion"} 2
# HELP ruvector_healing_avg_improvement Mean relative λ improvement of finished remediations (0.25 = 25%).
# TYPE ruvector_healing_avg_improvement gauge
ruvector_healing_avg_improvement{collection="emb"} 0.2
# HELP ruvector_healing_cooldown 1 while the collection is in its healing cooldown (min_healing_interval_seconds).
# TYPE ruvector_healing_cooldown gauge
ruvector_healing_cooldown{collection="emb"} 1
# HELP ruvector_healing_enabled 1 when automatic healing is enabled (healing_config enabled) and this sidecar is the active one.
# TYPE ruvector_healing_enabled gauge
ruvector_healing_enabled 1
# HELP ruvector_healing_success_rate Verified remediations / finished remediations seen by this sidecar.
# TYPE ruvector_healing_success_rate gauge
ruvector_healing_success_rate{collection="emb"} 0.5
# HELP ruvector_healing_success_total Remediations that succeeded and verified (λ rose by at least 10%).
# TYPE ruvector_healing_success_total counter
ruvector_healing_success_total{collection="emb",strategy="throttle_ingestion"} 1
# HELP ruvector_healing_time_to_recovery_seconds Seconds from leaving normal to returning to normal, last recovery.
# TYPE ruvector_healing_time_to_recovery_seconds gauge
ruvector_healing_time_to_recovery_seconds{collection="emb"} 90
`
	names := []string{"ruvector_healing_active", "ruvector_healing_attempts_total", "ruvector_healing_avg_improvement",
		"ruvector_healing_cooldown", "ruvector_healing_enabled", "ruvector_healing_success_rate",
		"ruvector_healing_success_total", "ruvector_healing_time_to_recovery_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "ruvector_healing_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("duration series %d %v", n, err)
	}
	// The cooldown ends by the clock.
	now = now.Add(2 * time.Minute)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ruvector_healing_cooldown 1 while the collection is in its healing cooldown (min_healing_interval_seconds).
# TYPE ruvector_healing_cooldown gauge
ruvector_healing_cooldown{collection="emb"} 0
`), "ruvector_healing_cooldown"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}
