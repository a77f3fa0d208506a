package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
	"github.com/ruvector/ruvector-healing/sidecar/metrics"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
	"github.com/ruvector/ruvector-healing/sidecar/remedy"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// healHub connects the integrity loop (rebuilt whenever the collections
// change) to the healing service (rebuilt whenever its connections fail):
// the loop hands every sample to whichever service is current, and the
// service asks the hub for a collection's present state.
type healHub struct {
	svc atomic.Pointer[healing.Service]

	// periods is the collection period of the measurements behind each
	// problem class (collectorPeriods of the integrity loop's collectors).
	periods map[classify.Class]time.Duration

	mu      sync.Mutex
	current map[string]healing.Trigger
	// lastSample and interval: when the integrity loop last sampled, and
	// the time between its last two samples (how long λ takes to publish).
	lastSample time.Time
	interval   time.Duration
}

// signalSource is what the hub needs of the collectors (collect.Runner).
type signalSource interface {
	Signals(collectionID int) (health.Signals, bool)
}

// onSample runs on the integrity loop's goroutine after every sample.
func (h *healHub) onSample(snaps []monitor.Snapshot, targets []collect.Target, src signalSource) {
	byName := make(map[string]collect.Target, len(targets))
	for _, t := range targets {
		byName[t.Name] = t
	}
	now := time.Now()
	h.mu.Lock()
	if !h.lastSample.IsZero() {
		h.interval = now.Sub(h.lastSample)
	}
	h.lastSample = now
	h.mu.Unlock()
	svc := h.svc.Load()
	for _, s := range snaps {
		t, ok := byName[s.Collection]
		if !ok {
			continue
		}
		tr := healing.Trigger{Collection: t.Name, CollectionID: int64(t.ID),
			State: strategy.IntegrityState(integrity.StateName(s.State)), Lambda: s.LambdaNorm, Witness: s.Cut.Witness,
			UnknownKinds:  s.Cut.UnknownKinds,
			RestoreLambda: s.Policy.ThresholdHigh + s.Policy.Hysteresis.RestoreThresholdOffset}
		if sig, ok := src.Signals(t.ID); ok {
			tr.Metrics = health.MetricsFrom(sig)
		}
		h.mu.Lock()
		if h.current == nil {
			h.current = map[string]healing.Trigger{}
		}
		h.current[t.Name] = tr
		h.mu.Unlock()
		if svc != nil && s.State != shmproto.StateUnknown {
			svc.Observe(tr, now)
		}
	}
}

// feedRateWindow is the change feed's rate window (enrichFromFeed).
const feedRateWindow = 10 * time.Second

// collectorPeriods maps each problem class to the period of the collector
// that measures its signal.
func collectorPeriods(collectors []collect.Collector) map[classify.Class]time.Duration {
	out := map[classify.Class]time.Duration{}
	for _, c := range collectors {
		var class classify.Class
		switch c.(type) {
		case *collect.Partitions:
			class = classify.ClassHotspotCongestion
		case *collect.Lists:
			class = classify.ClassCentroidSkew
		case *collect.Replicas:
			class = classify.ClassReplicationLag
		case *collect.Maintenance:
			class = classify.ClassMaintenanceContention
		case *collect.Indexes:
			class = classify.ClassIndexFragmentation
		case *collect.Memory:
			class = classify.ClassMemoryPressure
		default:
			continue
		}
		out[class] = max(out[class], c.Cadence())
	}
	return out
}

// signalRefresh is how long after a change the measurements behind a
// problem class show only the new state: two periods of the collector that
// measures it (its rates and counts cover a whole period, and the change
// can fall anywhere in the first), for write rates at least the change
// feed's window, plus one integrity sample to publish λ.
func (h *healHub) signalRefresh(class classify.Class) time.Duration {
	period, ok := h.periods[class]
	if !ok {
		return 0
	}
	measured := 2 * period
	if class == classify.ClassHotspotCongestion {
		measured = max(measured, feedRateWindow)
	}
	h.mu.Lock()
	publish := h.interval
	h.mu.Unlock()
	if publish <= 0 {
		publish = time.Second // the default --sample-interval
	}
	return measured + publish
}

func (h *healHub) get(collection string) (healing.Trigger, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tr, ok := h.current[collection]
	return tr, ok
}

// engineObserver adapts the metrics to the engine's Observer.
type engineObserver struct{ m *metrics.Healing }

func (o engineObserver) RemediationStarted(collection, strategy string) {
	o.m.RemediationStarted(collection, strategy)
}

func (o engineObserver) RemediationFinished(collection, strategy string, out healing.Outcome) {
	imp := 0.0
	if out.InitialLambda > 0 && out.FinalLambda > 0 {
		imp = (out.FinalLambda - out.InitialLambda) / out.InitialLambda
	}
	o.m.Finished(collection, strategy, metrics.HealingResult{Verified: out.Verified, Improvement: imp, Duration: out.Duration})
}

type healingOptions struct {
	key           *audit.Key
	scale         *remedy.ScaleReplicas
	holder        string
	leaderTTL     time.Duration
	degradedEvery time.Duration
	stabilization time.Duration
	liftAfter     time.Duration
	heldMax       time.Duration
	// own records the strategies' row moves (sidecar/ownload).
	own *ownload.Ledger
	// standbys are resume_replay's (--standby, --standby-resume-after).
	standbys standbyFlags
}

// superviseHealing runs the healing service until ctx ends, rebuilding the
// engine and the service after a connection failure (which re-LISTENs and
// rescans the pending requests).
func superviseHealing(ctx context.Context, dial func(context.Context) (*pgx.Conn, error), seg *shmproto.Segment,
	dbOID uint32, hub *healHub, m *metrics.Healing, opts healingOptions, log zerolog.Logger) error {
	for {
		err := runHealingOnce(ctx, dial, seg, dbOID, hub, m, opts.key, opts, log)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn().Err(err).Msg("healing service stopped; restarting in 2s")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

func runHealingOnce(ctx context.Context, dial func(context.Context) (*pgx.Conn, error), seg *shmproto.Segment,
	dbOID uint32, hub *healHub, m *metrics.Healing, key *audit.Key, opts healingOptions, log zerolog.Logger) error {
	reg, cleanup, err := buildStrategies(ctx, strategyDeps{Segment: seg, DatabaseOID: dbOID, Dial: dial, Scale: opts.scale, Own: opts.own,
		Standbys: opts.standbys.standbys, StandbyGrace: opts.standbys.grace})
	if err != nil {
		return err
	}
	defer cleanup()
	conn, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("engine connection: %w", err)
	}
	hlog := log.With().Str("loop", "healing").Logger()
	eopts := healing.Options{Holder: opts.holder, Log: hlog, Stabilization: opts.stabilization, Current: hub.get,
		SignalRefresh: hub.signalRefresh, Dial: dial}
	if m != nil {
		eopts.Observer = engineObserver{m}
	}
	eng, err := healing.New(ctx, conn, reg, healing.SegmentSampler{Segment: seg, DatabaseOID: dbOID}, key, eopts)
	if err != nil {
		conn.Close(context.Background())
		return err
	}
	defer eng.Close(context.Background()) //nolint:errcheck
	scfg := healing.ServiceConfig{Engine: eng, Dial: dial, Current: hub.get, Holder: opts.holder,
		LeaderTTL: opts.leaderTTL, DegradedEvery: opts.degradedEvery, LiftAfter: opts.liftAfter, HeldMax: opts.heldMax, Log: hlog}
	if m != nil {
		scfg.Metrics = m
	}
	svc, err := healing.NewService(scfg)
	if err != nil {
		return err
	}
	hub.svc.Store(svc)
	defer hub.svc.CompareAndSwap(svc, nil)
	return svc.Run(ctx)
}

func defaultHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("ruvector-sidecar@%s:%d", host, os.Getpid())
}
