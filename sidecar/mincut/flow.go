package mincut

// flowNet computes bounded s–t maximum flows (Dinic) on the undirected graph
// of a Dynamic. An undirected edge {u,v} of weight w carries a signed flow f
// from u to v; its residual capacity is w−f from u to v and w+f from v to u.
//
// All scratch arrays are sized to the graph once and reset only where they
// were touched, so a flow that stops after exploring a small neighbourhood
// costs time proportional to that neighbourhood, not to the graph.
type flowNet struct {
	d       *Dynamic
	f       []int64  // per edge id
	touched []int32  // edge ids with f != 0 at some point
	stamp   []uint32 // per node: BFS phase that assigned level
	level   []int32
	iter    []int32
	phase   uint32
	queue   []int32
}

func (fn *flowNet) grow() {
	d := fn.d
	for len(fn.f) < len(d.ends) {
		fn.f = append(fn.f, 0)
	}
	for len(fn.stamp) < len(d.adj) {
		fn.stamp = append(fn.stamp, 0)
		fn.level = append(fn.level, 0)
		fn.iter = append(fn.iter, 0)
	}
}

func (fn *flowNet) residual(e int32, from int32) int64 {
	en := &fn.d.ends[e]
	if en.u == from {
		return en.w - fn.f[e]
	}
	return en.w + fn.f[e]
}

func (fn *flowNet) other(e int32, from int32) int32 {
	en := &fn.d.ends[e]
	if en.u == from {
		return en.v
	}
	return en.u
}

func (fn *flowNet) push(e int32, from int32, x int64) {
	if fn.f[e] == 0 {
		fn.touched = append(fn.touched, e)
	}
	if fn.d.ends[e].u == from {
		fn.f[e] += x
	} else {
		fn.f[e] -= x
	}
}

// bfs assigns levels from s in the residual graph; it stops expanding at
// t's level. It reports whether t was reached; fn.queue then holds every
// node reached.
func (fn *flowNet) bfs(s, t int32) bool {
	fn.phase++
	if fn.phase == 0 { // wrapped: clear stamps
		clear(fn.stamp)
		fn.phase = 1
	}
	ph := fn.phase
	fn.queue = append(fn.queue[:0], s)
	fn.stamp[s], fn.level[s], fn.iter[s] = ph, 0, 0
	tLevel := int32(-1)
	for i := 0; i < len(fn.queue); i++ {
		x := fn.queue[i]
		if tLevel >= 0 && fn.level[x] >= tLevel {
			break
		}
		for _, e := range fn.d.adj[x] {
			y := fn.other(e, x)
			if fn.stamp[y] == ph || fn.residual(e, x) <= 0 {
				continue
			}
			fn.stamp[y], fn.level[y], fn.iter[y] = ph, fn.level[x]+1, 0
			fn.queue = append(fn.queue, y)
			if y == t {
				tLevel = fn.level[y]
			}
		}
	}
	return tLevel >= 0
}

func (fn *flowNet) dfs(x, t int32, limit int64) int64 {
	if x == t {
		return limit
	}
	adj := fn.d.adj[x]
	ph := fn.phase
	for ; fn.iter[x] < int32(len(adj)); fn.iter[x]++ {
		e := adj[fn.iter[x]]
		y := fn.other(e, x)
		if fn.stamp[y] != ph || fn.level[y] != fn.level[x]+1 {
			continue
		}
		res := fn.residual(e, x)
		if res <= 0 {
			continue
		}
		if got := fn.dfs(y, t, min(limit, res)); got > 0 {
			fn.push(e, x, got)
			return got
		}
	}
	return 0
}

// maxFlow returns the s–t maximum flow if it is below bound, together with
// the source side of a minimum s–t cut; once the flow reaches bound it stops
// and returns (bound, nil, true).
func (fn *flowNet) maxFlow(s, t int32, bound int64) (flow int64, side []int32, reached bool) {
	fn.grow()
	defer fn.reset()
	if bound <= 0 {
		return bound, nil, true
	}
	for fn.bfs(s, t) {
		for {
			got := fn.dfs(s, t, bound-flow)
			if got == 0 {
				break
			}
			flow += got
			if flow >= bound {
				return bound, nil, true
			}
		}
	}
	return flow, append([]int32(nil), fn.queue...), false
}

func (fn *flowNet) reset() {
	for _, e := range fn.touched {
		fn.f[e] = 0
	}
	fn.touched = fn.touched[:0]
}
