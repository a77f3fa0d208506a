package mincut

import "sort"

// Result is a global minimum cut.
type Result struct {
	// Lambda is the minimum total weight of edges whose removal disconnects
	// the graph: 0 for a disconnected graph or a graph with fewer than two
	// nodes.
	Lambda int64
	// Side holds, sorted, the nodes of one side of a minimum cut: the side
	// with fewer nodes (on a tie, the side without the lowest-numbered node).
	// It is empty only when the graph has fewer than two nodes.
	Side []int
	// Witness holds the edges crossing the cut, sorted by (U, V); their
	// weights sum to Lambda.
	Witness []Edge
}

// InSide returns Side as a membership mask over n nodes.
func (r Result) InSide(n int) []bool {
	m := make([]bool, n)
	for _, v := range r.Side {
		if v < n {
			m[v] = true
		}
	}
	return m
}

// MinCut returns an exact global minimum cut of g.
//
// A graph with fewer than two nodes has no cut; MinCut then reports
// Lambda = 0 with an empty Side and no witness (callers that need a real cut
// should check g.N() >= 2). A disconnected graph has Lambda = 0 and one of its
// connected components as Side, with no witness edges.
func MinCut(g *Graph) Result {
	if g.n < 2 {
		return Result{}
	}
	c := buildCSR(g.n, g.edges)
	lambda, side := solveCSR(c)
	return makeResult(lambda, side, func(yield func(u, v int, w int64)) {
		for _, e := range g.edges {
			yield(e.U, e.V, e.W)
		}
	})
}

// makeResult normalises a cut given as a membership mask: it picks the
// smaller side and collects the crossing edges from the edge iterator.
func makeResult(lambda int64, side []bool, edges func(func(u, v int, w int64))) Result {
	n := len(side)
	cnt := 0
	for _, b := range side {
		if b {
			cnt++
		}
	}
	want := true
	if 2*cnt > n || (2*cnt == n && side[0]) {
		want = false
	}
	r := Result{Lambda: lambda, Side: make([]int, 0, min(cnt, n-cnt))}
	for v, b := range side {
		if b == want {
			r.Side = append(r.Side, v)
		}
	}
	edges(func(u, v int, w int64) {
		if side[u] != side[v] {
			if u > v {
				u, v = v, u
			}
			r.Witness = append(r.Witness, Edge{U: u, V: v, W: w})
		}
	})
	sortEdges(r.Witness)
	return r
}

func sortEdges(es []Edge) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].U != es[j].U {
			return es[i].U < es[j].U
		}
		return es[i].V < es[j].V
	})
}

// solveCSR returns λ and a membership mask of one side of a minimum cut of a
// graph with at least two nodes.
//
// Invariant of the main loop: best is the value of a real cut of the input
// (recorded in bestSide) and best <= the weighted degree of every node of the
// current contracted graph. Each round contracts only pairs of nodes that no
// cut of value < best can separate (or, for the strict Padberg–Rinaldi test 2,
// that no minimum cut of value < best separates), so every cut cheaper than
// best survives contraction; when one node remains, best is λ.
func solveCSR(c csr) (int64, []bool) { return solveCSRMode(c, false) }

// solveCSRMode is solveCSR; with capforestOnly it skips the Padberg–Rinaldi
// tests, which leaves Nagamochi–Ibaraki's exact algorithm on its own (tests
// use it to check CAPFOREST's contractions and prefix cuts, which the tests
// otherwise often pre-empt).
func solveCSRMode(c csr, capforestOnly bool) (int64, []bool) {
	n0 := c.n
	side := make([]bool, n0)
	if comp, k := components(c); k > 1 {
		// Disconnected: λ = 0 and the component of node 0 is a minimum cut.
		for v := range side {
			side[v] = comp[v] == 0
		}
		return 0, side
	}
	s := &solver{
		capforestOnly: capforestOnly,
		best:          -1,
		label:         make([]int32, n0),
		side:          side,
	}
	for i := range s.label {
		s.label[i] = int32(i)
	}
	s.run(c)
	return s.best, s.side
}

// solver holds the state of one static minimum-cut computation.
type solver struct {
	capforestOnly bool
	skipTriangles bool // the triangle tests merged under 1% last time
	best          int64
	side          []bool  // cut of value best over the original nodes
	label         []int32 // original node -> node of the current contracted graph
	seed          uint64
	uf            []int32
}

func (s *solver) record(val int64, inCut func(cur int32) bool) {
	s.best = val
	for o, l := range s.label {
		s.side[o] = inCut(l)
	}
}

func (s *solver) run(c csr) {
	deg := make([]int64, 0, c.n)
	for round := 0; c.n > 1; round++ {
		deg = degrees(c, deg[:0])
		mv, md := 0, deg[0]
		for v, d := range deg {
			if d < md {
				mv, md = v, d
			}
		}
		if s.best < 0 || md < s.best {
			s.record(md, func(l int32) bool { return int(l) == mv })
		}
		if c.n == 2 {
			return // the only cut is a single node, just recorded
		}
		s.resetUF(c.n)
		// The Padberg–Rinaldi tests cost one edge scan; when they shrink the
		// graph by a tenth or more, contract right away and skip the
		// (heap-bound, several times dearer) CAPFOREST pass this round.
		if s.capforestOnly {
			s.capforest(c, deg)
		} else if merges := s.padbergRinaldi(c, deg); merges*10 < c.n {
			// The triangle tests scan every edge's neighbourhood. They
			// start in the second round, on a graph CAPFOREST has already
			// shrunk, and stop after a round where they merged under 1%
			// (sparse graphs with few triangles, like random k-cores).
			if round > 0 && !s.skipTriangles {
				tri := s.padbergRinaldiTriangles(c, deg)
				s.skipTriangles = tri*100 < c.n
				merges += tri
			}
			if merges*10 < c.n {
				s.capforest(c, deg)
			}
		}
		next, merged := s.contract(c)
		if !merged {
			// Cannot happen: CAPFOREST runs whenever the tests merged nothing,
			// and the last node of its pass has all its edges scanned, so its
			// last edge gets q = degree >= best.
			// Stoer–Wagner on the remainder keeps the answer exact anyway.
			val, in := stoerWagner(c)
			if val < s.best {
				s.record(val, func(l int32) bool { return in[l] })
			}
			return
		}
		c = next
	}
}

func degrees(c csr, deg []int64) []int64 {
	for v := 0; v < c.n; v++ {
		var d int64
		for p := c.xadj[v]; p < c.xadj[v+1]; p++ {
			d += c.w[p]
		}
		deg = append(deg, d)
	}
	return deg
}

// components labels connected components 0..k-1 by BFS.
func components(c csr) ([]int32, int) {
	comp := make([]int32, c.n)
	for i := range comp {
		comp[i] = -1
	}
	queue := make([]int32, 0, c.n)
	k := int32(0)
	for s := 0; s < c.n; s++ {
		if comp[s] >= 0 {
			continue
		}
		comp[s] = k
		queue = append(queue[:0], int32(s))
		for i := 0; i < len(queue); i++ {
			u := queue[i]
			for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
				if v := c.adj[p]; comp[v] < 0 {
					comp[v] = k
					queue = append(queue, v)
				}
			}
		}
		k++
	}
	return comp, int(k)
}

func (s *solver) resetUF(n int) {
	if cap(s.uf) < n {
		s.uf = make([]int32, n)
	}
	s.uf = s.uf[:n]
	for i := range s.uf {
		s.uf[i] = int32(i)
	}
}

func (s *solver) find(x int32) int32 {
	for s.uf[x] != x {
		s.uf[x] = s.uf[s.uf[x]]
		x = s.uf[x]
	}
	return x
}

// union merges the classes of a and b and reports whether they differed.
func (s *solver) union(a, b int32) bool {
	a, b = s.find(a), s.find(b)
	if a == b {
		return false
	}
	if a < b {
		a, b = b, a
	}
	s.uf[a] = b
	return true
}

// padbergRinaldi marks edges for contraction by the two local
// Padberg–Rinaldi tests that need no triangle enumeration:
//
//   - PR1: w(u,v) >= best. Every cut separating u and v costs at least w(u,v),
//     so no cut cheaper than best separates them.
//   - PR2 (strict): 2·w(u,v) > min(deg u, deg v). If a cut S separates them
//     with u the endpoint of smaller degree, moving u to v's side lowers the
//     cut strictly, so no minimum cut separates them. (S = {u} would cost
//     deg(u) >= best.) The non-strict form allows ties and is not safe when
//     many edges are contracted at once, hence the strict form.
//
// It returns the number of successful unions.
func (s *solver) padbergRinaldi(c csr, deg []int64) int {
	merges := 0
	for u := 0; u < c.n; u++ {
		du := deg[u]
		for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
			v := c.adj[p]
			if int(v) <= u {
				continue
			}
			w := c.w[p]
			if (w >= s.best || 2*w > min(du, deg[v])) && s.union(int32(u), v) {
				merges++
			}
		}
	}
	return merges
}

// triangleScanLimit bounds the adjacency length scanned per edge by the
// triangle tests, so that a hub cannot make a round quadratic.
const triangleScanLimit = 64

// padbergRinaldiTriangles marks edges by the Padberg–Rinaldi tests that look
// at triangles u, v, x (common neighbours x of the edge's ends):
//
//   - PR4: w(u,v) + Σ_x min(w(u,x), w(v,x)) >= best. The edge and the paths
//     through common neighbours are edge-disjoint, so this sum is a lower
//     bound on the u–v connectivity.
//   - PR3 (strict): some x has 2(w(u,v)+w(u,x)) > deg u and
//     2(w(u,v)+w(v,x)) > deg v. If a cut separates u and v, x is on one side,
//     say with u; moving v to that side removes w(u,v)+w(v,x) from the cut
//     and adds less than that, so the cut was not minimum (unless v alone
//     was a side, which costs deg v >= best). Strict for the same reason as
//     PR2.
//
// For each u it marks u's neighbours, then scans the neighbours of every v
// with at most triangleScanLimit neighbours. It returns the unions made.
func (s *solver) padbergRinaldiTriangles(c csr, deg []int64) int {
	mark := make([]int32, c.n)
	for i := range mark {
		mark[i] = -1
	}
	wu := make([]int64, c.n)
	merges := 0
	for u := int32(0); int(u) < c.n; u++ {
		for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
			mark[c.adj[p]], wu[c.adj[p]] = u, c.w[p]
		}
		for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
			v := c.adj[p]
			if v <= u || c.xadj[v+1]-c.xadj[v] > triangleScanLimit {
				continue
			}
			cuv := c.w[p]
			lb, pr3 := cuv, false
			for q := c.xadj[v]; q < c.xadj[v+1]; q++ {
				x := c.adj[q]
				if x == u || mark[x] != u {
					continue
				}
				cux, cvx := wu[x], c.w[q]
				lb += min(cux, cvx)
				if 2*(cuv+cux) > deg[u] && 2*(cuv+cvx) > deg[v] {
					pr3 = true
				}
			}
			if (lb >= s.best || pr3) && s.union(u, v) {
				merges++
			}
		}
	}
	return merges
}

// capforest runs one Nagamochi–Ibaraki CAPFOREST pass (maximum adjacency
// order with priorities capped at best). For an edge (x,y) scanned from x,
// r(y) after adding w(x,y) is a lower bound on the x–y connectivity whenever
// it is below the cap, so edges with r(y) >= best can be contracted. The
// scanned prefix of the order is also a cut; when it is cheaper than best it
// becomes the new best.
//
// Lowering the cap during the pass keeps the order valid for the new cap
// (a maximum under a higher cap is also a maximum under a lower one), and the
// contraction test compares with the current best, which only decreases.
func (s *solver) capforest(c csr, deg []int64) {
	n := c.n
	r := make([]int64, n)
	scanned := make([]bool, n)
	order := make([]int32, 0, n)
	h := newMaxHeap(n)
	s.seed = s.seed*6364136223846793005 + 1442695040888963407
	start := int32((s.seed >> 33) % uint64(n))
	h.push(start, 0)
	var cut int64
	bestPrefix := -1
	for h.len() > 0 {
		x := h.pop()
		scanned[x] = true
		order = append(order, x)
		cut += deg[x] - 2*r[x]
		if len(order) < n && cut < s.best {
			s.best = cut
			bestPrefix = len(order)
		}
		for p := c.xadj[x]; p < c.xadj[x+1]; p++ {
			y := c.adj[p]
			if scanned[y] {
				continue
			}
			r[y] += c.w[p]
			if r[y] >= s.best {
				s.union(x, y)
			}
			k := min(r[y], s.best)
			h.raise(y, k)
		}
	}
	if bestPrefix > 0 {
		in := make([]bool, n)
		for _, v := range order[:bestPrefix] {
			in[v] = true
		}
		s.record(s.best, func(l int32) bool { return in[l] })
	}
}

// contract merges the union-find classes into single nodes and relabels the
// original nodes. It reports false when nothing was merged.
func (s *solver) contract(c csr) (csr, bool) {
	n := c.n
	newID := make([]int32, n)
	for i := range newID {
		newID[i] = -1
	}
	k := int32(0)
	for v := 0; v < n; v++ {
		r := s.find(int32(v))
		if newID[r] < 0 {
			newID[r] = k
			k++
		}
		newID[v] = newID[r]
	}
	if int(k) == n {
		return c, false
	}
	for o, l := range s.label {
		s.label[o] = newID[l]
	}
	// Bucket the old nodes by their new node.
	start := make([]int32, k+1)
	for v := 0; v < n; v++ {
		start[newID[v]+1]++
	}
	for i := int32(0); i < k; i++ {
		start[i+1] += start[i]
	}
	members := make([]int32, n)
	fill := append([]int32(nil), start[:k]...)
	for v := 0; v < n; v++ {
		members[fill[newID[v]]] = int32(v)
		fill[newID[v]]++
	}
	out := csr{n: int(k), xadj: make([]int32, k+1), adj: make([]int32, 0, len(c.adj)/2), w: make([]int64, 0, len(c.adj)/2)}
	pos := make([]int32, k)
	for i := range pos {
		pos[i] = -1
	}
	for x := int32(0); x < k; x++ {
		base := int32(len(out.adj))
		for _, u := range members[start[x]:start[x+1]] {
			for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
				y := newID[c.adj[p]]
				if y == x {
					continue
				}
				if q := pos[y]; q >= base {
					out.w[q] += c.w[p]
				} else {
					pos[y] = int32(len(out.adj))
					out.adj = append(out.adj, y)
					out.w = append(out.w, c.w[p])
				}
			}
		}
		out.xadj[x+1] = int32(len(out.adj))
	}
	return out, true
}

// maxHeap is an indexed binary max-heap of nodes keyed by int64 priorities
// supporting increase-key, as CAPFOREST needs.
type maxHeap struct {
	heap []int32
	pos  []int32 // -1: never inserted, -2: popped
	key  []int64
}

func newMaxHeap(n int) *maxHeap {
	h := &maxHeap{heap: make([]int32, 0, n), pos: make([]int32, n), key: make([]int64, n)}
	for i := range h.pos {
		h.pos[i] = -1
	}
	return h
}

func (h *maxHeap) len() int { return len(h.heap) }

func (h *maxHeap) push(v int32, k int64) {
	h.key[v] = k
	h.pos[v] = int32(len(h.heap))
	h.heap = append(h.heap, v)
	h.up(int(h.pos[v]))
}

// raise sets v's key to k if that is larger, inserting v if needed.
func (h *maxHeap) raise(v int32, k int64) {
	switch p := h.pos[v]; {
	case p == -1:
		h.push(v, k)
	case p >= 0 && k > h.key[v]:
		h.key[v] = k
		h.up(int(p))
	}
}

func (h *maxHeap) pop() int32 {
	top := h.heap[0]
	last := len(h.heap) - 1
	h.heap[0] = h.heap[last]
	h.pos[h.heap[0]] = 0
	h.heap = h.heap[:last]
	h.pos[top] = -2
	if last > 0 {
		h.down(0)
	}
	return top
}

func (h *maxHeap) up(i int) {
	v := h.heap[i]
	k := h.key[v]
	for i > 0 {
		p := (i - 1) / 2
		pv := h.heap[p]
		if h.key[pv] >= k {
			break
		}
		h.heap[i] = pv
		h.pos[pv] = int32(i)
		i = p
	}
	h.heap[i] = v
	h.pos[v] = int32(i)
}

func (h *maxHeap) down(i int) {
	n := len(h.heap)
	v := h.heap[i]
	k := h.key[v]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && h.key[h.heap[r]] > h.key[h.heap[l]] {
			l = r
		}
		if h.key[h.heap[l]] <= k {
			break
		}
		h.heap[i] = h.heap[l]
		h.pos[h.heap[i]] = int32(i)
		i = l
	}
	h.heap[i] = v
	h.pos[v] = int32(i)
}

// stoerWagner is the plain O(n·m log n) Stoer–Wagner algorithm on a connected
// graph with at least two nodes. The solver only falls back to it if a
// contraction round makes no progress; tests also use it as a reference.
func stoerWagner(c csr) (int64, []bool) {
	n := c.n
	// Dense-free adjacency as maps keyed by merged node.
	adj := make([]map[int32]int64, n)
	for u := 0; u < n; u++ {
		adj[u] = make(map[int32]int64)
		for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
			adj[u][c.adj[p]] += c.w[p]
		}
	}
	group := make([][]int32, n)
	for i := range group {
		group[i] = []int32{int32(i)}
	}
	alive := make([]int32, n)
	for i := range alive {
		alive[i] = int32(i)
	}
	best := int64(-1)
	var bestGroup []int32
	for len(alive) > 1 {
		h := newMaxHeap(n)
		in := make([]bool, n)
		for _, v := range alive {
			h.push(v, 0)
		}
		var prev, last int32 = -1, -1
		var lastKey int64
		for h.len() > 0 {
			x := h.pop()
			lastKey = h.key[x]
			in[x] = true
			prev, last = last, x
			for y, w := range adj[x] {
				if !in[y] && h.pos[y] >= 0 {
					h.raise(y, h.key[y]+w)
				}
			}
		}
		if best < 0 || lastKey < best {
			best = lastKey
			bestGroup = append([]int32(nil), group[last]...)
		}
		// Merge last into prev.
		for y, w := range adj[last] {
			delete(adj[y], last)
			if y != prev {
				adj[prev][y] += w
				adj[y][prev] += w
			}
		}
		delete(adj[prev], last)
		adj[last] = nil
		group[prev] = append(group[prev], group[last]...)
		for i, v := range alive {
			if v == last {
				alive = append(alive[:i], alive[i+1:]...)
				break
			}
		}
	}
	side := make([]bool, n)
	for _, v := range bestGroup {
		side[v] = true
	}
	return best, side
}
