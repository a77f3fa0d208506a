package ivf

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// DefaultMaxListRatio is the largest list / median list that balanced
// training aims for. The health graph calls a list healthy up to 2× the
// median (health.Config.CentroidSkewTolerance) and the scorecard's band is
// the same 2; 1.5 leaves the largest list a third of headroom to grow under
// continuing inserts before its capacity drops, and is still loose enough
// that natural k-means variation (lists of 1–1.5× the median) needs no
// surgery.
const DefaultMaxListRatio = 1.5

// BalanceOptions tune BalancedKMeans.
type BalanceOptions struct {
	// MaxRatio is the target for largest list / median list (measured as
	// SkewStats does). 0: DefaultMaxListRatio. It must be ≥ 1.
	MaxRatio float64
	// MaxSteps bounds split-and-merge steps (0: 2k).
	MaxSteps int
	// RefineIter bounds the Lloyd iterations after the steps (0: 3); an
	// iteration that pushes the ratio back above the bound is undone.
	RefineIter int
}

// BalanceStats say what BalancedKMeans did.
type BalanceStats struct {
	// RatioBefore is plain k-means' largest / median list on the vectors,
	// RatioAfter the returned centroids'.
	RatioBefore, RatioAfter float64
	// Steps is the number of split-and-merge steps kept, Refined the
	// Lloyd iterations kept after them.
	Steps, Refined int
	// Balanced: RatioAfter is at most the bound. False when no step could
	// lower the ratio further (identical vectors, or clusters that cannot
	// be cut finer with k lists).
	Balanced bool
}

// BalancedKMeans is KMeans followed by a size-bounding pass, for IVF
// lists: k-means++ gives a narrow, dense blob a single centroid however
// many vectors it holds, so its list stays the largest and every search
// that probes it scans it whole. While the largest list (every vector to
// its nearest centroid, as the extension assigns rows) is more than
// MaxRatio × the median list, the pass splits it with 2-means on its own
// members and, to keep k, merges a pair of other lists: the pair whose
// merge costs the least inertia (Ward's criterion) among those whose
// merged list stays smaller than the one split, so two halves of one
// natural cluster rejoin before two distinct clusters do, and two dense
// sub-lists of the blob are not merged back. A step is kept only if it
// lowers the sum of squared list sizes, so the pass cannot cycle; it ends
// at the bound, after MaxSteps, or when no step helps, and keeps the
// lowest ratio it reached. A few Lloyd iterations then re-centre the
// lists, each undone if it undoes the balance. Splitting a dense blob into
// several lists is what IVF wants: a query in the blob probes its
// sub-lists, and at equal rows scanned recall is higher. When k is not
// larger than the number of natural clusters, the blob can only be split
// by merging two of them: the ratio falls (to about 1.6 for eight clusters
// and a blob in eight lists) but may stay above the bound. Deterministic
// for a given seed. Worst-case cost, all 2k steps with four merge
// candidates each, is about as much again as the k-means it follows.
func BalancedKMeans(vectors [][]float32, k, maxIter int, seed uint64, opts BalanceOptions) (KMeansResult, BalanceStats, error) {
	maxRatio := opts.MaxRatio
	if maxRatio == 0 {
		maxRatio = DefaultMaxListRatio
	}
	if math.IsNaN(maxRatio) || maxRatio < 1 {
		return KMeansResult{}, BalanceStats{}, fmt.Errorf("ivf: max list ratio %v, want ≥ 1 (largest list / median list)", opts.MaxRatio)
	}
	res, err := KMeans(vectors, k, maxIter, seed)
	if err != nil {
		return res, BalanceStats{}, err
	}
	b := newBalancer(vectors, res.Centroids)
	st := BalanceStats{RatioBefore: b.ratio()}
	maxSteps := opts.MaxSteps
	if maxSteps <= 0 {
		maxSteps = 2 * k
	}
	// A step must lower the sum of squared list sizes (the measure of
	// imbalance that splitting a big list and merging two small ones
	// improves even while another list is still the largest), which
	// rules out cycles; the state with the lowest ratio is the one kept.
	best, bestRatio, bestSteps := b.save(), b.ratio(), 0
	for steps := 0; steps < maxSteps && b.ratio() > maxRatio && k >= 3; steps++ {
		if !b.step(seed+uint64(steps)+1, maxRatio) {
			break
		}
		if r := b.ratio(); r < bestRatio {
			best, bestRatio, bestSteps = b.save(), r, steps+1
		}
	}
	b.restore(best)
	st.Steps = bestSteps
	refine := opts.RefineIter
	if refine <= 0 {
		refine = 3
	}
	for st.Refined < refine {
		kept, moved := b.lloyd(max(maxRatio, b.ratio()))
		if !kept {
			break
		}
		st.Refined++
		if !moved {
			break
		}
	}
	// The same final pass as KMeans, so Assign and Inertia are exactly what
	// Nearest (and the extension) give.
	var inertia float64
	assign := make([]int, len(vectors))
	for i, v := range vectors {
		j, d := Nearest(b.cents, v)
		assign[i] = j
		inertia += d
	}
	st.RatioAfter = listRatio(assign, k)
	st.Balanced = st.RatioAfter <= maxRatio
	return KMeansResult{Centroids: b.cents, Assign: assign, Inertia: inertia, Iterations: res.Iterations + st.Refined}, st, nil
}

// listRatio is SkewStats' factor (largest / median list) of an assignment.
func listRatio(assign []int, k int) float64 {
	sizes := make([]int64, k)
	for _, j := range assign {
		sizes[j]++
	}
	_, _, f, _ := SkewStats(sizes)
	return f
}

// balancer keeps every vector's nearest centroid and its distance up to
// date as centroids change, so a step costs a scan of the vectors against
// the changed centroids rather than against all k.
type balancer struct {
	vecs   [][]float32
	cents  [][]float32
	assign []int
	dist   []float64
	counts []int
}

func newBalancer(vecs, cents [][]float32) *balancer {
	b := &balancer{vecs: vecs, cents: cents, assign: make([]int, len(vecs)), dist: make([]float64, len(vecs)),
		counts: make([]int, len(cents))}
	for i, v := range vecs {
		b.assign[i], b.dist[i] = Nearest(cents, v)
		b.counts[b.assign[i]]++
	}
	return b
}

func (b *balancer) ratio() float64 {
	sizes := make([]int64, len(b.counts))
	for j, n := range b.counts {
		sizes[j] = int64(n)
	}
	_, _, f, _ := SkewStats(sizes)
	return f
}

func (b *balancer) sumSquares() float64 {
	var s float64
	for _, n := range b.counts {
		s += float64(n) * float64(n)
	}
	return s
}

type balancerState struct {
	cents  [][]float32
	assign []int
	dist   []float64
	counts []int
}

func (b *balancer) save() balancerState {
	return balancerState{cents: slices.Clone(b.cents), assign: slices.Clone(b.assign), dist: slices.Clone(b.dist),
		counts: slices.Clone(b.counts)}
}

func (b *balancer) restore(s balancerState) {
	b.cents, b.assign, b.dist, b.counts = s.cents, s.assign, s.dist, s.counts
}

// changed re-establishes the nearest-centroid invariant after the
// centroids at the indices in ch were replaced: a vector assigned to a
// replaced centroid is scanned against all of them; any other vector's
// nearest is either its old centroid (the rest did not move) or one of ch.
// Ties go to the lowest index, as in Nearest.
func (b *balancer) changed(ch []int) {
	for i, v := range b.vecs {
		if slices.Contains(ch, b.assign[i]) {
			b.counts[b.assign[i]]--
			b.assign[i], b.dist[i] = Nearest(b.cents, v)
			b.counts[b.assign[i]]++
			continue
		}
		for _, j := range ch {
			if d := SquaredL2(b.cents[j], v); d < b.dist[i] || (d == b.dist[i] && j < b.assign[i]) {
				b.counts[b.assign[i]]--
				b.assign[i], b.dist[i] = j, d
				b.counts[j]++
			}
		}
	}
}

// step splits the largest list in two and merges a pair of the others to
// keep k; it keeps the change only if the sum of squared list sizes fell,
// and reports that. Merge pairs are tried cheapest first (Ward's
// criterion) among those whose merged list stays within the ratio bound of
// the median, so two dense sub-lists of a blob (cheap to merge, as they
// are close) are not merged back into the list just split.
func (b *balancer) step(seed uint64, maxRatio float64) bool {
	before := b.sumSquares()
	large := 0
	for j, n := range b.counts {
		if n > b.counts[large] {
			large = j
		}
	}
	var members [][]float32
	for i, v := range b.vecs {
		if b.assign[i] == large {
			members = append(members, v)
		}
	}
	if len(members) < 2 {
		return false
	}
	halves, err := KMeans(members, 2, 10, seed)
	if err != nil || SquaredL2(halves.Centroids[0], halves.Centroids[1]) == 0 {
		// Identical members: no hyperplane separates them.
		return false
	}
	sizes := make([]int64, len(b.counts))
	for j, n := range b.counts {
		sizes[j] = int64(n)
	}
	median, _, _, _ := SkewStats(sizes)
	limit := max(maxRatio*median, float64(b.counts[large]-1))
	for _, p := range b.mergeCandidates(large, limit, 4) {
		saved := b.save()
		a, c := p[0], p[1]
		na, nc := float64(b.counts[a]), float64(b.counts[c])
		merged := make([]float32, len(b.cents[a]))
		for d := range merged {
			if na+nc == 0 {
				merged[d] = (b.cents[a][d] + b.cents[c][d]) / 2
			} else {
				merged[d] = float32((na*float64(b.cents[a][d]) + nc*float64(b.cents[c][d])) / (na + nc))
			}
		}
		b.cents = slices.Clone(b.cents)
		b.cents[large], b.cents[a], b.cents[c] = halves.Centroids[0], merged, halves.Centroids[1]
		b.changed([]int{large, a, c})
		if b.sumSquares() < before {
			return true
		}
		b.restore(saved)
	}
	return false
}

// mergeCandidates returns up to n pairs (a, c), neither of them skip and
// together at most limit vectors, cheapest first by Ward's criterion
// n_a·n_c/(n_a+n_c)·‖c_a − c_c‖² (the inertia a merge adds). One side is
// taken among the 32 smallest lists, which bounds the search at 32·k
// distances for large k; a merge is meant to absorb a small list anyway.
func (b *balancer) mergeCandidates(skip int, limit float64, n int) [][2]int {
	order := make([]int, 0, len(b.cents))
	for j := range b.cents {
		if j != skip {
			order = append(order, j)
		}
	}
	slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(b.counts[x], b.counts[y]) })
	type pair struct {
		a, c int
		cost float64
	}
	var pairs []pair
	seen := map[[2]int]bool{}
	for _, a := range order[:min(32, len(order))] {
		for _, c := range order {
			lo, hi := min(a, c), max(a, c)
			if c == a || seen[[2]int{lo, hi}] || float64(b.counts[a]+b.counts[c]) > limit {
				continue
			}
			seen[[2]int{lo, hi}] = true
			na, nc := float64(b.counts[a]), float64(b.counts[c])
			cost := 0.0
			if na+nc > 0 {
				cost = na * nc / (na + nc) * SquaredL2(b.cents[a], b.cents[c])
			}
			pairs = append(pairs, pair{lo, hi, cost})
		}
	}
	slices.SortStableFunc(pairs, func(x, y pair) int {
		return cmp.Or(cmp.Compare(x.cost, y.cost), cmp.Compare(x.a, y.a), cmp.Compare(x.c, y.c))
	})
	out := make([][2]int, 0, n)
	for _, p := range pairs[:min(n, len(pairs))] {
		out = append(out, [2]int{p.a, p.c})
	}
	return out
}

// lloyd runs one Lloyd iteration (centroids to their lists' means, an
// empty list keeps its centroid) and keeps it only if the ratio stays at
// most bound. It reports whether it was kept and whether any vector
// changed list.
func (b *balancer) lloyd(bound float64) (kept, moved bool) {
	saved := b.save()
	dim := len(b.vecs[0])
	sums := make([][]float64, len(b.cents))
	for j := range sums {
		sums[j] = make([]float64, dim)
	}
	for i, v := range b.vecs {
		for d, x := range v {
			sums[b.assign[i]][d] += float64(x)
		}
	}
	cents := make([][]float32, len(b.cents))
	for j := range cents {
		if b.counts[j] == 0 {
			cents[j] = b.cents[j]
			continue
		}
		cents[j] = make([]float32, dim)
		for d := range cents[j] {
			cents[j][d] = float32(sums[j][d] / float64(b.counts[j]))
		}
	}
	b.cents = cents
	clear(b.counts)
	for i, v := range b.vecs {
		j, d := Nearest(cents, v)
		if j != saved.assign[i] {
			moved = true
		}
		b.assign[i], b.dist[i] = j, d
		b.counts[j]++
	}
	if b.ratio() > bound {
		b.restore(saved)
		return false, false
	}
	return true, moved
}
