package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/changefeed"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/metrics"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
)

func runDaemon(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var sf serverFlags
	sf.register(fs)
	interval := fs.Duration("heartbeat-interval", time.Second,
		"how often the sidecar tells the watchdog it is alive; keep well under ruvector.sidecar_timeout")
	sample := fs.Duration("sample-interval", time.Second, "integrity sample period")
	indexEvery := fs.Duration("index-sample-interval", 5*time.Minute,
		"how often the indexes collector runs pgstatindex (index_fragmentation); slow by default because pgstatindex reads every page of every index of the collection; shorter detects fragmentation sooner at the cost of that I/O (the verification wait after compact_indexes is two of these periods)")
	feedOn := fs.Bool("changefeed", false,
		"follow a logical change feed (publication + replication slot ruvector_healing_feed_<db oid>) for real-time write rates; needs REPLICATION")
	refresh := fs.Duration("collections-refresh", 10*time.Second, "how often the list of registered collections is re-read")
	metricsAddr := fs.String("metrics-listen", metrics.DefaultListen,
		"address of the Prometheus endpoint (/metrics, /healthz); empty disables it")
	jobsOn := fs.Bool("jobs", true, "run the product's maintenance jobs (ruvector.maintenance_jobs: centroid rebuilds, rebalances, compactions, vacuums)")
	healOn := fs.Bool("healing", true, "run the healing engine (this sidecar contends to be the one active sidecar of the database)")
	keyPath := fs.String("audit-key", "",
		"Ed25519 key that signs healing records and integrity events, created at first start (default: $data_directory/ruvector_healing_audit.key)")
	leaderTTL := fs.Duration("leader-ttl", 15*time.Second, "lifetime of the active sidecar's leader row (renewed every third of it)")
	degradedEvery := fs.Duration("heal-every", 30*time.Second, "how often a collection that stays degraded is triggered again")
	stabilization := fs.Duration("stabilization", 0, "override healing_config stabilization_seconds (0: use the configuration); either way raised to the time the problem class's collectors need to show a change")
	liftAfter := fs.Duration("lift-temporary-after", 10*time.Minute,
		"lift (roll back) a verified throttle, shard cap, maintenance pause or drain once its collection has been normal this long (0: never; they then stay until ruvector_healing_rollback)")
	heldMax := fs.Duration("held-max", healing.DefaultHeldMax,
		"lift a measure kept in force for the next remedy (an unverified shard cap that stops a hot shard's writer) after this long if its collection never got back to normal")
	var scf scaleFlags
	scf.register(fs)
	var sbf standbyFlags
	sbf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for name, d := range map[string]time.Duration{"--heartbeat-interval": *interval, "--sample-interval": *sample,
		"--collections-refresh": *refresh, "--leader-ttl": *leaderTTL, "--heal-every": *degradedEvery,
		"--index-sample-interval": *indexEvery} {
		if d <= 0 {
			return fmt.Errorf("%s %v must be positive", name, d)
		}
	}
	if err := sbf.check(); err != nil {
		return err
	}
	if *heldMax <= 0 {
		return fmt.Errorf("--held-max %v must be positive: a held measure is always bounded", *heldMax)
	}
	if *liftAfter < 0 {
		return fmt.Errorf("--lift-temporary-after %v must not be negative (0 never lifts)", *liftAfter)
	}
	log, err := sf.logger(os.Stderr)
	if err != nil {
		return err
	}
	scale, err := scf.build()
	if err != nil {
		return err
	}
	// Said once at start: selection asks again before every use.
	if ok, why := scale.Available(ctx); ok {
		log.Info().Str("workload", scf.workload).Int("max_replicas", scf.maxReplicas).Msg("scale_replicas available")
	} else {
		log.Info().Str("reason", why).Msg("scale_replicas unavailable")
	}
	if len(sbf.standbys) > 0 {
		log.Info().Strs("standbys", sbf.names()).Dur("resume_after", sbf.grace).Msg("resume_replay available")
	} else {
		log.Info().Msg("resume_replay unavailable: no --standby; a paused standby replay is handed to a person")
	}
	conn, srv, seg, err := sf.attach(ctx)
	if err != nil {
		return err
	}
	defer seg.Close()
	conn.Close(ctx)

	info, err := seg.Info()
	if err != nil {
		return err
	}
	if timeout := info.SidecarTimeout; timeout > 0 && *interval*2 > timeout {
		log.Warn().Dur("heartbeat_interval", *interval).Dur("sidecar_timeout", timeout).
			Msg("heartbeat interval is more than half of ruvector.sidecar_timeout: the watchdog may release throttles while the sidecar is alive")
	}
	log.Info().Str("data_directory", srv.DataDir).Str("database", srv.Database).
		Uint64("generation", info.Generation).Int("slots", info.SlotCount).
		Int("pid", os.Getpid()).Msg("attached to segment")

	// One key for both audit trails (healing records and integrity events),
	// loaded once: the key file is checked (owner, mode) before anything signs.
	if *keyPath == "" {
		*keyPath = filepath.Join(srv.DataDir, "ruvector_healing_audit.key")
	}
	key, created, err := audit.LoadOrCreateKey(*keyPath)
	if err != nil {
		return fmt.Errorf("--audit-key: %w", err)
	}
	log.Info().Str("path", *keyPath).Bool("created", created).Str("key_id", key.ID).Msg("audit signing key loaded")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	obs := &loopObservers{stats: &metrics.RunnerStats{}, snaps: &metrics.SnapshotCache{}, heal: metrics.NewHealing()}
	if *healOn {
		obs.hub = &healHub{periods: collectorPeriods(monitorCollectorsEvery(seg, *indexEvery, nil))}
	}
	if *metricsAddr != "" {
		done, err := startMetrics(ctx, *metricsAddr, seg, srv.DatabaseOID, obs, *interval, log)
		if err != nil {
			return err
		}
		// Let scrapes in flight finish before the segment is closed.
		defer func() { cancel(); <-done }()
	}
	// The sidecar's own reads and writes of the collections' partitions
	// (row moves), kept for the life of the daemon: the strategies and
	// jobs that move rows record them, the partitions collector leaves
	// them out of the load the healer judges.
	own := ownload.New()
	errc := make(chan error, 3)
	hb := &instance.Heartbeat{Segment: seg, Interval: *interval, Log: log}
	go func() { errc <- hb.Run(ctx) }()

	if *jobsOn {
		go superviseJobs(ctx, func(ctx context.Context) (*pgx.Conn, error) { return dialSidecar(ctx, sf.dsn) },
			defaultHolder(), time.Second, own, log.With().Str("loop", "jobs").Logger())
	}

	var feed *changefeed.Feed
	if *feedOn {
		feed, err = changefeed.New(changefeed.Config{DSN: sf.dsn, Log: log.With().Str("loop", "changefeed").Logger()})
		if err != nil {
			return err
		}
		go func() {
			if err := feed.Run(ctx); err != nil {
				log.Error().Err(err).Msg("change feed stopped")
			}
		}()
	}
	go func() {
		errc <- superviseMonitor(ctx, &sf, srv, seg, feed, key, *sample, *refresh, *indexEvery, own, obs, log)
	}()
	if obs.hub != nil {
		hopts := healingOptions{key: key, scale: scale, holder: defaultHolder(), leaderTTL: *leaderTTL,
			degradedEvery: *degradedEvery, stabilization: *stabilization, liftAfter: *liftAfter, heldMax: *heldMax, own: own, standbys: sbf}
		go func() {
			if err := superviseHealing(ctx, func(ctx context.Context) (*pgx.Conn, error) { return dialSidecar(ctx, sf.dsn) },
				seg, srv.DatabaseOID, obs.hub, obs.heal, hopts, log); err != nil {
				errc <- err
			}
		}()
	}

	// The heartbeat ends last: it detaches (releasing the sidecar's
	// throttles) only when the daemon is stopping.
	err = <-errc
	cancel()
	return err
}

// superviseMonitor runs the collectors and the integrity loop over the
// registered collections, and restarts both when the set changes.
func superviseMonitor(ctx context.Context, sf *serverFlags, srv instance.Server, seg *shmproto.Segment,
	feed *changefeed.Feed, key *audit.Key, sample, refresh, indexEvery time.Duration, own *ownload.Ledger, obs *loopObservers, log zerolog.Logger) error {
	var (
		running []collect.Target
		stop    context.CancelFunc = func() {}
	)
	defer func() { stop() }()
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		targets, err := loadTargets(ctx, sf)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn().Err(err).Msg("reading registered collections failed; retrying")
		case !sameTargets(targets, running):
			stop()
			runCtx, cancelRun := context.WithCancel(ctx)
			stop = cancelRun
			if err := startMonitor(runCtx, sf, srv, seg, feed, key, targets, sample, indexEvery, own, obs, log); err != nil {
				log.Warn().Err(err).Msg("starting the integrity loop failed; retrying")
				stop()
				targets = nil
			} else {
				names := make([]string, len(targets))
				for i, t := range targets {
					names[i] = t.Name
				}
				log.Info().Strs("collections", names).Msg("monitoring collections")
			}
			running = targets
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func startMonitor(ctx context.Context, sf *serverFlags, srv instance.Server, seg *shmproto.Segment,
	feed *changefeed.Feed, key *audit.Key, targets []collect.Target, sample, indexEvery time.Duration, own *ownload.Ledger, obs *loopObservers, log zerolog.Logger) error {
	// The previous loop is gone: its stats and cuts are no longer news.
	obs.stats.Set(nil)
	obs.snaps.Store(nil)
	if len(targets) == 0 {
		return nil
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return dialSidecar(ctx, sf.dsn) }
	// The collectors' connection is named apart in pg_stat_activity, so an
	// operator (or the chaos campaign) can tell it from the catalog one.
	dialCollect := func(ctx context.Context) (*pgx.Conn, error) {
		return dialSidecarAs(ctx, sf.dsn, "ruvector-sidecar-collect")
	}
	collConn, err := dialCollect(ctx)
	if err != nil {
		return fmt.Errorf("collector connection: %w", err)
	}
	dbConn, err := dial(ctx)
	if err != nil {
		collConn.Close(ctx)
		return fmt.Errorf("catalog connection: %w", err)
	}
	collectors := monitorCollectorsEvery(seg, indexEvery, own)
	runner := collect.NewRunner(collConn, targets, collectors, collect.RunnerOptions{
		Redial: func(ctx context.Context) (collect.Querier, error) { return dialCollect(ctx) },
	})
	onSample := obs.snaps.Store
	if obs.hub != nil {
		onSample = func(snaps []monitor.Snapshot) {
			obs.snaps.Store(snaps)
			obs.hub.onSample(snaps, targets, runner)
		}
	}
	cfg := monitor.Config{Sample: sample, OnSample: onSample, AuditKey: key,
		Redial: func(ctx context.Context) (monitor.DB, error) { return dial(ctx) }}
	if feed != nil {
		cfg.Enrich = func(s *health.Signals, t collect.Target) { enrichFromFeed(feed, s, t) }
	}
	mon, err := monitor.New(cfg, dbConn, seg, runner, srv.DatabaseOID, targets, log.With().Str("loop", "integrity").Logger())
	if err != nil {
		collConn.Close(ctx)
		dbConn.Close(ctx)
		return err
	}
	go func() {
		defer collConn.Close(context.Background())
		if err := runner.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("collectors stopped")
		}
	}()
	obs.stats.Set(runner)
	go logCollectorErrors(ctx, runner, collectorErrorLogEvery, log.With().Str("loop", "collectors").Logger())
	go func() {
		defer mon.Close(context.Background())
		if err := mon.Run(ctx); err != nil {
			log.Error().Err(err).Msg("integrity loop stopped")
		}
	}()
	return nil
}

// collectorErrorLogEvery is how often failing collectors are logged.
const collectorErrorLogEvery = 30 * time.Second

// collectorStats is what logCollectorErrors reads (collect.Runner).
type collectorStats interface {
	Stats() []collect.CollectorStats
}

// logCollectorErrors logs, every period, each collector that failed since
// the last look, with its last error: a failing collector turns its kind's
// edges to the unknown capacity and the healer then leaves its class
// alone, so an operator must be able to see why (the Prometheus counters
// say how often, not why).
func logCollectorErrors(ctx context.Context, src collectorStats, every time.Duration, log zerolog.Logger) {
	seen := map[string]uint64{}
	for _, st := range src.Stats() {
		seen[st.Name] = st.Errors
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, st := range src.Stats() {
			if n := st.Errors - seen[st.Name]; n > 0 {
				log.Warn().Str("collector", st.Name).Uint64("errors", n).Uint64("timeouts_total", st.Timeouts).
					Str("last_error", st.LastError).Time("last_error_at", st.LastErrorAt).
					Dur("period", every).Msg("collector failed: its signals are unknown until it succeeds again")
			}
			seen[st.Name] = st.Errors
		}
	}
}

// monitorCollectors are the collectors of the integrity loop (the healing
// engine's verification wait follows their periods, see signalRefresh).
func monitorCollectors(seg *shmproto.Segment) []collect.Collector {
	return monitorCollectorsEvery(seg, 0, nil)
}

// monitorCollectorsEvery is monitorCollectors with the indexes collector
// sampling every indexEvery (--index-sample-interval; 0: its default) and
// the partitions collector leaving own's counts out.
func monitorCollectorsEvery(seg *shmproto.Segment, indexEvery time.Duration, own *ownload.Ledger) []collect.Collector {
	indexes := collect.NewIndexes()
	indexes.Interval = indexEvery
	parts := collect.NewPartitions()
	parts.Own = own
	return []collect.Collector{
		collect.NewGateway(seg), parts, collect.NewReplicas(),
		collect.NewMaintenance(), indexes, collect.NewMemory(), collect.NewListsFromSegment(seg),
	}
}

// loopObservers are what the metrics read of the collectors and the
// integrity loop; they outlive both, which are rebuilt whenever the set of
// collections changes.
type loopObservers struct {
	stats *metrics.RunnerStats
	snaps *metrics.SnapshotCache
	heal  *metrics.Healing
	// hub is nil when healing is off (--healing=false).
	hub *healHub
}

// dialSidecar opens one of the sidecar's connections.
func dialSidecar(ctx context.Context, dsn string) (*pgx.Conn, error) {
	return dialSidecarAs(ctx, dsn, "ruvector-sidecar")
}

// dialSidecarAs opens a connection with the given application_name.
func dialSidecarAs(ctx context.Context, dsn, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	collect.ConfigureConn(cfg)
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = app
	return pgx.ConnectConfig(ctx, cfg)
}

// startMetrics serves the Prometheus endpoint on addr until ctx ends; done
// closes once the server has shut down. It binds before returning, so a
// taken port fails the start rather than a goroutine later.
func startMetrics(ctx context.Context, addr string, seg *shmproto.Segment, dbOID uint32, obs *loopObservers,
	heartbeat time.Duration, log zerolog.Logger) (done <-chan struct{}, err error) {
	reg := prometheus.NewRegistry()
	err = metrics.Register(reg, metrics.Sources{Segment: seg, DatabaseOID: dbOID, Stats: obs.stats, Snapshots: obs.snaps})
	if err != nil {
		return nil, err
	}
	if err := obs.heal.Register(reg); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	h := metrics.Handler(reg, metrics.HandlerOptions{
		Log: log.With().Str("loop", "metrics").Logger(),
		// Healthy while the heartbeat keeps up: a stalled heartbeat is
		// what makes the watchdog release the sidecar's throttles.
		Health: func() error {
			in, err := seg.Info()
			if err != nil {
				return fmt.Errorf("segment: %w", err)
			}
			if in.SidecarBeat.IsZero() {
				return fmt.Errorf("no sidecar heartbeat yet")
			}
			if age := time.Since(in.SidecarBeat); age > 3*heartbeat {
				return fmt.Errorf("sidecar heartbeat is %v old (interval %v)", age.Round(time.Millisecond), heartbeat)
			}
			return nil
		},
	})
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		if err := metrics.Serve(ctx, ln, h); err != nil {
			log.Error().Err(err).Msg("metrics server stopped")
		}
	}()
	log.Info().Str("address", ln.Addr().String()).Msg("serving Prometheus metrics on /metrics and /healthz")
	return ch, nil
}

// enrichFromFeed replaces pg_stat's lumpy partition write rates (flushed
// by backends every few seconds) with the change feed's, which arrive at
// commit time.
func enrichFromFeed(feed *changefeed.Feed, s *health.Signals, t collect.Target) {
	snap := feed.Rates(10 * time.Second)
	if !snap.Stats.Connected {
		return
	}
	for i := range s.Partitions {
		p := &s.Partitions[i]
		if r, ok := snap.Relations[uint32(p.RelID)]; ok {
			p.WriteRowsPerSec = r.InsertsPerSec + r.UpdatesPerSec + r.DeletesPerSec
		}
	}
	for i := range s.Centroids {
		c := &s.Centroids[i]
		if r, ok := snap.Lists[changefeed.ListKey{CollectionRelID: t.RelID, List: c.ID}]; ok {
			c.InsertsPerSec, c.DeletesPerSec = r.InsertsPerSec, r.DeletesPerSec
		}
	}
}

func loadTargets(ctx context.Context, sf *serverFlags) ([]collect.Target, error) {
	cfg, err := pgx.ParseConfig(sf.dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var present bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'ruvector_healing')`).Scan(&present); err != nil {
		return nil, err
	}
	if !present {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT name FROM ruvector.collections ORDER BY collection_id`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make([]collect.Target, 0, len(names))
	for _, n := range names {
		t, err := collect.LoadTarget(ctx, conn, n)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func sameTargets(a, b []collect.Target) bool {
	return slices.EqualFunc(a, b, func(x, y collect.Target) bool {
		return x.ID == y.ID && x.Name == y.Name && slices.Equal(x.Relations, y.Relations)
	})
}
