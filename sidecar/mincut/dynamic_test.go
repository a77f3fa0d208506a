package mincut_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
	"github.com/ruvector/ruvector-healing/sidecar/mincut/mincutgen"
)

// checkDynamic compares the Dynamic's answer with a full recomputation (and
// with brute force on small graphs) and checks the reported side and
// witness against the current graph.
func checkDynamic(t *testing.T, d *mincut.Dynamic, r mincut.Result) {
	t.Helper()
	g, ids := d.Snapshot()
	want := mincut.MinCut(g).Lambda
	if g.N() >= 2 && g.N() <= 14 {
		if bf := mincut.BruteForce(g); bf != want {
			t.Fatalf("static %d != brute force %d", want, bf)
		}
	}
	if r.Lambda != want || d.Lambda() != want {
		t.Fatalf("dynamic lambda %d (Lambda() %d), recomputed %d; stats %+v", r.Lambda, d.Lambda(), want, d.Stats())
	}
	if g.N() < 2 {
		if len(r.Side) != 0 || len(r.Witness) != 0 {
			t.Fatalf("fewer than 2 nodes but side %v witness %v", r.Side, r.Witness)
		}
		return
	}
	// Translate ids to snapshot numbering and verify there.
	compact := map[int]int{}
	for i, v := range ids {
		compact[v] = i
	}
	side := make([]int, 0, len(r.Side))
	for _, v := range r.Side {
		i, ok := compact[v]
		if !ok {
			t.Fatalf("side contains removed node %d", v)
		}
		side = append(side, i)
	}
	wit := make([]mincut.Edge, 0, len(r.Witness))
	for _, e := range r.Witness {
		u, v := compact[e.U], compact[e.V]
		if u > v {
			u, v = v, u
		}
		wit = append(wit, mincut.Edge{U: u, V: v, W: e.W})
	}
	// Renumbering preserves order, so the witness stays sorted.
	verify(t, g, mincut.Result{Lambda: r.Lambda, Side: side, Witness: wit}, want)
	s := d.Stats()
	if s.Unchanged+s.CrossingOnly+s.FlowChecked+s.KnownCut+s.Recomputed != s.Batches {
		t.Fatalf("stats do not add up: %+v", s)
	}
}

// randomBatch draws a batch of 1..maxLen valid changes: increases,
// decreases, removals, new edges and (if nodeOps) node additions/removals.
// Pairs come from pool (if not empty) 80% of the time, so that streams on
// large sparse graphs mostly touch existing edges.
func randomBatch(rng *rand.Rand, d *mincut.Dynamic, maxLen int, nodeOps bool, scale int64, pool ...mincut.Edge) []mincut.Change {
	var live []int
	for v := 0; v < d.NumNodes(); v++ {
		if d.Alive(v) {
			live = append(live, v)
		}
	}
	pair := func() (int, int, bool) {
		if len(pool) > 0 && rng.IntN(5) > 0 {
			e := pool[rng.IntN(len(pool))]
			if slices.Contains(live, e.U) && slices.Contains(live, e.V) {
				return e.U, e.V, true
			}
		}
		if len(live) < 2 {
			return 0, 0, false
		}
		u := live[rng.IntN(len(live))]
		v := live[rng.IntN(len(live))]
		return u, v, u != v
	}
	var batch []mincut.Change
	k := 1 + rng.IntN(maxLen)
	if rng.IntN(3) > 0 {
		k = 1
	}
	for len(batch) < k {
		switch x := rng.IntN(100); {
		case nodeOps && x < 4:
			id := d.NumNodes()
			for _, c := range batch {
				if c.Kind == mincut.AddNode {
					id++
				}
			}
			batch = append(batch, mincut.Change{Kind: mincut.AddNode})
			for j := 0; j < rng.IntN(4) && len(live) > 0; j++ {
				batch = append(batch, mincut.Change{Kind: mincut.SetEdge, U: id, V: live[rng.IntN(len(live))], W: 1 + rng.Int64N(scale)})
			}
		case nodeOps && x < 7 && len(live) > 2:
			i := rng.IntN(len(live))
			batch = append(batch, mincut.Change{Kind: mincut.RemoveNode, U: live[i]})
			live = append(live[:i], live[i+1:]...)
		default:
			u, v, ok := pair()
			if !ok {
				return batch
			}
			w := d.Weight(u, v)
			for _, c := range batch { // weight as of the batch so far
				if (c.U == u && c.V == v) || (c.U == v && c.V == u) {
					if c.Kind == mincut.SetEdge {
						w = c.W
					} else {
						w += c.W
					}
				}
			}
			switch y := rng.IntN(10); {
			case y < 3 && w > 0: // decrease
				batch = append(batch, mincut.Change{Kind: mincut.AddToEdge, U: u, V: v, W: -1 - rng.Int64N(w)})
			case y < 5: // increase
				batch = append(batch, mincut.Change{Kind: mincut.AddToEdge, U: u, V: v, W: 1 + rng.Int64N(scale)})
			case y < 6: // removal
				batch = append(batch, mincut.Change{Kind: mincut.SetEdge, U: u, V: v, W: 0})
			default: // set to a random value (add the edge if absent)
				batch = append(batch, mincut.Change{Kind: mincut.SetEdge, U: u, V: v, W: rng.Int64N(scale + 1)})
			}
		}
	}
	return batch
}

// Streams of random batches on small random graphs, checked against brute
// force after every batch.
func TestDynamicRandomSmall(t *testing.T) {
	graphs, steps := 400, 30
	if testing.Short() {
		graphs, steps = 80, 20
	}
	total := mincut.Stats{}
	for gi := 0; gi < graphs; gi++ {
		rng := rand.New(rand.NewPCG(uint64(gi), 7))
		n := 2 + rng.IntN(11)
		scale := []int64{1, 4, 1000}[rng.IntN(3)]
		g := mincut.NewGraph(n)
		for i := 0; i < n*2; i++ {
			g.AddEdge(rng.IntN(n), rng.IntN(n), 1+rng.Int64N(scale))
		}
		d := mincut.NewDynamic(g)
		checkDynamic(t, d, d.Result())
		for s := 0; s < steps; s++ {
			b := randomBatch(rng, d, 4, true, scale)
			r, err := d.ApplyChecked(b)
			if err != nil {
				t.Fatalf("graph %d step %d: %v", gi, s, err)
			}
			checkDynamic(t, d, r)
		}
		addStats(&total, d.Stats())
	}
	t.Logf("%+v", total)
	requirePaths(t, total)
}

// Streams on the families where λ is not a single node: clustered groups,
// k-cores, two cliques, grids, power-law, health graphs. Edge changes only, so
// the cheap paths (and not recomputation) carry most batches.
func TestDynamicFamilies(t *testing.T) {
	steps := 60
	if testing.Short() {
		steps = 20
	}
	total := mincut.Stats{}
	for name, gs := range families(testing.Short()) {
		for i, g := range gs {
			t.Run(fmt.Sprintf("%s/%d", name, i), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), 11))
				d := mincut.NewDynamic(g)
				checkDynamic(t, d, d.Result())
				for s := 0; s < steps; s++ {
					b := randomBatch(rng, d, 3, s%10 == 9, mincutgen.Unit, g.Edges()...)
					checkDynamic(t, d, d.Apply(b))
				}
				addStats(&total, d.Stats())
			})
		}
	}
	t.Logf("%+v", total)
	requirePaths(t, total)
}

func addStats(a *mincut.Stats, b mincut.Stats) {
	a.Batches += b.Batches
	a.Unchanged += b.Unchanged
	a.CrossingOnly += b.CrossingOnly
	a.FlowChecked += b.FlowChecked
	a.KnownCut += b.KnownCut
	a.Recomputed += b.Recomputed
	a.RecomputeTopology += b.RecomputeTopology
	a.RecomputeCrossingIncrease += b.RecomputeCrossingIncrease
	a.RecomputeManyFlows += b.RecomputeManyFlows
	a.FlowsRun += b.FlowsRun
	a.FlowsSkipped += b.FlowsSkipped
	a.FlowWins += b.FlowWins
}

// requirePaths makes sure a property test exercised every way of settling a
// batch, so that passing means each rule was checked.
func requirePaths(t *testing.T, s mincut.Stats) {
	t.Helper()
	for name, v := range map[string]int{
		"Unchanged": s.Unchanged, "CrossingOnly": s.CrossingOnly, "FlowChecked": s.FlowChecked,
		"Recomputed": s.Recomputed, "FlowsRun": s.FlowsRun, "FlowsSkipped": s.FlowsSkipped, "FlowWins": s.FlowWins,
		"RecomputeTopology": s.RecomputeTopology, "RecomputeCrossingIncrease": s.RecomputeCrossingIncrease,
	} {
		if v == 0 {
			t.Errorf("path %s never taken: %+v", name, s)
		}
	}
}

// twoTriangles: triangles {0,1,2} and {3,4,5} (internal weight 10) joined by
// {2,3} and {1,4} (weight 3 each, cut 6), plus node 6 hanging on 0 with
// weight 5: λ = 5 with S = {6}.
func twoTriangles() *mincut.Graph {
	g := mincut.NewGraph(7)
	for _, t := range [][3]int{{0, 1, 2}, {3, 4, 5}} {
		g.AddEdge(t[0], t[1], 10)
		g.AddEdge(t[1], t[2], 10)
		g.AddEdge(t[0], t[2], 10)
	}
	g.AddEdge(2, 3, 3)
	g.AddEdge(1, 4, 3)
	g.AddEdge(0, 6, 5)
	return g
}

func TestDynamicRules(t *testing.T) {
	d := mincut.NewDynamic(twoTriangles())
	r := d.Result()
	if r.Lambda != 5 || fmt.Sprint(r.Side) != "[6]" {
		t.Fatalf("start: %+v", r)
	}
	step := func(c mincut.Change, lambda int64, path func(mincut.Stats) int) mincut.Result {
		t.Helper()
		before := path(d.Stats())
		r := d.Apply([]mincut.Change{c})
		checkDynamic(t, d, r)
		if r.Lambda != lambda {
			t.Fatalf("after %+v: lambda %d, want %d", c, r.Lambda, lambda)
		}
		if path(d.Stats()) != before+1 {
			t.Fatalf("after %+v: expected path not taken: %+v", c, d.Stats())
		}
		return r
	}
	// Increase not crossing S: nothing to do.
	step(mincut.Change{Kind: mincut.AddToEdge, U: 3, V: 4, W: 1}, 5, func(s mincut.Stats) int { return s.Unchanged })
	// Decrease crossing S: λ drops, S stays.
	step(mincut.Change{Kind: mincut.AddToEdge, U: 0, V: 6, W: 1}, 6, func(s mincut.Stats) int { return s.RecomputeCrossingIncrease })
	step(mincut.Change{Kind: mincut.AddToEdge, U: 0, V: 6, W: -1}, 5, func(s mincut.Stats) int { return s.CrossingOnly })
	// Decrease not crossing S, and the bridge cut becomes the minimum: a
	// bounded flow finds it.
	r = step(mincut.Change{Kind: mincut.AddToEdge, U: 2, V: 3, W: -2}, 4, func(s mincut.Stats) int { return s.FlowWins })
	if fmt.Sprint(r.Side) != "[3 4 5]" {
		t.Fatalf("side %v, want [3 4 5]", r.Side)
	}
	// Decrease not crossing S that a local lower bound rules out.
	step(mincut.Change{Kind: mincut.AddToEdge, U: 0, V: 1, W: -1}, 4, func(s mincut.Stats) int { return s.FlowsSkipped })
	// Give node 6 degree 4 (a decrease not crossing S, checked by a flow that
	// reaches the bound); then raising a bridge that crosses S leaves {6} as
	// a known cut of the old value 4.
	step(mincut.Change{Kind: mincut.SetEdge, U: 0, V: 6, W: 4}, 4, func(s mincut.Stats) int { return s.FlowChecked })
	r = step(mincut.Change{Kind: mincut.AddToEdge, U: 1, V: 4, W: 7}, 4, func(s mincut.Stats) int { return s.KnownCut })
	if fmt.Sprint(r.Side) != "[6]" {
		t.Fatalf("side %v, want [6]", r.Side)
	}
	// Removing the only edge of node 6 disconnects it.
	r = step(mincut.Change{Kind: mincut.SetEdge, U: 0, V: 6, W: 0}, 0, func(s mincut.Stats) int { return s.CrossingOnly })
	if fmt.Sprint(r.Side) != "[6]" || len(r.Witness) != 0 {
		t.Fatalf("got %+v", r)
	}
	// Removing node 6 reconnects the graph.
	step(mincut.Change{Kind: mincut.RemoveNode, U: 6}, 11, func(s mincut.Stats) int { return s.RecomputeTopology })
	// A new node attached with weight 2 in the same batch.
	before := d.Stats().RecomputeTopology
	r = d.Apply([]mincut.Change{{Kind: mincut.AddNode}, {Kind: mincut.SetEdge, U: 7, V: 5, W: 2}})
	checkDynamic(t, d, r)
	if r.Lambda != 2 || fmt.Sprint(r.Side) != "[7]" || d.Stats().RecomputeTopology != before+1 {
		t.Fatalf("after adding node 7: %+v %+v", r, d.Stats())
	}
}

func TestDynamicManyFlowsRecompute(t *testing.T) {
	// A 100-cycle of weight 3 plus a pendant of weight 5: λ = 5, S = {100}.
	// Lowering 40 cycle edges to 2 needs more than MaxFlowsPerBatch flows,
	// so the batch is recomputed; the answer is two cycle edges: 4.
	g := mincut.NewGraph(101)
	for v := 0; v < 100; v++ {
		g.AddEdge(v, (v+1)%100, 3)
	}
	g.AddEdge(0, 100, 5)
	d := mincut.NewDynamic(g)
	var b []mincut.Change
	for v := 10; v < 50; v++ {
		b = append(b, mincut.Change{Kind: mincut.AddToEdge, U: v, V: v + 1, W: -1})
	}
	r := d.Apply(b)
	checkDynamic(t, d, r)
	if r.Lambda != 4 || d.Stats().RecomputeManyFlows != 1 || len(b) <= mincut.MaxFlowsPerBatch {
		t.Fatalf("lambda %d stats %+v", r.Lambda, d.Stats())
	}
	// A few such decreases are settled by flows instead.
	r = d.Apply(b[:3])
	checkDynamic(t, d, r)
	if r.Lambda != 2 || d.Stats().FlowChecked != 1 {
		t.Fatalf("lambda %d stats %+v", r.Lambda, d.Stats())
	}
}

func TestDynamicBatchKeepsS(t *testing.T) {
	// Several decreases crossing S and increases elsewhere in one batch:
	// S stays, no flow, no recomputation.
	d := mincut.NewDynamic(twoTriangles())
	r := d.Apply([]mincut.Change{
		{Kind: mincut.AddToEdge, U: 0, V: 6, W: -2},
		{Kind: mincut.AddToEdge, U: 2, V: 3, W: 5},
		{Kind: mincut.AddToEdge, U: 0, V: 1, W: 5},
	})
	checkDynamic(t, d, r)
	if s := d.Stats(); s.CrossingOnly != 1 || s.FlowsRun != 0 || s.Recomputed != 0 || r.Lambda != 3 {
		t.Fatalf("lambda %d stats %+v", r.Lambda, s)
	}
	// An edge decreased then increased back within a batch is no change.
	r = d.Apply([]mincut.Change{
		{Kind: mincut.AddToEdge, U: 3, V: 4, W: -9},
		{Kind: mincut.AddToEdge, U: 3, V: 4, W: 9},
	})
	checkDynamic(t, d, r)
	if s := d.Stats(); s.Unchanged != 1 || r.Lambda != 3 {
		t.Fatalf("lambda %d stats %+v", r.Lambda, s)
	}
}

func TestDynamicInvalidChanges(t *testing.T) {
	d := mincut.NewDynamic(twoTriangles())
	before := d.Result()
	for i, b := range [][]mincut.Change{
		{{Kind: mincut.SetEdge, U: 0, V: 99, W: 1}},
		{{Kind: mincut.SetEdge, U: 1, V: 1, W: 1}},
		{{Kind: mincut.AddToEdge, U: 0, V: 6, W: -6}},
		{{Kind: mincut.SetEdge, U: 0, V: 6, W: -1}},
		{{Kind: mincut.RemoveNode, U: 6}, {Kind: mincut.SetEdge, U: 0, V: 6, W: 1}},
		{{Kind: mincut.RemoveNode, U: 7}},
		{{Kind: 0}},
		{{Kind: mincut.AddToEdge, U: 0, V: 1, W: -3}, {Kind: mincut.SetEdge, U: 2, V: 2, W: 1}},
		{{Kind: mincut.SetEdge, U: 0, V: 1, W: mincut.MaxTotalWeight}},
	} {
		_, err := d.ApplyChecked(b)
		if !errors.Is(err, mincut.ErrInvalidChange) {
			t.Fatalf("batch %d: err = %v, want ErrInvalidChange", i, err)
		}
		if d.Weight(0, 1) != 10 || d.Stats().Batches != 0 {
			t.Fatalf("batch %d: invalid batch modified the graph", i)
		}
	}
	after := d.Result()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("result changed: %+v -> %+v", before, after)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Apply did not panic on an invalid batch")
		}
	}()
	d.Apply([]mincut.Change{{Kind: mincut.RemoveNode, U: 42}})
}

func TestDynamicShrinkToOneNode(t *testing.T) {
	g := mincut.NewGraph(3)
	g.AddEdge(0, 1, 2)
	g.AddEdge(1, 2, 3)
	d := mincut.NewDynamic(g)
	r := d.Apply([]mincut.Change{{Kind: mincut.RemoveNode, U: 0}, {Kind: mincut.RemoveNode, U: 1}})
	checkDynamic(t, d, r)
	if r.Lambda != 0 || len(r.Side) != 0 {
		t.Fatalf("one node left: %+v", r)
	}
	r = d.Apply([]mincut.Change{{Kind: mincut.AddNode}, {Kind: mincut.SetEdge, U: 2, V: 3, W: 9}})
	checkDynamic(t, d, r)
	if r.Lambda != 9 {
		t.Fatalf("two nodes: %+v", r)
	}
}

// A longer stream on a medium clustered graph (λ is a group cut, so
// non-crossing decreases need real flows), checked against recomputation.
func TestDynamicMediumClustered(t *testing.T) {
	n, steps := 2000, 150
	if testing.Short() {
		n, steps = 600, 50
	}
	g := mincutgen.Clustered(n, 40, 9)
	d := mincut.NewDynamic(g)
	rng := rand.New(rand.NewPCG(5, 5))
	for s := 0; s < steps; s++ {
		checkDynamic(t, d, d.Apply(randomBatch(rng, d, 3, s%25 == 24, mincutgen.Unit/10, g.Edges()...)))
	}
	t.Logf("%+v", d.Stats())
	if d.Stats().FlowsRun == 0 {
		t.Fatalf("no flow was run: %+v", d.Stats())
	}
}
