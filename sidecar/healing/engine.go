// Package healing is the remediation engine of the self-healing design:
// Heal takes an integrity trigger through classify → gate → select →
// (approval) → execute → verify → rollback → record → learn.
//
// One remediation at a time per collection is enforced in the database by
// a row lease in ruvector.healing_leases (see acquire): a lease, rather than
// a session advisory lock, because an advisory lock vanishes with the
// holder's connection while the holder may still be acting (a strategy
// mid-way, a rollback pending), so a second sidecar could act at the same
// time. A lease outlives a dropped connection until it expires: nobody else
// acts meanwhile (fail closed). The lease is short (Options.LeaseTTL) and
// renewed by its holder every third of it for as long as the attempt runs,
// so a live holder keeps it through any long strategy, and a dead one (a
// SIGKILLed sidecar) loses it within the TTL: the active sidecar then
// recovers its orphan on its next tick (Recover). Every durable step of an
// attempt (recording a rollback action before taking it) is fenced on the
// lease token, so a holder whose lease was taken over cannot act on.
//
// Outcomes are rows of ruvector.healing_outcomes, sealed into the signed
// audit chain of package audit when they reach pending_approval or done.
package healing

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healconfig"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/learning"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// VerifyImprovement is the design's bar: λ must rise above 1.1 × initial λ.
const VerifyImprovement = 1.1

// Errors callers branch on.
var (
	// ErrLeaseLost: the collection's lease expired or was taken over while
	// the attempt ran; the engine stopped acting.
	ErrLeaseLost = errors.New("healing: lease lost")
	// ErrAttemptOver: a strategy recorded an action after its attempt ended
	// (it ignored its context); the action must not be taken.
	ErrAttemptOver = errors.New("healing: attempt is over")
)

// Trigger is what the integrity monitor hands the engine.
type Trigger struct {
	Collection   string
	CollectionID int64
	TenantID     string
	State        strategy.IntegrityState
	// Lambda is λ (normalised) when the trigger fired.
	Lambda float64
	// RestoreLambda is the level at which the collection's integrity policy
	// calls it healthy again: threshold_high + restore_threshold_offset
	// (0: unknown). Strategies that work in steps aim for it.
	RestoreLambda float64
	Witness       []classify.WitnessEdge
	Metrics       classify.Metrics
	// UnknownKinds are the signal kinds (health.Kind*) whose collector
	// failed or was warming up in the sample: their edges carry the
	// unknown capacity, not a measurement.
	UnknownKinds []string
}

// classSignal is the signal kind a class is measured by ("" for none).
func classSignal(c classify.Class) string {
	switch c {
	case classify.ClassHotspotCongestion:
		return health.KindPartitions
	case classify.ClassCentroidSkew:
		return health.KindCentroids
	case classify.ClassReplicationLag:
		return health.KindReplicas
	case classify.ClassMaintenanceContention:
		return health.KindMaintenance
	case classify.ClassIndexFragmentation:
		return health.KindIndexes
	case classify.ClassMemoryPressure:
		return health.KindMemory
	}
	return ""
}

// unmeasured says why a problem is not acted on when the signals it was
// classified from were not measured this sample, or "".
func unmeasured(p classify.Problem, tr Trigger) string {
	kind := classSignal(p.Class)
	if kind == "" || !slices.Contains(tr.UnknownKinds, kind) {
		return ""
	}
	return fmt.Sprintf("the %s signals were not measured this sample (their collector failed, timed out or is warming up): "+
		"their edges carry the unknown capacity, so %s is not a measurement; not acting on it", kind, p.Class)
}

// TargetLambda is what a stepwise strategy aims for: the level that ends
// the problem (the restore level, capped at 1), and never less than the
// verification bar (VerifyImprovement × initial λ). Verification itself
// keeps the design's bar: a remediation that lifts λ above it is verified
// even if the collection is not yet restored.
func (tr Trigger) TargetLambda() float64 {
	return max(tr.Lambda*VerifyImprovement, min(tr.RestoreLambda, 1))
}

// Status is how an attempt ended.
type Status string

// Statuses.
const (
	StatusDeferred        Status = "deferred"         // not auto-healed: disabled, unknown, cooldown, limits, ineffective
	StatusNoStrategy      Status = "no_strategy"      // nothing eligible
	StatusBusy            Status = "busy"             // another remediation is active on the collection
	StatusPendingApproval Status = "pending_approval" // queued for a human, nothing done
	StatusVerified        Status = "verified"         // executed and λ improved enough
	StatusUnverified      Status = "unverified"       // executed, λ did not improve enough
	StatusFailed          Status = "failed"           // error, timeout or panic
	StatusNoop            Status = "noop"             // the strategy found nothing to do; nothing changed
)

// Outcome is the result of Heal.
type Outcome struct {
	Status Status `json:"status"`
	Reason string `json:"reason"`
	// ID is the healing_outcomes row, 0 when none was written.
	ID         int64               `json:"id"`
	Decision   classify.Decision   `json:"decision"`
	Selection  *strategy.Selection `json:"selection,omitempty"`
	Strategy   string              `json:"strategy,omitempty"`
	Result     strategy.Result     `json:"result"`
	Error      string              `json:"error,omitempty"`
	Verified   bool                `json:"verified"`
	RolledBack bool                `json:"rolled_back"`
	// Held says why an unverified temporary measure was kept in force for
	// the episode's next remedy (strategy.Holder); "" when it was not.
	Held string `json:"held,omitempty"`
	// HoldCheck is what the hold check measured, held or not.
	HoldCheck string `json:"hold_check,omitempty"`
	// InitialLambda and FinalLambda (NaN-free: 0 when not sampled).
	InitialLambda float64       `json:"initial_lambda"`
	FinalLambda   float64       `json:"final_lambda"`
	Duration      time.Duration `json:"duration"`
	// Signal is the problem's own measure before and after (nil for a
	// problem class without one).
	Signal *Signal `json:"signal,omitempty"`
	// Stabilization is the wait before verification; SignalRefresh the
	// time the problem's measurements needed to reflect the change (0:
	// unknown).
	Stabilization time.Duration `json:"stabilization"`
	SignalRefresh time.Duration `json:"signal_refresh"`
	// Waited is how long verification waited after Execute: Stabilization
	// less the time since the strategy's own last change
	// (strategy.Result.LastChange), if it reported one.
	Waited time.Duration `json:"waited"`
}

// Sampler measures a collection's current λ for verification.
type Sampler interface {
	Sample(ctx context.Context, collection string, collectionID int64) (float64, error)
}

// Options tune an Engine.
type Options struct {
	// Holder names this engine in leases (e.g. "sidecar@host:pid").
	Holder string
	// Stabilization, when > 0, replaces the configured stabilization wait.
	Stabilization time.Duration
	// LeaseTTL is the collection lease's lifetime (default 30 s); the
	// holder renews it every third of it while it acts, so it bounds how
	// long a dead holder's remediation stays orphaned, not how long an
	// attempt may take.
	LeaseTTL time.Duration
	// IneffectiveAfter consecutive unverified attempts in the attempt
	// window stop automatic healing of the collection (default 2).
	IneffectiveAfter int
	// Log gets one line when a remediation starts and one when it ends,
	// both with the outcome id (zero value: no logging).
	Log zerolog.Logger
	// Observer, if set, is told about every remediation (the metrics).
	Observer Observer
	// Current, if set, returns a collection's present state (the integrity
	// loop's latest sample): after the stabilisation wait the engine
	// measures the problem's own signal (load ratio, skew, lag, ...) from
	// it, so the record shows the symptom before and after, not only λ.
	Current func(collection string) (Trigger, bool)
	// SignalRefresh, if set, is how long after a change the measurements
	// behind a problem class reflect only the new state (a collector's
	// rates cover its whole period, so: the first full period after the
	// action, plus its publication). A configured stabilization_seconds
	// shorter than that is raised to it, because λ sampled earlier still
	// measures the system before the remediation. An explicit
	// Options.Stabilization is taken as given (and the record says whether
	// it covered the refresh).
	SignalRefresh func(classify.Class) time.Duration
	// Dial, if set, replaces the engine's connection when it is found
	// closed. pgx closes a connection whose query is cancelled by its
	// context (a lease renewal bounded by the lease's TTL, a rollback by
	// its timeout), and without a new one every later record of the
	// engine, the outcome of the attempt under way included, fails with
	// "conn closed" (seen in CI on a loaded machine).
	Dial func(context.Context) (*pgx.Conn, error)
	// DeclineBackoff is how long a strategy that declined a problem is not
	// asked again for it while nothing acts (0: DefaultDeclineBackoff;
	// negative: always asked).
	DeclineBackoff time.Duration
}

// Observer is what the engine tells the metrics; it is called on the
// attempt's goroutine and must not block.
type Observer interface {
	RemediationStarted(collection, strategy string)
	RemediationFinished(collection, strategy string, out Outcome)
}

// Engine heals collections. It is safe for concurrent use; its connection
// is used by one goroutine at a time.
type Engine struct {
	conn    *pgx.Conn
	lock    chan struct{}
	reg     *strategy.Registry
	sampler Sampler
	key     *audit.Key
	opts    Options

	mu      sync.Mutex
	running map[int64]context.CancelCauseFunc // outcome id → abort
}

// ErrAborted is the cause an aborted attempt's context carries.
var ErrAborted = errors.New("aborted by an operator (ruvector_healing_abort)")

// Abort cancels the running attempt with outcome id; false when this engine
// is not running it.
func (e *Engine) Abort(id int64) bool {
	e.mu.Lock()
	cancel, ok := e.running[id]
	e.mu.Unlock()
	if ok {
		cancel(ErrAborted)
	}
	return ok
}

// New returns an engine using conn (which it owns from now on) and records
// the audit key's public half in the database.
func New(ctx context.Context, conn *pgx.Conn, reg *strategy.Registry, sampler Sampler, key *audit.Key, opts Options) (*Engine, error) {
	if conn == nil || reg == nil || sampler == nil || key == nil {
		return nil, errors.New("healing: New needs a connection, a registry, a sampler and a key")
	}
	if opts.Holder == "" {
		opts.Holder = "ruvector-sidecar"
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 30 * time.Second
	}
	if opts.IneffectiveAfter <= 0 {
		opts.IneffectiveAfter = 2
	}
	e := &Engine{conn: conn, lock: make(chan struct{}, 1), reg: reg, sampler: sampler, key: key, opts: opts,
		running: map[int64]context.CancelCauseFunc{}}
	if err := e.withConn(ctx, func(c *pgx.Conn) error { return audit.RegisterKey(ctx, c, key) }); err != nil {
		return nil, err
	}
	return e, nil
}

// withConn runs fn with exclusive use of the connection.
func (e *Engine) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-e.lock }()
	if e.conn.IsClosed() && e.opts.Dial != nil {
		c, err := e.opts.Dial(ctx)
		if err != nil {
			return fmt.Errorf("healing: the engine's connection was closed; reconnect: %w", err)
		}
		e.opts.Log.Warn().Msg("healing: the engine's connection was closed (a query cancelled by its deadline); reconnected")
		e.conn = c
	}
	return fn(e.conn)
}

// Close closes the engine's connection (the one it was given, or the one
// that replaced it).
func (e *Engine) Close(ctx context.Context) error {
	e.lock <- struct{}{}
	defer func() { <-e.lock }()
	return e.conn.Close(ctx)
}

// Config reads the stored healing configuration (defaults when none).
func (e *Engine) Config(ctx context.Context) (healconfig.Config, error) {
	var doc []byte
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT config::text FROM ruvector.healing_config`).Scan(&doc)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return healconfig.Default(), nil
	}
	if err != nil {
		return healconfig.Config{}, fmt.Errorf("healing: read config: %w", err)
	}
	cfg, err := healconfig.Parse(doc)
	if err != nil {
		return healconfig.Config{}, fmt.Errorf("healing: stored config: %w", err)
	}
	return cfg, nil
}

// Heal runs one healing attempt for the trigger. The error is for
// infrastructure failures (database); every decision, including a failed
// remediation, is an Outcome.
func (e *Engine) Heal(ctx context.Context, tr Trigger) (Outcome, error) {
	cfg, err := e.Config(ctx)
	if err != nil {
		return Outcome{}, err
	}
	dec := classify.Classify(tr.Witness, tr.Metrics, cfg.Classifier)
	out := Outcome{Decision: dec, InitialLambda: tr.Lambda}
	if !cfg.Enabled {
		return deferred(out, "automatic healing is disabled (healing_config enabled = false)"), nil
	}
	if dec.Problem.Class == classify.ClassUnknown {
		return deferred(out, "unknown problem: it needs human investigation"), nil
	}
	if reason := unmeasured(dec.Problem, tr); reason != "" {
		// A scorecard run found a collection's partitions collector
		// stalled behind another collection's REINDEX: every partition
		// link read the unknown capacity, which classified as a hotspot,
		// and drain acted on it.
		out.Decision.Notes = append(slices.Clone(out.Decision.Notes), reason)
		return deferred(out, reason), nil
	}
	stall := replayStalled(dec.Problem, tr)
	if stall.reason != "" {
		// Handed over like ineffective healing (deferred, a reason for the
		// log and the request), and before any attempt: the WAL-reducing
		// strategies would cut the workload for nothing, be rolled back
		// unverified, and only then trip the ineffective rule. The note
		// puts it in the decision's explanation too. Only a strategy that
		// acts on the standby itself may run, once the stall has outlasted
		// its grace.
		grace, ok := e.replayStallGrace(ctx)
		reason := ""
		switch {
		case stall.waiting:
			reason = stall.reason
		case !ok:
			reason = stall.reason + handOverStall
		case stall.seconds < grace.Seconds():
			reason = fmt.Sprintf("%s; a paused replay is resumed once stalled for %s, unless a person ends the pause first",
				stall.reason, grace)
		}
		if reason != "" {
			out.Decision.Notes = append(slices.Clone(out.Decision.Notes), reason)
			return deferred(out, reason), nil
		}
		out.Decision.Notes = append(slices.Clone(out.Decision.Notes), stall.reason)
	}
	stab := e.stabilization(cfg, dec.Problem.Class)

	l, holder, err := e.acquire(ctx, tr.CollectionID)
	if err != nil {
		return Outcome{}, err
	}
	if l == nil {
		out.Status = StatusBusy
		out.Reason = fmt.Sprintf("another remediation is active on collection %q (%s)", tr.Collection, holder)
		return out, nil
	}
	defer e.release(ctx, l)

	weights, err := e.Weights(ctx)
	if err != nil {
		return Outcome{}, err
	}
	lim := cfg.SelectionLimits(weights)
	if lim.Tried, err = e.triedThisEpisode(ctx, tr.CollectionID, dec.Problem.Class, cfg.AttemptWindow.Seconds()); err != nil {
		return Outcome{}, err
	}
	if lim.Held, err = e.heldInForce(ctx, tr.CollectionID); err != nil {
		return Outcome{}, err
	}
	if lim.Declined, err = e.declinedRecently(ctx, tr.CollectionID, dec.Problem.Class); err != nil {
		return Outcome{}, err
	}
	lim.ReplayStalled = stall.reason
	sel := e.reg.Select(ctx, dec.Problem, lim)
	// A strategy not yet tried for this problem in this episode is an
	// escalation, which the ineffective-healing stop lets through: the
	// stop is for repeating what did not work, not for trying the next
	// remedy (max_attempts_per_hour still bounds the attempts).
	escalation := sel.Found() && lim.Tried[sel.Chosen] == 0
	if reason, err := e.gate(ctx, tr.CollectionID, cfg, escalation); err != nil {
		return Outcome{}, err
	} else if reason != "" {
		return deferred(out, reason), nil
	}
	declined := map[string]bool{}
	for {
		out.Selection = &sel
		if !sel.Found() && stall.reason != "" {
			return deferred(out, stall.reason+handOverStall+": "+oneLine(sel.Explain())), nil
		}
		if !sel.Found() {
			out.Status = StatusNoStrategy
			out.Reason = "no eligible strategy for " + string(dec.Problem.Class) + ": " + sel.Explain()
			return out, nil
		}
		s := sel.Strategy
		out.Strategy = s.Name()
		decision, _ := json.Marshal(map[string]any{"classification": dec, "explanation": dec.Explain(),
			"selection": sel, "selection_explanation": sel.Explain(), "limits": limitsDoc(cfg, weights)})

		row := outcomeRow{collectionID: tr.CollectionID, tenant: tr.TenantID, problem: dec.Problem,
			strategy: s.Name(), initial: tr.Lambda, witness: tr.Witness, metrics: tr.Metrics, decision: decision}
		if sel.RequiresApproval {
			id, err := e.insertPending(ctx, row)
			if err != nil {
				return Outcome{}, err
			}
			out.ID = id
			out.Status = StatusPendingApproval
			out.Reason = fmt.Sprintf("strategy %s needs approval: pending action %d", s.Name(), id)
			return out, nil
		}
		res, err := e.attempt(ctx, tr, s, row, l, cfg, stab, out)
		if err != nil || res.Status != StatusNoop {
			return res, err
		}
		// A noop changed nothing (a strategy that found nothing to do or
		// declined a problem it cannot cool): the next candidate runs now,
		// under the same lease, rather than a cooldown and a trigger later.
		// Its record stays, and it counts as tried in the episode.
		declined[s.Name()] = true
		lim.Tried[s.Name()]++
		if lim.Declined == nil {
			lim.Declined = map[string]int64{}
		}
		lim.Declined[s.Name()] = res.ID
		// Every record counts toward max_attempts_per_hour, noops too: the
		// hand-over stops at the limit like separate attempts would.
		var attempts int
		if err := e.withConn(ctx, func(c *pgx.Conn) (err error) {
			_, attempts, err = attemptHistory(ctx, c, tr.CollectionID, cfg.AttemptWindow)
			return err
		}); err != nil {
			return res, fmt.Errorf("healing: attempts of collection %d: %w", tr.CollectionID, err)
		}
		if attempts >= cfg.MaxAttemptsPerHour {
			return res, nil
		}
		next := e.reg.Select(ctx, dec.Problem, lim)
		if !next.Found() || declined[next.Chosen] {
			return res, nil
		}
		sel = next
		out = Outcome{Decision: dec, InitialLambda: tr.Lambda}
	}
}

// attempt runs strategy s under the held lease l: record → execute →
// verify → roll back unless verified → seal the outcome → learn.
func (e *Engine) attempt(ctx context.Context, tr Trigger, s strategy.Strategy, row outcomeRow, l *lease,
	cfg healconfig.Config, stab time.Duration, out Outcome) (Outcome, error) {
	out.Strategy = s.Name()
	out.Stabilization = stab
	if e.opts.SignalRefresh != nil {
		out.SignalRefresh = e.opts.SignalRefresh(row.problem.Class)
	}
	id, started, err := e.insertRunning(ctx, row, l)
	if err != nil {
		return Outcome{}, err
	}
	out.ID = id
	// The attempt's own context: an operator's abort cancels it, and only
	// it; recording the outcome and learning go on with ctx.
	actx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	e.mu.Lock()
	e.running[id] = abort
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.running, id)
		e.mu.Unlock()
	}()
	e.opts.Log.Info().Int64("outcome_id", id).Str("collection", tr.Collection).Str("strategy", s.Name()).
		Str("problem_class", string(row.problem.Class)).Float64("initial_lambda", tr.Lambda).Msg("remediation started")
	if e.opts.Observer != nil {
		e.opts.Observer.RemediationStarted(tr.Collection, s.Name())
	}
	timeout := 2 * s.EstimatedDuration()
	rec := &dbRecorder{e: e, id: id, lease: l}
	rc := &strategy.Context{
		Problem: row.problem, Collection: tr.Collection, CollectionID: tr.CollectionID, State: tr.State,
		InitialLambda: tr.Lambda, TargetLambda: tr.TargetLambda(), Metrics: tr.Metrics,
		Params: row.params,
		Sample: func(ctx context.Context) (float64, error) {
			return e.sampler.Sample(ctx, tr.Collection, tr.CollectionID)
		},
		Recorder: rec, OutcomeID: id, Started: started, Timeout: timeout,
	}
	if e.opts.Current != nil {
		rc.Current = func() (classify.Metrics, bool) {
			cur, ok := e.opts.Current(tr.Collection)
			return cur.Metrics, ok
		}
	}

	res, execErr := e.execute(actx, s, rc, timeout, rec)
	if execErr != nil && errors.Is(context.Cause(actx), ErrAborted) {
		execErr = fmt.Errorf("%w: %w", ErrAborted, execErr)
	}
	out.Result = res
	failed := execErr != nil || !res.Success
	var verifiedPtr *bool
	var final *float64
	// The hold check of a temporary measure (strategy.Holder) runs during
	// the stabilization wait, not after it: it is needed only when λ does
	// not verify, and then it was 5 s more of every held cap's episode.
	wait := stab
	if !res.LastChange.IsZero() {
		wait = max(stab-time.Since(res.LastChange), 0)
	}
	hold := e.startHoldCheck(actx, s, rc, res, failed, timeout, wait)
	if !failed && !res.Noop {
		out.Waited = wait
		v, lam, verr := e.verify(actx, rc, wait)
		if verr != nil {
			if errors.Is(context.Cause(actx), ErrAborted) {
				verr = fmt.Errorf("%w: %w", ErrAborted, verr)
			}
			execErr = fmt.Errorf("verification: %w", verr)
			failed = true
		}
		verifiedPtr, final = &v, lam
		out.Verified = v
	}
	if execErr == nil && !res.Success && !res.Noop {
		execErr = errors.New("the strategy reported failure")
	}
	// The symptom itself, after the same wait as λ (before only when the
	// strategy did nothing or failed before verification).
	var after *classify.Metrics
	var afterAt time.Time
	if final != nil && e.opts.Current != nil {
		if cur, ok := e.opts.Current(tr.Collection); ok {
			after, afterAt = &cur.Metrics, time.Now()
		}
	}
	out.Signal = measureSignal(row.problem, tr.Metrics, after, afterAt)

	// An unverified measure that still holds the problem's cause is kept
	// for the next remedy of the episode (strategy.Holder); the lift of
	// temporary measures bounds how long.
	switch {
	case hold == nil:
	case failed || out.Verified:
		hold.stop()
	default:
		r := hold.wait()
		switch {
		case r.err != nil:
			e.opts.Log.Warn().Err(r.err).Int64("outcome_id", id).Msg("healing: could not tell whether the measure holds; rolling it back")
		case r.holds:
			out.Held = r.why
		}
		out.HoldCheck = r.why
	}
	// Roll back whatever was done unless it verified or is held. Failures
	// included: a strategy that timed out or panicked may have acted
	// half-way.
	if !out.Verified && out.Held == "" && !res.Noop && s.Reversible() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		rbErr := safeCall(func() error { return s.Rollback(rctx, rc) })
		cancel()
		if rbErr != nil {
			execErr = errors.Join(execErr, fmt.Errorf("rollback: %w", rbErr))
		} else {
			out.RolledBack = true
		}
	}

	switch {
	case out.Verified:
		out.Status = StatusVerified
	case res.Noop && execErr == nil:
		out.Status = StatusNoop
	case failed:
		out.Status = StatusFailed
	default:
		out.Status = StatusUnverified
	}
	if execErr != nil {
		out.Error = execErr.Error()
	}
	if final != nil {
		out.FinalLambda = *final
	}
	out.Duration = time.Since(started)
	out.Reason = fmt.Sprintf("%s: %s", s.Name(), out.Status)
	if out.Held != "" {
		out.Reason += ", held: " + out.Held
	}
	ferr := e.finish(ctx, id, out, verifiedPtr, final, rc)
	ev := e.opts.Log.Info()
	if out.Status == StatusFailed || ferr != nil {
		ev = e.opts.Log.Warn()
	}
	ev.Int64("outcome_id", id).Str("collection", tr.Collection).Str("strategy", s.Name()).
		Str("status", string(out.Status)).Bool("verified", out.Verified).Bool("rolled_back", out.RolledBack).
		Float64("final_lambda", out.FinalLambda).Dur("duration", out.Duration).Str("error", out.Error).
		AnErr("record_error", ferr).Msg("remediation finished")
	if e.opts.Observer != nil {
		e.opts.Observer.RemediationFinished(tr.Collection, s.Name(), out)
	}
	if ferr != nil {
		return out, ferr
	}
	if cfg.LearningEnabled {
		if err := e.UpdateWeights(context.WithoutCancel(ctx), time.Now()); err != nil {
			return out, err
		}
	}
	return out, nil
}

// replayStall is what replayStalled found.
type replayStall struct {
	// reason is why the lag is not the primary's WAL, "" when it may be.
	reason string
	// waiting: replay stands still, not yet long enough to be judged
	// stalled.
	waiting bool
	// seconds is the shortest stall among the lagging replicas.
	seconds float64
}

// handOverStall ends the reason of a stalled replay that no strategy acts
// on.
const handOverStall = "; needs a person (pg_wal_replay_resume, or a blocking query on the standby)"

// replayStalled says whether healing a replication_lag problem must leave
// the primary alone: every lagging replica (the problem's witness
// replicas, or failing those every replica with a lag) is stalled,
// receiving WAL but replaying none (classify.Metrics.ReplicaReplayStalledSeconds).
// The WAL-reducing strategies help a replica that replays too slowly and
// cannot help one that does not replay at all. One replica still
// replaying is enough to act as usual: it is the one they help. While a
// lagging replica has not replayed since the last samples but is not yet
// read as stalled (ReplicaReplayWaitingSeconds), the engine waits for the
// judgement.
func replayStalled(p classify.Problem, tr Trigger) replayStall {
	if p.Class != classify.ClassReplicationLag ||
		len(tr.Metrics.ReplicaReplayStalledSeconds)+len(tr.Metrics.ReplicaReplayWaitingSeconds) == 0 {
		return replayStall{}
	}
	var lagging []int64
	if p.ReplicationLag != nil {
		lagging = p.ReplicationLag.ReplicaIDs
	}
	if len(lagging) == 0 {
		for id, lag := range tr.Metrics.ReplicaLagSeconds {
			if lag > 0 {
				lagging = append(lagging, id)
			}
		}
		slices.Sort(lagging)
	}
	if len(lagging) == 0 {
		return replayStall{}
	}
	names := map[int64]string{}
	for id, n := range tr.Metrics.ReplicaNames {
		names[id] = n
	}
	for _, w := range tr.Witness {
		for _, n := range []classify.NodeRef{w.Source, w.Target} {
			if n.Kind == classify.NodeReplica && n.Name != "" {
				names[n.ID] = n.Name
			}
		}
	}
	parts := make([]string, 0, len(lagging))
	st := replayStall{seconds: math.Inf(1)}
	for _, id := range lagging {
		secs, ok := tr.Metrics.ReplicaReplayStalledSeconds[id]
		if !ok {
			// Not stalled yet, but not replaying since the last samples
			// either: the stall judgement is a few seconds away, and
			// acting first would cut the workload for a replica that may
			// be paused (a scorecard run paused maintenance on two
			// collections 10 s into a paused replay, then rolled both
			// back).
			if secs, ok = tr.Metrics.ReplicaReplayWaitingSeconds[id]; !ok || secs < minReplayWaiting.Seconds() {
				return replayStall{}
			}
			st.waiting = true
		}
		st.seconds = min(st.seconds, secs)
		name := names[id]
		if name == "" {
			name = fmt.Sprintf("replica %d", id)
		}
		parts = append(parts, fmt.Sprintf("%s: replay_lsn has not moved for %.0fs while WAL is received", name, secs))
	}
	if st.waiting {
		st.reason = "replay not moving on " + strings.Join(parts, "; ") +
			"; waiting for the stall judgement before acting: reducing WAL on the primary helps a replica that replays slowly, not one whose replay is paused"
		return st
	}
	st.reason = "replay stalled on " + strings.Join(parts, "; ") + "; reducing WAL on the primary cannot help"
	return st
}

// replayStallGrace is the shortest grace of the available strategies that
// act on a stalled standby (strategy.ReplayStallRemedy), false when there
// is none.
func (e *Engine) replayStallGrace(ctx context.Context) (time.Duration, bool) {
	var grace time.Duration
	found := false
	for _, s := range e.reg.Strategies() {
		if r, ok := s.(strategy.ReplayStallRemedy); ok {
			if av, ok := s.(strategy.Availability); ok {
				if up, _ := av.Available(ctx); !up {
					continue
				}
			}
			if g := r.ReplayStallGrace(); !found || g < grace {
				grace, found = g, true
			}
		}
	}
	return grace, found
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// minReplayWaiting is how long replay_lsn must have stood still, with WAL
// waiting, before the engine waits for the stall judgement. The replicas
// collector runs once per collection per period, so a replica that
// replays shows a still replay_lsn only between calls milliseconds apart.
const minReplayWaiting = time.Second

func deferred(out Outcome, reason string) Outcome {
	out.Status = StatusDeferred
	out.Reason = reason
	return out
}

// execute runs the strategy with a timeout of twice its estimate, a
// cancellable context and panic recovery. A strategy that ignores its
// context is abandoned at the deadline; its recorder is closed so it cannot
// record (and therefore must not take) another action.
func (e *Engine) execute(ctx context.Context, s strategy.Strategy, rc *strategy.Context, timeout time.Duration, rec *dbRecorder) (strategy.Result, error) {
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rec.setContext(ectx)
	type ret struct {
		res strategy.Result
		err error
	}
	done := make(chan ret, 1) // buffered: an abandoned strategy must not block forever
	go func() {
		var r ret
		r.err = safeCall(func() error {
			var err error
			r.res, err = s.Execute(ectx, rc)
			return err
		})
		done <- r
	}()
	select {
	case r := <-done:
		rec.close()
		if r.err == nil && ectx.Err() != nil && errors.Is(ectx.Err(), context.DeadlineExceeded) {
			// Finished, but only after the deadline: treat it as a timeout
			// rather than trusting work done on borrowed time.
			return r.res, fmt.Errorf("timed out after %v (2 × estimated %v)", timeout, s.EstimatedDuration())
		}
		if r.err != nil && errors.Is(r.err, context.DeadlineExceeded) {
			return r.res, fmt.Errorf("timed out after %v (2 × estimated %v): %w", timeout, s.EstimatedDuration(), r.err)
		}
		return r.res, r.err
	case <-ectx.Done():
		rec.close()
		if ctx.Err() != nil {
			return strategy.Result{}, fmt.Errorf("aborted: %w", ctx.Err())
		}
		return strategy.Result{}, fmt.Errorf("timed out after %v (2 × estimated %v)", timeout, s.EstimatedDuration())
	}
}

// holdCheckDelay is the least time after Execute before the hold check
// starts: the writer's last inserts before the cap reach pg_stat up to a
// second late (a backend flushes at most once a second), and counted in
// the check's window they read as a cap that does not hold.
const holdCheckDelay = 2 * time.Second

// holdWindower is a Holder whose check measures over a window: the check
// is started so that it ends with the stabilization wait, as late as it
// can without adding to it. Started 2 s after the cap, a check measured
// the shard's write rate while the writer's queue behind the fresh cap
// still drained, read 18 rows/s under a cap of 11, and rolled a working
// cap back (scorecard run 14).
type holdWindower interface{ HoldWindow() time.Duration }

type holdResult struct {
	holds bool
	why   string
	err   error
}

// holdCheck is a hold check running beside the stabilization wait.
type holdCheck struct {
	done   chan holdResult
	cancel context.CancelFunc
}

func (h *holdCheck) wait() holdResult {
	r := <-h.done
	h.cancel()
	return r
}

// stop abandons a check whose answer is not needed (the measure verified,
// or the attempt failed) and waits for it to end.
func (h *holdCheck) stop() {
	h.cancel()
	<-h.done
}

// startHoldCheck starts the hold check of a temporary measure that acted
// (strategy.Holder), or returns nil.
func (e *Engine) startHoldCheck(ctx context.Context, s strategy.Strategy, rc *strategy.Context, res strategy.Result,
	failed bool, timeout, wait time.Duration) *holdCheck {
	h, ok := s.(strategy.Holder)
	if !ok || failed || res.Noop || !strategy.IsTemporary(s) {
		return nil
	}
	delay := holdCheckDelay
	if hw, ok := s.(holdWindower); ok {
		delay = max(delay, wait-hw.HoldWindow())
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	hc := &holdCheck{done: make(chan holdResult, 1), cancel: cancel}
	go func() {
		var r holdResult
		t := time.NewTimer(delay)
		select {
		case <-t.C:
			r.err = safeCall(func() error {
				var err error
				r.holds, r.why, err = h.Holds(hctx, rc)
				return err
			})
		case <-hctx.Done():
			t.Stop()
			r.err = hctx.Err()
		}
		hc.done <- r
	}()
	return hc
}

// safeCall turns a panic into an error so one broken strategy cannot take
// the sidecar down.
func safeCall(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic during remediation: %v", p)
		}
	}()
	return fn()
}

// verify waits for the system to stabilise, then samples λ: it must rise
// above VerifyImprovement × initial λ (the design's strict comparison).
func (e *Engine) verify(ctx context.Context, rc *strategy.Context, stab time.Duration) (bool, *float64, error) {
	if stab > 0 {
		t := time.NewTimer(stab)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false, nil, ctx.Err()
		}
	}
	lam, err := rc.SampleIntegrity(ctx)
	if err != nil {
		return false, nil, err
	}
	return lam > rc.InitialLambda*VerifyImprovement, &lam, nil
}

// lease is a held collection lease, renewed by its own goroutine (keep)
// until release.
type lease struct {
	collectionID int64
	token        int64
	stop         chan struct{} // closed by release: stop renewing
	done         chan struct{} // closed when the renewal goroutine ended
	lost         atomic.Bool   // a renewal found the lease expired or taken over
}

// acquire takes the collection's lease for Options.LeaseTTL and keeps
// renewing it until release, or reports its holder. Expiry is on the
// server's clock so sidecars with skewed clocks agree.
func (e *Engine) acquire(ctx context.Context, collectionID int64) (*lease, string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", fmt.Errorf("healing: lease token: %w", err)
	}
	token := int64(binary.BigEndian.Uint64(b[:]) >> 1)
	var got int64
	var holder string
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `INSERT INTO ruvector.healing_leases AS l (collection_id, holder, token, expires_at)
			VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
			ON CONFLICT (collection_id) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token,
				acquired_at = clock_timestamp(), expires_at = EXCLUDED.expires_at
			WHERE l.expires_at <= clock_timestamp()
			RETURNING token`, collectionID, e.opts.Holder, token, e.opts.LeaseTTL.Seconds()).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			err = c.QueryRow(ctx, `SELECT format('held by %s since %s, until %s', holder, acquired_at, expires_at)
				FROM ruvector.healing_leases WHERE collection_id = $1`, collectionID).Scan(&holder)
			if errors.Is(err, pgx.ErrNoRows) {
				holder = "released just now"
				return nil
			}
		}
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("healing: acquire lease of collection %d: %w", collectionID, err)
	}
	if got != token {
		return nil, holder, nil
	}
	l := &lease{collectionID: collectionID, token: token, stop: make(chan struct{}), done: make(chan struct{})}
	go e.keep(l)
	return l, "", nil
}

// keep renews l every third of the TTL until release stops it or a renewal
// finds the lease gone (expired and taken over, or deleted): then it stops
// for good, and the fenced steps of the attempt fail with ErrLeaseLost. A
// renewal that fails for another reason (the database briefly away) is
// retried at the next period; if they keep failing the lease expires, which
// is the point of a lease.
func (e *Engine) keep(l *lease) {
	defer close(l.done)
	ttl := e.opts.LeaseTTL
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		// Bounded by the TTL: a renewal that slow is too late anyway (and
		// pgx closes a connection whose query is cancelled).
		ctx, cancel := context.WithTimeout(context.Background(), ttl)
		var held bool
		err := e.withConn(ctx, func(c *pgx.Conn) error {
			tag, err := c.Exec(ctx, `UPDATE ruvector.healing_leases SET expires_at = clock_timestamp() + make_interval(secs => $3)
				WHERE collection_id = $1 AND token = $2 AND expires_at > clock_timestamp()`,
				l.collectionID, l.token, ttl.Seconds())
			held = err == nil && tag.RowsAffected() == 1
			return err
		})
		cancel()
		select {
		case <-l.stop: // released meanwhile: a missing row is the release
			return
		default:
		}
		if err != nil {
			e.opts.Log.Warn().Err(err).Int64("collection_id", l.collectionID).Msg("healing: lease renewal failed; retrying")
			continue
		}
		if !held {
			l.lost.Store(true)
			e.opts.Log.Warn().Int64("collection_id", l.collectionID).
				Msg("healing: collection lease lost (expired or taken over); renewal stopped")
			return
		}
	}
}

// release stops renewing and gives the lease back; if the delete fails the
// lease simply expires within the TTL.
func (e *Engine) release(ctx context.Context, l *lease) {
	close(l.stop)
	<-l.done
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = e.withConn(rctx, func(c *pgx.Conn) error {
		_, err := c.Exec(rctx, `DELETE FROM ruvector.healing_leases WHERE collection_id = $1 AND token = $2`,
			l.collectionID, l.token)
		return err
	})
}

// DefaultDeclineBackoff is how long a strategy that declined a problem (a
// noop) is not asked again for the same problem on the same collection,
// unless something acted since.
const DefaultDeclineBackoff = time.Minute

// declinedRecently maps each strategy that declined class on the
// collection within Options.DeclineBackoff, with no attempt that acted
// (neither a noop nor a rollback) started since, to that decline's
// outcome id.
func (e *Engine) declinedRecently(ctx context.Context, collectionID int64, class classify.Class) (map[string]int64, error) {
	out := map[string]int64{}
	backoff := e.opts.DeclineBackoff
	if backoff < 0 {
		return out, nil
	}
	if backoff == 0 {
		backoff = DefaultDeclineBackoff
	}
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT DISTINCT ON (o.strategy_name) o.strategy_name, o.id
			FROM ruvector.healing_outcomes o
			WHERE o.collection_id = $1 AND o.problem_class = $2 AND o.state = 'done' AND o.metadata->>'status' = 'noop'
			  AND o.started_at > clock_timestamp() - make_interval(secs => $3)
			  AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes a
			    WHERE a.collection_id = o.collection_id AND a.started_at > o.started_at
			      AND coalesce(a.metadata->>'status', '') <> 'noop' AND coalesce(a.metadata->>'kind', '') <> 'rollback')
			ORDER BY o.strategy_name, o.started_at DESC`, collectionID, string(class), backoff.Seconds())
		if err != nil {
			return err
		}
		var name string
		var id int64
		_, err = pgx.ForEachRow(rows, []any{&name, &id}, func() error { out[name] = id; return nil })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healing: recent declines of collection %d: %w", collectionID, err)
	}
	return out, nil
}

// attemptHistory is the collection's last attempt and the attempts within
// window that max_attempts_per_hour bounds: every record, noops included,
// except rollbacks (they undo an attempt, they are not one).
func attemptHistory(ctx context.Context, c *pgx.Conn, collectionID int64, window time.Duration) (last *time.Time, attempts int, err error) {
	err = c.QueryRow(ctx, `SELECT max(started_at),
			count(*) FILTER (WHERE started_at > clock_timestamp() - make_interval(secs => $2))
		FROM ruvector.healing_outcomes WHERE collection_id = $1 AND state IN ('running', 'done')
			AND coalesce(metadata->>'kind', '') <> 'rollback'`,
		collectionID, window.Seconds()).Scan(&last, &attempts)
	return last, attempts, err
}

// gate applies the safety limits to the collection's history: the cooldown,
// the attempts per window, and stopping when healing is ineffective (the
// last IneffectiveAfter attempts in the window all unverified) unless the
// attempt is an escalation to a strategy not yet tried in this episode. It
// returns why healing is deferred, or "".
func (e *Engine) gate(ctx context.Context, collectionID int64, cfg healconfig.Config, escalation bool) (string, error) {
	var last *time.Time
	var attempts int
	var recent []*bool
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		last, attempts, err = attemptHistory(ctx, c, collectionID, cfg.AttemptWindow)
		if err != nil {
			return err
		}
		// A held measure (Outcome.Held) acted on the cause: not ineffective.
		// A noop did not act at all (a strategy that declined): neither.
		rows, err := c.Query(ctx, `SELECT CASE WHEN metadata ? 'held' THEN true ELSE verified END FROM ruvector.healing_outcomes
			WHERE collection_id = $1 AND state = 'done' AND started_at > clock_timestamp() - make_interval(secs => $2)
			AND coalesce(metadata->>'kind', '') <> 'rollback' AND coalesce(metadata->>'status', '') <> 'noop'
			ORDER BY started_at DESC LIMIT $3`, collectionID, cfg.AttemptWindow.Seconds(), e.opts.IneffectiveAfter)
		if err != nil {
			return err
		}
		recent, err = pgx.CollectRows(rows, pgx.RowTo[*bool])
		return err
	})
	if err != nil {
		return "", fmt.Errorf("healing: read history of collection %d: %w", collectionID, err)
	}
	if last != nil {
		if until := last.Add(cfg.MinHealingInterval); time.Now().Before(until) {
			return fmt.Sprintf("cooldown: last attempt at %s, next allowed at %s (min_healing_interval_seconds)",
				last.Format(time.RFC3339), until.Format(time.RFC3339)), nil
		}
	}
	if attempts >= cfg.MaxAttemptsPerHour {
		return fmt.Sprintf("%d attempts in the last %v reach max_attempts_per_hour = %d",
			attempts, cfg.AttemptWindow, cfg.MaxAttemptsPerHour), nil
	}
	if len(recent) == e.opts.IneffectiveAfter {
		ineffective := true
		for _, v := range recent {
			if v != nil && *v {
				ineffective = false
			}
		}
		if ineffective && !escalation {
			return fmt.Sprintf("healing is ineffective: the last %d attempts did not improve λ; a human should look",
				len(recent)), nil
		}
	}
	return "", nil
}

// Weights reads the persisted strategy weights.
func (e *Engine) Weights(ctx context.Context) (map[string]float64, error) {
	w := map[string]float64{}
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT strategy_name, weight FROM ruvector.healing_strategy_weights`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var v float32
			if err := rows.Scan(&name, &v); err != nil {
				return err
			}
			w[name] = float64(v)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("healing: read weights: %w", err)
	}
	return w, nil
}

// UpdateWeights recomputes every strategy's weight from the finished
// outcomes of the last 30 days (learning.Weights) and persists them.
func (e *Engine) UpdateWeights(ctx context.Context, now time.Time) error {
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		// A held measure (Outcome.Held) did what it is for, holding the
		// cause back while the next remedy acts, and its hold was checked:
		// learned as unverified, every held cap sank the weight of the
		// strategy that made the next remedy possible.
		rows, err := c.Query(ctx, `SELECT strategy_name, success OR held, CASE WHEN held THEN true ELSE verified END, improvement_pct, started_at
			FROM (SELECT *, metadata ? 'held' AND NOT coalesce(rolled_back, false) AS held FROM ruvector.healing_outcomes) o
			WHERE state = 'done' AND started_at > $1
			AND coalesce(metadata->>'kind', '') <> 'rollback'
			-- A noop changed nothing (nothing to evict here, a hotspot the
			-- strategy declined): no evidence of how well it works where it
			-- acts, and counted as a failure it would sink the weight it
			-- needs elsewhere (one collection's noop kept evict_cold_data
			-- from the next collection's memory pressure).
			AND coalesce(metadata->>'status', '') <> 'noop'`, now.Add(-learning.DefaultWindow))
		if err != nil {
			return err
		}
		var outs []learning.Outcome
		for rows.Next() {
			var o learning.Outcome
			var imp *float32
			if err := rows.Scan(&o.Strategy, &o.Success, &o.Verified, &imp, &o.At); err != nil {
				rows.Close()
				return err
			}
			if imp != nil {
				f := float64(*imp)
				o.ImprovementPct = &f
			}
			outs = append(outs, o)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for name, w := range learning.Weights(outs, now, learning.DefaultWindow) {
			if _, err := c.Exec(ctx, `INSERT INTO ruvector.healing_strategy_weights (strategy_name, weight)
				VALUES ($1, $2) ON CONFLICT (strategy_name) DO UPDATE SET weight = EXCLUDED.weight, updated_at = now()`,
				name, float32(w)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("healing: update weights: %w", err)
	}
	return nil
}

// limitsDoc is what selection was bound by, for the record: the
// configuration's limits and the weights the candidates were ranked with.
func limitsDoc(cfg healconfig.Config, weights map[string]float64) map[string]any {
	return map[string]any{
		"max_auto_heal_impact":        cfg.MaxAutoHealImpact,
		"require_approval":            cfg.RequireApproval,
		"require_approval_strategies": cfg.RequireApprovalStrategies,
		"learning_enabled":            cfg.LearningEnabled,
		"weights":                     weights,
		"default_weight":              strategy.DefaultWeight,
	}
}
