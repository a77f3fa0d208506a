package mincutgen

import (
	"fmt"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

// Every generator must be a pure function of its arguments: benchmarks and
// peers compare results across runs.
func TestDeterministic(t *testing.T) {
	gens := map[string]func() *mincut.Graph{
		"random":      func() *mincut.Graph { return Random(500, 4, 3) },
		"grid":        func() *mincut.Graph { return Grid(10, 20, 3) },
		"power-law":   func() *mincut.Graph { return BarabasiAlbert(500, 3, 3) },
		"clustered":   func() *mincut.Graph { return Clustered(500, 25, 3) },
		"k-cores":     func() *mincut.Graph { return KCores(500, 5, 4, 3) },
		"two-cliques": func() *mincut.Graph { return TwoCliques(10, 3, 3) },
		"health":      func() *mincut.Graph { return Health(3000, 3) },
	}
	for name, gen := range gens {
		a, b := gen(), gen()
		if a.N() != b.N() || fmt.Sprint(a.Edges()) != fmt.Sprint(b.Edges()) {
			t.Errorf("%s: two runs with the same seed differ", name)
		}
		if mincut.MinCut(a).Lambda <= 0 {
			t.Errorf("%s: graph is disconnected", name)
		}
	}
	for _, n := range []int{2, 7, 16, 100, 1000, 2500, 20000} {
		if g := Health(n, 1); g.N() != n || mincut.MinCut(g).Lambda <= 0 {
			t.Errorf("Health(%d): %d nodes, connected=%v", n, g.N(), mincut.MinCut(g).Lambda > 0)
		}
	}
}
