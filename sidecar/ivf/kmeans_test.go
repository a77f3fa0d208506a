package ivf

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// blobs makes n points around each center with the given spread.
func blobs(centers [][]float32, n int, spread float64, seed uint64) ([][]float32, []int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out [][]float32
	var label []int
	for c, cen := range centers {
		for range n {
			v := make([]float32, len(cen))
			for d := range v {
				v[d] = cen[d] + float32(rng.NormFloat64()*spread)
			}
			out = append(out, v)
			label = append(label, c)
		}
	}
	return out, label
}

var fourCenters = [][]float32{{0, 0, 0}, {100, 0, 0}, {0, 100, 0}, {0, 0, 100}}

func TestKMeansRecoversSeparatedClusters(t *testing.T) {
	vecs, label := blobs(fourCenters, 200, 1, 7)
	res, err := KMeans(vecs, 4, 50, 42)
	if err != nil {
		t.Fatal(err)
	}
	// Each true cluster maps to exactly one list and vice versa.
	toList := map[int]int{}
	for i, l := range res.Assign {
		if prev, ok := toList[label[i]]; ok && prev != l {
			t.Fatalf("cluster %d split over lists %d and %d", label[i], prev, l)
		}
		toList[label[i]] = l
	}
	seen := map[int]bool{}
	for _, l := range toList {
		seen[l] = true
	}
	if len(seen) != 4 {
		t.Fatalf("clusters mapped to %d distinct lists, want 4: %v", len(seen), toList)
	}
	for c, l := range toList {
		if d := SquaredL2(res.Centroids[l], fourCenters[c]); d > 1 {
			t.Errorf("centroid of cluster %d is %.3f (squared) away from its center", c, d)
		}
	}
	// 800 points of variance 1 in 3 dimensions: inertia about 2400.
	if res.Inertia > 3000 {
		t.Errorf("inertia %.0f, want about 2400", res.Inertia)
	}
}

func TestSeedPlusPlusSpreads(t *testing.T) {
	// k-means++ should put one seed in each far-apart blob almost always;
	// uniform seeding of 4 from 4 equal blobs would do so only 4!/4^4 = 9% of the time.
	vecs, _ := blobs(fourCenters, 200, 1, 3)
	hits := 0
	for seed := range uint64(50) {
		seeds, err := SeedPlusPlus(vecs, 4, seed)
		if err != nil {
			t.Fatal(err)
		}
		covered := map[int]bool{}
		for _, s := range seeds {
			j, _ := Nearest(fourCenters, s)
			covered[j] = true
		}
		if len(covered) == 4 {
			hits++
		}
	}
	if hits < 45 {
		t.Fatalf("seeds covered all 4 blobs in %d of 50 runs, want >= 45", hits)
	}
}

func TestKMeansDeterministic(t *testing.T) {
	vecs, _ := blobs([][]float32{{0, 0}, {5, 5}, {10, 0}}, 100, 3, 9)
	a, err := KMeans(vecs, 5, 30, 11)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := KMeans(vecs, 5, 30, 11)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different results")
	}
	c, _ := KMeans(vecs, 5, 30, 12)
	if reflect.DeepEqual(a.Centroids, c.Centroids) {
		t.Fatal("different seeds gave identical centroids (seed ignored?)")
	}
}

func TestKMeansTooFewVectors(t *testing.T) {
	if _, err := KMeans([][]float32{{1}, {2}}, 3, 10, 1); err == nil {
		t.Fatal("3 lists from 2 vectors: want an error")
	}
}

func TestKMeansKeepsListsPopulatedWithDuplicates(t *testing.T) {
	vecs := make([][]float32, 0, 20)
	for i := range 20 {
		vecs = append(vecs, []float32{float32(i % 2)})
	}
	res, err := KMeans(vecs, 3, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Centroids) != 3 {
		t.Fatalf("%d centroids", len(res.Centroids))
	}
}

func TestParseRealArray(t *testing.T) {
	got, err := ParseRealArray([]byte("{1,-2.5,3e-05}"))
	if err != nil || !reflect.DeepEqual(got, []float32{1, -2.5, 3e-05}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"1,2", "{1,x}", ""} {
		if _, err := ParseRealArray([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestSkewStats(t *testing.T) {
	med, mx, f, cv := SkewStats([]int64{10, 10, 10, 40})
	if med != 10 || mx != 40 || f != 4 || cv <= 0 {
		t.Fatalf("median %v max %v factor %v cv %v", med, mx, f, cv)
	}
	_, _, f, cv = SkewStats([]int64{5, 5, 5})
	if f != 1 || cv != 0 {
		t.Fatalf("even: factor %v cv %v", f, cv)
	}
}
