package remedy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/memcg"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// evict_cold_data judged by the real λ under memory pressure made of page
// cache: the server runs in a memory cgroup of its own (192 MiB), started
// inside it so shared_buffers and every backend are charged there too.
// Four hot shards are read and written all along; the workload's ColdScan
// reads the two cold shards' partitions (twice, so their pages are on the
// active list the memory collector counts) until the collector reads 90%.
// The monitor's λ drops with the memory edge as its witness, the engine
// classifies memory_pressure, selects and executes evict_cold_data, and
// verifies with healing.SegmentSampler while the hot workload goes on.
func TestEvictColdDataVerifiedByMonitorLambda(t *testing.T) {
	if testing.Short() {
		t.Skip("loads ~170 MB and runs a minute of real load")
	}
	if err := memcg.Available(""); err != nil {
		t.Skipf("cgroup memory control is not available, so memory pressure cannot be made safely here: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const (
		limit     = 192 << 20
		coldRows  = 70000 // per cold shard, ~1.1 KB each at 256 dimensions: ~80 MB
		hotRows   = 3000
		tolerance = 70.0 // health.DefaultConfig().MemoryTolerancePct: the healthy band is ≤ 70%
	)
	if c := health.DefaultConfig(); c.MemoryTolerancePct != tolerance {
		t.Fatalf("the memory tolerance is %v%%, this test assumes %v%%", c.MemoryTolerancePct, tolerance)
	}
	hot, cold := []int{0, 1, 2, 3}, []int{4, 5}
	// shared_buffers small against the cold partitions: a sequential scan
	// of a table over a quarter of it goes through a ring, so the cold
	// reads stay in the page cache (the hot partitions, 3000 rows, fit in
	// shared_buffers).
	env := workloadtest.Start(t, workloadtest.Spec{Name: "ev", Dim: 256, Partitions: 6, Lists: 4, Seed: 5,
		Conf: []string{"shared_buffers = 16MB"}})
	for _, s := range cold {
		for range coldRows / 10000 {
			if err := env.W.CopyInsert(ctx, 10000, func(int) int { return s }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := env.W.CopyInsert(ctx, hotRows*len(hot), func(i int) int { return hot[i%len(hot)] }); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `ANALYZE `+env.W.Table+`; CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	g := memcg.Setup(t, env.Cluster.PostmasterPID(), limit)
	if err := g.StartIn(func() error { env.Cluster.Restart("fast"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := g.MoveTree(env.Cluster.PostmasterPID()); err != nil {
		t.Fatal(err)
	}
	conn := env.Cluster.Connect(ctx, "postgres")
	if _, err := conn.Exec(ctx, `SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 1, "stabilization_seconds": 1}')`); err != nil {
		t.Fatal(err)
	}

	h := openLambdaRig(t, ctx, env, conn, "ev")
	defer h.stop()
	parts := collect.NewPartitions()
	parts.Interval = time.Second
	h.start(ctx, parts, &collect.Memory{Interval: time.Second}, collect.NewGateway(h.seg))

	// The hot workload: every hot partition read (whole) and written in
	// turn, evenly, so none of them is a hotspot against the others and
	// the cold ones see nothing. The reads go through one backend, whose
	// statistics reach the partitions collector for all of them at once
	// (spread over pooled backends, each flushing on its own second, the
	// per-second rates jump between partitions and the median with them).
	var hotReads, hotWrites atomic.Int64
	var hotErr atomic.Value
	hotConn := env.Cluster.Connect(ctx, "postgres")
	h.spawn(func(loopCtx context.Context) {
		for i := 0; loopCtx.Err() == nil; i++ {
			p := fmt.Sprintf("%s_p%d", env.W.Table, hot[i%len(hot)])
			if _, err := hotConn.Exec(loopCtx, `SELECT count(*) FROM `+p); err != nil {
				if loopCtx.Err() == nil {
					hotErr.Store(err)
				}
				continue
			}
			hotReads.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})
	// The writer stops between statements, by a flag, never by cancelling
	// one: a COPY cancelled after its commit would be missing from the
	// ledger (seen in CI: 4 rows).
	var stopWriter atomic.Bool
	h.spawn(func(loopCtx context.Context) {
		for loopCtx.Err() == nil && !stopWriter.Load() {
			if err := env.W.CopyInsert(ctx, len(hot), func(i int) int { return hot[i] }); err != nil {
				if loopCtx.Err() == nil {
					hotErr.Store(err)
				}
				continue
			}
			hotWrites.Add(int64(len(hot)))
			time.Sleep(200 * time.Millisecond)
		}
	})

	// reading is the memory collector's, on its own connection; a new
	// collector each time, as one keeps its reading for half its cadence.
	memConn := env.Cluster.Connect(ctx, "postgres")
	reading := func(ctx context.Context) (health.MemorySignal, error) {
		var s health.Signals
		err := collect.NewMemory().Collect(ctx, memConn, h.target, &s)
		if err == nil && s.Memory.Source != "cgroup v1" {
			return s.Memory, fmt.Errorf("the collector read %q, not the server's cgroup", s.Memory.Source)
		}
		return s.Memory, err
	}
	cgroup := func() string {
		u, err := g.Read()
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("cgroup %d MiB (active_file %d, inactive_file %d, rss %d, shmem %d MiB)", u.Bytes>>20,
			u.Stat["total_active_file"]>>20, u.Stat["total_inactive_file"]>>20, u.Stat["total_rss"]>>20, u.Stat["total_shmem"]>>20)
	}
	waitSnap := func(what string, ok func(monitor.Snapshot, health.Signals) bool) (monitor.Snapshot, health.Signals) {
		t.Helper()
		return h.waitFor(what, 45*time.Second, ok, func(_ monitor.Snapshot, sig health.Signals) string {
			return fmt.Sprintf("memory %.1f%%; %s", sig.Memory.UsagePct, cgroup())
		})
	}

	// Healthy first: λ 1 with the hot workload on, memory in the band.
	s0, sig0 := waitSnap("healthy start", func(s monitor.Snapshot, sig health.Signals) bool {
		return s.LambdaNorm > 0.95 && sig.Memory.Source == "cgroup v1" && len(sig.Partitions) == 6
	})
	t.Logf("before: λ %.3f, memory %.1f%% of %d MiB; %s", s0.LambdaNorm, sig0.Memory.UsagePct, sig0.Memory.LimitBytes>>20, cgroup())
	if sig0.Memory.UsagePct > tolerance {
		t.Fatalf("memory %.1f%% before the fault: not in the healthy band", sig0.Memory.UsagePct)
	}

	// The fault.
	// 88% (the classifier's threshold is 85%): the fill must stop before
	// the cgroup reaches its limit, where the kernel would reclaim the
	// inactive pages (read-ahead the scans did not use, ~10 MiB here) and
	// then deactivate the very cache the fault is made of.
	rep, undo, err := env.W.ColdScan(ctx, workload.ColdScanOptions{Cold: cold, TargetPct: 88,
		Reading: func(ctx context.Context) (float64, error) { m, err := reading(ctx); return m.UsagePct, err }})
	if err != nil {
		t.Fatalf("%v; %s", err, cgroup())
	}
	t.Cleanup(func() { _ = undo(context.Background()) })
	t.Logf("cold scan: %d MiB of %v read twice in %d steps: memory %.1f%% → %.1f%% (%.1f); %s", rep.BytesRead>>20, rep.Partitions,
		rep.Steps, rep.StartPct, rep.EndPct, rep.Readings, cgroup())

	isMemory := func(e classify.WitnessEdge) bool {
		return e.Source.Kind == classify.NodeMemory || e.Target.Kind == classify.NodeMemory
	}
	s1, sig1 := waitSnap("memory pressure in λ", func(s monitor.Snapshot, sig health.Signals) bool {
		// A sample taken after the fill, not one from midway.
		return sig.Memory.UsagePct >= rep.EndPct-3 && s.LambdaNorm < 0.6 && len(s.Cut.Witness) > 0 && slices.ContainsFunc(s.Cut.Witness, isMemory) &&
			classify.Classify(s.Cut.Witness, health.MetricsFrom(sig), classify.DefaultThresholds()).Problem.Class == classify.ClassMemoryPressure
	})
	t.Logf("fault: state %s λ %.3f, witness %+v, memory %.1f%%; %s", integrity.StateName(s1.State), s1.LambdaNorm, s1.Cut.Witness,
		sig1.Memory.UsagePct, cgroup())
	// λ is the memory edge's capacity: 1 at the tolerance, 0 at the limit.
	if want := 1 - (sig1.Memory.UsagePct-tolerance)/(100-tolerance); math.Abs(s1.LambdaNorm-want) > 0.1 {
		t.Errorf("λ %.3f at memory %.1f%%, want about %.3f", s1.LambdaNorm, sig1.Memory.UsagePct, want)
	}

	// What the cold partitions hold in the page cache, per file, before.
	residentBefore := map[string]residency{}
	for _, p := range rep.Partitions {
		var relid int64
		if err := conn.QueryRow(ctx, `SELECT $1::regclass::oid::int8`, p).Scan(&relid); err != nil {
			t.Fatal(err)
		}
		files, err := relationFiles(ctx, conn, rep.DataDir, relid)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if residentBefore[f], err = fileResidency(f); err != nil {
				t.Fatal(err)
			}
		}
	}

	e := h.engine(ctx, &EvictColdData{Dial: vecDialer(env)},
		healing.Options{Holder: "evict-lambda-test", Stabilization: 6 * time.Second})
	s1, sig1 = h.current()
	tr := h.trigger(s1, sig1)
	usageBefore, err := g.Read()
	if err != nil {
		t.Fatal(err)
	}
	readsBefore, writesBefore := hotReads.Load(), hotWrites.Load()
	out, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	usageAfter, _ := g.Read()
	readsDuring, writesDuring := hotReads.Load()-readsBefore, hotWrites.Load()-writesBefore
	m2, err := reading(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(out.Result.Metadata)
	t.Logf("outcome %d: %s (%s) class %s strategy %s λ %.3f → %.3f verified=%v; memory %.1f%% → %.1f%%; cgroup %d → %d MiB; "+
		"hot workload during the heal: %d reads, %d rows written; result %s",
		out.ID, out.Status, out.Reason, out.Decision.Problem.Class, out.Strategy, out.InitialLambda, out.FinalLambda, out.Verified,
		sig1.Memory.UsagePct, m2.UsagePct, usageBefore.Bytes>>20, usageAfter.Bytes>>20, readsDuring, writesDuring, meta)
	s2, _ := h.current()
	t.Logf("after: λ %.3f, witness %+v", s2.LambdaNorm, s2.Cut.Witness)
	if out.Decision.Problem.Class != classify.ClassMemoryPressure || out.Strategy != "evict_cold_data" {
		t.Fatalf("class %s strategy %q, want memory_pressure healed by evict_cold_data", out.Decision.Problem.Class, out.Strategy)
	}
	if out.Status != healing.StatusVerified || !out.Verified || out.RolledBack || out.FinalLambda <= healing.VerifyImprovement*out.InitialLambda {
		t.Fatalf("want verified with λ up > 10%%: %s, λ %.3f → %.3f, error %q", out.Status, out.InitialLambda, out.FinalLambda, out.Error)
	}
	if m2.UsagePct > tolerance {
		t.Fatalf("memory %.1f%% after the eviction: not back in the healthy band (≤ %v%%)", m2.UsagePct, tolerance)
	}
	if readsDuring < 10 || writesDuring < 10 {
		t.Fatalf("the hot workload stalled during the heal: %d reads, %d rows written", readsDuring, writesDuring)
	}
	if err, _ := hotErr.Load().(error); err != nil {
		t.Fatalf("hot workload: %v", err)
	}
	// Only the cold partitions were evicted (the result as recorded: JSON).
	var res struct {
		Evicted []struct {
			Partition string `json:"partition"`
		} `json:"evicted"`
		Regained int64 `json:"memory_regained_bytes"`
	}
	if err := json.Unmarshal(meta, &res); err != nil {
		t.Fatal(err)
	}
	var evicted []string
	for _, ev := range res.Evicted {
		evicted = append(evicted, ev.Partition)
	}
	slices.Sort(evicted)
	if !slices.Equal(evicted, rep.Partitions) {
		t.Fatalf("evicted %v, want the cold partitions %v", evicted, rep.Partitions)
	}
	// The bytes the strategy says it regained are the cgroup's drop, less
	// what the hot workload added meanwhile (a few MiB of new rows and WAL).
	regained := res.Regained
	drop := usageBefore.Bytes - usageAfter.Bytes
	t.Logf("regained %d MiB (strategy, mincore) vs cgroup drop %d MiB", regained>>20, drop>>20)
	if regained < rep.BytesRead*8/10 || math.Abs(float64(drop-regained)) > 0.15*float64(regained) {
		t.Fatalf("regained %d MiB by mincore, cgroup dropped %d MiB, %d MiB were read by the fault", regained>>20, drop>>20, rep.BytesRead>>20)
	}

	// Rollback re-warms the pages that were resident, read by the server
	// (pg_read_binary_file: the test's role is a superuser), so they are
	// charged to the server's cgroup again, on the inactive list.
	usageEvicted, _ := g.Read()
	if _, err := e.RollbackOutcome(ctx, "ev", int64(env.W.ID), out.ID); err != nil {
		t.Fatal(err)
	}
	usageBack, _ := g.Read()
	var back, was int64
	for f, r := range residentBefore {
		now, err := fileResidency(f)
		if err != nil {
			t.Fatal(err)
		}
		was += r.Resident
		back += now.Resident
	}
	m3, _ := reading(ctx)
	ps := int64(os.Getpagesize())
	rose := usageBack.Bytes - usageEvicted.Bytes
	t.Logf("rollback: %d of %d MiB of the cold partitions' pages resident again; server cgroup +%d MiB (inactive_file %d MiB, limit hit %d times); memory reading %.1f%%",
		back*ps>>20, was*ps>>20, rose>>20, usageBack.Stat["total_inactive_file"]>>20, usageBack.Fails-usageEvicted.Fails, m3.UsagePct)
	// All of it, unless the server's cgroup ran into its limit: the fault
	// had it there, and the hot workload has added a little since, so the
	// kernel reclaims inactive pages (the first re-read among them) to fit
	// the rest. Either way what is back is what fits under the limit.
	headroom := g.Limit - usageEvicted.Bytes
	if full := usageBack.Fails > usageEvicted.Fails; back < was*95/100 && !(full && back*ps >= headroom*85/100) {
		t.Fatalf("after rollback %d pages resident, %d before the eviction (cgroup %d of %d MiB, %d MiB of headroom, limit hit %d times)",
			back, was, usageBack.Bytes>>20, g.Limit>>20, headroom>>20, usageBack.Fails-usageEvicted.Fails)
	}
	if rose < regained*8/10 && usageBack.Bytes < g.Limit*97/100 {
		t.Fatalf("rollback re-read %d MiB but the server's cgroup grew %d MiB: not charged to the server", regained>>20, rose>>20)
	}
	if m3.UsagePct > tolerance {
		t.Fatalf("memory reading %.1f%% after rollback: the re-warmed cache should be inactive (reclaimable), not pressure", m3.UsagePct)
	}

	stopWriter.Store(true)
	h.stop()
	check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !check.TotalOK() {
		t.Fatalf("ledger: %+v %v", check, err)
	}
	t.Logf("ledger: %d rows, all there", check.ServerTotal.Count)
}
