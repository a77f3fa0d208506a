// Package mincut computes exact global minimum cuts of undirected weighted
// graphs and keeps them exact under edge and node updates.
//
// It is the sensor of the integrity monitor: the health graph of operational
// components (partitions, centroids, shards, maintenance jobs, replicas,
// gateways) is cut at its weakest point, λ is the total capacity of that cut and
// the witness edges are the edges crossing it.
//
// Weights are fixed-point integers (int64) chosen by the caller, for example
// capacity×1e6, so that equality of cut values is exact: a floating-point
// minimum cut can report a cut that is not minimal or flip between equal cuts
// because of rounding, and the incremental rules in [Dynamic] depend on exact
// comparisons.
//
// The static algorithm ([MinCut]) follows the practical exact approach of
// Henzinger, Noe, Schulz and Strash ("Practical Minimum Cut Algorithms",
// 2018): Nagamochi–Ibaraki CAPFOREST passes and Padberg–Rinaldi tests
// contract edges that no cut smaller than the best known one can separate,
// until one node remains. The package has no dependencies beyond the standard
// library.
package mincut

import (
	"fmt"
	"math"
	"sort"
)

// MaxTotalWeight bounds the sum of all edge weights of a graph. Keeping the
// total at most half of math.MaxInt64 guarantees that no cut value, weighted
// degree or residual capacity (at most twice an edge weight) can overflow.
const MaxTotalWeight = math.MaxInt64 / 2

// Edge is an undirected weighted edge. Edges reported by this package have
// U < V.
type Edge struct {
	U, V int
	W    int64
}

// Graph is an undirected graph with nodes 0..N()-1 and positive int64 edge
// weights. Parallel edges are merged by summing their weights and self-loops
// are ignored, because neither changes which cuts are minimal (a self-loop
// never crosses a cut). The zero value is an empty graph; use [NewGraph].
//
// A Graph is not safe for concurrent mutation.
type Graph struct {
	n     int
	edges []Edge           // U < V, W > 0
	index map[uint64]int32 // pairKey(U,V) -> position in edges
	total int64
}

// NewGraph returns a graph with n isolated nodes. It panics if n < 0.
func NewGraph(n int) *Graph {
	if n < 0 {
		panic(fmt.Sprintf("mincut: NewGraph(%d): negative node count", n))
	}
	return &Graph{n: n, index: make(map[uint64]int32)}
}

func pairKey(u, v int) uint64 {
	if u > v {
		u, v = v, u
	}
	return uint64(u)<<32 | uint64(uint32(v))
}

// N returns the number of nodes.
func (g *Graph) N() int { return g.n }

// NumEdges returns the number of distinct edges with a positive weight.
func (g *Graph) NumEdges() int { return len(g.edges) }

// TotalWeight returns the sum of all edge weights.
func (g *Graph) TotalWeight() int64 { return g.total }

// AddNode appends an isolated node and returns its id.
func (g *Graph) AddNode() int {
	g.n++
	return g.n - 1
}

func (g *Graph) check(op string, u, v int, w int64) {
	if u < 0 || u >= g.n || v < 0 || v >= g.n {
		panic(fmt.Sprintf("mincut: %s(%d, %d): node out of range [0, %d)", op, u, v, g.n))
	}
	if w < 0 {
		panic(fmt.Sprintf("mincut: %s(%d, %d, %d): negative weight", op, u, v, w))
	}
	if g.n > math.MaxInt32 {
		panic("mincut: more than 2^31-1 nodes")
	}
}

// AddEdge adds weight w to the edge {u, v}, creating it if needed; parallel
// edges therefore sum. Self-loops (u == v) and w == 0 are ignored.
//
// It panics if u or v is out of range, if w is negative, or if the total
// weight would exceed [MaxTotalWeight]: these are programming errors of the
// caller, like an index out of range. Use [ReadMETIS] for untrusted input.
func (g *Graph) AddEdge(u, v int, w int64) {
	g.check("AddEdge", u, v, w)
	if u == v || w == 0 {
		return
	}
	if w > MaxTotalWeight-g.total {
		panic(fmt.Sprintf("mincut: AddEdge(%d, %d, %d): total weight exceeds MaxTotalWeight", u, v, w))
	}
	g.total += w
	k := pairKey(u, v)
	if i, ok := g.index[k]; ok {
		g.edges[i].W += w
		return
	}
	if u > v {
		u, v = v, u
	}
	g.index[k] = int32(len(g.edges))
	g.edges = append(g.edges, Edge{U: u, V: v, W: w})
}

// SetWeight sets the weight of edge {u, v} to w; w == 0 removes the edge.
// Self-loops are ignored. It panics under the same conditions as AddEdge.
func (g *Graph) SetWeight(u, v int, w int64) {
	g.check("SetWeight", u, v, w)
	if u == v {
		return
	}
	old := g.Weight(u, v)
	if w-old > MaxTotalWeight-g.total {
		panic(fmt.Sprintf("mincut: SetWeight(%d, %d, %d): total weight exceeds MaxTotalWeight", u, v, w))
	}
	k := pairKey(u, v)
	i, ok := g.index[k]
	switch {
	case ok && w > 0:
		g.edges[i].W = w
	case ok: // remove: move the last edge into the hole
		last := len(g.edges) - 1
		if int(i) != last {
			g.edges[i] = g.edges[last]
			g.index[pairKey(g.edges[i].U, g.edges[i].V)] = i
		}
		g.edges = g.edges[:last]
		delete(g.index, k)
	case w > 0:
		if u > v {
			u, v = v, u
		}
		g.index[k] = int32(len(g.edges))
		g.edges = append(g.edges, Edge{U: u, V: v, W: w})
	}
	g.total += w - old
}

// Weight returns the weight of edge {u, v}, 0 if absent or out of range.
func (g *Graph) Weight(u, v int) int64 {
	if g.index == nil {
		return 0
	}
	if i, ok := g.index[pairKey(u, v)]; ok && u != v {
		return g.edges[i].W
	}
	return 0
}

// Edges returns a copy of all edges (U < V, W > 0) sorted by (U, V).
func (g *Graph) Edges() []Edge {
	out := append([]Edge(nil), g.edges...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].U != out[j].U {
			return out[i].U < out[j].U
		}
		return out[i].V < out[j].V
	})
	return out
}

// Degrees returns the weighted degree of every node.
func (g *Graph) Degrees() []int64 {
	d := make([]int64, g.n)
	for _, e := range g.edges {
		d[e.U] += e.W
		d[e.V] += e.W
	}
	return d
}

// CutValue returns the total weight of the edges with exactly one endpoint in
// side. It lets callers (and tests) check a reported cut independently.
func (g *Graph) CutValue(side []int) int64 {
	in := make([]bool, g.n)
	for _, v := range side {
		if v >= 0 && v < g.n {
			in[v] = true
		}
	}
	var c int64
	for _, e := range g.edges {
		if in[e.U] != in[e.V] {
			c += e.W
		}
	}
	return c
}

// csr is the compact adjacency the solvers work on: the neighbours of node u
// are adj[xadj[u]:xadj[u+1]] with weights w[...]. Every undirected edge is
// stored twice.
type csr struct {
	n    int
	xadj []int32
	adj  []int32
	w    []int64
}

// buildCSR builds the adjacency of n nodes from edges with U != V and W > 0.
func buildCSR(n int, edges []Edge) csr {
	c := csr{n: n, xadj: make([]int32, n+1), adj: make([]int32, 2*len(edges)), w: make([]int64, 2*len(edges))}
	for _, e := range edges {
		c.xadj[e.U+1]++
		c.xadj[e.V+1]++
	}
	for i := 0; i < n; i++ {
		c.xadj[i+1] += c.xadj[i]
	}
	fill := make([]int32, n)
	copy(fill, c.xadj[:n])
	for _, e := range edges {
		p := fill[e.U]
		c.adj[p], c.w[p] = int32(e.V), e.W
		fill[e.U]++
		p = fill[e.V]
		c.adj[p], c.w[p] = int32(e.U), e.W
		fill[e.V]++
	}
	return c
}
