// Package mincutgen generates deterministic (seeded) test and benchmark graphs
// for package mincut: the families on which minimum-cut code is usually
// wrong or slow. Several of them are built so that λ is NOT the smallest
// weighted degree, because on plain sparse random graphs a single node is
// almost always the minimum cut and such graphs test very little.
//
// Weights are fixed-point: Unit (1e6) stands for capacity 1.0, so the health
// range 0.01..1 is 10_000..1_000_000.
package mincutgen

import (
	"math/rand/v2"
	"slices"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

// Unit is the fixed-point value of capacity 1.0.
const Unit = 1_000_000

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// health returns a capacity in 0.01..1 as fixed-point.
func health(r *rand.Rand) int64 { return Unit/100 + r.Int64N(Unit-Unit/100+1) }

// between returns a fixed-point weight uniformly in [lo, hi] (in units of 1.0).
func between(r *rand.Rand, lo, hi float64) int64 {
	a, b := int64(lo*Unit), int64(hi*Unit)
	return a + r.Int64N(b-a+1)
}

// Random returns a connected sparse random graph: a random spanning tree plus
// random edges up to an average degree of avgDeg, weights 0.01..1.
func Random(n int, avgDeg float64, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(n)
	perm := r.Perm(n)
	for i := 1; i < n; i++ {
		g.AddEdge(perm[i], perm[r.IntN(i)], health(r))
	}
	extra := int(float64(n)*avgDeg/2) - (n - 1)
	for i := 0; i < extra; i++ {
		g.AddEdge(r.IntN(n), r.IntN(n), health(r))
	}
	return g
}

// Grid returns a rows×cols 4-neighbour grid with weights 0.01..1.
func Grid(rows, cols int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(rows * cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			v := i*cols + j
			if j+1 < cols {
				g.AddEdge(v, v+1, health(r))
			}
			if i+1 < rows {
				g.AddEdge(v, v+cols, health(r))
			}
		}
	}
	return g
}

// UniformGrid returns a rows×cols grid with every weight equal to Unit: many
// minimum cuts tie (corners, and straight lines when the grid is thin).
func UniformGrid(rows, cols int) *mincut.Graph {
	g := mincut.NewGraph(rows * cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			v := i*cols + j
			if j+1 < cols {
				g.AddEdge(v, v+1, Unit)
			}
			if i+1 < rows {
				g.AddEdge(v, v+cols, Unit)
			}
		}
	}
	return g
}

// BarabasiAlbert returns a preferential-attachment (power-law) graph: each new
// node attaches to m distinct earlier nodes chosen proportionally to degree.
// Weights 0.01..1.
func BarabasiAlbert(n, m int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(n)
	if n == 0 {
		return g
	}
	var ends []int // every edge endpoint once: sampling from it is by degree
	core := min(m+1, n)
	for u := 0; u < core; u++ {
		for v := u + 1; v < core; v++ {
			g.AddEdge(u, v, health(r))
			ends = append(ends, u, v)
		}
	}
	chosen := make([]int, 0, m) // a slice, not a map: iteration order must be seeded
	for u := core; u < n; u++ {
		chosen = chosen[:0]
		for len(chosen) < m {
			if v := ends[r.IntN(len(ends))]; !slices.Contains(chosen, v) {
				chosen = append(chosen, v)
			}
		}
		for _, v := range chosen {
			g.AddEdge(u, v, health(r))
			ends = append(ends, u, v)
		}
	}
	return g
}

// Clustered returns dense groups of about groupSize nodes (heavy internal
// edges, 0.5..1, about 8 per node) joined in a ring and at random by a few
// weak links (0.01..0.1). The minimum cut separates groups, not a node.
func Clustered(n, groupSize int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(n)
	groups := max(1, n/groupSize)
	lo := func(k int) int { return k * n / groups }
	for k := 0; k < groups; k++ {
		a, b := lo(k), lo(k+1)
		size := b - a
		for v := a + 1; v < b; v++ { // a path keeps the group connected
			g.AddEdge(v-1, v, between(r, 0.5, 1))
		}
		for i := 0; i < size*4; i++ {
			g.AddEdge(a+r.IntN(size), a+r.IntN(size), between(r, 0.5, 1))
		}
		if groups > 1 {
			c := lo((k + 1) % groups)
			d := lo((k+1)%groups + 1)
			for i := 0; i < 1+r.IntN(3); i++ {
				g.AddEdge(a+r.IntN(size), c+r.IntN(d-c), between(r, 0.01, 0.1))
			}
		}
	}
	for i := 0; i < groups/2; i++ {
		g.AddEdge(r.IntN(n), r.IntN(n), between(r, 0.01, 0.1))
	}
	return g
}

// KCores returns blocks that are each the k-core of a random graph of average
// degree 2k (so every node has at least k unit-weight edges), joined in a
// ring by fewer than k/2 unit edges between neighbouring blocks: λ is below
// the minimum degree. The result has at most n nodes (the k-core peels some).
func KCores(n, k, blocks int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	type blk struct{ nodes []int }
	var edges [][2]int
	var bl []blk
	next := 0
	per := max(k+2, n/max(1, blocks))
	for b := 0; b < blocks; b++ {
		// Random graph on per nodes, then peel to its k-core.
		adj := make([]map[int]bool, per)
		for i := range adj {
			adj[i] = make(map[int]bool)
		}
		for i := 0; i < per*k; i++ {
			u, v := r.IntN(per), r.IntN(per)
			if u != v {
				adj[u][v], adj[v][u] = true, true
			}
		}
		removed := make([]bool, per)
		for changed := true; changed; {
			changed = false
			for u := 0; u < per; u++ {
				if !removed[u] && len(adj[u]) < k {
					removed[u], changed = true, true
					for v := range adj[u] {
						delete(adj[v], u)
					}
					adj[u] = nil
				}
			}
		}
		id := make([]int, per)
		var b0 blk
		for u := 0; u < per; u++ {
			if !removed[u] {
				id[u] = next
				b0.nodes = append(b0.nodes, next)
				next++
			}
		}
		for u := 0; u < per; u++ {
			for v := range adj[u] {
				if u < v {
					edges = append(edges, [2]int{id[u], id[v]})
				}
			}
		}
		if len(b0.nodes) > 0 {
			bl = append(bl, b0)
		}
	}
	g := mincut.NewGraph(next)
	for _, e := range edges {
		g.AddEdge(e[0], e[1], Unit)
	}
	links := max(1, (k-1)/2)
	for i := range bl {
		if len(bl) < 2 {
			break
		}
		a, b := bl[i].nodes, bl[(i+1)%len(bl)].nodes
		for j := 0; j < links; j++ {
			g.AddEdge(a[r.IntN(len(a))], b[r.IntN(len(b))], Unit)
		}
	}
	return g
}

// TwoCliques returns two cliques of k nodes each (weights 0.5..1) joined by
// `bridges` edges of weight 0.01..1 (bridges >= 1).
func TwoCliques(k, bridges int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(2 * k)
	for c := 0; c < 2; c++ {
		for u := 0; u < k; u++ {
			for v := u + 1; v < k; v++ {
				g.AddEdge(c*k+u, c*k+v, between(r, 0.5, 1))
			}
		}
	}
	for i := 0; i < bridges; i++ {
		g.AddEdge(r.IntN(k), k+r.IntN(k), health(r))
	}
	return g
}

// Health returns a graph of exactly n nodes shaped like the integrity
// monitor's health graph: per collection a root, a gateway, an index node, a
// memory node, 1–64 shards each with a replica, 16–256 partitions, 100–10,000
// IVF centroids and 10–100 maintenance jobs. Every component is linked to its
// collection root; partitions are linked in a ring and to a shard; centroids
// route to a shard and belong to a partition; shards depend on jobs and
// replicate to their replica; the gateway routes to every shard; a cluster gateway (node 0, when n >= 16) links all roots. All capacities are
// 0.01..1. Sizes shrink to fit n; n must be at least 2.
func Health(n int, seed uint64) *mincut.Graph {
	r := newRand(seed)
	g := mincut.NewGraph(n)
	next := 0
	alloc := func() int { next++; return next - 1 }
	var roots []int
	remaining := n
	cluster := n >= 16
	if cluster {
		alloc() // cluster gateway = node 0
		remaining--
	}
	for remaining > 0 {
		shards := 1 + r.IntN(64)
		parts := 16 + r.IntN(241)
		jobs := 10 + r.IntN(91)
		cents := 100 + r.IntN(9901)
		fixed := func() int { return 4 + 2*shards + parts + jobs }
		if remaining < fixed()+cents+fixed() { // last collection: fit exactly
			for remaining < fixed()+1 && (shards > 1 || parts > 1 || jobs > 1) {
				shards = max(1, shards/2)
				parts = max(1, parts/2)
				jobs = max(1, jobs/2)
			}
			cents = max(0, remaining-fixed())
			if remaining < fixed() {
				// Tiny n: a root plus leaves.
				root := alloc()
				roots = append(roots, root)
				for i := 1; i < remaining; i++ {
					g.AddEdge(root, alloc(), health(r))
				}
				remaining = 0
				break
			}
		}
		remaining -= fixed() + cents
		root, gw, idx, mem := alloc(), alloc(), alloc(), alloc()
		roots = append(roots, root)
		g.AddEdge(gw, root, health(r))
		g.AddEdge(idx, root, health(r))
		g.AddEdge(mem, root, health(r))
		g.AddEdge(idx, mem, health(r))
		sh := make([]int, shards)
		for i := range sh {
			sh[i] = alloc()
			rep := alloc()
			g.AddEdge(sh[i], root, health(r))
			g.AddEdge(rep, root, health(r))
			g.AddEdge(sh[i], rep, health(r)) // replication
			g.AddEdge(gw, sh[i], health(r))  // routing
			g.AddEdge(idx, sh[i], health(r))
		}
		pt := make([]int, parts)
		for i := range pt {
			pt[i] = alloc()
			g.AddEdge(pt[i], root, health(r))
			g.AddEdge(pt[i], sh[i%shards], health(r))
			if i > 0 {
				g.AddEdge(pt[i], pt[i-1], health(r)) // partition_link
			}
		}
		if parts > 2 {
			g.AddEdge(pt[0], pt[parts-1], health(r))
		}
		for i := 0; i < jobs; i++ {
			j := alloc()
			g.AddEdge(j, root, health(r))
			for d := 0; d < 1+r.IntN(3); d++ {
				g.AddEdge(sh[r.IntN(shards)], j, health(r)) // dependency
			}
		}
		for i := 0; i < cents; i++ {
			c := alloc()
			g.AddEdge(c, root, health(r))
			g.AddEdge(c, sh[r.IntN(shards)], health(r)) // routing
			g.AddEdge(c, pt[r.IntN(parts)], health(r))
		}
	}
	if cluster {
		for _, root := range roots {
			g.AddEdge(0, root, health(r))
		}
	}
	if next != n {
		panic("mincutgen: Health allocated the wrong number of nodes")
	}
	return g
}
