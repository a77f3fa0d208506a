package healing

import (
	"math"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

func TestMeasureSignal(t *testing.T) {
	hot := classify.Problem{Class: classify.ClassHotspotCongestion,
		HotspotCongestion: &classify.HotspotCongestion{PartitionIDs: []int64{12}, LoadRatio: 4}}
	before := classify.Metrics{PartitionLoad: map[int64]float64{10: 100, 11: 100, 12: 400, 13: 100}}
	after := classify.Metrics{PartitionLoad: map[int64]float64{10: 200, 11: 200, 12: 0, 13: 200}}
	at := time.Unix(1700000000, 0)
	s := measureSignal(hot, before, &after, at)
	if s == nil || s.Name != "load_ratio" || s.Before == nil || *s.Before != 400/175.0 ||
		s.After == nil || *s.After != 0 || !s.AfterAt.Equal(at) {
		t.Fatalf("hotspot signal %+v", s)
	}
	// No measurement after the wait: before only.
	if s := measureSignal(hot, before, nil, at); s.After != nil || s.AfterAt != nil || s.Before == nil {
		t.Fatalf("without after %+v", s)
	}
	// The same entities after: a partition missing from the later sample
	// gives no after value rather than another partition's.
	gone := classify.Metrics{PartitionLoad: map[int64]float64{10: 50}}
	if s := measureSignal(hot, before, &gone, at); s.After != nil {
		t.Fatalf("after from other partitions %+v", s)
	}

	for _, tc := range []struct {
		p      classify.Problem
		m      classify.Metrics
		name   string
		want   float64
		wantOK bool
	}{
		{classify.Problem{CentroidSkew: &classify.CentroidSkew{CentroidIDs: []int64{1}}},
			classify.Metrics{CentroidListSizes: map[int64]int64{1: 30, 2: 10, 3: 20}}, "skew_factor", 1.5, true},
		{classify.Problem{ReplicationLag: &classify.ReplicationLag{ReplicaIDs: []int64{7, 8}}},
			classify.Metrics{ReplicaLagSeconds: map[int64]float64{7: 3, 8: 12, 9: 99}}, "lag_seconds", 12, true},
		{classify.Problem{MaintenanceContention: &classify.MaintenanceContention{}},
			classify.Metrics{MaintenanceQueueDepth: 9}, "queue_depth", 9, true},
		{classify.Problem{IndexFragmentation: &classify.IndexFragmentation{IndexIDs: []int64{5}}},
			classify.Metrics{IndexFragmentationPct: map[int64]float64{5: 42, 6: 90}}, "fragmentation_pct", 42, true},
		{classify.Problem{MemoryPressure: &classify.MemoryPressure{}},
			classify.Metrics{MemoryUsagePct: 91}, "current_usage_pct", 91, true},
		{classify.Problem{MemoryPressure: &classify.MemoryPressure{}},
			classify.Metrics{MemoryUsagePct: math.NaN()}, "current_usage_pct", 0, false},
		{classify.Problem{ReplicationLag: &classify.ReplicationLag{ReplicaIDs: []int64{7}}},
			classify.Metrics{ReplicaLagSeconds: map[int64]float64{7: math.Inf(1)}}, "lag_seconds", 0, false},
	} {
		name, _, v, ok := signalOf(tc.p, tc.m)
		if name != tc.name || ok != tc.wantOK || (ok && v != tc.want) {
			t.Errorf("%s: got %s %v %v, want %v %v", tc.name, name, v, ok, tc.want, tc.wantOK)
		}
	}
	if s := measureSignal(classify.Problem{Class: classify.ClassUnknown, Unknown: &classify.Unknown{}}, before, &after, at); s != nil {
		t.Fatalf("unknown problem has a signal %+v", s)
	}
}
