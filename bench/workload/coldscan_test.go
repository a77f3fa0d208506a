package workload_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/memcg"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
)

// ColdScan drives the memory collector's reading of the server's cgroup
// above the target with page cache of the cold partitions alone (active,
// so the collector does not subtract it as reclaimable), and its undo
// returns the memory.
func TestColdScanFillsCgroupWithActiveCache(t *testing.T) {
	if testing.Short() {
		t.Skip("loads ~200 MB")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Tables above shared_buffers/4 (4 MB) are scanned through a ring, so
	// the cold reads stay in the page cache.
	env := workloadtest.Start(t, workloadtest.Spec{Name: "cs", Dim: 256, Partitions: 4, Lists: 4, Seed: 3,
		Conf: []string{"shared_buffers = 16MB"}})
	cold := []int{1, 2, 3}
	for _, s := range cold {
		for range 5 {
			if err := env.W.CopyInsert(ctx, 10000, func(int) int { return s }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := env.W.CopyInsert(ctx, 5000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE `+env.W.Table+`; CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	// The server starts inside its cgroup, so shared_buffers and the
	// backends are charged there too (this kernel does not move charges
	// with a process moved in later).
	g := memcg.Setup(t, env.Cluster.PostmasterPID(), 192<<20)
	if err := g.StartIn(func() error { env.Cluster.Restart("fast"); return nil }); err != nil {
		t.Fatal(err)
	}
	env.Conn = env.Cluster.Connect(ctx, "postgres")
	reading := func(ctx context.Context) (float64, error) {
		s, err := collectWith(t, env, collect.NewMemory())
		if s.Memory.Source != "cgroup v1" && err == nil {
			t.Fatalf("the collector read %q, not the server's cgroup", s.Memory.Source)
		}
		return s.Memory.UsagePct, err
	}
	u0, _ := g.Read()
	_, _, err := env.W.ColdScan(ctx, workload.ColdScanOptions{Cold: []int{0, 1, 2, 3}, Reading: reading})
	if err == nil || !strings.Contains(err.Error(), "some but not all") {
		t.Fatalf("every shard cold: %v, want a refusal", err)
	}
	rep, undo, err := env.W.ColdScan(ctx, workload.ColdScanOptions{Cold: cold, Reading: reading, TargetPct: 88})
	u1, _ := g.Read()
	t.Logf("cold scan: %+v (err %v); cgroup usage %d → %d MiB, active_file %d → %d MiB, inactive_file %d → %d MiB, rss %d MiB, shmem %d MiB",
		rep, err, u0.Bytes>>20, u1.Bytes>>20, u0.Stat["total_active_file"]>>20, u1.Stat["total_active_file"]>>20,
		u0.Stat["total_inactive_file"]>>20, u1.Stat["total_inactive_file"]>>20, u1.Stat["total_rss"]>>20, u1.Stat["total_shmem"]>>20)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Partitions, []string{"cs_p1", "cs_p2", "cs_p3"}) {
		t.Fatalf("read %v, want the cold shards' partitions", rep.Partitions)
	}
	if rep.EndPct < 88 || rep.EndPct >= 95 || rep.StartPct >= 70 {
		t.Fatalf("reading %.1f%% → %.1f%%, want from the healthy band (≤70%%) to 88..95%%", rep.StartPct, rep.EndPct)
	}
	// The pressure is the cold partitions' cache, on the active list.
	if u1.Stat["total_shmem"] == 0 || u1.Stat["total_rss"] == 0 {
		t.Fatalf("shared_buffers (%d) and the backends (%d) are not charged to the server's cgroup", u1.Stat["total_shmem"], u1.Stat["total_rss"])
	}
	if grew := u1.Stat["total_active_file"] - u0.Stat["total_active_file"]; grew < rep.BytesRead*8/10 {
		t.Fatalf("active file cache grew %d MiB for %d MiB read", grew>>20, rep.BytesRead>>20)
	}
	// It stays: nothing reads the cold partitions any more, nothing
	// reclaims below the limit.
	time.Sleep(3 * time.Second)
	if pct, err := reading(ctx); err != nil || pct < 86 {
		t.Fatalf("reading 3 s later %.1f%% (%v)", pct, err)
	}
	if err := undo(ctx); err != nil {
		t.Fatal(err)
	}
	pct, err := reading(ctx)
	u2, _ := g.Read()
	t.Logf("after undo: %.1f%%, cgroup usage %d MiB, active_file %d MiB", pct, u2.Bytes>>20, u2.Stat["total_active_file"]>>20)
	if err != nil || pct > rep.StartPct+10 {
		t.Fatalf("after undo the reading is %.1f%% (%v), was %.1f%% before the fault", pct, err, rep.StartPct)
	}
}
