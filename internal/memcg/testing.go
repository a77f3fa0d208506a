package memcg

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Setup puts the process tree of pid (a postmaster) into a new memory
// cgroup with the given limit for the rest of the test, skipping the test
// when this machine has no cgroup memory control to give it. At cleanup the
// processes go back to the cgroup they came from and the group is removed,
// whether or not the server is still running.
func Setup(t testing.TB, pid int, limit int64) *Group {
	t.Helper()
	if err := Available(""); err != nil {
		t.Skipf("cgroup memory control is not available, so memory pressure cannot be made safely on this machine: %v", err)
	}
	from, err := CgroupOf("", pid)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ruvector_%s_%d", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()), os.Getpid())
	g, err := Create("", name, limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.MoveOut(from); err != nil {
			t.Logf("memcg: moving the server back to %s: %v", from, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Remove(ctx); err != nil {
			t.Errorf("memcg: %v", err)
		}
	})
	if err := g.MoveTree(pid); err != nil {
		t.Fatal(err)
	}
	return g
}
