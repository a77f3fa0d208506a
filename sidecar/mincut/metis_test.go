package mincut_test

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
	"github.com/ruvector/ruvector-healing/sidecar/mincut/mincutgen"
)

func TestReadMETISValid(t *testing.T) {
	for name, tc := range map[string]struct {
		in     string
		n      int
		edges  []mincut.Edge
		lambda int64
	}{
		"unweighted": {
			in: "% a triangle with a tail\n4 4\n2 3\n1 3\n1 2 4\n3\n",
			n:  4, edges: []mincut.Edge{{0, 1, 1}, {0, 2, 1}, {1, 2, 1}, {2, 3, 1}}, lambda: 1,
		},
		"fmt 0 explicit, CRLF, tabs, no final newline": {
			in: "3 2 0\r\n2\r\n1\t3\r\n2",
			n:  3, edges: []mincut.Edge{{0, 1, 1}, {1, 2, 1}}, lambda: 1,
		},
		"weighted fmt 1": {
			in: "3 3 1\n2 5 3 7\n1 5 3 2\n1 7 2 2\n",
			n:  3, edges: []mincut.Edge{{0, 1, 5}, {0, 2, 7}, {1, 2, 2}}, lambda: 7,
		},
		"weighted fmt 001 with comments and an isolated node": {
			in: "%c\n\n4 1 001\n% node 1\n2 9\n1 9\n\n%x\n\n% trailing comment\n",
			n:  4, edges: []mincut.Edge{{0, 1, 9}}, lambda: 0,
		},
		"empty graph": {in: "0 0\n", n: 0, lambda: 0},
	} {
		t.Run(name, func(t *testing.T) {
			g, err := mincut.ReadMETIS(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if g.N() != tc.n || len(g.Edges()) != len(tc.edges) {
				t.Fatalf("n=%d edges=%v", g.N(), g.Edges())
			}
			for i, e := range g.Edges() {
				if e != tc.edges[i] {
					t.Fatalf("edge %d = %v, want %v", i, e, tc.edges[i])
				}
			}
			if l := mincut.MinCut(g).Lambda; l != tc.lambda {
				t.Fatalf("lambda %d, want %d", l, tc.lambda)
			}
		})
	}
}

func TestReadMETISMalformed(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no header"},
		{"% only a comment\n", "no header"},
		{"3\n", "line 1: header must be"},
		{"3 2 1 1 1\n", "line 1: header must be"},
		{"x 2\n", "line 1: header: n and m"},
		{"3 -2\n", "line 1: header: n and m"},
		{"2 1 2\n2\n1\n", "not a METIS format"},
		{"2 1 0001\n2\n1\n", "not a METIS format"},
		{"2 1 11\n1 2\n1 1\n", "vertex sizes or weights"},
		{"2 1 10\n1 2\n1 1\n", "vertex sizes or weights"},
		{"2 1 100\n2\n1\n", "vertex sizes or weights"},
		{"2 1 0 1\n2\n1\n", "ncon"},
		{"3 2\n2\n1 3\n", "announces 3 nodes but the input ends after 2"},
		{"2 1\n3\n1\n", "line 2: node 1: neighbour \"3\""},
		{"2 1\n0\n1\n", "line 2: node 1: neighbour \"0\""},
		{"2 1\n2\nx\n", "line 3: node 2: neighbour \"x\""},
		{"2 1\n1\n\n", "line 2: node 1 lists itself"},
		{"3 2\n2 2\n1\n\n", "line 2: node 1 lists neighbour 2 twice"},
		{"2 1 1\n2\n1 3\n", "line 2: node 1: with fmt 1"},
		{"2 1 1\n2 0\n1 0\n", "line 2: node 1: weight \"0\""},
		{"2 1 1\n2 -4\n1 -4\n", "line 2: node 1: weight \"-4\""},
		{"2 1 1\n2 3\n1 4\n", "line 3: edge {1, 2} has weight 3 at node 1 but 4 at node 2"},
		{"3 2\n2\n1\n1\n", "line 4: edge {1, 3} is listed by node 3 but not by node 1"},
		{"3 2\n2 3\n1\n\n", "edge {1, 3} is listed by node 1 but not by node 3"},
		{"3 3\n2\n1 3\n2\n", "line 1: header says 3 edges but the node lines hold 2"},
		{"2 1\n2\n1\n3\n", "line 4: data after the 2 node lines"},
		{"2 1 1\n2 4611686018427387904\n1 4611686018427387904\n", "must be a positive integer"},
		{"3 2 1\n2 4611686018427387903 3 1\n1 4611686018427387903\n1 1\n", "total edge weight exceeds"},
	} {
		_, err := mincut.ReadMETIS(strings.NewReader(tc.in))
		if err == nil {
			t.Errorf("%q: no error, want %q", tc.in, tc.want)
			continue
		}
		if !errors.Is(err, mincut.ErrFormat) {
			t.Errorf("%q: error %v does not wrap ErrFormat", tc.in, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestReadMETISReaderError(t *testing.T) {
	boom := errors.New("boom")
	_, err := mincut.ReadMETIS(iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap the reader's error", err)
	}
}

func TestMETISRoundTrip(t *testing.T) {
	for _, g := range []*mincut.Graph{
		mincutgen.Health(3000, 5),
		mincutgen.Clustered(500, 20, 1),
		mincutgen.TwoCliques(30, 2, 3),
		mincut.NewGraph(3),
	} {
		var buf bytes.Buffer
		if err := mincut.WriteMETIS(&buf, g); err != nil {
			t.Fatal(err)
		}
		h, err := mincut.ReadMETIS(&buf)
		if err != nil {
			t.Fatal(err)
		}
		a, b := g.Edges(), h.Edges()
		if g.N() != h.N() || len(a) != len(b) {
			t.Fatalf("round trip changed the graph: n %d->%d, m %d->%d", g.N(), h.N(), len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("edge %d: %v -> %v", i, a[i], b[i])
			}
		}
	}
}

func TestReadMETISLongLine(t *testing.T) {
	// A star whose centre line is far longer than the read buffer.
	const n = 30000
	var sb strings.Builder
	sb.WriteString("30000 29999\n")
	for v := 2; v <= n; v++ {
		sb.WriteString(" ")
		sb.WriteString(strconv.Itoa(v))
	}
	sb.WriteString("\n")
	for v := 2; v <= n; v++ {
		sb.WriteString("1\n")
	}
	g, err := mincut.ReadMETIS(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	if g.NumEdges() != n-1 || mincut.MinCut(g).Lambda != 1 {
		t.Fatalf("m=%d", g.NumEdges())
	}
}
