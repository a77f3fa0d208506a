package health

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

// randomWalk evolves a sample at random: loads, sizes, lags, job states and
// memory change every step; partitions, lists, replicas, jobs and indexes
// come and go now and then; collectors fail now and then.
type randomWalk struct {
	rng    *rand.Rand
	s      Signals
	nextID int64
}

func newWalk(seed uint64) *randomWalk {
	w := &randomWalk{rng: rand.New(rand.NewPCG(seed, 7)), nextID: 1}
	w.s = Signals{Collection: "c", CollectionID: 3, At: t0}
	for range 2 + w.rng.IntN(10) {
		w.addPartition()
	}
	for range w.rng.IntN(20) {
		w.s.Centroids = append(w.s.Centroids, CentroidSignal{ID: w.id(), ListSize: 1000})
	}
	for range w.rng.IntN(3) {
		w.s.Replicas = append(w.s.Replicas, ReplicaSignal{ID: w.id(), Name: "r"})
	}
	for range w.rng.IntN(5) {
		w.addJob()
	}
	for range w.rng.IntN(3) {
		w.s.Indexes = append(w.s.Indexes, IndexSignal{RelID: w.id()})
	}
	return w
}

func (w *randomWalk) id() int64 { w.nextID++; return w.nextID }

func (w *randomWalk) addPartition() {
	w.s.Partitions = append(w.s.Partitions, PartitionSignal{RelID: w.id(), Shard: []int64{-1, 1, 2}[w.rng.IntN(3)],
		WriteRowsPerSec: 100, ReadRowsPerSec: 100})
}

func (w *randomWalk) addJob() {
	w.s.Maintenance = append(w.s.Maintenance, JobSignal{ID: w.id(), Type: "vacuum",
		Relation: fmt.Sprintf("r%d", w.rng.IntN(4)), Running: w.rng.IntN(2) == 0})
}

// remove deletes a random element (keeping at least keep).
func remove[T any](rng *rand.Rand, xs []T, keep int) []T {
	if len(xs) <= keep {
		return xs
	}
	i := rng.IntN(len(xs))
	return slices.Delete(slices.Clone(xs), i, i+1)
}

func (w *randomWalk) step() (Signals, ErrorRates) {
	r := w.rng
	s := &w.s
	s.At = s.At.Add(10 * time.Second)
	// Value changes: a few components per step, sometimes none.
	for range r.IntN(4) {
		switch r.IntN(7) {
		case 0:
			if len(s.Partitions) > 0 {
				p := &s.Partitions[r.IntN(len(s.Partitions))]
				p.WriteRowsPerSec = float64(r.IntN(800))
			}
		case 1:
			if len(s.Centroids) > 0 {
				s.Centroids[r.IntN(len(s.Centroids))].ListSize = int64(r.IntN(8000))
			}
		case 2:
			if len(s.Replicas) > 0 {
				x := &s.Replicas[r.IntN(len(s.Replicas))]
				x.LagSeconds = float64(r.IntN(120))
				x.Broken = r.IntN(6) == 0
			}
		case 3:
			if len(s.Maintenance) > 0 {
				j := &s.Maintenance[r.IntN(len(s.Maintenance))]
				j.WaitingFor = []string{"", "", "Lock:relation"}[r.IntN(3)]
				j.Running = r.IntN(2) == 0
			}
		case 4:
			s.Memory.UsagePct = float64(r.IntN(101))
		case 5:
			s.Gateway.WaitFraction = r.Float64() * 1.2
		case 6:
			if len(s.Indexes) > 0 {
				s.Indexes[r.IntN(len(s.Indexes))].FragmentationPct = float64(r.IntN(100))
			}
		}
	}
	// Topology changes, about one step in four.
	if r.IntN(4) == 0 {
		switch r.IntN(10) {
		case 0:
			w.addPartition()
		case 1:
			s.Partitions = remove(r, s.Partitions, 1)
		case 2:
			s.Centroids = append(s.Centroids, CentroidSignal{ID: w.id(), ListSize: int64(r.IntN(4000))})
		case 3:
			s.Centroids = remove(r, s.Centroids, 0)
		case 4:
			s.Replicas = append(s.Replicas, ReplicaSignal{ID: w.id()})
		case 5:
			s.Replicas = remove(r, s.Replicas, 0)
		case 6:
			w.addJob()
		case 7, 8:
			s.Maintenance = remove(r, s.Maintenance, 0)
		case 9:
			s.Indexes = append(s.Indexes, IndexSignal{RelID: w.id(), FragmentationPct: 50})
		}
	}
	out := *s
	// A failed collector, only for kinds with items (an empty unknown kind
	// is carried forward by the Tracker, tested separately).
	out.Unknown = nil
	if r.IntN(8) == 0 {
		kinds := []string{KindGateway, KindMemory, KindPartitions}
		for k, n := range map[string]int{KindCentroids: len(s.Centroids), KindReplicas: len(s.Replicas),
			KindMaintenance: len(s.Maintenance), KindIndexes: len(s.Indexes)} {
			if n > 0 {
				kinds = append(kinds, k)
			}
		}
		slices.Sort(kinds) // map order must not make the walk irreproducible
		out.Unknown = map[string]bool{kinds[r.IntN(len(kinds))]: true}
	}
	var errs ErrorRates
	if r.IntN(5) == 0 && len(s.Partitions) > 0 {
		errs = ErrorRates{{Kind: classify.NodePartition, ID: s.Partitions[0].RelID}: r.Float64()}
	}
	return out, errs
}

// checkCut verifies a tracker's cut against a fresh build and static
// minimum cut of the same sample.
func checkCut(t *testing.T, step int, s Signals, errs ErrorRates, c Cut) {
	t.Helper()
	g, err := Build(s, DefaultConfig(), errs)
	if err != nil {
		t.Fatal(err)
	}
	want := mincut.MinCut(g.MinCutGraph(false)).Lambda
	base := mincut.MinCut(g.MinCutGraph(true)).Lambda
	if c.LambdaFixed != want || c.BaselineFixed != base {
		t.Fatalf("step %d: tracker λ %d baseline %d, fresh %d / %d (stats %+v)", step, c.LambdaFixed, c.BaselineFixed, want, base, c.Stats)
	}
	if c.LambdaNorm != float64(want)/float64(base) {
		t.Fatalf("step %d: λ_norm %v != %d/%d", step, c.LambdaNorm, want, base)
	}
	if len(c.Graph.Nodes) != len(g.Nodes) || len(c.Graph.Edges) != len(g.Edges) {
		t.Fatalf("step %d: snapshot differs from a fresh build", step)
	}
	// The witness is exactly the set of edges crossing the reported side.
	inSide := map[NodeKey]bool{}
	for _, n := range c.Side {
		if _, ok := g.NodeIndex(n.Key()); !ok {
			t.Fatalf("step %d: side node %+v not in the graph", step, n)
		}
		inSide[n.Key()] = true
	}
	if len(c.Side) == 0 || 2*len(c.Side) > len(g.Nodes) {
		t.Fatalf("step %d: side of %d nodes out of %d", step, len(c.Side), len(g.Nodes))
	}
	var crossing []classify.WitnessEdge
	var sum int64
	for _, e := range g.Edges {
		if inSide[g.Nodes[e.U].Key()] != inSide[g.Nodes[e.V].Key()] {
			crossing = append(crossing, classify.WitnessEdge{Source: e.Source, Target: e.Target, EdgeType: e.EdgeType, Capacity: e.Capacity, Flow: e.Capacity})
			sum += e.Weight
		}
	}
	sortWitness(crossing)
	if !slices.Equal(crossing, c.Witness) {
		t.Fatalf("step %d: witness\n%+v\nedges crossing the side\n%+v", step, c.Witness, crossing)
	}
	if sum != want {
		t.Fatalf("step %d: crossing weight %d, λ %d", step, sum, want)
	}
	for _, e := range c.Witness {
		if e.EdgeType == EdgeMembership || e.Capacity < DefaultConfig().Floor || e.Capacity > 1 {
			t.Fatalf("step %d: witness edge %+v", step, e)
		}
	}
}

// Property: for random sample sequences the Tracker (incremental, over one
// mincut.Dynamic) reports exactly what a fresh build and static minimum cut
// report, every step.
func TestTrackerMatchesFreshBuild(t *testing.T) {
	steps := 0
	var last TrackerStats
	for seed := range uint64(12) {
		w := newWalk(seed)
		tr, err := NewTracker(DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		for i := range 150 {
			s, errs := w.step()
			c, err := tr.UpdateWithErrors(s, errs)
			if err != nil {
				t.Fatal(err)
			}
			checkCut(t, i, s, errs, c)
			steps++
			last = c.Stats
		}
		if last.Rebuilds > 1+last.Samples/10 {
			t.Fatalf("seed %d: %d rebuilds in %d samples: not incremental", seed, last.Rebuilds, last.Samples)
		}
		if last.MinCut.Batches == 0 {
			t.Fatalf("seed %d: no batch went through the Dynamic", seed)
		}
	}
	t.Logf("%d steps; last tracker stats %+v", steps, last)
}

// Node churn (jobs starting and ending every sample) must not grow the
// Dynamic forever: it is compacted, and stays exact.
func TestTrackerCompactsAfterChurn(t *testing.T) {
	tr, _ := NewTracker(DefaultConfig())
	s := healthy(4, 0, 0, 0, 0)
	var c Cut
	for i := range 200 {
		s.Maintenance = []JobSignal{{ID: int64(10000 + i), Type: "autovacuum", Running: true, WaitingFor: "Lock:relation"}}
		var err error
		c, err = tr.Update(s)
		if err != nil {
			t.Fatal(err)
		}
		checkCut(t, i, s, nil, c)
	}
	if c.Stats.Rebuilds < 2 || tr.dyn.NumNodes() > 2*len(c.Graph.Nodes)+64 {
		t.Fatalf("no compaction: %d rebuilds, %d dynamic ids for %d nodes", c.Stats.Rebuilds, tr.dyn.NumNodes(), len(c.Graph.Nodes))
	}
	if c.Stats.TopologyChanges < 190 {
		t.Fatalf("job churn not seen as topology changes: %+v", c.Stats)
	}
}

// Unchanged samples send no changes and do not recompute the baseline.
func TestTrackerSendsOnlyChangedEdges(t *testing.T) {
	tr, _ := NewTracker(DefaultConfig())
	s := healthy(16, 64, 2, 3, 2)
	c1, _ := tr.Update(s)
	c2, _ := tr.Update(s)
	if c2.Stats.LastChanges != 0 || c2.Stats.BaselineRecomputes != c1.Stats.BaselineRecomputes {
		t.Fatalf("unchanged sample: %+v", c2.Stats)
	}
	s.Replicas[0].LagSeconds = 30
	c3, _ := tr.Update(s)
	if c3.Stats.LastChanges != 1 || c3.Stats.BaselineRecomputes != c1.Stats.BaselineRecomputes {
		t.Fatalf("one replica changed: %+v", c3.Stats)
	}
	if c3.LambdaNorm != 0.5 || c3.Witness[0].Target.ID != s.Replicas[0].ID {
		t.Fatalf("λ_norm %v witness %+v", c3.LambdaNorm, c3.Witness)
	}
	s.Replicas = s.Replicas[1:]
	c4, _ := tr.Update(s)
	if c4.Stats.TopologyChanges != 1 || c4.Stats.BaselineRecomputes != c1.Stats.BaselineRecomputes+1 || c4.LambdaNorm != 1 {
		t.Fatalf("replica removed: λ_norm %v stats %+v", c4.LambdaNorm, c4.Stats)
	}
}

func TestCapacityFunctions(t *testing.T) {
	c := DefaultConfig()
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	cases := []struct {
		name      string
		got, want float64
	}{
		{"partition at median", c.ratioCapacity(1, 1.2), 1},
		{"partition at tolerance", c.ratioCapacity(1.2, 1.2), 1},
		{"partition at 2.4× (2× tolerance)", c.ratioCapacity(2.4, 1.2), 0.25},
		{"partition at 3×", c.ratioCapacity(3, 1.2), 0.16},
		{"partition at 100× floors", c.ratioCapacity(100, 1.2), 0.01},
		{"replica in sync", c.replicaCapacity(ReplicaSignal{}), 1},
		{"replica at half budget", c.replicaCapacity(ReplicaSignal{LagSeconds: 30}), 0.5},
		{"replica at 2× budget", c.replicaCapacity(ReplicaSignal{LagSeconds: 120}), 0.01},
		{"replica broken", c.replicaCapacity(ReplicaSignal{Broken: true}), 0.01},
		{"gateway idle", c.gatewayCapacity(GatewaySignal{}), 1},
		{"gateway waiting 40%", c.gatewayCapacity(GatewaySignal{WaitFraction: 0.4}), 0.6},
		{"gateway rejecting 5/s", c.gatewayCapacity(GatewaySignal{WaitFraction: 0.1, RejectedPerSec: 5}), 0.5},
		{"index at tolerance", c.indexCapacity(IndexSignal{FragmentationPct: 20}), 1},
		{"index at 50%", c.indexCapacity(IndexSignal{FragmentationPct: 50}), 0.5},
		{"index at 90%", c.indexCapacity(IndexSignal{FragmentationPct: 90}), 0.01},
		{"memory at 70%", c.memoryCapacity(MemorySignal{UsagePct: 70}), 1},
		{"memory at 85%", c.memoryCapacity(MemorySignal{UsagePct: 85}), 0.5},
		{"memory from bytes 85%", c.memoryCapacity(MemorySignal{UsedBytes: 85, LimitBytes: 100}), 0.5},
		{"NaN is no evidence of health", c.clampCap(math.NaN()), 0.01},
		{"error rate 30%", c.effective(0.5, 0.3), 0.35},
		{"error rate NaN ignored", c.effective(0.5, math.NaN()), 0.5},
		{"error rate above 1 floors", c.effective(1, 3), 0.01},
	}
	for _, tc := range cases {
		if !near(tc.got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	jobs := c.jobCapacities([]JobSignal{
		{ID: 1, Running: true, Relation: "a"},
		{ID: 2, Running: true, Relation: "b", WaitingFor: "Lock:relation"},
		{ID: 3, Running: true, Relation: "C"},
		{ID: 4, Running: true, Relation: "c"},
		{ID: 5, Running: false, Relation: "a", Queued: 3},
	})
	if want := []float64{1, 0.1, 0.1, 0.1, 1}; !slices.Equal(jobs, want) {
		t.Errorf("jobs %v, want %v", jobs, want)
	}
	// The median, not the mean, is the reference: four hot partitions of 16
	// keep their ratio at 3.
	ps := make([]PartitionSignal, 16)
	for i := range ps {
		ps[i].WriteRowsPerSec = 100
		if i < 4 {
			ps[i].WriteRowsPerSec = 300
		}
	}
	if caps := c.partitionCapacities(ps); !near(caps[0], 0.16) || caps[15] != 1 {
		t.Errorf("partition capacities %v", caps)
	}
	// An idle collection has no hotspot: the reference never drops below
	// MinPartitionLoad.
	idle := []PartitionSignal{{WriteRowsPerSec: 0}, {WriteRowsPerSec: 0}, {WriteRowsPerSec: 5}}
	if caps := c.partitionCapacities(idle); caps[2] != 1 {
		t.Errorf("idle partition capacities %v", caps)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"floor", func(c *Config) { c.Floor = 1 }},
		{"unknown_capacity", func(c *Config) { c.UnknownCapacity = 0.001 }},
		{"partition_load_tolerance", func(c *Config) { c.PartitionLoadTolerance = 0.9 }},
		{"lag_budget_seconds", func(c *Config) { c.LagBudgetSeconds = 0 }},
		{"lag_budget_bytes", func(c *Config) { c.LagBudgetBytes = -1 }},
		{"gate_wait_budget", func(c *Config) { c.GateWaitBudget = math.NaN() }},
		{"fragmentation_limit_pct", func(c *Config) { c.FragmentationLimitPct = 10 }},
		{"memory_tolerance_pct", func(c *Config) { c.MemoryTolerancePct = 100 }},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v", tc.key, err)
		}
	}
}

// BenchmarkTrackerUpdate: a 64-partition, 256-list collection (plus 3
// replicas, 8 jobs, 4 indexes) with one random signal change per sample.
func BenchmarkTrackerUpdate(b *testing.B) {
	s := healthy(64, 256, 3, 8, 4)
	tr, err := NewTracker(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tr.Update(s); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var c Cut
	for b.Loop() {
		switch rng.IntN(5) {
		case 0:
			s.Partitions[rng.IntN(64)].WriteRowsPerSec = float64(rng.IntN(2000))
		case 1:
			s.Centroids[rng.IntN(256)].ListSize = int64(rng.IntN(20000))
		case 2:
			s.Replicas[rng.IntN(3)].LagSeconds = float64(rng.IntN(90))
		case 3:
			s.Maintenance[rng.IntN(8)].WaitingFor = []string{"", "Lock:relation"}[rng.IntN(2)]
		case 4:
			s.Memory.UsagePct = float64(rng.IntN(100))
		}
		c, err = tr.Update(s)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.Stats.EdgeChanges)/float64(c.Stats.Samples), "setedges/sample")
	b.ReportMetric(float64(c.Stats.MinCut.Recomputed)/float64(max(c.Stats.MinCut.Batches, 1)), "recomputed/batch")
}

// BenchmarkFreshBuild is the non-incremental alternative, for comparison.
func BenchmarkFreshBuild(b *testing.B) {
	s := healthy(64, 256, 3, 8, 4)
	for b.Loop() {
		g, err := Build(s, DefaultConfig(), nil)
		if err != nil {
			b.Fatal(err)
		}
		mincut.MinCut(g.MinCutGraph(false))
		mincut.MinCut(g.MinCutGraph(true))
	}
}
