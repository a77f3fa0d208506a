package shmproto_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/shmproto/internal/cgen"
)

const headerPath = "../extension_stub/ruvector_shm_layout.h"

// The committed header must be exactly what the generator makes now:
// a Go change without `go generate` would silently split the two sides.
func TestCHeaderUpToDate(t *testing.T) {
	got, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, cgen.Header()) {
		t.Fatalf("%s is stale: run `go generate ./shmproto`", headerPath)
	}
}

// Compile a C program against the header with PostgreSQL's own headers and
// compare what the C compiler says about every offset, size and constant
// with what Go says.
func TestCLayoutAgrees(t *testing.T) {
	pgInc, err := exec.Command("pg_config", "--includedir-server").Output()
	if err != nil {
		t.Fatalf("pg_config not found (install postgresql-server-dev-15; `make test` does): %v", err)
	}
	var prog strings.Builder
	prog.WriteString("#include \"postgres.h\"\n#include <stdio.h>\n#include \"ruvector_shm_layout.h\"\n#undef printf\nint main(void) {\n")
	want := map[string]uint64{}
	for _, s := range cgen.Structs() {
		key := "sizeof " + s.CName
		fmt.Fprintf(&prog, "printf(\"%s %%zu\\n\", sizeof(%s));\n", key, s.CName)
		want[key] = uint64(s.GoType.Size())
		for _, f := range s.Fields {
			key := "offsetof " + s.CName + "." + f.Name
			fmt.Fprintf(&prog, "printf(\"%s %%zu\\n\", offsetof(%s, %s));\n", key, s.CName, f.Name)
			want[key] = uint64(f.Offset)
			key = "sizeof " + s.CName + "." + f.Name
			fmt.Fprintf(&prog, "printf(\"%s %%zu\\n\", sizeof(((%s *) 0)->%s));\n", key, s.CName, f.Name)
			want[key] = uint64(f.Size)
		}
	}
	for _, c := range cgen.Constants() {
		fmt.Fprintf(&prog, "printf(\"const %s %%llu\\n\", (unsigned long long) %s);\n", c.Name, c.Name)
		want["const "+c.Name] = c.Value
	}
	for name, vals := range cgen.StringTables() {
		for i, v := range vals {
			fmt.Fprintf(&prog, "printf(\"str %s[%d] %%s\\n\", %s[%d]);\n", name, i, name, i)
			_ = v
		}
	}
	prog.WriteString("return 0;\n}\n")

	dir := t.TempDir()
	src := filepath.Join(dir, "layout.c")
	bin := filepath.Join(dir, "layout")
	if err := os.WriteFile(src, []byte(prog.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ext, _ := filepath.Abs("../extension_stub")
	cc := exec.Command("gcc", "-Wall", "-Werror", "-I", ext, "-I", strings.TrimSpace(string(pgInc)), "-o", bin, src)
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("compiling the C layout probe failed (a StaticAssertDecl in the header fails exactly when C and Go disagree): %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "str ") {
			parts := strings.SplitN(strings.TrimPrefix(line, "str "), " ", 2)
			name, idx := parts[0][:strings.Index(parts[0], "[")], parts[0][strings.Index(parts[0], "[")+1:len(parts[0])-1]
			i, _ := strconv.Atoi(idx)
			if got, want := parts[1], cgen.StringTables()[name][i]; got != want {
				t.Errorf("%s[%d]: C %q, Go %q", name, i, got, want)
			}
			seen++
			continue
		}
		cut := strings.LastIndex(line, " ")
		key, val := line[:cut], line[cut+1:]
		got, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			t.Fatalf("bad probe line %q", line)
		}
		w, ok := want[key]
		if !ok {
			t.Fatalf("probe printed unknown key %q", key)
		}
		if got != w {
			t.Errorf("%s: C says %d, Go says %d", key, got, w)
		}
		seen++
	}
	wantLines := len(want)
	for _, v := range cgen.StringTables() {
		wantLines += len(v)
	}
	if seen != wantLines {
		t.Fatalf("probe printed %d values, want %d", seen, wantLines)
	}
}

func TestLayoutAlignment(t *testing.T) {
	for name, size := range map[string]int{"header": shmproto.HeaderSize, "slot": shmproto.SlotSize, "op state": shmproto.OpStateSize} {
		if size%shmproto.CacheLine != 0 {
			t.Errorf("%s size %d is not a multiple of the cache line (%d)", name, size, shmproto.CacheLine)
		}
	}
}
