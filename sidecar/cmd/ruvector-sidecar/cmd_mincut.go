package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

const mincutUsage = `usage: ruvector-sidecar mincut FILE [--json]

Reads an undirected graph in METIS format from FILE ('-' for standard input;
header "n m [fmt]", fmt 1 for integer edge weights) and prints its exact
global minimum cut: lambda, the number of nodes on each side, the nodes of
the smaller side and the witness edges crossing the cut. Node numbers are
1-based, as in the METIS file. --json prints the same as one JSON object.
`

// mincutOutput is the --json shape of the mincut command.
type mincutOutput struct {
	Lambda      int64         `json:"lambda"`
	Nodes       int           `json:"nodes"`
	Edges       int           `json:"edges"`
	SmallerSide int           `json:"smaller_side_size"`
	LargerSide  int           `json:"larger_side_size"`
	Side        []int         `json:"smaller_side"`
	Witness     []witnessJSON `json:"witness_edges"`
}

type witnessJSON struct {
	U int   `json:"u"`
	V int   `json:"v"`
	W int64 `json:"w"`
}

// runMincut implements "ruvector-sidecar mincut FILE [--json]": an operator's
// way to check the sensor on a graph exported from a live system, or on any
// METIS graph, with the same exact algorithm the sidecar uses.
func runMincut(ctx context.Context, args []string, stdout io.Writer) error {
	var file string
	haveFile, asJSON := false, false
	for _, a := range args {
		switch {
		case a == "--json" || a == "-json":
			asJSON = true
		case a == "-h" || a == "--help" || a == "-help":
			fmt.Fprint(stdout, mincutUsage)
			return flag.ErrHelp
		case a == "-" || !strings.HasPrefix(a, "-"):
			if haveFile {
				return fmt.Errorf("more than one FILE (%q and %q)\n%s", file, a, mincutUsage)
			}
			file, haveFile = a, true
		default:
			return fmt.Errorf("unknown flag %q\n%s", a, mincutUsage)
		}
	}
	if !haveFile {
		return errors.New("missing FILE\n" + mincutUsage)
	}
	var in io.Reader = os.Stdin
	name := "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("mincut: %w", err)
		}
		defer f.Close()
		in, name = f, file
	}
	g, err := mincut.ReadMETIS(in)
	if err != nil {
		return fmt.Errorf("mincut: %s: %w", name, err)
	}
	if g.N() < 2 {
		return fmt.Errorf("mincut: %s: the graph has %d node(s); a cut needs at least 2", name, g.N())
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mincut: %w", err)
	}
	r := mincut.MinCut(g)
	out := mincutOutput{
		Lambda:      r.Lambda,
		Nodes:       g.N(),
		Edges:       g.NumEdges(),
		SmallerSide: len(r.Side),
		LargerSide:  g.N() - len(r.Side),
		Side:        make([]int, len(r.Side)),
		Witness:     make([]witnessJSON, len(r.Witness)),
	}
	for i, v := range r.Side {
		out.Side[i] = v + 1
	}
	for i, e := range r.Witness {
		out.Witness[i] = witnessJSON{U: e.U + 1, V: e.V + 1, W: e.W}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("mincut: writing output: %w", err)
		}
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lambda: %d\n", out.Lambda)
	fmt.Fprintf(&b, "nodes: %d, edges: %d\n", out.Nodes, out.Edges)
	fmt.Fprintf(&b, "sides: %d and %d nodes\n", out.SmallerSide, out.LargerSide)
	fmt.Fprintf(&b, "smaller side (1-based):")
	for _, v := range out.Side {
		fmt.Fprintf(&b, " %d", v)
	}
	fmt.Fprintf(&b, "\nwitness edges (%d):\n", len(out.Witness))
	for _, e := range out.Witness {
		fmt.Fprintf(&b, "  %d %d %d\n", e.U, e.V, e.W)
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return fmt.Errorf("mincut: writing output: %w", err)
	}
	return nil
}
