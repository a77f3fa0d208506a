package healing

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// A queued trigger is dropped when the latest sample of its collection is
// normal again, and runs otherwise (degraded, another collection's sample
// under the name, or no sample).
func TestQueuedTriggerOfARecoveredCollection(t *testing.T) {
	latest := map[string]Trigger{}
	s := &Service{cfg: ServiceConfig{Log: zerolog.Nop(), Current: func(name string) (Trigger, bool) {
		tr, ok := latest[name]
		return tr, ok
	}}}
	queued := Trigger{Collection: "emb", CollectionID: 7, State: strategy.StateStress, Lambda: 0.3}
	for _, tc := range []struct {
		latest *Trigger
		want   bool
	}{
		{nil, false},
		{&Trigger{Collection: "emb", CollectionID: 7, State: strategy.StateStress}, false},
		{&Trigger{Collection: "emb", CollectionID: 7, State: strategy.StateCritical}, false},
		{&Trigger{Collection: "emb", CollectionID: 8, State: strategy.StateNormal}, false},
		{&Trigger{Collection: "emb", CollectionID: 7, State: strategy.StateNormal, Lambda: 0.9}, true},
	} {
		delete(latest, "emb")
		if tc.latest != nil {
			latest["emb"] = *tc.latest
		}
		if got := s.recovered(queued); got != tc.want {
			t.Errorf("latest %+v: recovered %v, want %v", tc.latest, got, tc.want)
		}
	}
	if (&Service{cfg: ServiceConfig{Log: zerolog.Nop()}}).recovered(queued) {
		t.Error("no Current: recovered")
	}
}
