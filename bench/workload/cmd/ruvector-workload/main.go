// ruvector-workload drives a vector collection and creates one problem on
// purpose, then prints what it did and whether the server still holds
// every row it inserted.
//
//	go run ./bench/workload/cmd/ruvector-workload -dsn 'host=/tmp port=5432 dbname=postgres' \
//	    -collection emb -create -rate 200 -inject hot_partition -shard 3 -duration 30s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ruvector/ruvector-healing/bench/workload"
)

var injectors = []string{"none", "hot_partition", "drift", "maintenance", "index_bloat", "lagging_replica", "memory_pressure"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ruvector-workload:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dsn        = flag.String("dsn", "", "libpq connection string (PG* variables apply)")
		collection = flag.String("collection", "", "collection name")
		create     = flag.Bool("create", false, "create the collection first (ruvector_collection_create)")
		dim        = flag.Int("dim", 32, "dimension, with -create")
		partitions = flag.Int("partitions", 16, "partitions, with -create")
		lists      = flag.Int("lists", 100, "IVF lists, with -create")
		preload    = flag.Int("preload", 0, "rows to COPY before the run")
		rate       = flag.Float64("rate", 100, "steady insert rate, rows/s")
		copyFrac   = flag.Float64("copy-fraction", 0.5, "share of steady rows loaded with COPY")
		searchRate = flag.Float64("search-rate", 5, "searches/s")
		probes     = flag.Int("probes", 8, "probes per search")
		inject     = flag.String("inject", "none", "problem to create: "+strings.Join(injectors, ", "))
		shard      = flag.Int("shard", 0, "hot_partition: the hot shard")
		hotRate    = flag.Float64("hot-rate", 500, "hot_partition: rows/s into the hot shard")
		driftRows  = flag.Int("drift-rows", 10000, "drift: rows from the drifted distribution")
		jobs       = flag.Int("jobs", 20, "maintenance: low-priority jobs to enqueue")
		standbyDir = flag.String("standby-dir", "", "lagging_replica: make a standby here with pg_basebackup (primary on this machine)")
		standbyDSN = flag.String("standby-dsn", "", "lagging_replica: an existing standby to pause instead")
		memMB      = flag.Int("memory-mb", 512, "memory_pressure: MiB one backend holds")
		duration   = flag.Duration("duration", 30*time.Second, "how long to run")
		seed       = flag.Uint64("seed", 1, "vector seed")
	)
	flag.Parse()
	if *collection == "" {
		return errors.New("-collection is required")
	}
	valid := false
	for _, k := range injectors {
		valid = valid || k == *inject
	}
	if !valid {
		return fmt.Errorf("-inject %q: want one of %s", *inject, strings.Join(injectors, ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, *dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *create {
		if err := workload.Create(ctx, pool, *collection, *dim, *partitions, *lists); err != nil {
			return err
		}
		fmt.Printf("created collection %s: dim %d, %d partitions, %d lists\n", *collection, *dim, *partitions, *lists)
	}
	w, err := workload.Open(ctx, pool, *collection, *seed)
	if err != nil {
		return err
	}
	if *preload > 0 {
		for done := 0; done < *preload; done += 5000 {
			if err := w.CopyInsert(ctx, min(5000, *preload-done), nil); err != nil {
				return err
			}
		}
		fmt.Printf("preloaded %d rows with COPY\n", *preload)
	}

	var wg sync.WaitGroup
	var injErr error
	var report string
	wg.Add(1)
	go func() {
		defer wg.Done()
		report, injErr = injectProblem(ctx, w, pool, *inject, *duration, injectArgs{
			shard: *shard, hotRate: *hotRate, driftRows: *driftRows, jobs: *jobs,
			standbyDir: *standbyDir, standbyDSN: *standbyDSN, memMB: *memMB, dsn: *dsn})
	}()
	st, err := w.Steady(ctx, workload.SteadyOptions{Rate: *rate, CopyFraction: *copyFrac, SearchRate: *searchRate,
		Probes: *probes, Duration: *duration})
	wg.Wait()
	fmt.Printf("steady: %d routed single-row inserts, %d COPY rows, %d searches (p50 %v, p99 %v)\n",
		st.Routed, st.Copied, st.Searches, st.SearchP50.Round(time.Microsecond), st.SearchP99.Round(time.Microsecond))
	if report != "" {
		fmt.Println(report)
	}
	if err := errors.Join(err, injErr); err != nil {
		return err
	}
	chk, err := w.Ledger.Verify(context.Background(), pool, w.Table)
	if err != nil {
		return err
	}
	fmt.Printf("ledger: %d rows inserted by this run; server holds %d rows in %s\n", chk.LedgerTotal.Count, chk.ServerTotal.Count, w.Table)
	if *preload == 0 && !*create {
		fmt.Println("ledger: the collection existed before this run, so only this run's rows are in the ledger; no comparison")
		return nil
	}
	if chk.TotalOK() {
		fmt.Println("ledger: every inserted row is present, none duplicated or altered (count and checksum match)")
	} else {
		fmt.Println("ledger: MISMATCH between what was inserted and what the server holds")
	}
	return nil
}

type injectArgs struct {
	shard                  int
	hotRate                float64
	driftRows, jobs        int
	standbyDir, standbyDSN string
	memMB                  int
	dsn                    string
}

func injectProblem(ctx context.Context, w *workload.Workload, pool *pgxpool.Pool, kind string, d time.Duration, a injectArgs) (string, error) {
	switch kind {
	case "none":
		return "", nil
	case "hot_partition":
		n, err := w.HotPartition(ctx, a.shard, a.hotRate, d)
		return fmt.Sprintf("hot_partition: %d rows into shard %d at %.0f rows/s (explicit shard values)", n, a.shard, a.hotRate), ignoreEnd(err)
	case "drift":
		err := w.Drift(ctx, a.driftRows, nil, 0)
		return fmt.Sprintf("drift: %d rows around %v; later steady inserts keep the drifted distribution", a.driftRows, w.DriftCenter()[:min(3, w.Dim)]), err
	case "maintenance":
		rep, err := w.HeavyMaintenance(ctx, workload.MaintenanceOptions{Jobs: a.jobs, Duration: d})
		return fmt.Sprintf("maintenance: %d low-priority jobs queued, %d throttled VACUUMs, %d rows churned", len(rep.JobIDs), rep.Vacuums, rep.Churned), err
	case "index_bloat":
		rep, err := w.IndexBloat(ctx, workload.BloatOptions{})
		return fmt.Sprintf("index_bloat: %d updates of %s (indexed), %d rows deleted, vacuumed", rep.Updated, workload.BloatColumn, rep.Deleted), err
	case "lagging_replica":
		dsn := a.standbyDSN
		if dsn == "" {
			if a.standbyDir == "" {
				return "", errors.New("lagging_replica needs -standby-dsn or -standby-dir")
			}
			cfg := pool.Config().ConnConfig
			sb, err := workload.StartStandby(ctx, workload.StandbySpec{PrimaryHost: cfg.Host, PrimaryPort: int(cfg.Port), Dir: a.standbyDir})
			if err != nil {
				return "", err
			}
			defer sb.Stop(context.Background())
			dsn = sb.DSN
		}
		resume, err := workload.LaggingReplica(ctx, dsn)
		if err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return fmt.Sprintf("lagging_replica: replay paused on %s for %v, then resumed", dsn, d), resume(context.Background())
	case "memory_pressure":
		h, err := w.MemoryPressure(ctx, a.dsn, a.memMB)
		if err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return fmt.Sprintf("memory_pressure: backend %d held a %d MiB in-memory sort for %v", h.PID, a.memMB, d), h.Release(context.Background())
	}
	return "", fmt.Errorf("unknown injector %q", kind)
}

func ignoreEnd(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
