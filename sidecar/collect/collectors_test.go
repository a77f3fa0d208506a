package collect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

func partition(s health.Signals, name string) (health.PartitionSignal, bool) {
	for _, p := range s.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return health.PartitionSignal{}, false
}

// Writes into one partition show up as that partition's write rate only;
// scans and reads as its read rates; the first sample has no rates.
func TestPartitionsRatesFromPgStat(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	p := NewPartitions()

	s, err := collectOnce(t, p, conn, tg)
	if !errors.Is(err, ErrFirstSample) {
		t.Fatalf("first sample: %v", err)
	}
	if len(s.Partitions) != 3 {
		t.Fatalf("partitions %+v, want emb_0, emb_1, emb_many (not the partitioned parent)", s.Partitions)
	}
	for name, shard := range map[string]int64{"emb_0": 0, "emb_1": 1, "emb_many": -1} {
		ps, ok := partition(s, name)
		if !ok || ps.Shard != shard || ps.WriteRowsPerSec != 0 || ps.RelID == 0 {
			t.Fatalf("%s: %+v (want shard %d, no rate yet)", name, ps, shard)
		}
	}

	if _, err := LoadTarget(ctx, conn, "nope"); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("unknown collection: %v", err)
	}
	if len(tg.Relations) != 4 || !slices.Contains(tg.Relations, tg.RelID) {
		t.Fatalf("target %+v: want the table and its three partitions", tg)
	}

	writer := c.Connect(ctx, "postgres")
	mustExec(t, writer, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', 1 FROM generate_series(1, 500)")
	mustExec(t, writer, "SELECT count(*) FROM emb_1")
	// An idle backend flushes its statistics only after 10 s: force it.
	mustExec(t, writer, "SELECT pg_stat_force_next_flush()")
	var got health.PartitionSignal
	var writes, reads, scans float64
	pgtest.WaitFor(t, 10*time.Second, "emb_1's write and read rates", func() (bool, error) {
		s, err := collectOnce(t, p, conn, tg)
		if err != nil {
			return false, err
		}
		got, _ = partition(s, "emb_1")
		// Insert and scan may land in different samples: keep what we saw.
		writes, reads, scans = max(writes, got.WriteRowsPerSec), max(reads, got.ReadRowsPerSec), max(scans, got.ScansPerSec)
		if e0, _ := partition(s, "emb_0"); e0.WriteRowsPerSec != 0 || e0.LiveRows != 0 {
			t.Fatalf("emb_0 untouched but shows %+v", e0)
		}
		return writes > 0 && reads > 0 && scans > 0 && got.LiveRows == 500, nil
	})
	t.Logf("emb_1: peak writes %.0f rows/s, reads %.0f rows/s, scans %.1f/s, %+v", writes, reads, scans, got)

	// Deletes become dead rows.
	mustExec(t, writer, "DELETE FROM emb_1 WHERE id % 2 = 0")
	mustExec(t, writer, "SELECT pg_stat_force_next_flush()")
	pgtest.WaitFor(t, 10*time.Second, "dead rows in emb_1", func() (bool, error) {
		s, err := collectOnce(t, p, conn, tg)
		got, _ = partition(s, "emb_1")
		return got.DeadRows == 250, err
	})
}

// Reads served by index-only scans are reads: the same rows read from two
// partitions, one by an index-only scan (no heap fetch, idx_tup_fetch stays
// 0) and one by a sequential scan, give about the same read rate. Counting
// only seq_tup_read + idx_tup_fetch read the index-only partition as idle,
// and an idle cold partition beside read ones read as a hotspot in the
// scorecard's fault-free period (bench/RESULTS.md, run 8).
func TestPartitionsCountIndexOnlyReads(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	setup := c.Connect(ctx, "postgres")
	mustExec(t, setup, "CREATE INDEX ON emb (id)")
	mustExec(t, setup, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', s FROM generate_series(1, 2000), unnest('{0,1}'::int[]) s")
	// All-visible pages: an index-only scan then fetches no heap row.
	mustExec(t, setup, "VACUUM (ANALYZE) emb")

	reader := c.Connect(ctx, "postgres")
	mustExec(t, reader, "SET enable_seqscan = off; SET enable_bitmapscan = off")
	var plan string
	if err := reader.QueryRow(ctx, "EXPLAIN (ANALYZE, COSTS OFF, FORMAT JSON) SELECT count(*) FROM emb_0 WHERE id > 0").Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, `"Index Only Scan"`) || !strings.Contains(plan, `"Heap Fetches": 0`) {
		t.Fatalf("emb_0 is not read by an index-only scan without heap fetches: %s", plan)
	}
	readsIn := func(what string, idxRows, seqRows int64) {
		t.Helper()
		pgtest.WaitFor(t, 15*time.Second, what, func() (bool, error) {
			var idx, heap int64
			err := setup.QueryRow(ctx, `SELECT (SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relname = 'emb_0'),
				(SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'emb_1')`).Scan(&idx, &heap)
			return idx >= idxRows && heap >= seqRows, err
		})
	}
	// The EXPLAIN's reads are flushed before the first sample.
	mustExec(t, reader, "SELECT pg_stat_force_next_flush()")
	readsIn("the EXPLAIN's reads in pg_stat", 2000, 0)
	seq := c.Connect(ctx, "postgres")
	mustExec(t, seq, "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")

	p := NewPartitions()
	if _, err := collectOnce(t, p, conn, tg); !errors.Is(err, ErrFirstSample) {
		t.Fatalf("first sample: %v", err)
	}
	for range 5 {
		mustExec(t, reader, "SELECT count(*) FROM emb_0 WHERE id > 0")
		mustExec(t, seq, "SELECT count(*) FROM emb_1")
	}
	mustExec(t, reader, "SELECT pg_stat_force_next_flush()")
	mustExec(t, seq, "SELECT pg_stat_force_next_flush()")
	readsIn("the reads in pg_stat", 12000, 10000)
	// One sample covers both partitions' reads over the same time.
	s, err := collectOnce(t, p, conn, tg)
	if err != nil {
		t.Fatal(err)
	}
	e0, _ := partition(s, "emb_0")
	e1, _ := partition(s, "emb_1")
	if e1.ReadRowsPerSec <= 0 || e0.ReadRowsPerSec < 0.9*e1.ReadRowsPerSec || e0.ReadRowsPerSec > 1.1*e1.ReadRowsPerSec {
		t.Fatalf("emb_0 (index-only) reads %.0f rows/s, emb_1 (sequential) %.0f rows/s: want the same, 10,000 rows each", e0.ReadRowsPerSec, e1.ReadRowsPerSec)
	}
	r0, r1 := e0.ReadRowsPerSec, e1.ReadRowsPerSec
	t.Logf("index-only partition %.0f rows/s, sequential partition %.0f rows/s", r0, r1)
}

// The gateway collector reads the write gate's counters from the segment:
// admitted rows per second, and rejections under a 100% throttle.
func TestGatewayFromSegment(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	// Keep the watchdog from treating the sidecar as absent.
	hctx, stop := context.WithCancel(ctx)
	hb := &instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- hb.Run(hctx) }()
	t.Cleanup(func() { stop(); <-done })

	g := NewGateway(seg)
	t0 := time.Now()
	if _, err := collectOnce(t, g, nil, tg); !errors.Is(err, ErrFirstSample) {
		t.Fatalf("first sample: %v", err)
	}
	a := time.Now()
	writer := c.Connect(ctx, "postgres")
	mustExec(t, writer, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', 0 FROM generate_series(1, 1000)")
	rows := [][]any{{[]float32{1}, int32(1)}, {[]float32{2}, int32(1)}}
	if _, err := writer.CopyFrom(ctx, pgx.Identifier{"emb"}, []string{"embedding", "shard"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	b := time.Now()
	s, err := collectOnce(t, g, nil, tg)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	// 1002 rows (insert + COPY) between the samples, whose distance is
	// between b-a and t1-t0.
	lo, hi := 1002/t1.Sub(t0).Seconds(), 1002/b.Sub(a).Seconds()
	if w := s.Gateway.WriteRowsPerSec; w < lo || w > hi || s.Gateway.RejectedPerSec != 0 {
		t.Fatalf("gateway %+v, want %.0f..%.0f rows/s", s.Gateway, lo, hi)
	}
	t.Logf("gateway after 1002 rows: %+v", s.Gateway)

	col, err := seg.Find("emb", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := writer.Exec(ctx, "INSERT INTO emb (embedding, shard) VALUES ('{1}', 0)"); err == nil {
			t.Fatal("insert passed a 100% throttle")
		}
	}
	s, err = collectOnce(t, g, nil, tg)
	if err != nil {
		t.Fatal(err)
	}
	// The sidecar's own throttle: its refusals are the remediation's
	// price, reported apart and not as congestion.
	if s.Gateway.HealerRejectedPerSec <= 0 || s.Gateway.RejectedPerSec != 0 || s.Gateway.WriteRowsPerSec != 0 {
		t.Fatalf("gateway under a 100%% sidecar throttle: %+v", s.Gateway)
	}
	if _, err := seg.ReleaseSidecarThrottles(time.Now()); err != nil {
		t.Fatal(err)
	}
	// Released: the interval that ends now still had it at its start.
	if s, err = collectOnce(t, g, nil, tg); err != nil || s.Gateway.RejectedPerSec != 0 {
		t.Fatalf("gateway after the release: %+v %v", s.Gateway, err)
	}
	// A person's throttle is congestion the healer did not choose.
	mustExec(t, writer, "SELECT ruvector.ruvector_throttle_set('emb', 'insert', 100)")
	for range 3 {
		if _, err := writer.Exec(ctx, "INSERT INTO emb (embedding, shard) VALUES ('{1}', 0)"); err == nil {
			t.Fatal("insert passed a 100% manual throttle")
		}
	}
	if s, err = collectOnce(t, g, nil, tg); err != nil || s.Gateway.RejectedPerSec <= 0 || s.Gateway.HealerRejectedPerSec != 0 {
		t.Fatalf("gateway under a 100%% manual throttle: %+v %v", s.Gateway, err)
	}
	mustExec(t, writer, "SELECT ruvector.ruvector_throttle_clear('emb')")
}

// A VACUUM waiting for a lock another session holds is a job with
// WaitingFor naming the blocker, and the blocker's queue is counted.
func TestMaintenanceLockWait(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	holder := c.Connect(ctx, "postgres")
	mustExec(t, holder, "BEGIN")
	mustExec(t, holder, "LOCK TABLE emb_0 IN ACCESS EXCLUSIVE MODE")
	var holderPID int32
	if err := holder.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&holderPID); err != nil {
		t.Fatal(err)
	}
	vacuumer := c.Connect(ctx, "postgres")
	vacDone := make(chan error, 1)
	go func() {
		_, err := vacuumer.Exec(ctx, "VACUUM emb_0")
		vacDone <- err
	}()

	m := NewMaintenance()
	var job health.JobSignal
	pgtest.WaitFor(t, 10*time.Second, "the waiting VACUUM", func() (bool, error) {
		s, err := collectOnce(t, m, conn, tg)
		for _, j := range s.Maintenance {
			if j.Type == "vacuum" {
				job = j
				return j.WaitingFor != "", err
			}
		}
		return false, err
	})
	t.Logf("job: %+v", job)
	if job.Relation != "emb_0" || job.Running || job.Priority != PriorityVacuum ||
		!strings.HasPrefix(job.WaitingFor, "Lock:relation") || !strings.Contains(job.WaitingFor, fmt.Sprintf("pid %d", holderPID)) {
		t.Fatalf("waiting vacuum reported as %+v (holder pid %d)", job, holderPID)
	}

	// Another collection's target does not see it.
	other := tg
	other.Relations = []uint32{tg.RelID + 100000}
	if s, err := collectOnce(t, m, conn, other); err != nil || len(s.Maintenance) != 0 {
		t.Fatalf("unrelated relations see %+v (%v)", s.Maintenance, err)
	}

	mustExec(t, holder, "COMMIT")
	if err := <-vacDone; err != nil {
		t.Fatal(err)
	}
	if s, err := collectOnce(t, m, conn, tg); err != nil || len(s.Maintenance) != 0 {
		t.Fatalf("after the vacuum: %+v (%v)", s.Maintenance, err)
	}
}

// A running CREATE INDEX blocked behind a lock, and an autovacuum worker's
// query text, are classified; anti-wraparound gets the top priority.
func TestMaintenanceClassifiesJobs(t *testing.T) {
	for _, tc := range []struct {
		row  jobRow
		typ  string
		prio int
	}{
		{jobRow{backendType: "autovacuum worker", query: "autovacuum: VACUUM public.emb_0 (to prevent wraparound)"}, "autovacuum", PriorityWraparound},
		{jobRow{backendType: "autovacuum worker", query: "autovacuum: VACUUM ANALYZE public.emb_0"}, "autovacuum", PriorityAutovacuum},
		{jobRow{backendType: "autovacuum worker", query: "autovacuum: ANALYZE public.emb_0"}, "autoanalyze", PriorityAutoanalyze},
		{jobRow{backendType: "client backend", query: "REINDEX TABLE emb_0", ciCommand: ptr("REINDEX"), ciPhase: ptr("building index: scanning table"), ciBlocksTotal: ptr[int64](100), ciBlocksDone: ptr[int64](50)}, "reindex", PriorityIndexBuild},
		{jobRow{backendType: "client backend", query: "VACUUM emb_0", vPhase: ptr("scanning heap"), vTotal: ptr[int64](10), vScanned: ptr[int64](5)}, "vacuum", PriorityVacuum},
	} {
		j, ok := tc.row.job()
		if !ok || j.Type != tc.typ || j.Priority != tc.prio || !j.Running {
			t.Errorf("%q: %+v", tc.row.query, j)
		}
	}
	j, _ := jobRow{ciCommand: ptr("CREATE INDEX"), ciPhase: ptr("building index: scanning table"), ciBlocksTotal: ptr[int64](100), ciBlocksDone: ptr[int64](50)}.job()
	if j.Progress != 0.25 {
		t.Errorf("index build half through its scan: progress %v", j.Progress)
	}
	if _, ok := (jobRow{backendType: "client backend", query: "INSERT INTO emb VALUES (1)", waitType: "Lock"}).job(); ok {
		t.Error("an INSERT waiting on a lock is not a maintenance job")
	}
}

func ptr[T any](v T) *T { return &v }

// Random-order inserts split B-tree pages everywhere (low density,
// out-of-order leaves); deleting most keys and vacuuming leaves pages
// nearly empty.
func TestIndexesFragmentation(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	c.MustExec(ctx, `
CREATE INDEX emb_id_idx ON emb (id);
CREATE INDEX emb_rand_idx ON emb ((embedding[1]));
INSERT INTO emb (embedding, shard) SELECT ARRAY[random()]::real[], 0 FROM generate_series(1, 30000);
-- A small index in random order: a few pages, "fragmented", and left out.
INSERT INTO emb (embedding, shard) SELECT ARRAY[random()]::real[], 7 FROM generate_series(1, 600);
DELETE FROM emb_0 WHERE id % 10 <> 0;`)
	c.MustExec(ctx, "VACUUM emb_0")
	x := NewIndexes()
	s, err := collectOnce(t, x, conn, tg)
	if err != nil {
		t.Fatal(err)
	}
	var rnd *health.IndexSignal
	for i, is := range s.Indexes {
		t.Logf("%s: fragmentation %.1f%%, density %.1f%%", is.Name, is.FragmentationPct, is.AvgLeafDensity)
		if is.Name == "emb_0_embedding_idx" {
			rnd = &s.Indexes[i]
		}
		if strings.HasPrefix(is.Name, "emb_1") || is.Name == "emb_id_idx" || is.SampledAt.IsZero() {
			t.Errorf("unexpected index %+v (empty partitions' and partitioned parents' indexes have nothing to measure)", is)
		}
		if strings.HasPrefix(is.Name, "emb_many") {
			t.Errorf("small index %+v reported: a few pages' order says nothing", is)
		}
	}
	if rnd == nil {
		t.Fatalf("no emb_0_embedding_idx in %+v", s.Indexes)
	}
	if rnd.FragmentationPct <= 0 || rnd.AvgLeafDensity >= 90 {
		t.Fatalf("random-order index: %+v, want fragmentation > 0 and density < 90", *rnd)
	}
	var ext int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_extension WHERE extname = 'pgstattuple'").Scan(&ext); err != nil || ext != 1 {
		t.Fatalf("pgstattuple not created: %d %v", ext, err)
	}
}

// Without the right to create pgstattuple the collector fails: no data is
// invented.
func TestIndexesWithoutPgstattupleFails(t *testing.T) {
	t.Parallel()
	c, _, tg := startCollection(t)
	ctx := context.Background()
	c.MustExec(ctx, `CREATE ROLE weak LOGIN; GRANT pg_monitor TO weak;`)
	weak, err := pgx.Connect(ctx, strings.Replace(c.DSN("postgres"), "user=postgres", "user=weak", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { weak.Close(context.Background()) })
	s, err := collectOnce(t, NewIndexes(), weak, tg)
	if err == nil || !strings.Contains(err.Error(), "pgstattuple") || s.Indexes != nil {
		t.Fatalf("got %+v, %v", s.Indexes, err)
	}
}

// The memory collector on the real machine: a source, a limit, and the
// server's processes among the consumers.
func TestMemoryRealMachine(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	s, err := collectOnce(t, NewMemory(), conn, tg)
	if err != nil {
		t.Fatal(err)
	}
	m := s.Memory
	t.Logf("memory: %+v", m)
	if m.Source == "" || m.LimitBytes <= 0 || m.UsedBytes <= 0 || m.UsedBytes > m.LimitBytes || m.UsagePct <= 0 || m.UsagePct > 100 {
		t.Fatalf("implausible memory %+v", m)
	}
	if len(m.Consumers) < 2 || len(m.Consumers) > 6 || m.Consumers[0].Name != "shared_buffers" || m.Consumers[0].Bytes != 128<<20 {
		t.Fatalf("consumers %+v (want shared_buffers = 128 MiB, then up to 5 processes)", m.Consumers)
	}
	sawPostgres := false
	for _, cs := range m.Consumers[1:] {
		if cs.Bytes <= 0 {
			t.Fatalf("consumer %+v", cs)
		}
		sawPostgres = sawPostgres || strings.Contains(cs.Name, "postmaster") || strings.Contains(cs.Name, "client backend") || strings.Contains(cs.Name, "checkpointer")
	}
	if !sawPostgres {
		t.Fatalf("no server process among %+v", m.Consumers)
	}
	_ = c
}

// A REINDEX CONCURRENTLY waiting for an older transaction to end (a
// virtualxid lock, its "waiting for …" phases) blocks nobody and is a
// running job; the same REINDEX queued behind a relation lock is waiting.
func TestConcurrentReindexWaitingForOlderTransactions(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	mustExec(t, conn, "INSERT INTO emb (embedding, shard) SELECT ARRAY[g, g]::real[], g % 2 FROM generate_series(1, 2000) g")
	mustExec(t, conn, "CREATE INDEX emb_0_id ON emb_0 (id)")
	reindex := func() chan error {
		rc := c.Connect(ctx, "postgres")
		done := make(chan error, 1)
		go func() {
			_, err := rc.Exec(ctx, "REINDEX INDEX CONCURRENTLY emb_0_id")
			done <- err
		}()
		return done
	}
	m := NewMaintenance()
	find := func(what string, ok func(health.JobSignal) bool) health.JobSignal {
		t.Helper()
		var job health.JobSignal
		pgtest.WaitFor(t, 10*time.Second, what, func() (bool, error) {
			s, err := collectOnce(t, m, conn, tg)
			for _, j := range s.Maintenance {
				if j.Type == "reindex" && ok(j) {
					job = j
					return true, err
				}
			}
			return false, err
		})
		return job
	}

	// An application's open transaction, on another partition: the
	// rebuild waits for it before it swaps the index in.
	reader := c.Connect(ctx, "postgres")
	mustExec(t, reader, "BEGIN ISOLATION LEVEL REPEATABLE READ")
	mustExec(t, reader, "SELECT count(*) FROM emb_1")
	done := reindex()
	var phase, event string
	pgtest.WaitFor(t, 10*time.Second, "the REINDEX waiting for the reader", func() (bool, error) {
		err := conn.QueryRow(ctx, `SELECT p.phase, coalesce(a.wait_event, '') FROM pg_stat_progress_create_index p
JOIN pg_stat_activity a USING (pid)`).Scan(&phase, &event)
		return err == nil && strings.HasPrefix(phase, "waiting for") && event == "virtualxid", nil
	})
	job := find("the reindex job", func(health.JobSignal) bool { return true })
	t.Logf("%s (%s): %+v", phase, event, job)
	if !job.Running || job.WaitingFor != "" {
		t.Fatalf("a REINDEX CONCURRENTLY in %q reads as %+v: it waits for older transactions, nobody waits for it", phase, job)
	}
	mustExec(t, reader, "COMMIT")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The same statement queued behind a lock on the partition.
	holder := c.Connect(ctx, "postgres")
	mustExec(t, holder, "BEGIN")
	mustExec(t, holder, "LOCK TABLE emb_0 IN SHARE UPDATE EXCLUSIVE MODE")
	done = reindex()
	job = find("the queued reindex", func(j health.JobSignal) bool { return j.WaitingFor != "" })
	if job.Running || !strings.HasPrefix(job.WaitingFor, "Lock:relation") {
		t.Fatalf("a REINDEX CONCURRENTLY queued behind a relation lock reads as %+v", job)
	}
	mustExec(t, holder, "COMMIT")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
