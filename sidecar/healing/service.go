package healing

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// RequestChannel is the NOTIFY channel of ruvector.healing_requests.
const RequestChannel = "ruvector_healing_requests"

// Leader election. One sidecar per database acts: the holder of the
// ruvector.healing_leader row, which it renews; a standby monitors and
// publishes λ but takes no action. A row with an expiry rather than a
// session advisory lock for the same reason as the collection leases: an
// advisory lock vanishes with its connection while the holder may still be
// acting, and it does not survive a connection pooler. Losing the row is
// harmless for safety anyway: every action is fenced by its collection's
// lease, so a takeover while an attempt runs cannot make two act on one
// collection; the leader row only keeps standbys from starting attempts.

// Leader holds or contends for the leader row.
type Leader struct {
	Holder string
	TTL    time.Duration
	token  int64
}

// Try takes or renews the leader row; it reports whether this process is
// the leader now.
func (l *Leader) Try(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (bool, error) {
	if l.token == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return false, err
		}
		l.token = int64(binary.BigEndian.Uint64(b[:])>>1) | 1
	}
	var got int64
	err := q.QueryRow(ctx, `INSERT INTO ruvector.healing_leader AS h (singleton, holder, token, expires_at)
		VALUES (true, $1, $2, clock_timestamp() + make_interval(secs => $3))
		ON CONFLICT (singleton) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token,
			acquired_at = CASE WHEN h.token = EXCLUDED.token THEN h.acquired_at ELSE clock_timestamp() END,
			renewed_at = clock_timestamp(), expires_at = EXCLUDED.expires_at
		WHERE h.token = EXCLUDED.token OR h.expires_at <= clock_timestamp()
		RETURNING token`, l.Holder, l.token, l.TTL.Seconds()).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("healing: leader row: %w", err)
	}
	return got == l.token, nil
}

// ServiceMetrics is what the service reports beyond the engine's Observer.
type ServiceMetrics interface {
	SetEnabled(on bool)
	SetCooldownUntil(collection string, until time.Time)
	Recovered(collection string, degraded time.Duration)
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	Engine *Engine
	// Dial opens the service's own connections (control and LISTEN).
	Dial func(ctx context.Context) (*pgx.Conn, error)
	// Current returns the collection's present trigger (state, λ, witness
	// edges, metrics) from the integrity loop; false when not sampled yet.
	Current func(collection string) (Trigger, bool)
	Holder  string
	// LeaderTTL is the leader row's lifetime, renewed every third of it
	// (default 15 s).
	LeaderTTL time.Duration
	// DegradedEvery is how often a collection that stays degraded is
	// triggered again (default 30 s; the engine's cooldown still applies).
	DegradedEvery time.Duration
	// LiftAfter: verified temporary remediations (strategy.Temporary) are
	// rolled back once their collection has been normal this long
	// (Engine.LiftTemporary); 0 never lifts them.
	LiftAfter time.Duration
	// HeldMax: a measure held in force for the episode's next remedy
	// (strategy.Holder) is lifted after this long if its collection never
	// got back to normal; 0 means DefaultHeldMax.
	HeldMax time.Duration
	Metrics ServiceMetrics
	Log     zerolog.Logger
}

// Service runs the engine in the daemon: triggers from the integrity loop,
// requests from SQL, leader election, start-up recovery.
type Service struct {
	cfg    ServiceConfig
	leader Leader
	wake   chan struct{}
	auto   chan Trigger

	mu       sync.Mutex
	isLeader bool
	queues   map[int64]*collQueue // collections with work in this process
	states   map[string]collState
	wg       sync.WaitGroup
	// recovering: an orphan recovery is running (recoverOrphans);
	// lifting: a lift of temporary remediations is (liftTemporary).
	recovering atomic.Bool
	lifting    atomic.Bool
}

type collState struct {
	state         strategy.IntegrityState
	degradedSince time.Time
	lastTrigger   time.Time
}

// NewService builds a service; Run runs it.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Engine == nil || cfg.Dial == nil {
		return nil, errors.New("healing: NewService needs an engine and a dialer")
	}
	if cfg.LeaderTTL <= 0 {
		cfg.LeaderTTL = 15 * time.Second
	}
	if cfg.DegradedEvery <= 0 {
		cfg.DegradedEvery = 30 * time.Second
	}
	if cfg.Holder == "" {
		cfg.Holder = cfg.Engine.opts.Holder
	}
	if cfg.HeldMax <= 0 {
		cfg.HeldMax = DefaultHeldMax
	}
	return &Service{cfg: cfg, leader: Leader{Holder: cfg.Holder, TTL: cfg.LeaderTTL},
		wake: make(chan struct{}, 1), auto: make(chan Trigger, 64),
		queues: map[int64]*collQueue{}, states: map[string]collState{}}, nil
}

// DefaultHeldMax bounds a held measure (ServiceConfig.HeldMax): long
// enough for the episode's other remedies, each verified within minutes,
// short enough that an uncured problem soon goes back to a person with
// nothing of the sidecar's left in force.
const DefaultHeldMax = 10 * time.Minute

// IsLeader reports whether this process is the active sidecar.
func (s *Service) IsLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isLeader
}

// Observe is called by the integrity loop after every sample of a
// collection. It never blocks: it decides whether the sample is a trigger
// (a transition from normal into stress or critical, an escalation from
// stress to critical, or still degraded DegradedEvery after the last
// trigger while λ is below the restore level) and queues it.
func (s *Service) Observe(tr Trigger, now time.Time) {
	s.mu.Lock()
	prev := s.states[tr.Collection]
	cur := prev
	cur.state = tr.State
	degraded := tr.State == strategy.StateStress || tr.State == strategy.StateCritical
	fire := false
	switch {
	case degraded && prev.degradedSince.IsZero():
		cur.degradedSince = now
		fire = true
	case degraded && now.Sub(prev.lastTrigger) >= s.cfg.DegradedEvery:
		// Back at the restore level, the state only waits out its restore
		// hold: a trigger now would be classified on whatever is weakest in
		// a graph that is healthy again (a streaming replica's milliseconds
		// of lag, a tie of healthy bundles) and act on nothing.
		fire = tr.RestoreLambda <= 0 || tr.Lambda < tr.RestoreLambda
	case tr.State == strategy.StateCritical && prev.state == strategy.StateStress:
		// Escalation is news: the response is graduated by state.
		fire = true
	case !degraded && tr.State == strategy.StateNormal && !prev.degradedSince.IsZero():
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Recovered(tr.Collection, now.Sub(prev.degradedSince))
		}
		cur.degradedSince = time.Time{}
	}
	if fire {
		cur.lastTrigger = now
	}
	s.states[tr.Collection] = cur
	leader := s.isLeader
	s.mu.Unlock()
	if !fire || !leader {
		return
	}
	select {
	case s.auto <- tr:
	default:
		s.cfg.Log.Warn().Str("collection", tr.Collection).Msg("healing trigger dropped: the queue is full")
	}
}

// Run serves until ctx ends or a connection fails (the caller restarts
// it: a fresh start re-LISTENs and rescans pending requests).
func (s *Service) Run(ctx context.Context) error {
	ctl, err := s.cfg.Dial(ctx)
	if err != nil {
		return fmt.Errorf("healing: control connection: %w", err)
	}
	defer ctl.Close(context.WithoutCancel(ctx))
	lis, err := s.cfg.Dial(ctx)
	if err != nil {
		return fmt.Errorf("healing: listen connection: %w", err)
	}
	defer lis.Close(context.WithoutCancel(ctx))
	if _, err := lis.Exec(ctx, `LISTEN `+RequestChannel); err != nil {
		return fmt.Errorf("healing: LISTEN: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	lisDone := make(chan struct{})
	defer func() {
		cancel()
		// The listener and the attempts end before their connections close.
		<-lisDone
		s.wg.Wait()
		s.mu.Lock()
		s.isLeader = false
		s.mu.Unlock()
		rctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		// Step down at once rather than make a standby wait out the TTL.
		_, _ = ctl.Exec(rctx, `DELETE FROM ruvector.healing_leader WHERE token = $1`, s.leader.token)
	}()
	errc := make(chan error, 2)
	go func() {
		defer close(lisDone)
		for {
			n, err := lis.WaitForNotification(ctx)
			if err != nil {
				errc <- fmt.Errorf("healing: waiting for requests: %w", err)
				return
			}
			s.cfg.Log.Debug().Str("payload", n.Payload).Msg("healing request notified")
			s.poke()
		}
	}()
	var ctlMu sync.Mutex
	withCtl := func(fn func(*pgx.Conn) error) error {
		ctlMu.Lock()
		defer ctlMu.Unlock()
		return fn(ctl)
	}
	renew := time.NewTicker(s.cfg.LeaderTTL / 3)
	defer renew.Stop()
	if err := s.tick(ctx, withCtl); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-renew.C:
			if err := s.tick(ctx, withCtl); err != nil {
				return err
			}
		case <-s.wake:
			if s.IsLeader() {
				if err := s.serveRequests(ctx, withCtl); err != nil {
					return err
				}
			}
		case tr := <-s.auto:
			if s.IsLeader() {
				s.spawnAuto(ctx, tr.CollectionID, func(ctx context.Context) {
					if s.recovered(tr) {
						return
					}
					out, err := s.cfg.Engine.Heal(ctx, tr)
					s.logAuto(tr, out, err)
				})
			}
		}
	}
}

// recovered reports (and logs) that a queued trigger's collection is
// normal by the latest sample: the trigger waited while another attempt
// on the collection ran, and that attempt cured it. Acting on it anyway
// "verified" a throttle on a healthy collection, which then stayed in
// force until the collection next recovered from something else (scorecard
// run 20: the workload's inserts at half rate for ten minutes).
func (s *Service) recovered(tr Trigger) bool {
	if s.cfg.Current == nil {
		return false
	}
	cur, ok := s.cfg.Current(tr.Collection)
	if !ok || cur.CollectionID != tr.CollectionID || cur.State != strategy.StateNormal {
		return false
	}
	s.cfg.Log.Info().Str("collection", tr.Collection).Str("trigger_state", string(tr.State)).
		Float64("lambda", cur.Lambda).Msg("healing trigger outdated: the collection is normal again")
	return true
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// tick renews or contends for leadership; on becoming leader it publishes
// the strategies, recovers orphaned remediations and scans the requests
// that waited.
func (s *Service) tick(ctx context.Context, withCtl func(func(*pgx.Conn) error) error) error {
	var now bool
	err := withCtl(func(c *pgx.Conn) error {
		var err error
		now, err = s.leader.Try(ctx, c)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.mu.Lock()
	was := s.isLeader
	s.isLeader = now
	s.mu.Unlock()
	if now && !was {
		s.cfg.Log.Info().Str("holder", s.cfg.Holder).Msg("healing: this sidecar is the active one")
		if err := withCtl(func(c *pgx.Conn) error { return s.publish(ctx, c) }); err != nil {
			return err
		}
	} else if !now && was {
		s.cfg.Log.Warn().Msg("healing: leadership lost; standing by")
	}
	if s.cfg.Metrics != nil {
		cfg, err := s.cfg.Engine.Config(ctx)
		s.cfg.Metrics.SetEnabled(err == nil && cfg.Enabled && now)
	}
	if now {
		s.recoverOrphans(ctx)
		s.liftTemporary(ctx)
		// Every tick, not only on a notify: requests whose notify was
		// missed (sent while the listener reconnected) are served too.
		return s.serveRequests(ctx, withCtl)
	}
	return nil
}

// recoverOrphans finishes, in the background, the remediations a dead
// sidecar left running. On every tick, not only when this sidecar becomes
// the active one: a holder that dies while another sidecar already leads
// leaves its orphan behind a lease that expires only later. One recovery at
// a time; its rollbacks must not hold up the leader row's renewal.
func (s *Service) recoverOrphans(ctx context.Context) {
	if !s.recovering.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.recovering.Store(false)
		ids, err := s.cfg.Engine.Recover(ctx)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Error().Err(err).Msg("healing: recovery of orphaned remediations failed")
		} else if len(ids) > 0 {
			s.cfg.Log.Warn().Ints64("outcome_ids", ids).Msg("healing: finished remediations a dead sidecar left running")
		}
	}()
}

// liftTemporary lifts, in the background, the temporary remediations whose
// collection has been normal for LiftAfter, and the held measures older
// than HeldMax. One lift at a time, like
// recoverOrphans, so rollbacks never hold up the leader row's renewal.
func (s *Service) liftTemporary(ctx context.Context) {
	if !s.lifting.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.lifting.Store(false)
		// LiftAfter 0 keeps verified measures; held ones are bounded anyway.
		ids, err := s.cfg.Engine.LiftTemporary(ctx, s.cfg.LiftAfter)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn().Err(err).Msg("healing: lifting temporary remediations")
		}
		held, err := s.cfg.Engine.LiftHeld(ctx, s.cfg.HeldMax)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn().Err(err).Msg("healing: lifting held measures")
		}
		if len(held) > 0 {
			s.cfg.Log.Warn().Ints64("outcome_ids", held).Dur("held_max", s.cfg.HeldMax).
				Msg("healing: lifted held measures: no remedy cured the problem under them in time")
		}
		if len(ids) > 0 {
			s.cfg.Log.Info().Ints64("outcome_ids", ids).Dur("normal_for_at_least", s.cfg.LiftAfter).
				Msg("healing: lifted temporary remediations")
		}
	}()
}

// publish writes this sidecar's strategies for SQL (name checks, dry runs).
func (s *Service) publish(ctx context.Context, c *pgx.Conn) error {
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ruvector.healing_strategies`); err != nil {
			return err
		}
		for _, st := range s.cfg.Engine.reg.Strategies() {
			handles := make([]string, 0, len(st.Handles()))
			for _, h := range st.Handles() {
				handles = append(handles, string(h))
			}
			if _, err := tx.Exec(ctx, `INSERT INTO ruvector.healing_strategies
				(name, handles, impact, estimated_duration_ms, reversible, published_by) VALUES ($1, $2, $3, $4, $5, $6)`,
				st.Name(), handles, float32(st.Impact()), st.EstimatedDuration().Milliseconds(), st.Reversible(), s.cfg.Holder); err != nil {
				return fmt.Errorf("healing: publish strategy %s: %w", st.Name(), err)
			}
		}
		return nil
	})
}

type request struct {
	id, collID, actionID int64
	kind, strategy, coll string
	params               json.RawMessage
}

// serveRequests expires stale requests and claims every pending one.
func (s *Service) serveRequests(ctx context.Context, withCtl func(func(*pgx.Conn) error) error) error {
	for {
		var r request
		var actionID, collID *int64
		var strat, coll *string
		err := withCtl(func(c *pgx.Conn) error {
			if _, err := c.Exec(ctx, `UPDATE ruvector.healing_requests SET status = 'expired', finished_at = expires_at,
				error = 'no sidecar served the request before it expired'
				WHERE status = 'pending' AND expires_at <= clock_timestamp()`); err != nil {
				return err
			}
			return c.QueryRow(ctx, `UPDATE ruvector.healing_requests q SET status = 'running', claimed_by = $1,
					claimed_at = clock_timestamp()
				WHERE q.id = (SELECT id FROM ruvector.healing_requests WHERE status = 'pending'
					AND expires_at > clock_timestamp() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
				RETURNING q.id, q.kind, q.collection_id::int8, q.action_id, q.strategy, q.params::text,
					(SELECT c.name FROM ruvector.collections c WHERE c.collection_id = q.collection_id)`,
				s.cfg.Holder).Scan(&r.id, &r.kind, &collID, &actionID, &strat, &r.params, &coll)
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("healing: claim request: %w", err)
		}
		if collID != nil {
			r.collID = *collID
		}
		if actionID != nil {
			r.actionID = *actionID
		}
		if strat != nil {
			r.strategy = *strat
		}
		if coll != nil {
			r.coll = *coll
		}
		s.cfg.Log.Info().Int64("request_id", r.id).Str("kind", r.kind).Str("collection", r.coll).
			Int64("action_id", r.actionID).Str("strategy", r.strategy).Msg("healing request claimed")
		if r.kind == "abort" {
			// Served at once, never behind the attempt it aborts.
			aborted := s.cfg.Engine.Abort(r.actionID)
			res := map[string]any{"aborted": aborted}
			var rerr error
			if !aborted {
				rerr = fmt.Errorf("action %d is not running in this sidecar (it may have finished)", r.actionID)
			}
			s.finishRequest(ctx, r.id, 0, res, rerr)
			continue
		}
		if r.kind == "plan" {
			// A dry run takes no lease and changes nothing, so it is not
			// queued behind the collection's running attempt.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.servePlan(ctx, r)
			}()
			continue
		}
		s.spawn(ctx, r.collID, func(ctx context.Context) { s.serve(ctx, r) })
	}
}

// collQueue is one collection's work in this process: one item runs at a
// time (the lease enforces it across processes). A person's requests run
// in the order they came and before any automatic attempt, so a persisting
// problem whose automatic attempts follow one another cannot starve them;
// automatic attempts waiting behind a running one collapse into the newest,
// which carries the freshest trigger.
type collQueue struct {
	requests []func(context.Context)
	auto     func(context.Context)
}

// spawn queues a request's work for a collection.
func (s *Service) spawn(ctx context.Context, collID int64, fn func(context.Context)) {
	s.enqueue(ctx, collID, func(q *collQueue) { q.requests = append(q.requests, fn) })
}

// spawnAuto queues an automatic attempt for a collection, replacing one
// that is still waiting.
func (s *Service) spawnAuto(ctx context.Context, collID int64, fn func(context.Context)) {
	s.enqueue(ctx, collID, func(q *collQueue) { q.auto = fn })
}

func (s *Service) enqueue(ctx context.Context, collID int64, add func(*collQueue)) {
	s.mu.Lock()
	q, running := s.queues[collID]
	if !running {
		q = &collQueue{}
		s.queues[collID] = q
	}
	add(q)
	s.mu.Unlock()
	if running {
		return // the collection's runner takes it next
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			s.mu.Lock()
			var fn func(context.Context)
			switch {
			case ctx.Err() != nil:
			case len(q.requests) > 0:
				fn = q.requests[0]
				q.requests = q.requests[1:]
			case q.auto != nil:
				fn, q.auto = q.auto, nil
			}
			if fn == nil {
				delete(s.queues, collID)
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			fn(ctx)
		}
	}()
}

func (s *Service) current(ctx context.Context, name string, id int64) Trigger {
	if s.cfg.Current != nil {
		if tr, ok := s.cfg.Current(name); ok && tr.CollectionID == id {
			return tr
		}
	}
	// Not sampled yet: what the segment says, state unknown.
	tr := Trigger{Collection: name, CollectionID: id}
	if l, err := s.cfg.Engine.sampler.Sample(ctx, name, id); err == nil {
		tr.Lambda = l
	}
	return tr
}

func (s *Service) serve(ctx context.Context, r request) {
	tr := s.current(ctx, r.coll, r.collID)
	var (
		out Outcome
		err error
		oid int64
	)
	switch r.kind {
	case "trigger":
		out, err = s.cfg.Engine.Heal(ctx, tr)
		oid = out.ID
	case "approve":
		out, err = s.cfg.Engine.Approve(ctx, tr, r.actionID)
		oid = out.ID
	case "execute":
		var params json.RawMessage
		if len(r.params) > 0 && string(r.params) != "{}" {
			params = r.params
		}
		out, err = s.cfg.Engine.Execute(ctx, tr, r.strategy, params)
		oid = out.ID
	case "rollback":
		oid, err = s.cfg.Engine.RollbackOutcome(ctx, r.coll, r.collID, r.actionID)
		s.finishRequest(ctx, r.id, oid, map[string]any{"rolled_back": err == nil, "rollback_of": r.actionID}, err)
		return
	default:
		err = fmt.Errorf("unknown request kind %q", r.kind)
	}
	if err == nil && out.Status == StatusFailed {
		err = errors.New(out.Error)
	}
	if err == nil && out.Status == StatusBusy {
		err = errors.New(out.Reason)
	}
	s.finishRequest(ctx, r.id, oid, map[string]any{"status": out.Status, "reason": out.Reason,
		"verified": out.Verified, "rolled_back": out.RolledBack, "strategy": out.Strategy}, err)
	s.noteCooldown(ctx, tr.Collection, out)
}

// servePlan answers a dry-run request with the strategy's plan (see
// Engine.Plan); the plan is the request's result.
func (s *Service) servePlan(ctx context.Context, r request) {
	var params json.RawMessage
	if len(r.params) > 0 && string(r.params) != "{}" {
		params = r.params
	}
	doc, err := s.cfg.Engine.Plan(ctx, s.current(ctx, r.coll, r.collID), r.strategy, params)
	s.finishRequest(ctx, r.id, 0, doc, err)
}

func (s *Service) noteCooldown(ctx context.Context, collection string, out Outcome) {
	if s.cfg.Metrics == nil || out.ID == 0 || out.Status == StatusPendingApproval {
		return
	}
	if cfg, err := s.cfg.Engine.Config(ctx); err == nil {
		s.cfg.Metrics.SetCooldownUntil(collection, time.Now().Add(cfg.MinHealingInterval))
	}
}

func (s *Service) logAuto(tr Trigger, out Outcome, err error) {
	if err != nil {
		s.cfg.Log.Error().Err(err).Str("collection", tr.Collection).Msg("healing attempt failed")
		return
	}
	s.cfg.Log.Info().Str("collection", tr.Collection).Str("state", string(tr.State)).
		Str("status", string(out.Status)).Int64("outcome_id", out.ID).Str("reason", out.Reason).Msg("healing trigger handled")
	s.noteCooldown(context.Background(), tr.Collection, out)
}

// finishRequest records a request's end; it uses its own connection
// because the control connection may be busy claiming.
func (s *Service) finishRequest(ctx context.Context, id, outcome int64, result map[string]any, rerr error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	status := "done"
	var msg *string
	if rerr != nil {
		status = "failed"
		m := rerr.Error()
		msg = &m
	}
	var oid *int64
	if outcome != 0 {
		oid = &outcome
	}
	doc, _ := json.Marshal(result)
	err := s.cfg.Engine.withConn(fctx, func(c *pgx.Conn) error {
		_, err := c.Exec(fctx, `UPDATE ruvector.healing_requests SET status = $2, finished_at = clock_timestamp(),
			outcome_id = $3, result = $4::jsonb, error = $5 WHERE id = $1`, id, status, oid, string(doc), msg)
		return err
	})
	if err != nil {
		s.cfg.Log.Error().Err(err).Int64("request_id", id).Msg("recording the end of a healing request failed")
		return
	}
	s.cfg.Log.Info().Int64("request_id", id).Str("status", status).Int64("outcome_id", outcome).
		AnErr("error", rerr).Msg("healing request finished")
}
