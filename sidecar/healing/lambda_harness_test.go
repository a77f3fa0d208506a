package healing_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// lambdaRig is the daemon's sensor for one collection of a test cluster:
// the segment with a heartbeat (liveSegment), the collectors' runner and
// the real integrity monitor publishing λ. The real-λ proofs of the strategies
// (maintenance, slow replica, throttle) share it, so each reads as fault,
// strategy, and the assertions on λ and the fault's own signal. The
// remedy package has its twin (Go test helpers do not cross packages).
type lambdaRig struct {
	t      *testing.T
	env    *workloadtest.Env
	name   string
	srv    instance.Server
	seg    *shmproto.Segment
	target collect.Target
	runner *collect.Runner

	// ctx is the loops' context: the test's own load goroutines run on it
	// (spawn) and end with the sensor (stop).
	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup

	mu   sync.Mutex
	snap monitor.Snapshot
}

// openLambdaRig maps the segment of the server behind conn with the
// sidecar's heartbeat (both until the test ends) and loads the
// collection's target; the sensor runs from start. The caller defers stop,
// so the loops end when the test returns, before its cleanups.
func openLambdaRig(t *testing.T, ctx context.Context, env *workloadtest.Env, conn *pgx.Conn, name string) *lambdaRig {
	t.Helper()
	srv, seg := liveSegment(ctx, t, conn)
	h := &lambdaRig{t: t, env: env, name: name, srv: srv, seg: seg}
	h.ctx, h.cancel = context.WithCancel(ctx)
	// Should the test end without stop (a Fatal before its defer), the
	// loops still end before liveSegment unmaps the segment they read.
	t.Cleanup(h.stop)
	var err error
	if h.target, err = collect.LoadTarget(ctx, conn, name); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the collectors (in this order: the gateway reads h.seg) and
// the monitor at the proofs' cadences until stop.
func (h *lambdaRig) start(ctx context.Context, collectors ...collect.Collector) {
	h.t.Helper()
	h.runner = collect.NewRunner(h.env.Cluster.Connect(ctx, "postgres"), []collect.Target{h.target},
		collectors, collect.RunnerOptions{})
	mon, err := monitor.New(monitor.Config{Sample: 250 * time.Millisecond, Warmup: 3 * time.Second, PolicyEvery: time.Second,
		OnSample: func(ss []monitor.Snapshot) {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, s := range ss {
				if s.Collection == h.name && s.State != integrity.Unknown {
					h.snap = s
				}
			}
		}}, h.env.Cluster.Connect(ctx, "postgres"), h.seg, h.runner, h.srv.DatabaseOID, []collect.Target{h.target}, zerolog.Nop())
	if err != nil {
		h.t.Fatal(err)
	}
	h.spawn(func(loopCtx context.Context) { _ = h.runner.Run(loopCtx) })
	h.spawn(func(loopCtx context.Context) { mon.Run(loopCtx) })
}

// spawn runs f on the loops' context until stop, which waits for it.
func (h *lambdaRig) spawn(f func(ctx context.Context)) {
	h.loops.Add(1)
	go func() {
		defer h.loops.Done()
		f(h.ctx)
	}()
}

// stop cancels every loop and waits for them; it may be called again.
func (h *lambdaRig) stop() {
	h.cancel()
	h.loops.Wait()
}

// current is the monitor's latest known-state snapshot of the collection
// and the collectors' latest signals.
func (h *lambdaRig) current() (monitor.Snapshot, health.Signals) {
	h.mu.Lock()
	s := h.snap
	h.mu.Unlock()
	sig, _ := h.runner.Signals(h.target.ID)
	return s, sig
}

// trigger is what the daemon hands the engine for snapshot s and sig.
func (h *lambdaRig) trigger(s monitor.Snapshot, sig health.Signals) healing.Trigger {
	return healing.Trigger{Collection: h.name, CollectionID: int64(h.env.W.ID), State: strategy.IntegrityState(integrity.StateName(s.State)),
		Lambda: s.LambdaNorm, Witness: s.Cut.Witness, Metrics: health.MetricsFrom(sig)}
}

// engine is a healing engine with the one strategy under proof, verifying
// with the λ the monitor publishes in the segment and signing with a fresh
// key.
func (h *lambdaRig) engine(ctx context.Context, s strategy.Strategy, opts healing.Options) *healing.Engine {
	h.t.Helper()
	key, _, err := audit.LoadOrCreateKey(filepath.Join(h.t.TempDir(), "audit.key"))
	if err != nil {
		h.t.Fatal(err)
	}
	reg, err := strategy.NewRegistry(s)
	if err != nil {
		h.t.Fatal(err)
	}
	if opts.Dial == nil {
		// As in the daemon: a connection closed by a cancelled query is
		// replaced, not the end of the engine.
		opts.Dial = func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, h.env.Cluster.DSN("postgres")) }
	}
	e, err := healing.New(ctx, h.env.Cluster.Connect(ctx, "postgres"), reg,
		healing.SegmentSampler{Segment: h.seg, DatabaseOID: h.srv.DatabaseOID}, key, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}
