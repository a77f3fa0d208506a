package mincut

import (
	"errors"
	"fmt"
	"slices"
)

// ChangeKind says what a Change does.
type ChangeKind uint8

const (
	// SetEdge sets the weight of edge {U, V} to W (>= 0), creating the edge
	// if needed; W == 0 removes it.
	SetEdge ChangeKind = iota + 1
	// AddToEdge adds W (which may be negative) to the weight of {U, V}; the
	// result must not be negative.
	AddToEdge
	// AddNode appends an isolated node. Its id is the node count before the
	// change (ids are never reused), so later changes of the same batch can
	// connect it.
	AddNode
	// RemoveNode removes node U and all its edges. The id stays allocated but
	// no later change may refer to it.
	RemoveNode
)

// Change is one update of a Dynamic graph. U and V are node ids; W is a
// fixed-point weight, read according to Kind.
type Change struct {
	Kind ChangeKind
	U, V int
	W    int64
}

// Stats counts how Apply settled batches. Every batch is counted in exactly
// one of Unchanged, CrossingOnly, FlowChecked, KnownCut and Recomputed; the
// Recompute* fields break Recomputed down by reason.
type Stats struct {
	Batches int
	// Unchanged: no decrease and no increase crossing the witness cut S, so λ
	// and S stand (this includes increases that do not cross S).
	Unchanged int
	// CrossingOnly: every decrease crossed S and no increase did: S stays a
	// minimum cut and λ drops by the decreases.
	CrossingOnly int
	// FlowChecked: some decrease did not cross S; bounded u–v max-flows (or
	// local lower bounds that skipped them) decided the new λ.
	FlowChecked int
	// KnownCut: only increases, some crossing S, and a node whose weighted
	// degree equals the old λ proves λ unchanged.
	KnownCut int
	// Recomputed: a full static computation settled the batch.
	Recomputed int

	RecomputeTopology         int // nodes were added or removed
	RecomputeCrossingIncrease int // an increase crossed S and no known cut avoided it
	RecomputeManyFlows        int // more non-crossing decreases than MaxFlowsPerBatch

	FlowsRun     int // bounded max-flows computed
	FlowsSkipped int // non-crossing decreases a local lower bound showed harmless
	FlowWins     int // flows that found a cut cheaper than the candidate
}

// MaxFlowsPerBatch is the number of bounded max-flows Apply is willing to run
// for one batch; with more candidates a full recomputation is cheaper.
const MaxFlowsPerBatch = 32

type dEdge struct {
	u, v int32 // u < v
	w    int64
}

// Dynamic maintains an exact global minimum cut of a graph under batches of
// changes. It keeps λ, a witness minimum cut S and the edges crossing S, and
// settles each batch with the cheapest argument that is still exact (S =
// witness cut, e = (u,v) changed by Δ, comparing each edge's weight after
// the batch with its weight before it):
//
//   - if every decrease crosses S and no increase does, S stays minimal: for
//     any cut T, c'(T) >= c(T) − Σ decreases crossing T >= λ − Σ decreases
//     = c'(S);
//   - otherwise, if no increase crosses S, a cut T cheaper than c'(S) must
//     separate the ends of some decreased edge that does not cross S, so one
//     u–v max-flow per such edge, bounded by the best value so far, decides
//     the new λ exactly; a flow is skipped when the edge's own weight plus its
//     two-edge paths already reach the bound (a lower bound on λ'(u,v));
//   - if increases cross S and nothing decreased, λ' >= λ: a node whose
//     degree is λ is another minimum cut; otherwise recompute;
//   - node additions and removals, and batches needing more than
//     MaxFlowsPerBatch flows, recompute.
//
// Node ids are never reused, and an edge set to 0 keeps its slot (so that
// setting it again is cheap): memory grows with the number of node ids and
// distinct node pairs ever used, not with the current graph.
//
// A Dynamic is not safe for concurrent use.
type Dynamic struct {
	alive  []bool
	nAlive int
	adj    [][]int32 // edge ids incident to each node, including weight-0 edges
	ends   []dEdge
	index  map[uint64]int32
	deg    []int64
	total  int64
	heap   minHeap // alive nodes by weighted degree

	lambda int64
	inS    []bool  // membership in the witness side S
	sList  []int32 // members of S, sorted
	cutS   int64   // current weight of the edges crossing S
	wit    []int32 // ids of edges crossing S with positive weight
	witPos []int32 // per edge: index in wit, or -1

	flow  flowNet
	stats Stats

	// per batch
	oldW    []int64 // per touched edge: weight before the batch
	touched []int32
	mark    []bool
}

// NewDynamic copies g and computes its minimum cut.
func NewDynamic(g *Graph) *Dynamic {
	d := &Dynamic{index: make(map[uint64]int32, len(g.edges))}
	d.flow.d = d
	for i := 0; i < g.n; i++ {
		d.addNode()
	}
	for _, e := range g.edges {
		id := d.edgeID(e.U, e.V)
		d.setW(id, e.W)
	}
	d.recompute()
	d.stats = Stats{} // count batches only
	return d
}

// NumNodes returns the number of node ids allocated, removed ones included.
func (d *Dynamic) NumNodes() int { return len(d.alive) }

// Alive reports whether node v exists (was allocated and not removed).
func (d *Dynamic) Alive(v int) bool { return v >= 0 && v < len(d.alive) && d.alive[v] }

// Lambda returns the current minimum cut value.
func (d *Dynamic) Lambda() int64 { return d.lambda }

// Stats returns the counters of how batches were settled.
func (d *Dynamic) Stats() Stats { return d.stats }

// Weight returns the current weight of edge {u, v}.
func (d *Dynamic) Weight(u, v int) int64 {
	if id, ok := d.index[pairKey(u, v)]; ok && u != v {
		return d.ends[id].w
	}
	return 0
}

// Snapshot returns the current graph restricted to live nodes, renumbered
// densely, and ids[i] = the Dynamic's id of snapshot node i.
func (d *Dynamic) Snapshot() (g *Graph, ids []int) {
	compact := make([]int, len(d.alive))
	for v, a := range d.alive {
		if a {
			compact[v] = len(ids)
			ids = append(ids, v)
		}
	}
	g = NewGraph(len(ids))
	for _, e := range d.ends {
		if e.w > 0 {
			g.AddEdge(compact[e.u], compact[e.v], e.w)
		}
	}
	return g, ids
}

// Result returns the current minimum cut with node ids of the Dynamic.
func (d *Dynamic) Result() Result {
	r := Result{Lambda: d.lambda, Side: make([]int, len(d.sList)), Witness: make([]Edge, 0, len(d.wit))}
	for i, v := range d.sList {
		r.Side[i] = int(v)
	}
	for _, id := range d.wit {
		e := d.ends[id]
		r.Witness = append(r.Witness, Edge{U: int(e.u), V: int(e.v), W: e.w})
	}
	sortEdges(r.Witness)
	return r
}

// Apply applies a batch of changes and returns the new minimum cut. It
// panics if the batch is invalid (see ApplyChecked); callers feeding
// untrusted changes should use ApplyChecked.
func (d *Dynamic) Apply(changes []Change) Result {
	r, err := d.ApplyChecked(changes)
	if err != nil {
		panic(err)
	}
	return r
}

// ErrInvalidChange is wrapped by every error ApplyChecked returns.
var ErrInvalidChange = errors.New("mincut: invalid change")

// ApplyChecked validates the whole batch first; if any change is invalid
// (unknown or removed node, self-loop, negative resulting weight, total
// weight above MaxTotalWeight, unknown kind) it returns an error wrapping
// ErrInvalidChange and leaves the graph untouched. Otherwise it applies the
// batch, settles it as described on Dynamic and returns the new cut.
func (d *Dynamic) ApplyChecked(changes []Change) (Result, error) {
	if err := d.validate(changes); err != nil {
		return d.Result(), err
	}
	d.stats.Batches++
	topology := false
	for _, c := range changes {
		switch c.Kind {
		case AddNode:
			d.addNode()
			topology = true
		case RemoveNode:
			for _, id := range d.adj[c.U] {
				d.touch(id)
				d.setW(id, 0)
			}
			d.alive[c.U] = false
			d.nAlive--
			d.heap.remove(int32(c.U))
			topology = true
		case SetEdge, AddToEdge:
			w := c.W
			id, ok := d.index[pairKey(c.U, c.V)]
			if !ok {
				if w == 0 {
					continue
				}
				id = d.edgeID(c.U, c.V)
			}
			d.touch(id)
			if c.Kind == AddToEdge {
				w += d.ends[id].w
			}
			d.setW(id, w)
		}
	}
	d.settle(topology)
	for _, id := range d.touched {
		d.mark[id] = false
	}
	d.touched = d.touched[:0]
	return d.Result(), nil
}

func (d *Dynamic) validate(changes []Change) error {
	n := len(d.alive)
	removed := map[int]bool{}
	weights := map[uint64]int64{}
	total := d.total
	live := func(v int) bool { return v >= 0 && v < n && (v >= len(d.alive) || d.alive[v]) && !removed[v] }
	for i, c := range changes {
		switch c.Kind {
		case AddNode:
			n++
		case RemoveNode:
			if !live(c.U) {
				return fmt.Errorf("%w: change %d: remove node %d: no such node", ErrInvalidChange, i, c.U)
			}
			removed[c.U] = true
			// Its edges go to 0: account for them in the overlay.
			if c.U < len(d.adj) {
				for _, id := range d.adj[c.U] {
					e := d.ends[id]
					k := pairKey(int(e.u), int(e.v))
					w, ok := weights[k]
					if !ok {
						w = e.w
					}
					total -= w
					weights[k] = 0
				}
			}
			for k, w := range weights { // edges to nodes created in this batch
				u, v := int(k>>32), int(uint32(k))
				if (u == c.U || v == c.U) && w != 0 {
					total -= w
					weights[k] = 0
				}
			}
		case SetEdge, AddToEdge:
			if !live(c.U) || !live(c.V) {
				return fmt.Errorf("%w: change %d: edge {%d, %d}: no such node", ErrInvalidChange, i, c.U, c.V)
			}
			if c.U == c.V {
				return fmt.Errorf("%w: change %d: self-loop on node %d", ErrInvalidChange, i, c.U)
			}
			k := pairKey(c.U, c.V)
			old, ok := weights[k]
			if !ok {
				old = d.Weight(c.U, c.V)
			}
			w := c.W
			if c.Kind == AddToEdge {
				w += old
			}
			if w < 0 {
				return fmt.Errorf("%w: change %d: edge {%d, %d} weight would be %d", ErrInvalidChange, i, c.U, c.V, w)
			}
			if w-old > MaxTotalWeight-total {
				return fmt.Errorf("%w: change %d: total weight would exceed MaxTotalWeight", ErrInvalidChange, i)
			}
			total += w - old
			weights[k] = w
		default:
			return fmt.Errorf("%w: change %d: unknown kind %d", ErrInvalidChange, i, c.Kind)
		}
	}
	return nil
}

func (d *Dynamic) addNode() {
	v := int32(len(d.alive))
	d.alive = append(d.alive, true)
	d.nAlive++
	d.adj = append(d.adj, nil)
	d.deg = append(d.deg, 0)
	d.inS = append(d.inS, false)
	d.heap.push(v, 0)
}

// edgeID returns the id of edge {u, v}, creating it with weight 0.
func (d *Dynamic) edgeID(u, v int) int32 {
	k := pairKey(u, v)
	if id, ok := d.index[k]; ok {
		return id
	}
	if u > v {
		u, v = v, u
	}
	id := int32(len(d.ends))
	d.index[k] = id
	d.ends = append(d.ends, dEdge{u: int32(u), v: int32(v)})
	d.witPos = append(d.witPos, -1)
	d.oldW = append(d.oldW, 0)
	d.mark = append(d.mark, false)
	d.adj[u] = append(d.adj[u], id)
	d.adj[v] = append(d.adj[v], id)
	return id
}

// touch remembers an edge's weight before the batch.
func (d *Dynamic) touch(id int32) {
	if !d.mark[id] {
		d.mark[id] = true
		d.oldW[id] = d.ends[id].w
		d.touched = append(d.touched, id)
	}
}

// setW changes an edge weight and keeps degrees, the degree heap, the
// weight of S and the witness list in step.
func (d *Dynamic) setW(id int32, w int64) {
	e := &d.ends[id]
	delta := w - e.w
	if delta == 0 {
		return
	}
	e.w = w
	d.total += delta
	d.deg[e.u] += delta
	d.deg[e.v] += delta
	d.heap.update(e.u, d.deg[e.u])
	d.heap.update(e.v, d.deg[e.v])
	if d.inS[e.u] != d.inS[e.v] {
		d.cutS += delta
		switch {
		case w > 0 && d.witPos[id] < 0:
			d.witPos[id] = int32(len(d.wit))
			d.wit = append(d.wit, id)
		case w == 0 && d.witPos[id] >= 0:
			p := d.witPos[id]
			last := d.wit[len(d.wit)-1]
			d.wit[p] = last
			d.witPos[last] = p
			d.wit = d.wit[:len(d.wit)-1]
			d.witPos[id] = -1
		}
	}
}

// settle decides λ and S after the batch's changes were applied.
func (d *Dynamic) settle(topology bool) {
	if d.nAlive < 2 {
		d.setS(nil, 0)
		d.stats.Recomputed++
		d.stats.RecomputeTopology++
		return
	}
	if topology {
		d.stats.RecomputeTopology++
		d.recompute()
		return
	}
	var decreased, increasedCrossing bool
	var candidates []int32 // decreased edges not crossing S
	for _, id := range d.touched {
		e := d.ends[id]
		crossing := d.inS[e.u] != d.inS[e.v]
		switch {
		case e.w < d.oldW[id]:
			decreased = true
			if !crossing {
				candidates = append(candidates, id)
			}
		case e.w > d.oldW[id] && crossing:
			increasedCrossing = true
		}
	}
	switch {
	case increasedCrossing && !decreased:
		// λ' >= λ; a node of degree λ (not S itself, whose value rose) is
		// another minimum cut.
		if v, dv := d.heap.min(); dv == d.lambda {
			d.setS([]int32{v}, dv)
			d.stats.KnownCut++
			return
		}
		d.stats.RecomputeCrossingIncrease++
		d.recompute()
	case increasedCrossing:
		d.stats.RecomputeCrossingIncrease++
		d.recompute()
	case !decreased:
		d.stats.Unchanged++
	case len(candidates) == 0:
		d.lambda = d.cutS
		d.stats.CrossingOnly++
	default:
		d.lambda = d.cutS
		d.checkFlows(candidates)
	}
}

// checkFlows runs the bounded u–v max-flows for the decreased edges that do
// not cross S, or recomputes if there are too many.
func (d *Dynamic) checkFlows(candidates []int32) {
	need := candidates[:0]
	for _, id := range candidates {
		e := d.ends[id]
		if d.localLowerBound(e.u, e.v, d.lambda) >= d.lambda {
			d.stats.FlowsSkipped++
			continue
		}
		need = append(need, id)
	}
	if len(need) > MaxFlowsPerBatch {
		d.stats.RecomputeManyFlows++
		d.recompute()
		return
	}
	d.stats.FlowChecked++
	for _, id := range need {
		e := d.ends[id]
		d.stats.FlowsRun++
		val, side, reached := d.flow.maxFlow(e.u, e.v, d.lambda)
		if !reached {
			d.stats.FlowWins++
			d.setS(side, val)
		}
	}
}

// localLowerBound returns a lower bound on the u–v connectivity: w(u,v) plus,
// for every common neighbour x, min(w(u,x), w(x,v)) (edge-disjoint paths). It
// stops as soon as the bound reaches stop.
func (d *Dynamic) localLowerBound(u, v int32, stop int64) int64 {
	lb := d.Weight(int(u), int(v))
	if lb >= stop {
		return lb
	}
	if len(d.adj[u]) > len(d.adj[v]) {
		u, v = v, u
	}
	for _, id := range d.adj[u] {
		e := d.ends[id]
		if e.w == 0 {
			continue
		}
		x := e.u
		if x == u {
			x = e.v
		}
		if x == v {
			continue
		}
		if w2 := d.Weight(int(x), int(v)); w2 > 0 {
			lb += min(e.w, w2)
			if lb >= stop {
				return lb
			}
		}
	}
	return lb
}

// recompute runs the static algorithm on the live nodes.
func (d *Dynamic) recompute() {
	d.stats.Recomputed++
	if d.nAlive < 2 {
		d.setS(nil, 0)
		return
	}
	compact := make([]int32, len(d.alive))
	ids := make([]int32, 0, d.nAlive)
	for v, a := range d.alive {
		if a {
			compact[v] = int32(len(ids))
			ids = append(ids, int32(v))
		}
	}
	var edges []Edge
	for _, e := range d.ends {
		if e.w > 0 {
			edges = append(edges, Edge{U: int(compact[e.u]), V: int(compact[e.v]), W: e.w})
		}
	}
	lambda, side := solveCSR(buildCSR(len(ids), edges))
	var s []int32
	for i, in := range side {
		if in {
			s = append(s, ids[i])
		}
	}
	d.setS(s, lambda)
}

// setS makes the given node set (or its complement among live nodes, if that
// is smaller) the witness cut of value lambda, and rebuilds the witness edges.
func (d *Dynamic) setS(s []int32, lambda int64) {
	for _, v := range d.sList {
		d.inS[v] = false
	}
	for _, id := range d.wit {
		d.witPos[id] = -1
	}
	d.wit = d.wit[:0]
	d.sList = d.sList[:0]
	d.lambda, d.cutS = lambda, lambda
	if len(s) == 0 {
		return
	}
	for _, v := range s {
		d.inS[v] = true
	}
	lowest := int32(-1)
	for v, a := range d.alive {
		if a {
			lowest = int32(v)
			break
		}
	}
	if 2*len(s) > d.nAlive || (2*len(s) == d.nAlive && d.inS[lowest]) {
		for v, a := range d.alive {
			if a && !d.inS[v] {
				d.sList = append(d.sList, int32(v))
			}
		}
		for _, v := range s {
			d.inS[v] = false
		}
		for _, v := range d.sList {
			d.inS[v] = true
		}
	} else {
		d.sList = append(d.sList, s...)
		slices.Sort(d.sList)
	}
	var cut int64
	for _, v := range d.sList {
		for _, id := range d.adj[v] {
			e := d.ends[id]
			if e.w > 0 && d.inS[e.u] != d.inS[e.v] {
				d.witPos[id] = int32(len(d.wit))
				d.wit = append(d.wit, id)
				cut += e.w
			}
		}
	}
	if cut != lambda {
		panic(fmt.Sprintf("mincut: internal error: witness cut weighs %d, lambda %d", cut, lambda))
	}
}

// minHeap is an indexed binary min-heap of nodes by weighted degree.
type minHeap struct {
	heap []int32
	pos  []int32 // -1 when not in the heap
	key  []int64
}

func (h *minHeap) push(v int32, k int64) {
	for int(v) >= len(h.pos) {
		h.pos = append(h.pos, -1)
		h.key = append(h.key, 0)
	}
	h.key[v] = k
	h.pos[v] = int32(len(h.heap))
	h.heap = append(h.heap, v)
	h.up(len(h.heap) - 1)
}

func (h *minHeap) min() (int32, int64) { return h.heap[0], h.key[h.heap[0]] }

func (h *minHeap) update(v int32, k int64) {
	p := h.pos[v]
	if p < 0 {
		return
	}
	old := h.key[v]
	h.key[v] = k
	if k < old {
		h.up(int(p))
	} else {
		h.down(int(p))
	}
}

func (h *minHeap) remove(v int32) {
	p := h.pos[v]
	if p < 0 {
		return
	}
	last := int32(len(h.heap) - 1)
	h.pos[v] = -1
	if p != last {
		moved := h.heap[last]
		h.heap[p] = moved
		h.pos[moved] = p
		h.heap = h.heap[:last]
		h.up(int(p))
		h.down(int(h.pos[moved]))
		return
	}
	h.heap = h.heap[:last]
}

func (h *minHeap) up(i int) {
	v := h.heap[i]
	for i > 0 {
		p := (i - 1) / 2
		if h.key[h.heap[p]] <= h.key[v] {
			break
		}
		h.heap[i] = h.heap[p]
		h.pos[h.heap[i]] = int32(i)
		i = p
	}
	h.heap[i] = v
	h.pos[v] = int32(i)
}

func (h *minHeap) down(i int) {
	n := len(h.heap)
	v := h.heap[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && h.key[h.heap[r]] < h.key[h.heap[l]] {
			l = r
		}
		if h.key[h.heap[l]] >= h.key[v] {
			break
		}
		h.heap[i] = h.heap[l]
		h.pos[h.heap[i]] = int32(i)
		i = l
	}
	h.heap[i] = v
	h.pos[v] = int32(i)
}
