// Package ivf trains and maintains the IVF lists of a vector collection:
// k-means centroids (k-means++ seeding, trained on a sample when the
// collection is large), stored as versions in ruvector.centroid_versions /
// ruvector.centroids, activated through ruvector._centroids_activate, and
// rows reassigned to their nearest list in small keyset batches. A rebuild
// is Train → Reassign; Rollback re-activates the previous version and
// reassigns back.
package ivf

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// ErrTooFewVectors is returned when there are fewer vectors than lists.
var ErrTooFewVectors = errors.New("ivf: fewer vectors than lists")

// KMeansResult is a trained set of centroids.
type KMeansResult struct {
	Centroids [][]float32
	// Assign[i] is the list of vectors[i].
	Assign []int
	// Inertia is the sum of squared L2 distances to the assigned centroid.
	Inertia    float64
	Iterations int
}

// SquaredL2 is the squared Euclidean distance, accumulated in float64 so
// that the Go side and the extension agree on the nearest list except for
// exact ties.
func SquaredL2(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s
}

// Nearest returns the index of the centroid nearest to v (the lowest index
// on ties) and its squared distance.
func Nearest(centroids [][]float32, v []float32) (int, float64) {
	best, bestD := -1, math.Inf(1)
	for j, c := range centroids {
		if d := SquaredL2(c, v); d < bestD {
			best, bestD = j, d
		}
	}
	return best, bestD
}

// SeedPlusPlus picks k initial centroids by k-means++: the first uniformly,
// each next one with probability proportional to its squared distance to
// the nearest centroid already chosen. Deterministic for a given seed.
func SeedPlusPlus(vectors [][]float32, k int, seed uint64) ([][]float32, error) {
	if k <= 0 {
		return nil, fmt.Errorf("ivf: k = %d, want > 0", k)
	}
	if len(vectors) < k {
		return nil, fmt.Errorf("%w: %d vectors, %d lists", ErrTooFewVectors, len(vectors), k)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	centroids := make([][]float32, 0, k)
	centroids = append(centroids, clone(vectors[rng.IntN(len(vectors))]))
	dist := make([]float64, len(vectors))
	for i, v := range vectors {
		dist[i] = SquaredL2(v, centroids[0])
	}
	for len(centroids) < k {
		var total float64
		for _, d := range dist {
			total += d
		}
		var pick int
		if total == 0 {
			// Every vector coincides with a chosen centroid (duplicates):
			// any choice is as good; keep going so k lists exist.
			pick = rng.IntN(len(vectors))
		} else {
			r := rng.Float64() * total
			pick = len(vectors) - 1
			for i, d := range dist {
				r -= d
				if r < 0 {
					pick = i
					break
				}
			}
		}
		c := clone(vectors[pick])
		centroids = append(centroids, c)
		for i, v := range vectors {
			if d := SquaredL2(v, c); d < dist[i] {
				dist[i] = d
			}
		}
	}
	return centroids, nil
}

// KMeans runs Lloyd's algorithm from k-means++ seeds until no assignment
// changes or maxIter iterations. An emptied list is re-seeded with the
// vector farthest from its centroid, so k lists stay populated.
func KMeans(vectors [][]float32, k, maxIter int, seed uint64) (KMeansResult, error) {
	if maxIter <= 0 {
		maxIter = 25
	}
	centroids, err := SeedPlusPlus(vectors, k, seed)
	if err != nil {
		return KMeansResult{}, err
	}
	dim := len(vectors[0])
	assign := make([]int, len(vectors))
	for i := range assign {
		assign[i] = -1
	}
	sums := make([][]float64, k)
	for j := range sums {
		sums[j] = make([]float64, dim)
	}
	counts := make([]int, k)
	iter := 0
	for iter < maxIter {
		iter++
		changed := 0
		for i, v := range vectors {
			j, _ := Nearest(centroids, v)
			if j != assign[i] {
				assign[i] = j
				changed++
			}
		}
		if changed == 0 && iter > 1 {
			break
		}
		for j := range sums {
			clear(sums[j])
			counts[j] = 0
		}
		for i, v := range vectors {
			j := assign[i]
			counts[j]++
			for d, x := range v {
				sums[j][d] += float64(x)
			}
		}
		for j := range centroids {
			if counts[j] == 0 {
				far, farD := 0, -1.0
				for i, v := range vectors {
					if d := SquaredL2(v, centroids[assign[i]]); d > farD {
						far, farD = i, d
					}
				}
				centroids[j] = clone(vectors[far])
				assign[far] = j
				continue
			}
			for d := range centroids[j] {
				centroids[j][d] = float32(sums[j][d] / float64(counts[j]))
			}
		}
	}
	var inertia float64
	for i, v := range vectors {
		j, d := Nearest(centroids, v)
		assign[i] = j
		inertia += d
	}
	return KMeansResult{Centroids: centroids, Assign: assign, Inertia: inertia, Iterations: iter}, nil
}

func clone(v []float32) []float32 { return append([]float32(nil), v...) }
