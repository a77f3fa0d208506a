package mincut_test

import (
	"fmt"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
	"github.com/ruvector/ruvector-healing/sidecar/mincut/mincutgen"
)

// verify fails the test unless r is a correct minimum cut of g of value
// want (see VerifyResult).
func verify(t *testing.T, g *mincut.Graph, r mincut.Result, want int64) {
	t.Helper()
	if err := mincut.VerifyResult(g, r, want); err != nil {
		t.Fatal(err)
	}
}

// families returns named generators of graphs where λ often is not the
// smallest weighted degree, at sizes a quadratic reference can check quickly.
func families(short bool) map[string][]*mincut.Graph {
	seeds := 12
	if short {
		seeds = 4
	}
	f := map[string][]*mincut.Graph{}
	for s := uint64(0); s < uint64(seeds); s++ {
		f["random"] = append(f["random"], mincutgen.Random(30+int(s)*7, 3, s))
		f["grid"] = append(f["grid"], mincutgen.Grid(3+int(s)%5, 4+int(s)%7, s))
		f["uniform-grid"] = append(f["uniform-grid"], mincutgen.UniformGrid(2+int(s)%4, 3+int(s)%9))
		f["power-law"] = append(f["power-law"], mincutgen.BarabasiAlbert(40+int(s)*10, 1+int(s)%3, s))
		f["clustered"] = append(f["clustered"], mincutgen.Clustered(60+int(s)*10, 8+int(s)%8, s))
		f["k-cores"] = append(f["k-cores"], mincutgen.KCores(120, 3+int(s)%5, 2+int(s)%4, s))
		f["two-cliques"] = append(f["two-cliques"], mincutgen.TwoCliques(5+int(s)%10, 1+int(s)%4, s))
		f["health"] = append(f["health"], mincutgen.Health(20+int(s)*40, s))
	}
	return f
}

func TestMinCutFamilies(t *testing.T) {
	notDegree := 0
	for name, gs := range families(testing.Short()) {
		for i, g := range gs {
			t.Run(fmt.Sprintf("%s/%d", name, i), func(t *testing.T) {
				want := mincut.ReferenceStoerWagner(g)
				r := mincut.MinCut(g)
				verify(t, g, r, want)
				minDeg := g.Degrees()[0]
				for _, d := range g.Degrees() {
					minDeg = min(minDeg, d)
				}
				if want < minDeg {
					notDegree++
				}
			})
		}
	}
	// The families exist to exercise cuts that are not a single node.
	if notDegree < 20 {
		t.Fatalf("only %d graphs have λ below the minimum degree", notDegree)
	}
}

func TestMinCutSmallGraphs(t *testing.T) {
	for n := 0; n < 2; n++ {
		r := mincut.MinCut(mincut.NewGraph(n))
		if r.Lambda != 0 || len(r.Side) != 0 || len(r.Witness) != 0 {
			t.Fatalf("n=%d: got %+v, want the empty result", n, r)
		}
	}
	g := mincut.NewGraph(2)
	g.AddEdge(0, 1, 5)
	g.AddEdge(1, 0, 7) // parallel edges sum
	g.AddEdge(1, 1, 9) // self-loop ignored
	r := mincut.MinCut(g)
	verify(t, g, r, 12)
	if len(r.Side) != 1 || r.Side[0] != 1 || len(r.Witness) != 1 {
		t.Fatalf("got %+v", r)
	}
}

func TestMinCutDisconnected(t *testing.T) {
	g := mincut.NewGraph(7)
	g.AddEdge(0, 1, 3)
	g.AddEdge(1, 2, 3)
	g.AddEdge(3, 4, 1)
	g.AddEdge(4, 5, 1)
	g.AddEdge(5, 6, 1)
	r := mincut.MinCut(g)
	verify(t, g, r, 0)
	if fmt.Sprint(r.Side) != "[0 1 2]" {
		t.Fatalf("side %v, want the smaller component [0 1 2]", r.Side)
	}
	g2 := mincut.NewGraph(3) // an isolated node
	g2.AddEdge(0, 1, 4)
	verify(t, g2, mincut.MinCut(g2), 0)
}
