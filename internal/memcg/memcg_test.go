package memcg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestCreateMoveChargeRemove(t *testing.T) {
	if err := Available(""); err != nil {
		t.Skipf("cgroup memory control is not available here: %v", err)
	}
	g, err := Create("", fmt.Sprintf("ruvector_memcg_test_%d", os.Getpid()), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Remove(ctx); err != nil {
			t.Error(err)
		}
	})
	if g.Limit != 64<<20 {
		t.Fatalf("limit %d, want %d", g.Limit, 64<<20)
	}
	// A shell that waits for a line, then writes 16 MiB to a file: its
	// page cache is charged to the group only if it was moved in first.
	file := filepath.Join(t.TempDir(), "f")
	cmd := exec.Command("sh", "-c", `read x; head -c 16777216 /dev/zero > "$1"; read y`, "sh", file)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	before, err := g.Read()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.MoveTree(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	procs, err := g.Procs()
	if err != nil || !slices.Contains(procs, cmd.Process.Pid) {
		t.Fatalf("procs %v (%v), want %d in it", procs, err, cmd.Process.Pid)
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	var after Usage
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if after, err = g.Read(); err != nil {
			t.Fatal(err)
		}
		if after.Bytes-before.Bytes >= 15<<20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("usage %d → %d bytes, cache %d", before.Bytes, after.Bytes, after.Stat["cache"])
	if after.Bytes-before.Bytes < 15<<20 || after.Stat["cache"] < 15<<20 {
		t.Fatalf("16 MiB written from inside the group: usage %d → %d, cache %d", before.Bytes, after.Bytes, after.Stat["cache"])
	}
	if after.Fails != 0 {
		t.Fatalf("16 MiB in a 64 MiB group hit the limit %d times", after.Fails)
	}
	// Removal waits for the processes to leave.
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g.Remove(short); err == nil {
		t.Fatal("removed a group that still holds a process")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func TestCreateRejectsBadInput(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit int64
	}{{"", 1 << 20}, {"a/b", 1 << 20}, {"..", 1 << 20}, {"ok", 0}, {"ok", -5}} {
		if _, err := Create(t.TempDir(), c.name, c.limit); err == nil || errors.Is(err, ErrUnavailable) {
			t.Errorf("Create(%q, %d): %v, want a bad-input error", c.name, c.limit, err)
		}
	}
	if _, err := Create(t.TempDir(), "x", 1<<20); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Create under a plain directory: %v, want ErrUnavailable", err)
	}
}
