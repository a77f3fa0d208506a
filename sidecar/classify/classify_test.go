package classify

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// edges builds n witness edges of type t, each from a distinct node of kind
// from to the root, so node counts stay predictable.
func edges(t EdgeType, from NodeKind, n int, firstID int64) []WitnessEdge {
	out := make([]WitnessEdge, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, WitnessEdge{
			Source:   NodeRef{Kind: from, ID: firstID + int64(i)},
			Target:   NodeRef{Kind: NodeRoot, ID: 0, Name: "root"},
			EdgeType: t, Capacity: 0.4, Flow: 0.4,
		})
	}
	return out
}

func concat(parts ...[]WitnessEdge) []WitnessEdge {
	var out []WitnessEdge
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestRuleBoundaries(t *testing.T) {
	th := DefaultThresholds()
	tests := []struct {
		name    string
		witness []WitnessEdge
		m       Metrics
		want    Class
	}{
		{"no input", nil, Metrics{}, ClassUnknown},
		{"partition_link at threshold", edges(EdgePartitionLink, NodePartition, 3, 1), Metrics{}, ClassUnknown},
		{"partition_link one above", edges(EdgePartitionLink, NodePartition, 4, 1), Metrics{}, ClassHotspotCongestion},
		{"centroids at threshold", edges(EdgeRoutingLink, NodeCentroid, 5, 1), Metrics{}, ClassUnknown},
		{"centroids one above", edges(EdgeRoutingLink, NodeCentroid, 6, 1), Metrics{}, ClassCentroidSkew},
		{"replication none", edges(EdgeRoutingLink, NodeShard, 2, 1), Metrics{}, ClassUnknown},
		{"replication one", edges(EdgeReplication, NodeReplica, 1, 1), Metrics{}, ClassReplicationLag},
		{"dependency at threshold", edges(EdgeDependency, NodeMaintenanceDep, 2, 1), Metrics{}, ClassUnknown},
		{"dependency one above", edges(EdgeDependency, NodeMaintenanceDep, 3, 1), Metrics{}, ClassMaintenanceContention},
		{"memory at threshold", nil, Metrics{MemoryUsagePct: 85}, ClassUnknown},
		{"memory just above", nil, Metrics{MemoryUsagePct: 85.01}, ClassMemoryPressure},
		{"memory one above", nil, Metrics{MemoryUsagePct: 86}, ClassMemoryPressure},
		{"fragmentation at threshold", nil, Metrics{IndexFragmentationPct: map[int64]float64{1: 30}}, ClassUnknown},
		{"fragmentation one above", nil, Metrics{IndexFragmentationPct: map[int64]float64{1: 31}}, ClassIndexFragmentation},
		{"fragmentation worst index counts", nil, Metrics{IndexFragmentationPct: map[int64]float64{1: 5, 2: 30.5}}, ClassIndexFragmentation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Classify(tc.witness, tc.m, th)
			if d.Problem.Class != tc.want || d.Rule != tc.want {
				t.Fatalf("class %s rule %s, want %s\n%s", d.Problem.Class, d.Rule, tc.want, d.Explain())
			}
			if err := d.Problem.Validate(); err != nil {
				t.Fatalf("invalid problem: %v", err)
			}
		})
	}
}

func TestCentroidCountingIsDistinctOverBothEndpoints(t *testing.T) {
	th := DefaultThresholds()
	// Six edges but the same centroid on each: one distinct centroid.
	same := make([]WitnessEdge, 6)
	for i := range same {
		same[i] = WitnessEdge{Source: NodeRef{Kind: NodeCentroid, ID: 7}, Target: NodeRef{Kind: NodeShard, ID: int64(i)}, EdgeType: EdgeRoutingLink}
	}
	// Three edges with a centroid at both ends: six distinct centroids.
	pairs := make([]WitnessEdge, 3)
	for i := range pairs {
		pairs[i] = WitnessEdge{Source: NodeRef{Kind: NodeCentroid, ID: int64(2 * i)}, Target: NodeRef{Kind: NodeCentroid, ID: int64(2*i + 1)}, EdgeType: EdgeRoutingLink}
	}
	// Same id, different kind: a shard 1 is not centroid 1.
	mixed := concat(edges(EdgeRoutingLink, NodeCentroid, 5, 1), edges(EdgeRoutingLink, NodeShard, 5, 1))
	tests := []struct {
		name  string
		w     []WitnessEdge
		count int
		want  Class
	}{
		{"repeated centroid", same, 1, ClassUnknown},
		{"centroids on both ends", pairs, 6, ClassCentroidSkew},
		{"ids shared across kinds", mixed, 5, ClassUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Classify(tc.w, Metrics{}, th)
			if got := d.NodeCounts[NodeCentroid]; got != tc.count {
				t.Errorf("centroid count %d, want %d", got, tc.count)
			}
			if d.Problem.Class != tc.want {
				t.Errorf("class %s, want %s", d.Problem.Class, tc.want)
			}
		})
	}
}

func TestRuleOrder(t *testing.T) {
	hot := edges(EdgePartitionLink, NodePartition, 4, 100)
	cen := edges(EdgeRoutingLink, NodeCentroid, 6, 200)
	rep := edges(EdgeReplication, NodeReplica, 1, 300)
	dep := edges(EdgeDependency, NodeMaintenanceDep, 3, 400)
	mem := Metrics{MemoryUsagePct: 95, IndexFragmentationPct: map[int64]float64{1: 80}}
	frag := Metrics{IndexFragmentationPct: map[int64]float64{1: 80}}
	tests := []struct {
		name     string
		w        []WitnessEdge
		m        Metrics
		want     Class
		shadowed []Class
	}{
		{"all present: hotspot first", concat(hot, cen, rep, dep), mem, ClassHotspotCongestion,
			[]Class{ClassCentroidSkew, ClassReplicationLag, ClassMaintenanceContention, ClassMemoryPressure, ClassIndexFragmentation}},
		{"centroid before replication", concat(cen, rep, dep), mem, ClassCentroidSkew,
			[]Class{ClassReplicationLag, ClassMaintenanceContention, ClassMemoryPressure, ClassIndexFragmentation}},
		{"replication before dependency", concat(rep, dep), mem, ClassReplicationLag,
			[]Class{ClassMaintenanceContention, ClassMemoryPressure, ClassIndexFragmentation}},
		{"dependency before memory", dep, mem, ClassMaintenanceContention,
			[]Class{ClassMemoryPressure, ClassIndexFragmentation}},
		{"memory before fragmentation", nil, mem, ClassMemoryPressure, []Class{ClassIndexFragmentation}},
		{"fragmentation last", nil, frag, ClassIndexFragmentation, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Classify(tc.w, tc.m, DefaultThresholds())
			if d.Problem.Class != tc.want {
				t.Fatalf("class %s, want %s", d.Problem.Class, tc.want)
			}
			var shadowed []Class
			firedSeen := false
			for _, c := range d.Checks {
				if c.Rule == tc.want {
					firedSeen = true
					if !c.Evaluated || !c.Matched {
						t.Errorf("fired rule check %+v", c)
					}
					continue
				}
				if c.Evaluated == firedSeen {
					t.Errorf("rule %s evaluated=%v, fired seen=%v", c.Rule, c.Evaluated, firedSeen)
				}
				if !c.Evaluated && c.Matched {
					shadowed = append(shadowed, c.Rule)
				}
			}
			if !reflect.DeepEqual(shadowed, tc.shadowed) {
				t.Errorf("shadowed %v, want %v", shadowed, tc.shadowed)
			}
		})
	}
}

func TestChecksOrderAndValues(t *testing.T) {
	w := concat(edges(EdgePartitionLink, NodePartition, 2, 1), edges(EdgeDependency, NodeMaintenanceDep, 3, 10))
	d := Classify(w, Metrics{MemoryUsagePct: 40}, DefaultThresholds())
	want := []struct {
		rule      Class
		observed  float64
		threshold float64
		matched   bool
		evaluated bool
	}{
		{ClassHotspotCongestion, 2, 3, false, true},
		{ClassCentroidSkew, 0, 5, false, true},
		{ClassReplicationLag, 0, 0, false, true},
		{ClassMaintenanceContention, 3, 2, true, true},
		{ClassMemoryPressure, 40, 85, false, false},
		{ClassIndexFragmentation, 0, 30, false, false},
	}
	if len(d.Checks) != len(want) {
		t.Fatalf("%d checks, want %d", len(d.Checks), len(want))
	}
	for i, w := range want {
		c := d.Checks[i]
		if c.Rule != w.rule || c.Observed != w.observed || c.Threshold != w.threshold || c.Matched != w.matched || c.Evaluated != w.evaluated {
			t.Errorf("check %d = %+v, want %+v", i, c, w)
		}
	}
	if f := d.Fired(); f == nil || f.Rule != ClassMaintenanceContention {
		t.Fatalf("Fired() = %+v", f)
	}
	if d.Checks[0].Reason != "2 partition_link witness edges <= 3" {
		t.Errorf("reason %q", d.Checks[0].Reason)
	}
	if d.Checks[3].Reason != "3 dependency witness edges > 2" {
		t.Errorf("reason %q", d.Checks[3].Reason)
	}
}

func TestCustomThresholds(t *testing.T) {
	th := DefaultThresholds()
	th.PartitionLinkEdges = 1
	th.ReplicationEdges = 2
	th.MemoryUsagePct = 50
	th.FragmentationPct = 10
	tests := []struct {
		name string
		w    []WitnessEdge
		m    Metrics
		want Class
	}{
		{"2 partition links > 1", edges(EdgePartitionLink, NodePartition, 2, 1), Metrics{}, ClassHotspotCongestion},
		{"1 partition link = 1", edges(EdgePartitionLink, NodePartition, 1, 1), Metrics{}, ClassUnknown},
		{"2 replication edges = 2", edges(EdgeReplication, NodeReplica, 2, 1), Metrics{}, ClassUnknown},
		{"3 replication edges > 2", edges(EdgeReplication, NodeReplica, 3, 1), Metrics{}, ClassReplicationLag},
		{"memory 51 > 50", nil, Metrics{MemoryUsagePct: 51}, ClassMemoryPressure},
		{"fragmentation 10 = 10", nil, Metrics{IndexFragmentationPct: map[int64]float64{3: 10}}, ClassUnknown},
		{"fragmentation 11 > 10", nil, Metrics{IndexFragmentationPct: map[int64]float64{3: 11}}, ClassIndexFragmentation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.w, tc.m, th).Problem.Class; got != tc.want {
				t.Errorf("class %s, want %s", got, tc.want)
			}
		})
	}
}

func TestHotspotFields(t *testing.T) {
	w := edges(EdgePartitionLink, NodePartition, 4, 1) // partitions 1..4
	tests := []struct {
		name      string
		load      map[int64]float64
		ids       []int64
		ratio     float64
		wantNotes []string
	}{
		{
			// mean of 1..6 = (10+10+40+10+10+10)/6 = 15; partition 3 ratio 40/15
			name:  "one hot partition",
			load:  map[int64]float64{1: 10, 2: 10, 3: 40, 4: 10, 5: 10, 6: 10},
			ids:   []int64{3},
			ratio: 40.0 / 15,
		},
		{
			// mean = (30+30+30+5+5+0)/6 = 16.666..; ratio of 30 = 1.8
			name:  "ties broken by id",
			load:  map[int64]float64{4: 30, 2: 30, 1: 30, 3: 5, 5: 5, 6: 0},
			ids:   []int64{1, 2, 4},
			ratio: 30 / (100.0 / 6),
		},
		{
			// mean = 12; partition 1 = 24 → ratio exactly 2; 2 → 1.5 exactly (hot at boundary), 4 → 1.25
			name:  "ratio boundary is inclusive",
			load:  map[int64]float64{1: 24, 2: 18, 3: 3, 4: 15, 5: 0},
			ids:   []int64{1, 2},
			ratio: 2,
		},
		{
			name:      "no hot partition: all witness partitions, hottest first",
			load:      map[int64]float64{1: 10, 2: 12, 3: 11, 4: 10},
			ids:       []int64{2, 3, 1, 4},
			ratio:     12 / 10.75,
			wantNotes: []string{"no witness partition reaches ratio 1.5"},
		},
		{
			name:      "no metrics: witness partitions by id, ratio unknown",
			load:      nil,
			ids:       []int64{1, 2, 3, 4},
			ratio:     0,
			wantNotes: []string{"no partition metric for witness partition 1, 2, 3, 4"},
		},
		{
			// partition 4 has no load; mean over known = (50+10+10+10)/4 = 20
			name:      "missing partition ranks last",
			load:      map[int64]float64{1: 10, 2: 10, 3: 10, 5: 50},
			ids:       []int64{1, 2, 3, 4},
			ratio:     0.5,
			wantNotes: []string{"no partition metric for witness partition 4"},
		},
		{
			name:      "bad load values ignored",
			load:      map[int64]float64{1: math.NaN(), 2: -5, 3: 30, 4: 10, 5: 10, 6: 10},
			ids:       []int64{3},
			ratio:     2,
			wantNotes: []string{"partition 1: value NaN ignored", "partition 2: value -5 ignored"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Classify(w, Metrics{PartitionLoad: tc.load}, DefaultThresholds())
			h := d.Problem.HotspotCongestion
			if h == nil {
				t.Fatalf("no hotspot details: %+v", d.Problem)
			}
			if !reflect.DeepEqual(h.PartitionIDs, tc.ids) {
				t.Errorf("ids %v, want %v", h.PartitionIDs, tc.ids)
			}
			if math.Abs(h.LoadRatio-tc.ratio) > 1e-12 {
				t.Errorf("ratio %v, want %v", h.LoadRatio, tc.ratio)
			}
			assertNotes(t, d.Notes, tc.wantNotes)
		})
	}
}

func assertNotes(t *testing.T, got, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("notes %q lack %q", got, w)
		}
	}
	if len(want) == 0 && len(got) != 0 {
		t.Errorf("unexpected notes %q", got)
	}
}

func TestHotspotOnlyPartitionEndpointsOfPartitionLinks(t *testing.T) {
	w := concat(
		edges(EdgePartitionLink, NodePartition, 4, 1),
		// A hot partition on a routing edge is not a partition_link witness.
		[]WitnessEdge{{Source: NodeRef{Kind: NodePartition, ID: 9}, Target: NodeRef{Kind: NodeShard, ID: 1}, EdgeType: EdgeRoutingLink}},
	)
	d := Classify(w, Metrics{PartitionLoad: map[int64]float64{1: 10, 2: 10, 3: 10, 4: 40, 9: 100}}, DefaultThresholds())
	// mean = 170/5 = 34; 4 → 1.18, 9 excluded (not on a partition_link) → fallback to all four
	if got, want := d.Problem.HotspotCongestion.PartitionIDs, []int64{4, 1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("ids %v, want %v", got, want)
	}
}

func TestCentroidSkewFields(t *testing.T) {
	w := edges(EdgeRoutingLink, NodeCentroid, 6, 1) // centroids 1..6
	sizes := map[int64]int64{1: 100, 2: 100, 3: 400, 4: 100, 5: 350, 6: 100, 7: 50, 8: 0}
	// mean = 1200/8 = 150; 3 → 2.666.., 5 → 2.333..
	d := Classify(w, Metrics{CentroidListSizes: sizes}, DefaultThresholds())
	cs := d.Problem.CentroidSkew
	if cs == nil {
		t.Fatalf("class %s", d.Problem.Class)
	}
	if want := []int64{3, 5}; !reflect.DeepEqual(cs.CentroidIDs, want) {
		t.Errorf("ids %v, want %v", cs.CentroidIDs, want)
	}
	if want := 400.0 / 150; math.Abs(cs.SkewFactor-want) > 1e-12 {
		t.Errorf("skew %v, want %v", cs.SkewFactor, want)
	}

	// Even lists: no centroid reaches 1.5, all witness centroids are reported.
	even := map[int64]int64{1: 10, 2: 10, 3: 10, 4: 10, 5: 10, 6: 10}
	d = Classify(w, Metrics{CentroidListSizes: even}, DefaultThresholds())
	if got := d.Problem.CentroidSkew; !reflect.DeepEqual(got.CentroidIDs, []int64{1, 2, 3, 4, 5, 6}) || got.SkewFactor != 1 {
		t.Errorf("even lists: %+v", got)
	}
}

func TestReplicationLagFields(t *testing.T) {
	w := []WitnessEdge{
		{Source: NodeRef{Kind: NodeRoot, ID: 0}, Target: NodeRef{Kind: NodeReplica, ID: 3}, EdgeType: EdgeReplication},
		{Source: NodeRef{Kind: NodeReplica, ID: 1}, Target: NodeRef{Kind: NodeRoot, ID: 0}, EdgeType: EdgeReplication},
		{Source: NodeRef{Kind: NodeReplica, ID: 2}, Target: NodeRef{Kind: NodeRoot, ID: 0}, EdgeType: EdgeReplication},
		{Source: NodeRef{Kind: NodeReplica, ID: 4}, Target: NodeRef{Kind: NodeRoot, ID: 0}, EdgeType: EdgeReplication},
		{Source: NodeRef{Kind: NodeReplica, ID: 1}, Target: NodeRef{Kind: NodeShard, ID: 0}, EdgeType: EdgeReplication},
		// A replica on a non-replication edge is not a lagging replica.
		{Source: NodeRef{Kind: NodeReplica, ID: 9}, Target: NodeRef{Kind: NodeRoot, ID: 0}, EdgeType: EdgeRoutingLink},
	}
	m := Metrics{ReplicaLagSeconds: map[int64]float64{1: 2.5, 2: 12, 3: 12, 9: 600}}
	d := Classify(w, m, DefaultThresholds())
	rl := d.Problem.ReplicationLag
	if rl == nil {
		t.Fatalf("class %s", d.Problem.Class)
	}
	if want := []int64{2, 3, 1, 4}; !reflect.DeepEqual(rl.ReplicaIDs, want) {
		t.Errorf("ids %v, want %v", rl.ReplicaIDs, want)
	}
	if rl.LagSeconds != 12 {
		t.Errorf("lag %v, want 12", rl.LagSeconds)
	}
	assertNotes(t, d.Notes, []string{"no lag metric for witness replica 4"})
}

func TestMaintenanceFields(t *testing.T) {
	dep := func(id int64, name string) WitnessEdge {
		return WitnessEdge{Source: NodeRef{Kind: NodeShard, ID: 1}, Target: NodeRef{Kind: NodeMaintenanceDep, ID: id, Name: name}, EdgeType: EdgeDependency}
	}
	w := []WitnessEdge{dep(1, "vacuum-1"), dep(2, "vacuum-2"), dep(3, "reindex-main"), dep(4, "analyze"), dep(5, ""), dep(1, "vacuum-1")}
	m := Metrics{
		MaintenanceQueueDepth: 17,
		MaintenanceJobs: []MaintenanceJob{
			{NodeID: 1, Type: "vacuum", Queued: 2, Running: 1},
			{NodeID: 2, Type: "vacuum", Queued: 1},
			{NodeID: 3, Type: "reindex", Queued: 4},
			{NodeID: 8, Type: "centroid_rebuild", Queued: 50}, // not on the witness
		},
	}
	d := Classify(w, m, DefaultThresholds())
	mc := d.Problem.MaintenanceContention
	if mc == nil {
		t.Fatalf("class %s", d.Problem.Class)
	}
	// vacuum = 3+1 = 4 (node 1 counted once), reindex = 4, analyze (name) = 0, node 5 unnamed = 0
	want := []string{"reindex", "vacuum", "analyze", "maintenance_dep:5"}
	if !reflect.DeepEqual(mc.JobTypes, want) {
		t.Errorf("job types %v, want %v", mc.JobTypes, want)
	}
	if mc.QueueDepth != 17 {
		t.Errorf("queue depth %d", mc.QueueDepth)
	}
}

func TestMemoryFields(t *testing.T) {
	cons := []MemoryConsumer{
		{"a", 10}, {"b", 500}, {"c", 300}, {"d", 500}, {"e", 1}, {"f", 2}, {"g", -1}, {"h", 400},
	}
	th := DefaultThresholds()
	d := Classify(nil, Metrics{MemoryUsagePct: 91.5, MemoryConsumers: cons}, th)
	mp := d.Problem.MemoryPressure
	if mp == nil {
		t.Fatalf("class %s", d.Problem.Class)
	}
	want := []MemoryConsumer{{"b", 500}, {"d", 500}, {"h", 400}, {"c", 300}, {"a", 10}}
	if !reflect.DeepEqual(mp.LargestConsumers, want) || mp.CurrentUsagePct != 91.5 {
		t.Errorf("got %+v, want %v", mp, want)
	}
	assertNotes(t, d.Notes, []string{`memory consumer "g": -1 bytes ignored`})
	if cons[0].Name != "a" {
		t.Errorf("input slice was reordered")
	}

	th.MaxMemoryConsumers = 2
	d = Classify(nil, Metrics{MemoryUsagePct: 91.5, MemoryConsumers: cons}, th)
	if got := d.Problem.MemoryPressure.LargestConsumers; !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("capped: %v", got)
	}

	d = Classify(nil, Metrics{MemoryUsagePct: 99}, th)
	if got := d.Problem.MemoryPressure.LargestConsumers; got == nil || len(got) != 0 {
		t.Errorf("no consumers should be an empty, non-nil list: %#v", got)
	}
}

func TestMemoryNaNIgnored(t *testing.T) {
	d := Classify(nil, Metrics{MemoryUsagePct: math.NaN()}, DefaultThresholds())
	if d.Problem.Class != ClassUnknown {
		t.Fatalf("class %s", d.Problem.Class)
	}
	assertNotes(t, d.Notes, []string{"memory usage NaN ignored"})
	if _, err := json.Marshal(d); err != nil {
		t.Fatalf("decision with bad input must still marshal: %v", err)
	}
}

func TestFragmentationFields(t *testing.T) {
	m := Metrics{IndexFragmentationPct: map[int64]float64{
		1: 30, 2: 45, 3: 31, 4: 45, 5: 90, 6: 10, 7: math.Inf(1),
	}}
	d := Classify(nil, m, DefaultThresholds())
	f := d.Problem.IndexFragmentation
	if f == nil {
		t.Fatalf("class %s", d.Problem.Class)
	}
	if want := []int64{5, 2, 4, 3}; !reflect.DeepEqual(f.IndexIDs, want) {
		t.Errorf("ids %v, want %v", f.IndexIDs, want)
	}
	if f.FragmentationPct != 90 {
		t.Errorf("pct %v", f.FragmentationPct)
	}
	assertNotes(t, d.Notes, []string{"index 7: fragmentation +Inf ignored"})
}

func TestUnknownSummary(t *testing.T) {
	w := []WitnessEdge{
		{Source: NodeRef{Kind: NodeGateway, ID: 1, Name: "gw"}, Target: NodeRef{Kind: NodeShard, ID: 2}, EdgeType: EdgeRoutingLink, Capacity: 0.5},
		{Source: NodeRef{Kind: NodeCentroid, ID: 3}, Target: NodeRef{Kind: NodeShard, ID: 2}, EdgeType: EdgeRoutingLink, Capacity: 0.25},
		{Source: NodeRef{Kind: NodePartition, ID: 4}, Target: NodeRef{Kind: NodeRoot, ID: 0}, EdgeType: "mystery", Capacity: 0.9},
	}
	d := Classify(w, Metrics{}, DefaultThresholds())
	want := "3 witness edges (routing_link=2, mystery=1); nodes (partition=1, centroid=1, shard=1, gateway=1, root=1); weakest routing_link centroid:3–shard:2 capacity 0.25"
	if got := d.Problem.Unknown.WitnessSummary; got != want {
		t.Errorf("summary\n got %q\nwant %q", got, want)
	}
	assertNotes(t, d.Notes, []string{`witness edge type "mystery" is not known`})
	if got := Classify(nil, Metrics{}, DefaultThresholds()).Problem.Unknown.WitnessSummary; got != "no witness edges" {
		t.Errorf("empty summary %q", got)
	}
}

func TestDeterministic(t *testing.T) {
	w := concat(edges(EdgePartitionLink, NodePartition, 8, 1), edges(EdgeRoutingLink, NodeCentroid, 8, 1))
	m := Metrics{PartitionLoad: map[int64]float64{}, IndexFragmentationPct: map[int64]float64{}}
	for i := int64(1); i <= 8; i++ {
		m.PartitionLoad[i] = 10
		m.IndexFragmentationPct[i] = math.NaN()
	}
	first, _ := json.Marshal(Classify(w, m, DefaultThresholds()))
	for i := 0; i < 20; i++ {
		again, _ := json.Marshal(Classify(w, m, DefaultThresholds()))
		if string(again) != string(first) {
			t.Fatalf("run %d differs:\n%s\n%s", i, first, again)
		}
	}
}

func TestExplain(t *testing.T) {
	w := concat(edges(EdgePartitionLink, NodePartition, 2, 1), edges(EdgeReplication, NodeReplica, 1, 5))
	d := Classify(w, Metrics{MemoryUsagePct: 92}, DefaultThresholds())
	got := d.Explain()
	for _, want := range []string{
		"classified as replication_lag: 1 replication witness edges > 0",
		"checked first, did not fire:\n  - hotspot_congestion: 2 partition_link witness edges <= 3\n  - centroid_skew: 0 distinct centroid nodes on witness edges <= 5\n",
		"also matching, lower precedence:\n  - memory_pressure: memory usage 92% > 85%",
		"no lag metric for witness replica 5",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "maintenance_contention") {
		t.Errorf("rules after the fired one that did not match should not be listed:\n%s", got)
	}
	u := Classify(nil, Metrics{}, DefaultThresholds()).Explain()
	if !strings.HasPrefix(u, "classified as unknown: no rule matched\n") || !strings.Contains(u, "index_fragmentation: highest index fragmentation 0% <= 30%") {
		t.Errorf("unknown explanation:\n%s", u)
	}
}

func TestInvalidThresholdsNoted(t *testing.T) {
	th := DefaultThresholds()
	th.MemoryUsagePct = -1
	d := Classify(nil, Metrics{MemoryUsagePct: 0.5}, th)
	if d.Problem.Class != ClassMemoryPressure {
		t.Errorf("thresholds are used as given: class %s", d.Problem.Class)
	}
	assertNotes(t, d.Notes, []string{"thresholds out of range"})
}

func TestWitnessEdgeJSONShape(t *testing.T) {
	in := `{"source":{"type":"partition","id":3,"name":"p3"},"target":{"type":"root","id":0,"name":"embeddings"},"edge_type":"partition_link","capacity":0.42,"flow":0.42}`
	var e WitnessEdge
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	want := WitnessEdge{Source: NodeRef{NodePartition, 3, "p3"}, Target: NodeRef{NodeRoot, 0, "embeddings"}, EdgeType: EdgePartitionLink, Capacity: 0.42, Flow: 0.42}
	if e != want {
		t.Fatalf("decoded %+v", e)
	}
	out, err := json.Marshal(e)
	if err != nil || string(out) != in {
		t.Fatalf("encoded %s, %v", out, err)
	}
}

func TestProblemJSONRoundTrip(t *testing.T) {
	problems := []Problem{
		{Class: ClassHotspotCongestion, HotspotCongestion: &HotspotCongestion{PartitionIDs: []int64{3, 1}, LoadRatio: 2.5}},
		{Class: ClassCentroidSkew, CentroidSkew: &CentroidSkew{CentroidIDs: []int64{9}, SkewFactor: 3.25}},
		{Class: ClassReplicationLag, ReplicationLag: &ReplicationLag{ReplicaIDs: []int64{2}, LagSeconds: 12.5}},
		{Class: ClassMaintenanceContention, MaintenanceContention: &MaintenanceContention{JobTypes: []string{"vacuum"}, QueueDepth: 7}},
		{Class: ClassIndexFragmentation, IndexFragmentation: &IndexFragmentation{IndexIDs: []int64{5, 6}, FragmentationPct: 44.5}},
		{Class: ClassMemoryPressure, MemoryPressure: &MemoryPressure{CurrentUsagePct: 91, LargestConsumers: []MemoryConsumer{{"shared_buffers", 1 << 30}}}},
		{Class: ClassUnknown, Unknown: &Unknown{WitnessSummary: "no witness edges"}},
		{Class: ClassIndexFragmentation, IndexFragmentation: &IndexFragmentation{IndexIDs: []int64{}}},
	}
	for _, p := range problems {
		t.Run(string(p.Class), func(t *testing.T) {
			data, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var back Problem
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			if !reflect.DeepEqual(back, p) {
				t.Fatalf("round trip\n got %+v\nwant %+v\njson %s", back, p, data)
			}
		})
	}
	// The exact stored shape is a contract with problem_details readers.
	data, _ := json.Marshal(problems[0])
	if want := `{"class":"hotspot_congestion","hotspot_congestion":{"partition_ids":[3,1],"load_ratio":2.5}}`; string(data) != want {
		t.Errorf("json %s, want %s", data, want)
	}
}

func TestClassifiedProblemsRoundTrip(t *testing.T) {
	inputs := []struct {
		w []WitnessEdge
		m Metrics
	}{
		{edges(EdgePartitionLink, NodePartition, 4, 1), Metrics{}},
		{edges(EdgeRoutingLink, NodeCentroid, 6, 1), Metrics{}},
		{edges(EdgeReplication, NodeReplica, 1, 1), Metrics{}},
		{edges(EdgeDependency, NodeMaintenanceDep, 3, 1), Metrics{}},
		{nil, Metrics{MemoryUsagePct: 90}},
		{nil, Metrics{IndexFragmentationPct: map[int64]float64{1: 50}}},
		{nil, Metrics{}},
	}
	seen := map[Class]bool{}
	for _, in := range inputs {
		d := Classify(in.w, in.m, DefaultThresholds())
		seen[d.Problem.Class] = true
		data, err := json.Marshal(d.Problem)
		if err != nil {
			t.Fatal(err)
		}
		var back Problem
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, d.Problem) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", d.Problem.Class, back, d.Problem)
		}
		var dec Decision
		dd, _ := json.Marshal(d)
		if err := json.Unmarshal(dd, &dec); err != nil || !reflect.DeepEqual(dec, d) {
			t.Errorf("%s: decision round trip failed: %v\n%s", d.Problem.Class, err, dd)
		}
	}
	if len(seen) != len(Classes()) {
		t.Errorf("covered %d classes, want %d", len(seen), len(Classes()))
	}
}

func TestProblemValidation(t *testing.T) {
	tests := []struct {
		name string
		json string
	}{
		{"unknown class", `{"class":"gremlins","unknown":{"witness_summary":""}}`},
		{"missing details", `{"class":"memory_pressure"}`},
		{"wrong details", `{"class":"memory_pressure","unknown":{"witness_summary":""}}`},
		{"two details", `{"class":"unknown","unknown":{"witness_summary":""},"centroid_skew":{"centroid_ids":[],"skew_factor":0}}`},
		{"null details", `{"class":"replication_lag","replication_lag":null}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p Problem
			err := json.Unmarshal([]byte(tc.json), &p)
			if !errors.Is(err, ErrInvalidProblem) {
				t.Fatalf("err %v, want ErrInvalidProblem", err)
			}
		})
	}
	var p Problem
	if err := json.Unmarshal([]byte(`{"class":1}`), &p); err == nil {
		t.Error("type error accepted")
	}
}

func TestParseClass(t *testing.T) {
	for _, c := range Classes() {
		got, err := ParseClass(string(c))
		if err != nil || got != c {
			t.Errorf("ParseClass(%q) = %q, %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "Hotspot_Congestion", "hotspot", " unknown"} {
		if _, err := ParseClass(bad); !errors.Is(err, ErrUnknownClass) {
			t.Errorf("ParseClass(%q) err %v", bad, err)
		}
	}
	if len(Classes()) != 7 {
		t.Errorf("%d classes", len(Classes()))
	}
}

func TestKindsAndTypesValid(t *testing.T) {
	for _, k := range []NodeKind{"partition", "centroid", "shard", "maintenance_dep", "replica", "index", "memory", "gateway", "root"} {
		if !k.Valid() {
			t.Errorf("%s not valid", k)
		}
	}
	if NodeKind("vector").Valid() || EdgeType("flow").Valid() {
		t.Error("unknown kind/type accepted")
	}
	for _, e := range []EdgeType{"partition_link", "routing_link", "dependency", "replication"} {
		if !e.Valid() {
			t.Errorf("%s not valid", e)
		}
	}
}

func TestThresholdsValidate(t *testing.T) {
	if err := DefaultThresholds().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		field string
		mut   func(*Thresholds)
		ok    bool
	}{
		{"partition_link_edges", func(t *Thresholds) { t.PartitionLinkEdges = -1 }, false},
		{"partition_link_edges", func(t *Thresholds) { t.PartitionLinkEdges = 0 }, true},
		{"centroid_nodes", func(t *Thresholds) { t.CentroidNodes = MaxCountThreshold + 1 }, false},
		{"centroid_nodes", func(t *Thresholds) { t.CentroidNodes = MaxCountThreshold }, true},
		{"replication_edges", func(t *Thresholds) { t.ReplicationEdges = -1 }, false},
		{"dependency_edges", func(t *Thresholds) { t.DependencyEdges = -3 }, false},
		{"memory_usage_pct", func(t *Thresholds) { t.MemoryUsagePct = 100.5 }, false},
		{"memory_usage_pct", func(t *Thresholds) { t.MemoryUsagePct = 100 }, true},
		{"memory_usage_pct", func(t *Thresholds) { t.MemoryUsagePct = math.NaN() }, false},
		{"fragmentation_pct", func(t *Thresholds) { t.FragmentationPct = -0.1 }, false},
		{"fragmentation_pct", func(t *Thresholds) { t.FragmentationPct = 0 }, true},
		{"hot_partition_ratio", func(t *Thresholds) { t.HotPartitionRatio = 0.99 }, false},
		{"hot_partition_ratio", func(t *Thresholds) { t.HotPartitionRatio = 1 }, true},
		{"skewed_centroid_ratio", func(t *Thresholds) { t.SkewedCentroidRatio = 1000.5 }, false},
		{"max_memory_consumers", func(t *Thresholds) { t.MaxMemoryConsumers = 0 }, false},
		{"max_memory_consumers", func(t *Thresholds) { t.MaxMemoryConsumers = 101 }, false},
		{"max_memory_consumers", func(t *Thresholds) { t.MaxMemoryConsumers = 100 }, true},
	}
	for _, tc := range tests {
		th := DefaultThresholds()
		tc.mut(&th)
		err := th.Validate()
		if tc.ok {
			if err != nil {
				t.Errorf("%s: unexpected %v", tc.field, err)
			}
			continue
		}
		var te *ThresholdError
		if !errors.As(err, &te) || te.Field != tc.field {
			t.Errorf("%s: err %v", tc.field, err)
		}
	}
}

func TestThresholdJSONNames(t *testing.T) {
	data, _ := json.Marshal(DefaultThresholds())
	want := `{"partition_link_edges":3,"centroid_nodes":5,"replication_edges":0,"dependency_edges":2,"memory_usage_pct":85,"fragmentation_pct":30,"hot_partition_ratio":1.5,"skewed_centroid_ratio":1.5,"max_memory_consumers":5}`
	if string(data) != want {
		t.Errorf("defaults json\n got %s\nwant %s", data, want)
	}
}

func TestMetricsJSONRoundTrip(t *testing.T) {
	m := Metrics{
		PartitionLoad:         map[int64]float64{1: 10.5, -2: 3},
		CentroidListSizes:     map[int64]int64{7: 1200},
		ReplicaLagSeconds:     map[int64]float64{3: 0.25},
		MaintenanceQueueDepth: 4,
		MaintenanceJobs:       []MaintenanceJob{{NodeID: 9, Type: "vacuum", Queued: 3, Running: 1}},
		MemoryUsagePct:        71.5,
		MemoryConsumers:       []MemoryConsumer{{Name: "shared_buffers", Bytes: 1 << 31}},
		IndexFragmentationPct: map[int64]float64{5: 12},
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Metrics
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, m) {
		t.Fatalf("round trip %v\n got %+v\nwant %+v\n%s", err, back, m, data)
	}
	if !strings.Contains(string(data), `"partition_load":{"-2":3,"1":10.5}`) {
		t.Errorf("map keys must be stable JSON strings: %s", data)
	}
}
