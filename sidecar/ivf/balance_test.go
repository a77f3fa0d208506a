package ivf

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

// driftedSet is the scorecard's drift in miniature: eight well-spread
// clusters (centers uniform in [-10, 10]^8, spread 1, 400 points each) and
// a narrow dense blob (spread 0.5 around (30, …, 30)) holding 30% of the
// points.
func driftedSet(seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 77))
	var centers [][]float32
	for range 8 {
		v := make([]float32, 8)
		for d := range v {
			v[d] = float32(rng.Float64()*20 - 10)
		}
		centers = append(centers, v)
	}
	vecs, _ := blobs(centers, 400, 1, seed)
	blob := make([]float32, 8)
	for d := range blob {
		blob[d] = 30
	}
	dense, _ := blobs([][]float32{blob}, 1372, 0.5, seed+100)
	return append(vecs, dense...)
}

func TestBalancedKMeansSplitsDenseBlob(t *testing.T) {
	const k = 32
	for _, seed := range []uint64{1, 2, 3} {
		vecs := driftedSet(seed)
		plain, err := KMeans(vecs, k, 25, seed)
		if err != nil {
			t.Fatal(err)
		}
		bal, st, err := BalancedKMeans(vecs, k, 25, seed, BalanceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pr, br := listRatio(plain.Assign, k), listRatio(bal.Assign, k)
		t.Logf("seed %d: plain ratio %.2f inertia %.0f; balanced %+v inertia %.0f", seed, pr, plain.Inertia, st, bal.Inertia)
		if pr < 3 {
			t.Fatalf("seed %d: plain k-means ratio %.2f, want ≥ 3 (the blob in one list)", seed, pr)
		}
		if br > DefaultMaxListRatio || !st.Balanced || st.RatioAfter != br || st.RatioBefore != pr || st.Steps == 0 {
			t.Fatalf("seed %d: balanced ratio %.2f stats %+v, want ≤ %v after some steps", seed, br, st, DefaultMaxListRatio)
		}
		if len(bal.Centroids) != k || len(bal.Assign) != len(vecs) {
			t.Fatalf("seed %d: %d centroids, %d assignments", seed, len(bal.Centroids), len(bal.Assign))
		}
		// The returned assignment is every vector's nearest centroid (what
		// the extension computes), and the inertia is its sum.
		var inertia float64
		for i, v := range vecs {
			j, d := Nearest(bal.Centroids, v)
			if j != bal.Assign[i] {
				t.Fatalf("seed %d: vector %d assigned %d, nearest %d", seed, i, bal.Assign[i], j)
			}
			inertia += d
		}
		if inertia != bal.Inertia {
			t.Fatalf("seed %d: inertia %v, recomputed %v", seed, bal.Inertia, inertia)
		}
		// Cutting the blob finer costs little: its points are close together.
		if bal.Inertia > 1.1*plain.Inertia {
			t.Fatalf("seed %d: balanced inertia %.0f more than 10%% above plain %.0f", seed, bal.Inertia, plain.Inertia)
		}
		again, st2, err := BalancedKMeans(vecs, k, 25, seed, BalanceOptions{})
		if err != nil || !reflect.DeepEqual(again, bal) || st2 != st {
			t.Fatalf("seed %d: not deterministic (%v)", seed, err)
		}
	}
}

// With one list fewer than natural groups (eight clusters and the blob,
// the scorecard's shape), the blob can only be split by merging two
// natural clusters: the ratio comes inside the health band (2), under 1.5
// only when the cluster sizes allow it (Balanced says which), and the
// merge costs inertia, within a bound.
func TestBalancedKMeansFewLists(t *testing.T) {
	const k = 8
	vecs := driftedSet(4)
	plain, err := KMeans(vecs, k, 25, 4)
	if err != nil {
		t.Fatal(err)
	}
	bal, st, err := BalancedKMeans(vecs, k, 25, 4, BalanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plain ratio %.2f inertia %.0f; balanced %+v inertia %.0f", listRatio(plain.Assign, k), plain.Inertia, st, bal.Inertia)
	if st.RatioBefore < 2.5 || st.RatioAfter > 1.75 || st.Balanced != (st.RatioAfter <= DefaultMaxListRatio) {
		t.Fatalf("stats %+v: want a ratio from ≥ 2.5 to ≤ 1.75", st)
	}
	if bal.Inertia > 3*plain.Inertia {
		t.Fatalf("inertia %.0f, more than 3× plain %.0f", bal.Inertia, plain.Inertia)
	}
}

func TestBalancedKMeansEdgeCases(t *testing.T) {
	vecs := driftedSet(5)
	// k = 1: one list, ratio 1, nothing to do.
	res, st, err := BalancedKMeans(vecs, 1, 10, 1, BalanceOptions{})
	if err != nil || len(res.Centroids) != 1 || st.RatioAfter != 1 || !st.Balanced || st.Steps != 0 {
		t.Fatalf("k=1: %d centroids, %+v, %v", len(res.Centroids), st, err)
	}
	// Fewer vectors than lists: the same error as KMeans.
	if _, _, err := BalancedKMeans(vecs[:3], 4, 10, 1, BalanceOptions{}); !errors.Is(err, ErrTooFewVectors) {
		t.Fatalf("3 vectors, 4 lists: %v, want ErrTooFewVectors", err)
	}
	// All vectors identical: every vector goes to list 0 (ties go to the
	// lowest index) and no split can separate them; it ends, unbalanced.
	same := make([][]float32, 200)
	for i := range same {
		same[i] = []float32{1, 2, 3}
	}
	res, st, err = BalancedKMeans(same, 8, 10, 1, BalanceOptions{})
	if err != nil || len(res.Centroids) != 8 || st.Balanced || st.Steps != 0 || res.Inertia != 0 {
		t.Fatalf("identical vectors: %d centroids, %+v, inertia %v, %v", len(res.Centroids), st, res.Inertia, err)
	}
	// A bound below 1 cannot be met by any partition.
	for _, r := range []float64{0.5, -1} {
		if _, _, err := BalancedKMeans(vecs, 4, 10, 1, BalanceOptions{MaxRatio: r}); err == nil {
			t.Fatalf("max ratio %v accepted", r)
		}
	}
	// A step budget of 1 is honoured.
	_, st, err = BalancedKMeans(vecs, 32, 25, 1, BalanceOptions{MaxSteps: 1})
	if err != nil || st.Steps > 1 {
		t.Fatalf("max steps 1: %+v, %v", st, err)
	}
}
