package mincut

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// ErrFormat is wrapped by every error ReadMETIS returns for malformed input
// (as opposed to an I/O error of the reader, which is wrapped as is).
var ErrFormat = errors.New("malformed METIS graph")

// ReadMETIS parses a graph in the METIS format used by METIS, KaHIP and
// VieCut, so graphs can be exchanged with those tools and with benchmark
// peers:
//
//   - lines starting with '%' are comments;
//   - the header is "n m [fmt]": n nodes, m undirected edges; fmt "1" (or
//     "001") means every neighbour is followed by the edge weight, "0", "000"
//     or no fmt means unit weights. Formats with vertex weights or sizes
//     (fmt 010, 011, 100, ...) and the ncon field are rejected: a cut does
//     not use them and silently ignoring them would misread the lines;
//   - then exactly n lines (an empty line is a node without neighbours), line
//     i listing the 1-based neighbours of node i.
//
// Every edge must appear in the lines of both endpoints with the same weight,
// weights must be positive integers, there are no self-loops or repeated
// neighbours, and the number of edges must equal m. Errors give the line
// number and wrap ErrFormat. Nodes are numbered from 0 in the result.
func ReadMETIS(r io.Reader) (*Graph, error) {
	lr := &lineReader{r: bufio.NewReaderSize(r, 1<<16)}
	var header []byte
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no header line", ErrFormat)
		}
		if err != nil {
			return nil, fmt.Errorf("reading METIS: %w", err)
		}
		if isComment(line) {
			continue
		}
		if len(fields(line, nil)) == 0 {
			continue // blank lines before the header
		}
		header = line
		break
	}
	hdrLine := lr.num
	f := fields(header, nil)
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrFormat, line, fmt.Sprintf(format, args...))
	}
	if len(f) < 2 || len(f) > 4 {
		return nil, bad(hdrLine, "header must be \"n m [fmt]\", got %d fields", len(f))
	}
	n, err1 := parseUint(f[0])
	m, err2 := parseUint(f[1])
	if err1 != nil || err2 != nil {
		return nil, bad(hdrLine, "header: n and m must be non-negative integers")
	}
	if n > math.MaxInt32 {
		return nil, bad(hdrLine, "header: n = %d is too large", n)
	}
	weighted := false
	if len(f) >= 3 {
		fm := string(f[2])
		if len(fm) > 3 || fm == "" || !onlyBinaryDigits(fm) {
			return nil, bad(hdrLine, "header: fmt %q is not a METIS format (up to three 0/1 digits)", fm)
		}
		for len(fm) < 3 {
			fm = "0" + fm
		}
		if fm[0] == '1' || fm[1] == '1' {
			return nil, bad(hdrLine, "header: fmt %s has vertex sizes or weights, which are not supported (only edge weights: fmt 1)", fm)
		}
		weighted = fm[2] == '1'
	}
	if len(f) == 4 {
		return nil, bad(hdrLine, "header: the ncon field (multi-constraint vertex weights) is not supported")
	}
	if m > uint64(n)*uint64(max(n, 1)) {
		return nil, bad(hdrLine, "header: m = %d is more than a simple graph on %d nodes can have", m, n)
	}
	g := NewGraph(int(n))
	confirmed := make([]bool, 0, min(m, 1<<20)) // per edge: seen from both ends
	var seen []int32                            // per node: last line that listed it
	seen = make([]int32, n)
	for i := range seen {
		seen[i] = -1
	}
	var buf [][]byte
	for u := 0; u < int(n); u++ {
		var line []byte
		for {
			l, err := lr.next()
			if err == io.EOF {
				return nil, fmt.Errorf("%w: header announces %d nodes but the input ends after %d node lines", ErrFormat, n, u)
			}
			if err != nil {
				return nil, fmt.Errorf("reading METIS line %d: %w", lr.num, err)
			}
			if !isComment(l) {
				line = l
				break
			}
		}
		buf = fields(line, buf[:0])
		if weighted && len(buf)%2 != 0 {
			return nil, bad(lr.num, "node %d: with fmt 1 every neighbour needs a weight (odd number of fields)", u+1)
		}
		step := 1
		if weighted {
			step = 2
		}
		for i := 0; i < len(buf); i += step {
			v64, err := parseUint(buf[i])
			if err != nil || v64 < 1 || v64 > n {
				return nil, bad(lr.num, "node %d: neighbour %q is not a node number in 1..%d", u+1, buf[i], n)
			}
			v := int(v64 - 1)
			w := int64(1)
			if weighted {
				w64, err := parseUint(buf[i+1])
				if err != nil || w64 == 0 || w64 > MaxTotalWeight {
					return nil, bad(lr.num, "node %d: weight %q of edge to %d must be a positive integer", u+1, buf[i+1], v+1)
				}
				w = int64(w64)
			}
			if v == u {
				return nil, bad(lr.num, "node %d lists itself (self-loop)", u+1)
			}
			if seen[v] == int32(u) {
				return nil, bad(lr.num, "node %d lists neighbour %d twice", u+1, v+1)
			}
			seen[v] = int32(u)
			if v > u {
				if w > MaxTotalWeight-g.total {
					return nil, bad(lr.num, "total edge weight exceeds %d", int64(MaxTotalWeight))
				}
				g.AddEdge(u, v, w)
				confirmed = append(confirmed, false)
				continue
			}
			idx, ok := g.index[pairKey(u, v)]
			if !ok {
				return nil, bad(lr.num, "edge {%d, %d} is listed by node %d but not by node %d", v+1, u+1, u+1, v+1)
			}
			if g.edges[idx].W != w {
				return nil, bad(lr.num, "edge {%d, %d} has weight %d at node %d but %d at node %d", v+1, u+1, g.edges[idx].W, v+1, w, u+1)
			}
			confirmed[idx] = true
		}
	}
	for {
		l, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading METIS line %d: %w", lr.num, err)
		}
		if !isComment(l) && len(fields(l, buf[:0])) > 0 {
			return nil, bad(lr.num, "data after the %d node lines", n)
		}
	}
	for i, ok := range confirmed {
		if !ok {
			e := g.edges[i]
			return nil, fmt.Errorf("%w: edge {%d, %d} is listed by node %d but not by node %d", ErrFormat, e.U+1, e.V+1, e.U+1, e.V+1)
		}
	}
	if uint64(len(g.edges)) != m {
		return nil, bad(hdrLine, "header says %d edges but the node lines hold %d", m, len(g.edges))
	}
	return g, nil
}

// WriteMETIS writes g in METIS format with edge weights (fmt 1), neighbours
// in increasing order, so that ReadMETIS(WriteMETIS(g)) reproduces g.
func WriteMETIS(w io.Writer, g *Graph) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	c := buildCSR(g.n, g.edges)
	line := make([]byte, 0, 256)
	line = strconv.AppendInt(line, int64(g.n), 10)
	line = append(line, ' ')
	line = strconv.AppendInt(line, int64(len(g.edges)), 10)
	line = append(line, " 1\n"...)
	if _, err := bw.Write(line); err != nil {
		return fmt.Errorf("writing METIS: %w", err)
	}
	type nb struct {
		v int32
		w int64
	}
	var row []nb
	for u := 0; u < g.n; u++ {
		row = row[:0]
		for p := c.xadj[u]; p < c.xadj[u+1]; p++ {
			row = append(row, nb{c.adj[p], c.w[p]})
		}
		slices.SortFunc(row, func(a, b nb) int { return int(a.v - b.v) })
		line = line[:0]
		for i, x := range row {
			if i > 0 {
				line = append(line, ' ')
			}
			line = strconv.AppendInt(line, int64(x.v)+1, 10)
			line = append(line, ' ')
			line = strconv.AppendInt(line, x.w, 10)
		}
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("writing METIS: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing METIS: %w", err)
	}
	return nil
}

// lineReader returns lines of any length without the trailing newline and
// counts them (1-based) for error messages.
type lineReader struct {
	r   *bufio.Reader
	buf []byte
	num int
}

func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		lr.buf = append(lr.buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(lr.buf) > 0 {
			err = nil
		}
		if err != nil {
			return nil, err
		}
		lr.num++
		return lr.buf, nil
	}
}

func isComment(line []byte) bool { return len(line) > 0 && line[0] == '%' }

// fields splits on spaces, tabs and line ends.
func fields(line []byte, out [][]byte) [][]byte {
	i := 0
	for i < len(line) {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		j := i
		for j < len(line) && !isSpace(line[j]) {
			j++
		}
		if j > i {
			out = append(out, line[i:j])
		}
		i = j
	}
	return out
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func onlyBinaryDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' && s[i] != '1' {
			return false
		}
	}
	return true
}

var errNotUint = errors.New("not an unsigned integer")

func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 19 {
		return 0, errNotUint
	}
	var x uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errNotUint
		}
		x = x*10 + uint64(c-'0')
	}
	return x, nil
}
