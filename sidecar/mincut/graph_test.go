package mincut_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

func TestGraphBuilder(t *testing.T) {
	g := mincut.NewGraph(3)
	g.AddEdge(0, 1, 2)
	g.AddEdge(1, 0, 3) // parallel: sums to 5
	g.AddEdge(2, 2, 7) // self-loop: ignored
	g.AddEdge(1, 2, 0) // zero: ignored
	if g.Weight(0, 1) != 5 || g.Weight(1, 0) != 5 || g.NumEdges() != 1 || g.TotalWeight() != 5 {
		t.Fatalf("edges %v total %d", g.Edges(), g.TotalWeight())
	}
	v := g.AddNode()
	if v != 3 || g.N() != 4 {
		t.Fatalf("AddNode = %d, N = %d", v, g.N())
	}
	g.SetWeight(3, 2, 4)
	g.SetWeight(0, 2, 1)
	if fmt.Sprint(g.Degrees()) != "[6 5 5 4]" {
		t.Fatalf("degrees %v", g.Degrees())
	}
	g.SetWeight(1, 0, 0) // removal moves the last edge into the hole
	if g.Weight(0, 1) != 0 || g.Weight(2, 3) != 4 || g.Weight(0, 2) != 1 || g.NumEdges() != 2 || g.TotalWeight() != 5 {
		t.Fatalf("after removal: %v", g.Edges())
	}
	if fmt.Sprint(g.Edges()) != "[{0 2 1} {2 3 4}]" {
		t.Fatalf("edges %v", g.Edges())
	}
	if g.CutValue([]int{2}) != 5 || g.Weight(-1, 9) != 0 {
		t.Fatal("CutValue or out-of-range Weight wrong")
	}
	for name, f := range map[string]func(){
		"node out of range": func() { g.AddEdge(0, 4, 1) },
		"negative weight":   func() { g.AddEdge(0, 1, -1) },
		"overflow":          func() { g.AddEdge(0, 1, mincut.MaxTotalWeight) },
		"negative n":        func() { mincut.NewGraph(-1) },
		"set out of range":  func() { g.SetWeight(5, 0, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// Random SetWeight/AddEdge sequences agree with a map model.
func TestGraphAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	g := mincut.NewGraph(12)
	model := map[[2]int]int64{}
	for i := 0; i < 5000; i++ {
		u, v := rng.IntN(12), rng.IntN(12)
		if u == v {
			continue
		}
		k := [2]int{min(u, v), max(u, v)}
		if rng.IntN(2) == 0 {
			w := rng.Int64N(4) // 0 removes
			g.SetWeight(u, v, w)
			model[k] = w
		} else {
			w := rng.Int64N(3)
			g.AddEdge(u, v, w)
			model[k] += w
		}
		if g.Weight(u, v) != model[k] {
			t.Fatalf("step %d: weight %d, model %d", i, g.Weight(u, v), model[k])
		}
	}
	var total int64
	n := 0
	for k, w := range model {
		if g.Weight(k[0], k[1]) != w {
			t.Fatalf("%v: weight %d, model %d", k, g.Weight(k[0], k[1]), w)
		}
		if w > 0 {
			n++
			total += w
		}
	}
	if g.NumEdges() != n || g.TotalWeight() != total {
		t.Fatalf("edges %d/%d total %d/%d", g.NumEdges(), n, g.TotalWeight(), total)
	}
}
