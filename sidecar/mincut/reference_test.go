package mincut

import (
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

// checkResult verifies the internal consistency of a result: the side is a
// proper subset, its cut value is Lambda, and the witness edges are exactly
// the crossing edges with their weights.
func checkResult(t *testing.T, g *Graph, r Result, want int64) {
	t.Helper()
	if r.Lambda != want {
		t.Fatalf("lambda = %d, want %d", r.Lambda, want)
	}
	if g.n < 2 {
		return
	}
	if len(r.Side) == 0 || len(r.Side) >= g.n {
		t.Fatalf("side has %d of %d nodes", len(r.Side), g.n)
	}
	if c := g.CutValue(r.Side); c != r.Lambda {
		t.Fatalf("side %v cuts %d, lambda %d", r.Side, c, r.Lambda)
	}
	in := r.InSide(g.n)
	var want2 []Edge
	for _, e := range g.Edges() {
		if in[e.U] != in[e.V] {
			want2 = append(want2, e)
		}
	}
	if len(want2) != len(r.Witness) {
		t.Fatalf("witness has %d edges, crossing edges %d", len(r.Witness), len(want2))
	}
	for i := range want2 {
		if want2[i] != r.Witness[i] {
			t.Fatalf("witness[%d] = %v, want %v", i, r.Witness[i], want2[i])
		}
	}
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
		checkResult(t, g, MinCut(g), want)
	}
}
