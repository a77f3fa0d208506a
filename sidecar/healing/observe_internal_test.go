package healing

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// A degraded collection is triggered again every DegradedEvery while λ is
// below its restore level, and not once λ is back at it (the state only
// waits out its restore hold); the first trigger of an episode and an
// escalation to critical always fire.
func TestObserveDoesNotRetriggerDuringTheRestoreHold(t *testing.T) {
	s := &Service{cfg: ServiceConfig{DegradedEvery: 5 * time.Second, Log: zerolog.Nop()}, isLeader: true,
		auto: make(chan Trigger, 16), states: map[string]collState{}}
	t0 := time.Now()
	fired := func(state strategy.IntegrityState, lambda float64, at time.Duration) bool {
		s.Observe(Trigger{Collection: "c", State: state, Lambda: lambda, RestoreLambda: 0.8}, t0.Add(at))
		select {
		case <-s.auto:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		state  strategy.IntegrityState
		lambda float64
		at     time.Duration
		want   bool
	}{
		{strategy.StateStress, 0.3, 0, true},                   // into stress
		{strategy.StateStress, 0.3, 2 * time.Second, false},    // too soon
		{strategy.StateStress, 0.4, 6 * time.Second, true},     // still low after DegradedEvery
		{strategy.StateStress, 0.95, 12 * time.Second, false},  // restored, holding
		{strategy.StateStress, 0.95, 30 * time.Second, false},  // still holding
		{strategy.StateCritical, 0.05, 31 * time.Second, true}, // escalation
		{strategy.StateNormal, 0.95, 40 * time.Second, false},
		{strategy.StateStress, 0.9, 41 * time.Second, true}, // a new episode fires whatever λ says
	}
	for i, st := range steps {
		if got := fired(st.state, st.lambda, st.at); got != st.want {
			t.Fatalf("step %d (%s λ %.2f at %v): fired %v, want %v", i, st.state, st.lambda, st.at, got, st.want)
		}
	}
}
