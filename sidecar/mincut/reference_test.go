package mincut

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// bruteForce enumerates every bipartition of a graph with 2 <= n <= 20 nodes
// (node n-1 fixed on the false side) and returns the minimum cut value.
func bruteForce(g *Graph) int64 {
	n := g.n
	best := int64(-1)
	for mask := uint32(1); mask < 1<<(n-1); mask++ {
		var c int64
		for _, e := range g.edges {
			if (mask>>e.U)&1 != (mask>>e.V)&1 {
				c += e.W
			}
		}
		if best < 0 || c < best {
			best = c
		}
	}
	return best
}

// referenceStoerWagner runs the plain Stoer–Wagner reference on g (n >= 2).
func referenceStoerWagner(g *Graph) int64 {
	c := buildCSR(g.n, g.edges)
	if _, k := components(c); k > 1 {
		return 0
	}
	v, _ := stoerWagner(c)
	return v
}

// randomSmallGraph returns a random graph of n nodes; dense or sparse, with
// small or large weights, sometimes disconnected.
func randomSmallGraph(rng *rand.Rand, n int) *Graph {
	g := NewGraph(n)
	p := rng.Float64()
	maxW := []int64{1, 3, 10, 1000000}[rng.IntN(4)]
	for u := 0; u < n; u++ {
		for v := u + 1; v < n; v++ {
			if rng.Float64() < p {
				g.AddEdge(u, v, 1+rng.Int64N(maxW))
			}
		}
	}
	return g
}

// verifyResult checks r against the reference value want and against g
// itself: the side is a proper subset and the smaller side, it cuts exactly
// Lambda, and the witness is exactly the crossing edges, sorted.
func verifyResult(g *Graph, r Result, want int64) error {
	if r.Lambda != want {
		return fmt.Errorf("lambda = %d, reference %d", r.Lambda, want)
	}
	if g.n < 2 {
		if len(r.Side) != 0 || len(r.Witness) != 0 {
			return fmt.Errorf("fewer than 2 nodes but side %v witness %v", r.Side, r.Witness)
		}
		return nil
	}
	if len(r.Side) == 0 || 2*len(r.Side) > g.n {
		return fmt.Errorf("side has %d of %d nodes; want the smaller, non-empty side", len(r.Side), g.n)
	}
	if c := g.CutValue(r.Side); c != r.Lambda {
		return fmt.Errorf("side %v cuts %d, lambda %d", r.Side, c, r.Lambda)
	}
	in := r.InSide(g.n)
	var crossing []Edge
	for _, e := range g.Edges() {
		if in[e.U] != in[e.V] {
			crossing = append(crossing, e)
		}
	}
	if len(crossing) != len(r.Witness) {
		return fmt.Errorf("witness has %d edges, crossing edges %d", len(r.Witness), len(crossing))
	}
	for i := range crossing {
		if crossing[i] != r.Witness[i] {
			return fmt.Errorf("witness[%d] = %v, want %v", i, r.Witness[i], crossing[i])
		}
	}
	return nil
}

func TestMinCutAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := 3000
	if testing.Short() {
		cases = 500
	}
	for i := 0; i < cases; i++ {
		n := 2 + rng.IntN(13)
		g := randomSmallGraph(rng, n)
		want := bruteForce(g)
		if sw := referenceStoerWagner(g); sw != want {
			t.Fatalf("case %d: reference Stoer–Wagner %d != brute force %d", i, sw, want)
		}
		if err := verifyResult(g, MinCut(g), want); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
	}
}

// Nagamochi–Ibaraki alone (CAPFOREST contractions and prefix cuts, no
// Padberg–Rinaldi tests) must be exact too: this is the path that finds cuts
// the degree and local tests cannot see.
func TestCapforestOnlyAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	cases := 2000
	if testing.Short() {
		cases = 400
	}
	prefixWins := 0
	for i := 0; i < cases; i++ {
		n := 2 + rng.IntN(13)
		g := randomSmallGraph(rng, n)
		want := bruteForce(g)
		c := buildCSR(g.n, g.edges)
		got, side := solveCSRMode(c, true)
		if got != want {
			t.Fatalf("case %d: capforest-only %d, brute force %d", i, got, want)
		}
		var cut int64
		cnt := 0
		for _, e := range g.edges {
			if side[e.U] != side[e.V] {
				cut += e.W
			}
		}
		for _, b := range side {
			if b {
				cnt++
			}
		}
		if cut != want || cnt == 0 || cnt == n {
			t.Fatalf("case %d: side of %d nodes cuts %d, want %d", i, cnt, cut, want)
		}
		minDeg := int64(-1)
		for _, d := range g.Degrees() {
			if minDeg < 0 || d < minDeg {
				minDeg = d
			}
		}
		if want < minDeg && cnt > 1 && n-cnt > 1 {
			prefixWins++
		}
	}
	if prefixWins < 50 {
		t.Fatalf("only %d cases had a non-trivial minimum cut", prefixWins)
	}
}

// Two 6-cliques (weight 10) joined by one edge of weight 1: the first
// CAPFOREST pass scans one clique before crossing, so its prefix cut finds
// λ = 1 although every degree is 50 or more.
func TestCapforestPrefixCut(t *testing.T) {
	g := NewGraph(12)
	for k := 0; k < 2; k++ {
		for u := 0; u < 6; u++ {
			for v := u + 1; v < 6; v++ {
				g.AddEdge(6*k+u, 6*k+v, 10)
			}
		}
	}
	g.AddEdge(5, 6, 1)
	c := buildCSR(g.n, g.edges)
	s := &solver{best: -1, label: make([]int32, 12), side: make([]bool, 12)}
	for i := range s.label {
		s.label[i] = int32(i)
	}
	deg := degrees(c, nil)
	s.best = 50
	s.resetUF(c.n)
	s.capforest(c, deg)
	if s.best != 1 {
		t.Fatalf("prefix cut not found: best %d", s.best)
	}
	for v := 0; v < 12; v++ {
		if (s.side[v] == s.side[0]) != (v < 6) {
			t.Fatalf("side %v does not separate the cliques", s.side)
		}
	}
}

// The checker itself must reject wrong answers, or every test using it
// would pass vacuously.
func TestVerifyResultRejects(t *testing.T) {
	g := NewGraph(4)
	g.AddEdge(0, 1, 5)
	g.AddEdge(1, 2, 1)
	g.AddEdge(2, 3, 5)
	good := MinCut(g)
	if err := verifyResult(g, good, 1); err != nil {
		t.Fatalf("correct result rejected: %v", err)
	}
	for name, r := range map[string]Result{
		"wrong lambda":    {Lambda: 2, Side: good.Side, Witness: good.Witness},
		"wrong side":      {Lambda: 1, Side: []int{0}, Witness: good.Witness},
		"larger side":     {Lambda: 1, Side: []int{0, 1, 3}, Witness: good.Witness},
		"missing witness": {Lambda: 1, Side: good.Side},
		"wrong witness":   {Lambda: 1, Side: good.Side, Witness: []Edge{{0, 1, 5}}},
		"empty side":      {Lambda: 1, Witness: good.Witness},
	} {
		if verifyResult(g, r, 1) == nil {
			t.Errorf("%s: accepted %+v", name, r)
		}
	}
}
