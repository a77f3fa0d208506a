package scorecard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

// fault is one problem class the campaign injects.
type fault struct {
	class string
	// inject creates the problem (blocking while a one-shot injection such
	// as a drift or a bloat runs) and returns what removes it again. The
	// fault stays in place until lift is called.
	inject func(ctx context.Context, h *harness) (lift func(context.Context) error, err error)
	// signal measures the class's own signal and whether it is within its
	// healthy band.
	signal func(ctx context.Context, h *harness) (string, bool, error)
}

// Healthy bands of the faults' own signals (see bench/RESULTS.md).
const (
	bandLoadRatio     = 2.0  // hottest shard's rows / median shard's rows over 10 s
	bandSkew          = 2.0  // largest IVF list / median list (the health graph's tolerance)
	bandFragmentation = 30.0 // % leaf fragmentation, worst index of the collection
	bandLagSeconds    = 5.0
	bandMemoryPct     = 70.0 // the health graph's tolerance
)

var faults = []fault{
	{class: "hotspot_congestion", inject: injectHotspot, signal: signalLoadRatio},
	{class: "centroid_skew", inject: injectDrift, signal: signalSkew},
	{class: "maintenance_contention", inject: injectMaintenance, signal: signalMaintenance},
	{class: "index_fragmentation", inject: injectBloat, signal: signalFragmentation},
	{class: "replication_lag", inject: injectReplicaPause, signal: signalLag},
	{class: "memory_pressure", inject: injectMemory, signal: signalMemory},
}

func faultOf(class string) fault {
	for _, f := range faults {
		if f.class == class {
			return f
		}
	}
	panic("scorecard: no fault for " + class)
}

// background runs fn until its context is cancelled by the returned lift.
func background(ctx context.Context, fn func(ctx context.Context) error) func(context.Context) error {
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fn(fctx) }()
	var once sync.Once
	var err error
	return func(context.Context) error {
		once.Do(func() {
			cancel()
			err = <-done
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				err = nil
			}
		})
		return err
	}
}

// A hot partition: COPY batches of 300 rows/s into one shard (the
// workload's HotPartition), on top of the steady routed load.
func injectHotspot(ctx context.Context, h *harness) (func(context.Context) error, error) {
	shard := h.rng.IntN(h.w.Partitions)
	h.note("hot shard %d at %.0f rows/s", shard, h.hotRate)
	stop := background(ctx, func(ctx context.Context) error {
		for {
			_, err := h.w.HotPartition(ctx, shard, h.hotRate, time.Hour)
			if ctx.Err() != nil {
				return nil
			}
			// A throttled COPY is refused (53000): the writer keeps
			// trying, as an application would, so the fault stays.
			if Classify(err) != ResultThrottled {
				return err
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	})
	return func(ctx context.Context) error {
		return errors.Join(stop(ctx), h.trimShard(ctx, shard))
	}, nil
}

// trimShard deletes the rows a hot partition holds beyond the median
// partition (recorded in the ledger). Searches read every list in every
// partition, so a partition twice the size of the others stays twice as
// read, and the health graph reads it as hot, long after its writer
// stopped: the harness restores the baseline before the next episode.
func (h *harness) trimShard(ctx context.Context, shard int) error {
	counts := map[int]int64{}
	var sizes []float64
	for s, tally := range h.w.Ledger.Shards() {
		counts[s] = tally.Count
		if s != shard {
			sizes = append(sizes, float64(tally.Count))
		}
	}
	excess := counts[shard] - int64(median(sizes))
	if excess <= 0 {
		return nil
	}
	rows, err := h.pool.Query(ctx, fmt.Sprintf(`DELETE FROM %s WHERE shard = $1 AND id IN
  (SELECT id FROM %s WHERE shard = $1 ORDER BY id DESC LIMIT $2) RETURNING shard, embedding::text`, h.w.Table, h.w.Table), shard, excess)
	if err != nil {
		return fmt.Errorf("trim hot shard %d: %w", shard, err)
	}
	n := 0
	for rows.Next() {
		var s int
		var text string
		if err := rows.Scan(&s, &text); err != nil {
			rows.Close()
			return err
		}
		h.w.Ledger.RemoveText(s, text)
		n++
	}
	rows.Close()
	h.note("trimmed %d rows of hot shard %d", n, shard)
	return rows.Err()
}

func signalLoadRatio(_ context.Context, h *harness) (string, bool, error) {
	r, ok := h.loads.ratio(10 * time.Second)
	if !ok {
		return "", false, errors.New("no load window yet")
	}
	return fmt.Sprintf("load ratio %.1f", r), r <= bandLoadRatio, nil
}

// Drift: the vector distribution moves to a narrow blob outside the
// trained clusters (the workload's Drift, 6000 rows at once, at a corner
// of ±30 in each dimension), and the
// steady inserts keep drawing from it. Lifted by restoring the
// distribution and rebuilding the centroids (size-bounded).
func injectDrift(ctx context.Context, h *harness) (func(context.Context) error, error) {
	// A seeded corner outside the clusters' box each time: the healer's
	// size-bounded rebuild gives a blob several lists, and a second drift
	// into the same blob spread over them and was never detected (run 20,
	// episode 10: skew 1.5).
	center := h.w.DriftCenter()
	for i := range center {
		if h.rng.IntN(2) == 0 {
			center[i] = -center[i]
		}
	}
	if h.ep != nil {
		h.ep.Note("drift to the corner %v", center)
	}
	if err := h.w.Drift(ctx, 6000, center, 0); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		h.w.SetDistribution(workload.NewClusters(h.w.Dim, 8, h.seed))
		conn, err := pgx.Connect(ctx, h.dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		// Lists the healer balanced are left as they are: a second
		// reassignment of every row bloated every index of the table, and
		// the next episode (run 20's paused replica) began beside an
		// index_fragmentation nobody injected.
		if sk, err := ivf.Skew(ctx, conn, h.w.Name); err != nil || sk.Factor <= bandSkew {
			return err
		}
		// Size-bounded, as rebuild_centroids trains: the blob's rows stay
		// in the table, and plain k-means would give them one list again,
		// leaving the next episode to start on a skew (run 10 did).
		if _, err := ivf.Rebuild(ctx, conn, h.w.Name, ivf.TrainOptions{Seed: h.seed, MaxListRatio: ivf.DefaultMaxListRatio}, 2000, nil); err != nil {
			return err
		}
		// The lift's own reassignment updated every row: its index bloat
		// goes with it.
		_, err = conn.Exec(ctx, "REINDEX TABLE CONCURRENTLY "+h.w.Table)
		return err
	}, nil
}

func signalSkew(ctx context.Context, h *harness) (string, bool, error) {
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		return "", false, err
	}
	defer conn.Close(context.Background())
	s, err := ivf.Skew(ctx, conn, h.w.Name)
	if err != nil {
		return "", false, err
	}
	return fmt.Sprintf("skew %.1f", s.Factor), s.Factor <= bandSkew, nil
}

// Maintenance contention: the workload's HeavyMaintenance (20 queued
// low-priority vacuum jobs, two throttled VACUUM sessions, update churn)
// plus two sessions vacuuming the same partition in a loop, so one
// always waits for the other's lock: jobs that contend, as the health
// graph defines it.
// Maintenance contention, by default made only of work the product may
// pause (workload.AutovacuumStorm: slow continuous autovacuum on every
// partition fed by update churn, plus a backlog of the product's own
// low-priority jobs the daemon's job runner works on, waiting on
// autovacuum's locks). -scorecard.maintenance=manual injects the earlier
// variant instead: manual VACUUM loops of "someone else", which
// pause_maintenance rightly leaves alone (it is not the product's work to
// pause), so that variant is only ever recovered after the lift.
func injectMaintenance(ctx context.Context, h *harness) (func(context.Context) error, error) {
	if *maintFlag == "manual" {
		return injectManualMaintenance(ctx, h)
	}
	storm, err := h.w.AutovacuumStorm(ctx, workload.AutovacOptions{Naptime: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		rep, err := storm.Undo(ctx)
		if h.ep != nil {
			h.ep.Note("autovacuum storm: %d rows churned, %d jobs queued (%d ran, %d deleted at the lift)",
				rep.Churned, rep.Jobs, rep.JobsRan, rep.JobsDeleted)
		}
		return err
	}, nil
}

func injectManualMaintenance(ctx context.Context, h *harness) (func(context.Context) error, error) {
	var mu sync.Mutex
	var jobIDs []int64
	heavy := background(ctx, func(ctx context.Context) error {
		rep, err := h.w.HeavyMaintenance(ctx, workload.MaintenanceOptions{Duration: time.Hour})
		mu.Lock()
		jobIDs = rep.JobIDs
		mu.Unlock()
		return err
	})
	part := fmt.Sprintf("%s_p0", h.w.Name)
	var colliders []func(context.Context) error
	for range 2 {
		colliders = append(colliders, background(ctx, func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, h.dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(ctx, "SET vacuum_cost_delay = '20ms'; SET vacuum_cost_limit = 10"); err != nil {
				return err
			}
			for ctx.Err() == nil {
				if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) "+pgx.Identifier{part}.Sanitize()); err != nil && ctx.Err() == nil {
					return err
				}
			}
			return nil
		}))
	}
	return func(ctx context.Context) error {
		var errs []error
		for _, c := range colliders {
			errs = append(errs, c(ctx))
		}
		errs = append(errs, heavy(ctx))
		mu.Lock()
		ids := jobIDs
		mu.Unlock()
		// The queued jobs were part of the fault: remove those not run.
		if _, err := h.pool.Exec(ctx, `DELETE FROM ruvector.maintenance_jobs WHERE job_id = ANY($1) AND state IN ('queued', 'paused')`, ids); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}

func signalMaintenance(ctx context.Context, h *harness) (string, bool, error) {
	s, err := h.collect(ctx, collect.NewMaintenance())
	if err != nil {
		return "", false, err
	}
	contending := 0
	running := map[string]int{}
	for _, j := range s.Maintenance {
		if j.Running {
			running[j.Relation]++
		}
	}
	queued := 0
	for _, j := range s.Maintenance {
		if j.WaitingFor != "" || (j.Running && running[j.Relation] > 1) {
			contending++
		}
		queued += j.Queued
	}
	return fmt.Sprintf("%d contending jobs of %d, %d queued", contending, len(s.Maintenance), queued), contending == 0, nil
}

// Index bloat: the workload's IndexBloat (random updates of an indexed
// column, 60% of the rows deleted, VACUUM). Lifted by REINDEX.
func injectBloat(ctx context.Context, h *harness) (func(context.Context) error, error) {
	if _, err := h.w.IndexBloat(ctx, workload.BloatOptions{}); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := h.pool.Exec(ctx, "REINDEX TABLE CONCURRENTLY "+h.w.Table)
		return err
	}, nil
}

func signalFragmentation(ctx context.Context, h *harness) (string, bool, error) {
	s, err := h.collect(ctx, collect.NewIndexes())
	if err != nil {
		return "", false, err
	}
	worst, name := 0.0, ""
	for _, ix := range s.Indexes {
		if ix.FragmentationPct > worst {
			worst, name = ix.FragmentationPct, ix.Name
		}
	}
	return fmt.Sprintf("fragmentation %.0f%% (%s)", worst, name), worst <= bandFragmentation, nil
}

// A paused replica: WAL replay paused on the loopback standby
// (pg_wal_replay_pause), so its lag grows with every write.
func injectReplicaPause(ctx context.Context, h *harness) (func(context.Context) error, error) {
	if h.standby == nil {
		return nil, errors.New("no standby")
	}
	return workload.LaggingReplica(ctx, h.standby.DSN)
}

func signalLag(ctx context.Context, h *harness) (string, bool, error) {
	s, err := h.collect(ctx, collect.NewReplicas())
	if err != nil {
		return "", false, err
	}
	var worst health.ReplicaSignal
	for _, r := range s.Replicas {
		if r.LagSeconds >= worst.LagSeconds {
			worst = r
		}
	}
	if len(s.Replicas) == 0 {
		return "no replica", false, nil
	}
	return fmt.Sprintf("lag %.1fs %dkB", worst.LagSeconds, worst.LagBytes>>10), worst.LagSeconds <= bandLagSeconds && !worst.Broken, nil
}

// Memory pressure: one backend holds a large in-memory sort (the
// workload's MemoryPressure) inside the server's memory cgroup, whose
// limit the harness set (the machine's own 24 GB could not be filled
// safely on a shared box).
func injectMemory(ctx context.Context, h *harness) (func(context.Context) error, error) {
	if h.memLimit == 0 {
		return nil, errors.New("no memory cgroup: memory pressure cannot be injected on this machine")
	}
	if *memModeFlag == "cache" {
		return injectCacheMemory(ctx, h)
	}
	return injectPrivateMemory(ctx, h)
}

// The cold collection of the cache memory fault: 256 dimensions (about 1.1
// kB a row), shards 0-3 read all along by a light reader (the partitions
// an application uses), shards 4-5 loaded with enough rows that reading
// them fills the cgroup from its resting level to the target (ColdScan
// refuses a partition under a quarter of shared_buffers: it would be
// cached there, out of reach).
const (
	coldName   = "cold"
	coldDim    = 256
	coldShards = 6
	coldRowB   = 1150 // heap bytes a row takes (setupCold logs the measured size)
)

var coldScanShards = []int{4, 5}

func (h *harness) setupCold(ctx context.Context) {
	t := h.t
	if err := workload.Create(ctx, h.pool, coldName, coldDim, coldShards, 4); err != nil {
		t.Fatal(err)
	}
	wc, err := workload.Open(ctx, h.pool, coldName, h.seed+1)
	if err != nil {
		t.Fatal(err)
	}
	for shard := range 4 {
		if err := wc.CopyInsert(ctx, 2000, func(int) int { return shard }); err != nil {
			t.Fatal(err)
		}
	}
	// 70% of the limit between them: enough to go from the resting level
	// (shared_buffers, backends, the growing main collection) to 88%.
	perShard := int(h.memLimit * 7 / 10 / int64(len(coldScanShards)) / coldRowB)
	for _, shard := range coldScanShards {
		for done := 0; done < perShard; {
			n := min(5000, perShard-done)
			if err := wc.CopyInsert(ctx, n, func(int) int { return shard }); err != nil {
				t.Fatal(err)
			}
			done += n
		}
	}
	if _, err := h.pool.Exec(ctx, "VACUUM ANALYZE "+coldName); err != nil {
		t.Fatal(err)
	}
	// Loading and vacuuming left the cold partitions' pages in the cgroup's
	// page cache (active, read twice): drop them, so the campaign starts at
	// the server's resting memory. ColdScan drops their cache before it
	// reads; with the target met at once it reads nothing.
	if _, _, err := wc.ColdScan(ctx, workload.ColdScanOptions{Cold: coldScanShards, TargetPct: 1,
		Reading: func(context.Context) (float64, error) { return 100, nil }}); err != nil {
		t.Fatalf("drop the cold partitions' cache: %v", err)
	}
	if _, err := h.pool.Exec(ctx, `SELECT ruvector.ruvector_integrity_policy_set($1, 'scorecard', $2::jsonb)`, coldName, fastPolicy); err != nil {
		t.Fatal(err)
	}
	h.cold = wc
	// The application's reads of the hot shards, all campaign long, so
	// that evict_cold_data knows which partitions are in use.
	readCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for readCtx.Err() == nil {
			for shard := range 4 {
				_, _ = h.pool.Exec(readCtx, fmt.Sprintf("SELECT count(*) FROM %s_p%d", coldName, shard))
			}
			sleepCtx(readCtx, 500*time.Millisecond)
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	var bytes int64
	if err := h.pool.QueryRow(ctx, fmt.Sprintf("SELECT pg_relation_size('%s_p%d')", coldName, coldScanShards[0])).Scan(&bytes); err != nil {
		t.Fatal(err)
	}
	t.Logf("cold collection: %d rows in each of shards %v (%d bytes a row on disk), 2000 in shards 0-3", perShard, coldScanShards, bytes/int64(max(perShard, 1)))
}

// Memory pressure made of page cache: the cold shards' partitions read
// (twice, so the pages are active) until the memory collector reads 88%
// (workload.ColdScan). Lifted by dropping their cache again.
func injectCacheMemory(ctx context.Context, h *harness) (func(context.Context) error, error) {
	if h.cold == nil {
		return nil, errors.New("no cold collection: cache memory pressure not set up")
	}
	// At its limit, the kernel keeps a cgroup's inactive file pages about
	// as large as its active ones, which the collector counts: the WAL
	// and table pages the campaign cached so far had filled the cgroup,
	// and the scan stopped at 59% of the 88% target (run 19). The scan
	// starts from the server's memory without reclaimable page cache.
	before, after, err := h.memCg.reclaim()
	if err != nil {
		return nil, err
	}
	if h.ep != nil {
		h.ep.Note("cgroup page cache reclaimed before the scan: %d → %d MiB in use", before>>20, after>>20)
	}
	rep, undo, err := h.cold.ColdScan(ctx, workload.ColdScanOptions{Cold: coldScanShards, TargetPct: 88,
		Reading: func(ctx context.Context) (float64, error) {
			s, err := h.collect(ctx, collect.NewMemory())
			return s.Memory.UsagePct, err
		}})
	if err != nil {
		return nil, err
	}
	if h.ep != nil {
		h.ep.Note("cold scan: %d MiB of %v read in %d steps, memory %.0f%% → %.0f%% of a %d MiB cgroup",
			rep.BytesRead>>20, rep.Partitions, rep.Steps, rep.StartPct, rep.EndPct, h.memLimit>>20)
	}
	return undo, nil
}

func injectPrivateMemory(ctx context.Context, h *harness) (func(context.Context) error, error) {
	// A sort holds more than the workload's estimate of it, and a hold past
	// the limit is OOM-killed (a crash restart of the whole server): grow
	// the pressure in small holds until the collector reads 85%.
	var holds []*workload.MemoryHold
	release := func(ctx context.Context) error {
		var errs []error
		for _, m := range holds {
			errs = append(errs, m.Release(ctx))
		}
		holds = nil
		return errors.Join(errs...)
	}
	step := max(32, int(h.memLimit>>20)/16)
	usage := 0.0
	for len(holds) < 32 {
		s, err := h.collect(ctx, collect.NewMemory())
		if err != nil {
			return nil, errors.Join(err, release(ctx))
		}
		usage = s.Memory.UsagePct
		if usage >= 85 {
			break
		}
		m, err := h.w.MemoryPressure(ctx, h.dsn, step)
		if err != nil {
			return nil, errors.Join(err, release(ctx))
		}
		holds = append(holds, m)
	}
	h.note("%d backends hold ~%d MiB each: %.0f%% of a %d MiB cgroup", len(holds), step, usage, h.memLimit>>20)
	return release, nil
}

func signalMemory(ctx context.Context, h *harness) (string, bool, error) {
	s, err := h.collect(ctx, collect.NewMemory())
	if err != nil {
		return "", false, err
	}
	return fmt.Sprintf("memory %.0f%% (%s)", s.Memory.UsagePct, s.Memory.Source), s.Memory.UsagePct <= bandMemoryPct, nil
}

// collect runs one collector once (rate collectors need two samples; the
// ones used here do not).
func (h *harness) collect(ctx context.Context, c collect.Collector) (health.Signals, error) {
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		return health.Signals{}, err
	}
	defer conn.Close(context.Background())
	tg, err := collect.LoadTarget(ctx, conn, h.w.Name)
	if err != nil {
		return health.Signals{}, err
	}
	var s health.Signals
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = c.Collect(cctx, conn, tg, &s)
	return s, err
}

// loadWindow samples the ledger's per-shard row counts every second, so
// the load ratio over any recent window is exact and immediate (pg_stat
// flushes late).
type loadWindow struct {
	mu      sync.Mutex
	samples []loadSample
}

type loadSample struct {
	at     time.Time
	counts map[int]int64
}

func (l *loadWindow) run(ctx context.Context, w *workload.Workload) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		counts := map[int]int64{}
		for s, tally := range w.Ledger.Shards() {
			counts[s] = tally.Count
		}
		l.mu.Lock()
		l.samples = append(l.samples, loadSample{at: time.Now(), counts: counts})
		if len(l.samples) > 120 {
			l.samples = l.samples[len(l.samples)-120:]
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ratio is the hottest shard's rows over the median shard's rows written
// in the last d (the median floored at 10 rows/s, the health graph's
// MinPartitionLoad).
func (l *loadWindow) ratio(d time.Duration) (float64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) < 2 {
		return 0, false
	}
	last := l.samples[len(l.samples)-1]
	first := l.samples[0]
	for _, s := range l.samples {
		if last.at.Sub(s.at) <= d {
			first = s
			break
		}
	}
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 {
		return 0, false
	}
	var deltas []float64
	hottest := 0.0
	for s, n := range last.counts {
		d := float64(n - first.counts[s])
		deltas = append(deltas, d)
		hottest = max(hottest, d)
	}
	ref := max(median(deltas), 10*secs)
	return hottest / ref, true
}

// memCgroup is a cgroup v1 memory controller of the harness's own, with a
// limit, holding the test server's processes (the memory collector reads
// the postmaster's cgroup).
type memCgroup struct {
	dir   string
	limit int64
}

// setupMemCgroup creates the cgroup and moves the postmaster and its
// children into it (backends forked later inherit it). It returns nil
// when the machine has no writable cgroup v1 memory controller.
func setupMemCgroup(pm int, limit int64) (*memCgroup, error) {
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("no cgroup v1 memory controller: %w", err)
	}
	dir := filepath.Join(root, fmt.Sprintf("ruvector_scorecard_%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	cg := &memCgroup{dir: dir, limit: limit}
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	pids := append([]int{pm}, children(pm)...)
	for _, p := range pids {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p)), 0); err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("move pid %d: %w", p, err)
		}
	}
	return cg, nil
}

// reclaim has the kernel reclaim what it can of the cgroup's memory
// (memory.force_empty; without swap that is its page cache), and returns
// the usage before and after.
func (c *memCgroup) reclaim() (before, after int64, err error) {
	if c == nil {
		return 0, 0, errors.New("no memory cgroup")
	}
	usage := func() (int64, error) {
		b, err := os.ReadFile(filepath.Join(c.dir, "memory.usage_in_bytes"))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if before, err = usage(); err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "memory.force_empty"), []byte("0"), 0); err != nil {
		return before, 0, fmt.Errorf("reclaim the memory cgroup's page cache: %w", err)
	}
	after, err = usage()
	return before, after, err
}

// remove deletes the cgroup once its processes are gone.
func (c *memCgroup) remove() error {
	var err error
	for range 50 {
		if err = os.Remove(c.dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			if pp, _ := strconv.Atoi(f[1]); pp == pid {
				out = append(out, p)
			}
		}
	}
	return out
}
