package mincut_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
	"github.com/ruvector/ruvector-healing/sidecar/mincut/mincutgen"
)

func BenchmarkMinCut(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		for name, g := range map[string]*mincut.Graph{
			"health":    mincutgen.Health(n, 1),
			"clustered": mincutgen.Clustered(n, 50, 1),
			"k-cores":   mincutgen.KCores(n, 6, 8, 1),
		} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				for b.Loop() {
					mincut.MinCut(g)
				}
			})
		}
	}
}

// BenchmarkDynamicApply measures one random capacity change (an edge set to
// 0.01..1) per iteration on a health graph.
func BenchmarkDynamicApply(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("health/n=%d", n), func(b *testing.B) {
			g := mincutgen.Health(n, 2)
			edges := g.Edges()
			d := mincut.NewDynamic(g)
			rng := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				e := edges[rng.IntN(len(edges))]
				w := mincutgen.Unit/100 + rng.Int64N(mincutgen.Unit)
				d.Apply([]mincut.Change{{Kind: mincut.SetEdge, U: e.U, V: e.V, W: w}})
			}
		})
	}
}
