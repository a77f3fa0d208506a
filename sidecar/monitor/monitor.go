// Package monitor is the sidecar's integrity loop: every sample it takes
// each collection's latest signals from the collectors, folds them into the
// health graph's exact minimum cut, runs the state machine, publishes λ and
// the state in the shared segment, and records transitions and the
// contracted graph in the catalog.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
)

// DB is what the loop needs of its catalog connection.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SignalSource gives a collection's latest signals (collect.Runner).
type SignalSource interface {
	Signals(collectionID int) (health.Signals, bool)
}

// Config tunes the loop.
type Config struct {
	// Sample is the sampling period (default 1 s).
	Sample time.Duration
	// GraphEvery bounds how often the contracted graph is written to the
	// catalog when nothing else changed (default 10 s).
	GraphEvery time.Duration
	// PolicyEvery is how often policies and overrides are re-read
	// (default 5 s).
	PolicyEvery time.Duration
	Health      health.Config
	// Warmup is how long after the loop starts a sample with a kind still
	// unknown is treated as no sample at all (default 15 s): rate
	// collectors need two samples before they know anything, and reading
	// their first silence as a blind spot would start every sidecar in
	// stress.
	Warmup time.Duration
	// Enrich, if set, adds signals from outside the collectors (the change
	// feed) before a sample is folded in.
	Enrich func(s *health.Signals, t collect.Target)
	// Redial, if set, replaces the catalog connection once it reports
	// itself closed (a server restart): publishing to the segment goes on
	// meanwhile, only events and graph snapshots wait for it.
	Redial func(ctx context.Context) (DB, error)
	// OnSample, if set, receives the snapshots after every sample, on the
	// loop's goroutine: the only safe way for others (the metrics) to see
	// them while the loop runs.
	OnSample func([]Snapshot)
	// AuditKey, if set, signs integrity events (see seal.go): the loop's
	// own transitions and the events SQL functions write.
	AuditKey *audit.Key
}

func (c *Config) defaults() {
	if c.Sample <= 0 {
		c.Sample = time.Second
	}
	if c.GraphEvery <= 0 {
		c.GraphEvery = 10 * time.Second
	}
	if c.PolicyEvery <= 0 {
		c.PolicyEvery = 5 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = 15 * time.Second
	}
	if c.Health.Floor == 0 {
		c.Health = health.DefaultConfig()
	}
}

// maxPending bounds the transitions kept for a catalog that is away.
const maxPending = 100

// Collection is one monitored collection's loop state.
type Collection struct {
	Target    collect.Target
	tracker   *health.Tracker
	machine   *integrity.Machine
	last      health.Cut
	lastState integrity.State
	lastGraph time.Time
	policyRaw string
	// known is set by the first sample in which every kind was known.
	known bool
	// lastSig is the sample the last cut was computed from: an unchanged
	// sample reuses the cut instead of rebuilding the graph (most
	// collections are idle most seconds; bench/RESULTS.md, P3).
	lastSig *health.Signals
	// pending are transitions made outside a sample (overrides set or
	// lifted by an operator), recorded with the next sample.
	pending []integrity.Transition
}

// Snapshot is what the loop last saw of a collection (for metrics and the
// healing engine).
type Snapshot struct {
	Collection string
	State      integrity.State
	LambdaNorm float64
	Cut        health.Cut
	// Policy is the collection's integrity policy (the healer aims for its
	// restore level).
	Policy integrity.Policy
}

// Monitor is the loop.
type Monitor struct {
	cfg     Config
	db      DB
	seg     *shmproto.Segment
	src     SignalSource
	log     zerolog.Logger
	dbOID   uint32
	cols    map[int]*Collection
	lastPol time.Time
	started time.Time
	// keyOnDB: the audit key's public half is known to be registered on
	// the current catalog connection's database.
	keyOnDB bool
	// OnTransition, if set, runs after a state transition was recorded.
	OnTransition func(c *Collection, t integrity.Transition, cut health.Cut)
}

// New builds a loop over the given targets.
func New(cfg Config, db DB, seg *shmproto.Segment, src SignalSource, dbOID uint32, targets []collect.Target, log zerolog.Logger) (*Monitor, error) {
	cfg.defaults()
	m := &Monitor{cfg: cfg, db: db, seg: seg, src: src, log: log, dbOID: dbOID, cols: map[int]*Collection{}}
	for _, t := range targets {
		tr, err := health.NewTracker(cfg.Health)
		if err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
		m.cols[t.ID] = &Collection{Target: t, tracker: tr, machine: integrity.NewMachine(integrity.DefaultPolicy()),
			lastState: shmproto.StateUnknown}
	}
	return m, nil
}

// Run samples until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Sample)
	defer t.Stop()
	for {
		if err := m.Step(ctx, time.Now()); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn().Err(err).Msg("integrity sample failed")
		}
		if m.cfg.OnSample != nil {
			m.cfg.OnSample(m.Snapshots())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step takes one sample of every collection.
func (m *Monitor) Step(ctx context.Context, now time.Time) error {
	if m.started.IsZero() {
		m.started = now
	}
	m.redial(ctx)
	if now.Sub(m.lastPol) >= m.cfg.PolicyEvery {
		if err := m.loadPolicies(ctx, now); err != nil {
			m.log.Warn().Err(err).Msg("reading integrity policies failed; keeping the previous ones")
		}
		m.lastPol = now
	}
	var errs []error
	for _, id := range m.ids() {
		if err := m.sample(ctx, m.cols[id], now); err != nil {
			errs = append(errs, fmt.Errorf("collection %s: %w", m.cols[id].Target.Name, err))
		}
	}
	if err := m.sealEvents(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Monitor) redial(ctx context.Context) {
	c, ok := m.db.(interface{ IsClosed() bool })
	if !ok || !c.IsClosed() || m.cfg.Redial == nil {
		return
	}
	db, err := m.cfg.Redial(ctx)
	if err != nil {
		m.log.Warn().Err(err).Msg("catalog connection lost; retrying")
		return
	}
	m.db = db
	m.log.Info().Msg("catalog connection re-established")
}

func (m *Monitor) ids() []int {
	ids := make([]int, 0, len(m.cols))
	for id := range m.cols {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// Snapshots returns what the loop last saw, by collection name. Call it
// from the loop's goroutine only (Config.OnSample), or when it is stopped.
func (m *Monitor) Snapshots() []Snapshot {
	out := make([]Snapshot, 0, len(m.cols))
	for _, id := range m.ids() {
		c := m.cols[id]
		out = append(out, Snapshot{Collection: c.Target.Name, State: c.lastState, LambdaNorm: c.last.LambdaNorm, Cut: c.last,
			Policy: c.machine.Policy()})
	}
	return out
}

func (m *Monitor) sample(ctx context.Context, c *Collection, now time.Time) error {
	sig, ok := m.src.Signals(c.Target.ID)
	if !ok {
		return nil // no collector has delivered yet: the state stays unknown
	}
	sig.Collection, sig.CollectionID = c.Target.Name, c.Target.ID
	if m.cfg.Enrich != nil {
		m.cfg.Enrich(&sig, c.Target)
	}
	var cut health.Cut
	if c.lastSig != nil && sameSignals(sig, *c.lastSig) {
		cut = c.last
	} else {
		var err error
		if cut, err = c.tracker.Update(sig); err != nil {
			return err
		}
		c.lastSig = &sig
	}
	var state integrity.State
	var tr *integrity.Transition
	if len(cut.UnknownKinds) == 0 {
		c.known = true
	}
	warming := !c.known && len(cut.UnknownKinds) > 0 && now.Sub(m.started) < m.cfg.Warmup
	if math.IsNaN(cut.LambdaNorm) || warming {
		state, tr = c.machine.ObserveUnknown(now)
	} else {
		state, tr = c.machine.Observe(cut.LambdaNorm, now)
	}
	c.last, c.lastState = cut, state

	// The slot can move across server restarts: find it every sample (a
	// read of at most max_collections slots, no SQL).
	col, err := m.seg.Find(c.Target.Name, m.dbOID)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	lambda := cut.LambdaNorm
	if math.IsNaN(lambda) {
		lambda = 0
	}
	if err := m.seg.WriteIntegrity(col.Slot, lambda, state, now); err != nil {
		return fmt.Errorf("publish: %w", err)
	}

	transitions := c.pending
	if tr != nil {
		transitions = append(transitions, *tr)
	}
	for i, tr := range transitions {
		if err := m.recordTransition(ctx, c, tr, cut, sig); err != nil {
			// Try again next sample; a catalog that stays away must not
			// make the backlog grow without bound.
			c.pending = transitions[i:]
			if n := len(c.pending); n > maxPending {
				c.pending = c.pending[n-maxPending:]
			}
			return err
		}
		m.log.Info().Str("collection", c.Target.Name).Str("from", integrity.StateName(tr.From)).
			Str("to", integrity.StateName(tr.To)).Float64("lambda_cut", cut.LambdaNorm).
			Int("witness_edges", len(cut.Witness)).Str("reason", tr.Reason).Msg("integrity state changed")
		if m.OnTransition != nil {
			m.OnTransition(c, tr, cut)
		}
	}
	c.pending = nil
	if len(transitions) > 0 || now.Sub(c.lastGraph) >= m.cfg.GraphEvery {
		if err := m.writeGraph(ctx, c, cut); err != nil {
			return err
		}
		c.lastGraph = now
	}
	return nil
}

func (m *Monitor) recordTransition(ctx context.Context, c *Collection, tr integrity.Transition, cut health.Cut, sig health.Signals) error {
	// What the classifier would call this, so the event says more than a
	// number; the healing engine classifies again when it acts.
	decision := classify.Classify(cut.Witness, health.MetricsFrom(sig), classify.DefaultThresholds())
	meta, err := json.Marshal(map[string]any{
		"reason":        tr.Reason,
		"lambda_raw":    cut.Lambda,
		"witness_edges": cut.Witness,
		"unknown_kinds": cut.UnknownKinds,
		"classified_as": decision.Problem.Class,
	})
	if err != nil {
		return fmt.Errorf("record transition: %w", err)
	}
	_, err = m.db.Exec(ctx, `INSERT INTO ruvector.integrity_events
		(collection_id, event_type, previous_state, new_state, lambda_cut, witness_edge_count, metadata)
		VALUES ($1, 'state_transition', $2, $3, $4, $5, $6)`,
		c.Target.ID, integrity.StateName(tr.From), integrity.StateName(tr.To), nanToNil(cut.LambdaNorm), len(cut.Witness), meta)
	if err != nil {
		return fmt.Errorf("record transition: %w", err)
	}
	return nil
}

func (m *Monitor) writeGraph(ctx context.Context, c *Collection, cut health.Cut) error {
	graph, err := json.Marshal(cut.Graph)
	if err != nil {
		return fmt.Errorf("write graph: %w", err)
	}
	witness, err := json.Marshal(cut.Witness)
	if err != nil {
		return fmt.Errorf("write graph: %w", err)
	}
	lam := cut.LambdaNorm
	if math.IsNaN(lam) {
		lam = 0
	}
	_, err = m.db.Exec(ctx, `INSERT INTO ruvector.contracted_graph
		(collection_id, lambda_cut, lambda_raw, graph, witness_edges, sample_count, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, now())
		ON CONFLICT (collection_id) DO UPDATE SET lambda_cut = EXCLUDED.lambda_cut,
			lambda_raw = EXCLUDED.lambda_raw, graph = EXCLUDED.graph,
			witness_edges = EXCLUDED.witness_edges, sample_count = EXCLUDED.sample_count,
			updated_at = now()`,
		c.Target.ID, lam, cut.Lambda, graph, witness, c.machine.Samples())
	if err != nil {
		return fmt.Errorf("write graph: %w", err)
	}
	return nil
}

// loadPolicies re-reads policies and overrides. The SQL side stores the
// policy flat (threshold_high, threshold_low and the hysteresis keys side by
// side, as ruvector_integrity_policy_set takes them).
func (m *Monitor) loadPolicies(ctx context.Context, now time.Time) error {
	rows, err := m.db.Query(ctx, `SELECT c.collection_id, p.config, o.new_state, o.expires_at, o.reason
		FROM ruvector.collections c
		LEFT JOIN ruvector.integrity_policies p USING (collection_id)
		LEFT JOIN ruvector.integrity_overrides o ON o.collection_id = c.collection_id
			AND (o.expires_at IS NULL OR o.expires_at > now())`)
	if err != nil {
		return fmt.Errorf("load policies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int
		var cfg []byte
		var ovState, ovReason *string
		var ovUntil *time.Time
		if err := rows.Scan(&id, &cfg, &ovState, &ovUntil, &ovReason); err != nil {
			return fmt.Errorf("load policies: %w", err)
		}
		c := m.cols[id]
		if c == nil {
			continue
		}
		if string(cfg) != c.policyRaw {
			p, err := PolicyFromSQL(cfg)
			if err != nil {
				m.log.Warn().Err(err).Str("collection", c.Target.Name).Msg("invalid integrity policy in the catalog; keeping the previous one")
			} else if err := c.machine.SetPolicy(p); err != nil {
				m.log.Warn().Err(err).Str("collection", c.Target.Name).Msg("policy rejected")
			} else {
				c.policyRaw = string(cfg)
			}
		}
		if ovState != nil {
			st, err := integrity.ParseState(*ovState)
			if err != nil {
				continue
			}
			until := time.Time{}
			if ovUntil != nil {
				until = *ovUntil
			}
			cur, curUntil, _, active := c.machine.ActiveOverride()
			if !active || cur != st || !curUntil.Equal(until) {
				tr, err := c.machine.Override(st, until, now, deref(ovReason))
				if err != nil {
					m.log.Warn().Err(err).Str("collection", c.Target.Name).Msg("override rejected")
				} else if tr != nil {
					c.pending = append(c.pending, *tr)
				}
			}
		} else if _, _, _, active := c.machine.ActiveOverride(); active {
			if tr := c.machine.ClearOverride(now); tr != nil {
				c.pending = append(c.pending, *tr)
			}
		}
	}
	return rows.Err()
}

// PolicyFromSQL turns the catalog's flat policy into an integrity.Policy.
func PolicyFromSQL(flat []byte) (integrity.Policy, error) {
	if len(flat) == 0 {
		return integrity.DefaultPolicy(), nil
	}
	var in map[string]json.RawMessage
	if err := json.Unmarshal(flat, &in); err != nil {
		return integrity.Policy{}, fmt.Errorf("policy: %w", err)
	}
	out := map[string]any{}
	hyst := map[string]json.RawMessage{}
	for k, v := range in {
		switch k {
		case "threshold_high", "threshold_low":
			out[k] = v
		default:
			hyst[k] = v
		}
	}
	if len(hyst) > 0 {
		out["hysteresis"] = hyst
	}
	doc, err := json.Marshal(out)
	if err != nil {
		return integrity.Policy{}, fmt.Errorf("policy: %w", err)
	}
	return integrity.ParsePolicy(doc)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func nanToNil(f float64) any {
	if math.IsNaN(f) {
		return nil
	}
	return f
}

// Close closes the catalog connection the loop uses now (a redialled one
// included), when it can be closed.
func (m *Monitor) Close(ctx context.Context) {
	if c, ok := m.db.(interface{ Close(context.Context) error }); ok {
		_ = c.Close(ctx)
	}
}

// sameSignals reports whether two samples carry the same measurements
// (their timestamps aside).
func sameSignals(a, b health.Signals) bool {
	return a.Collection == b.Collection && a.CollectionID == b.CollectionID &&
		a.Gateway == b.Gateway &&
		slices.Equal(a.Partitions, b.Partitions) &&
		slices.Equal(a.Centroids, b.Centroids) &&
		slices.Equal(a.Replicas, b.Replicas) &&
		slices.Equal(a.Maintenance, b.Maintenance) &&
		slices.Equal(a.Indexes, b.Indexes) &&
		a.Memory.UsedBytes == b.Memory.UsedBytes && a.Memory.LimitBytes == b.Memory.LimitBytes &&
		a.Memory.UsagePct == b.Memory.UsagePct && a.Memory.Source == b.Memory.Source &&
		slices.Equal(a.Memory.Consumers, b.Memory.Consumers) &&
		maps.Equal(a.Unknown, b.Unknown)
}
