package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twoTriangles.graph: triangles {1,2,3} and {4,5,6} (weight 10) joined by
// {3,4} and {2,5} (weight 3), node 7 hanging on 1 with weight 5: λ = 5.
const twoTriangles = `% two triangles and a pendant
7 9 1
2 10 3 10 7 5
1 10 3 10 5 3
1 10 2 10 4 3
3 3 5 10 6 10
2 3 4 10 6 10
4 10 5 10
1 5
`

func writeGraph(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "g.graph")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunMincutText(t *testing.T) {
	var out bytes.Buffer
	if err := runMincut(context.Background(), []string{writeGraph(t, twoTriangles)}, &out); err != nil {
		t.Fatal(err)
	}
	want := "lambda: 5\nnodes: 7, edges: 9\nsides: 1 and 6 nodes\nsmaller side (1-based): 7\nwitness edges (1):\n  1 7 5\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestRunMincutJSON(t *testing.T) {
	// Make the bridge cut the minimum: bridges of weight 1 and 3 -> λ = 4.
	g := strings.Replace(twoTriangles, "1 10 3 10 5 3", "1 10 3 10 5 1", 1)
	g = strings.Replace(g, "2 3 4 10 6 10", "2 1 4 10 6 10", 1)
	var out bytes.Buffer
	if err := runMincut(context.Background(), []string{"--json", writeGraph(t, g)}, &out); err != nil {
		t.Fatal(err)
	}
	var got mincutOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if got.Lambda != 4 || got.Nodes != 7 || got.SmallerSide != 3 || got.LargerSide != 4 {
		t.Fatalf("got %+v", got)
	}
	if len(got.Side) != 3 || got.Side[0] != 4 || got.Side[1] != 5 || got.Side[2] != 6 {
		t.Fatalf("side %v, want [4 5 6]", got.Side)
	}
	if len(got.Witness) != 2 || got.Witness[0] != (witnessJSON{2, 5, 1}) || got.Witness[1] != (witnessJSON{3, 4, 3}) {
		t.Fatalf("witness %+v", got.Witness)
	}
}

func TestRunMincutStdin(t *testing.T) {
	p := writeGraph(t, "2 1 1\n2 8\n1 8\n")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	var out bytes.Buffer
	if err := runMincut(context.Background(), []string{"-"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "lambda: 8\n") {
		t.Fatalf("got %q", out.String())
	}
}

func TestRunMincutErrors(t *testing.T) {
	good := writeGraph(t, twoTriangles)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing FILE"},
		{[]string{good, good}, "more than one FILE"},
		{[]string{"--bogus", good}, "unknown flag"},
		{[]string{filepath.Join(t.TempDir(), "absent")}, "no such file"},
		{[]string{writeGraph(t, "2 1\n2\n\n")}, "listed by node 1 but not by node 2"},
		{[]string{writeGraph(t, "1 0\n\n")}, "a cut needs at least 2"},
	} {
		err := runMincut(context.Background(), tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := runMincut(context.Background(), []string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "usage") {
		t.Errorf("-h: err %v, output %q", err, out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := runMincut(ctx, []string{good}, &bytes.Buffer{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err %v", err)
	}
}
