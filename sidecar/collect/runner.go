package collect

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// DefaultTimeout bounds one Collect call when the collector gives no hint.
const DefaultTimeout = 5 * time.Second

// abandonGrace is how long the Runner waits past a timeout for a collector
// that ignores its context before it stops waiting for it.
const abandonGrace = time.Second

// RunnerOptions tune a Runner.
type RunnerOptions struct {
	// Timeout bounds each Collect call (default DefaultTimeout, and never
	// more than the collector's cadence unless it is a TimeoutHinter).
	Timeout time.Duration
	// Redial, if set, replaces the Querier when it reports itself closed
	// (a *pgx.Conn after a network error or a server restart).
	Redial func(ctx context.Context) (Querier, error)
	// OnSample, if set, runs after a collector updated a target's signals,
	// with a copy of them.
	OnSample func(s health.Signals)
	// LockTimeout is set as lock_timeout on the Runner's connection (and
	// on every redialled one) before its first collector call (default
	// DefaultLockTimeout; negative: left as the connection has it). The
	// collectors run one at a time on that one connection, so a statement
	// queued behind another session's lock (an ACCESS EXCLUSIVE lock on one
	// collection's partition or index: ALTER TABLE, TRUNCATE, REINDEX)
	// would hold up every collector of every collection until its timeout;
	// with this it fails after LockTimeout instead and only its own kind of
	// its own collection is marked Unknown for that sample.
	LockTimeout time.Duration
}

// DefaultLockTimeout is RunnerOptions.LockTimeout by default.
const DefaultLockTimeout = time.Second

// CollectorStats is one collector's counters, summed over targets.
type CollectorStats struct {
	Name      string
	Cadence   time.Duration
	Successes uint64
	// Errors counts every failed call, Timeouts and Panics included.
	Errors   uint64
	Timeouts uint64
	Panics   uint64
	// Warmups counts first samples (ErrFirstSample): neither success nor
	// error.
	Warmups       uint64
	LastDuration  time.Duration
	LastError     string
	LastErrorAt   time.Time
	LastSuccessAt time.Time
}

type entry struct {
	c       Collector
	timeout time.Duration
	next    time.Time
	// busy is set while an abandoned call (one that ignored its context)
	// is still running: the collector is not called again until it
	// returns, so goroutines never pile up.
	busy bool
	// abandonedOn is the target whose call was abandoned (valid while
	// busy); okAt is each target's last success (by Target.ID).
	abandonedOn int
	okAt        map[int]time.Time
	stats       CollectorStats
}

// skipWhileBusy: how stale another target's signals may grow while its
// collector is busy with an abandoned call for a different target before
// they are marked Unknown, in cadences (plus the timeout).
const skipWhileBusy = 3

// Runner runs collectors at their cadences against a fixed set of targets
// and keeps each target's latest Signals. Collectors run one at a time on
// the Runner's goroutine (so one connection suffices); a failed, timed-out
// or panicking collector is counted, its kind marked Unknown, and the loop
// goes on.
type Runner struct {
	opts    RunnerOptions
	targets []Target
	// inflight counts the collector calls' goroutines, so that Run does
	// not return while one still uses the querier its caller will close.
	inflight sync.WaitGroup

	mu sync.Mutex // guards everything below and q
	q  Querier
	// retired are the qGens of queriers an abandoned call still uses
	// (retire): the next call dials a new one, the call closes its own
	// when it returns.
	retired map[int]bool
	// qGen counts the queriers (redials); prepared is the qGen whose
	// lock_timeout has been set, -1 for none.
	qGen, prepared int
	entries        []*entry
	signals        map[int]*health.Signals // by Target.ID
}

// NewRunner builds a Runner over q for targets.
func NewRunner(q Querier, targets []Target, collectors []Collector, opts RunnerOptions) *Runner {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	r := &Runner{opts: opts, targets: targets, q: q, prepared: -1, retired: map[int]bool{},
		signals: map[int]*health.Signals{}}
	for _, c := range collectors {
		to := min(opts.Timeout, c.Cadence())
		if h, ok := c.(TimeoutHinter); ok && h.Timeout() > 0 {
			to = h.Timeout()
		}
		r.entries = append(r.entries, &entry{c: c, timeout: to, okAt: map[int]time.Time{},
			stats: CollectorStats{Name: c.Name(), Cadence: c.Cadence()}})
	}
	for _, t := range targets {
		// Nothing is measured until its collector has reported: a kind
		// that was never collected is unknown, not healthy.
		unknown := map[string]bool{}
		for _, c := range collectors {
			unknown[c.Name()] = true
		}
		r.signals[t.ID] = &health.Signals{Collection: t.Name, CollectionID: t.ID, Unknown: unknown}
	}
	return r
}

// Run calls each collector when it is due until ctx ends. It returns
// ctx's error.
func (r *Runner) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.drain(shutdownWait)
			return ctx.Err()
		case <-timer.C:
		}
		next := r.tick(ctx, false)
		timer.Reset(max(time.Until(next), 10*time.Millisecond))
	}
}

// shutdownWait bounds how long Run waits, once its context is done, for
// the collector calls still running: they get the cancelled context and
// return at once unless one ignores it, which is not worth hanging the
// shutdown for.
const shutdownWait = 5 * time.Second

// drain waits up to d for the collector calls in flight.
func (r *Runner) drain(d time.Duration) {
	done := make(chan struct{})
	go func() { r.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// CollectAll calls every collector once now, whatever its schedule (tests,
// and a first sample at startup).
func (r *Runner) CollectAll(ctx context.Context) { r.tick(ctx, true) }

// tick runs the due collectors and returns when the next one is due.
func (r *Runner) tick(ctx context.Context, all bool) time.Time {
	now := time.Now()
	var next time.Time
	for _, e := range r.entries {
		if ctx.Err() != nil {
			break
		}
		if all || !now.Before(e.next) {
			start := time.Now()
			for _, t := range r.targets {
				r.runOne(ctx, e, t)
			}
			// Anchored on the start so cadence is the period, not the gap;
			// missed periods are skipped rather than run back to back.
			e.next = start.Add(e.c.Cadence())
			if e.next.Before(time.Now()) {
				e.next = time.Now()
			}
		}
		if next.IsZero() || e.next.Before(next) {
			next = e.next
		}
	}
	return next
}

type result struct {
	s        health.Signals
	err      error
	panicked bool
}

func (r *Runner) querier(ctx context.Context) (Querier, int) {
	r.mu.Lock()
	q, gen := r.q, r.qGen
	retired := r.retired[gen]
	r.mu.Unlock()
	c, ok := q.(interface{ IsClosed() bool })
	if r.opts.Redial != nil && (retired || ok && c.IsClosed()) {
		if nq, err := r.opts.Redial(ctx); err == nil {
			r.mu.Lock()
			r.q = nq
			r.qGen++
			q, gen = nq, r.qGen
			r.mu.Unlock()
		}
	}
	r.prepare(ctx, q, gen)
	return q, gen
}

// prepare sets lock_timeout on q once. A failure (the connection is still
// in use by an abandoned call, or broken) is retried at the next call;
// the collectors run meanwhile with the connection's own setting.
func (r *Runner) prepare(ctx context.Context, q Querier, gen int) {
	if r.opts.LockTimeout < 0 {
		return
	}
	r.mu.Lock()
	done := r.prepared == gen
	r.mu.Unlock()
	if done {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	ms := max(r.opts.LockTimeout.Milliseconds(), 1)
	if _, err := q.Exec(sctx, fmt.Sprintf("SET lock_timeout = '%dms'", ms)); err != nil {
		return
	}
	r.mu.Lock()
	r.prepared = gen
	r.mu.Unlock()
}

func (r *Runner) runOne(ctx context.Context, e *entry, t Target) {
	name := e.c.Name()
	r.mu.Lock()
	busy := e.busy
	if busy && e.abandonedOn != t.ID && time.Since(e.okAt[t.ID]) < skipWhileBusy*e.c.Cadence()+e.timeout {
		// The abandoned call is another collection's: this one's
		// signals are left as they are (and as trusted) for now rather
		// than marked Unknown for a call that was never made. Only when
		// they grow stale are they marked, below.
		r.mu.Unlock()
		return
	}
	scratch := copySignals(r.signals[t.ID])
	// Set before the call starts: the call's own goroutine clears it.
	e.busy = true
	r.mu.Unlock()
	if busy {
		r.finish(e, t, result{err: fmt.Errorf("collect: %s: previous call still running after its timeout", name)}, 0, true)
		return
	}
	q, gen := r.querier(ctx)
	cctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	done := make(chan result, 1)
	start := time.Now()
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		var res result
		defer func() {
			if p := recover(); p != nil {
				res = result{err: fmt.Errorf("collect: %s panicked: %v", name, p), panicked: true}
			}
			// Not busy before the result is handed over: the loop goes on
			// to the next target as soon as it has the result, and a call
			// still marked busy then read as an abandoned one ("previous
			// call still running") whenever this goroutine was descheduled
			// between the two (CI on a loaded machine).
			r.mu.Lock()
			e.busy = false
			r.mu.Unlock()
			done <- res
			r.closeIfRetired(q, gen)
		}()
		res.s = scratch
		res.err = e.c.Collect(cctx, q, t, &res.s)
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// Shutting down: neither a result nor a failure of the collector.
		return
	case <-time.After(e.timeout + abandonGrace):
		// The collector ignores its context: stop waiting. Its scratch
		// copy is dropped when it returns, so it cannot touch our state.
		// It still holds the connection: the other collectors move to a
		// new one (the abandoned call closes the old one when it
		// returns), or every call of every collection would fail on the
		// connection in use meanwhile.
		r.mu.Lock()
		e.abandonedOn = t.ID
		r.mu.Unlock()
		r.retire(gen)
		res = result{err: fmt.Errorf("collect: %s ignored its %v timeout: %w", name, e.timeout, context.DeadlineExceeded)}
	}
	if ctx.Err() != nil {
		return // shutting down: whatever the collector said is not news
	}
	timedOut := cctx.Err() == context.DeadlineExceeded
	r.finish(e, t, res, time.Since(start), timedOut)
}

// retire makes the next call use a new connection (RunnerOptions.Redial)
// instead of the one of generation gen, which an abandoned call still
// uses. Without Redial nothing changes.
func (r *Runner) retire(gen int) {
	if r.opts.Redial == nil {
		return
	}
	r.mu.Lock()
	r.retired[gen] = true
	r.mu.Unlock()
}

// closeIfRetired closes q (of generation gen) once the abandoned call on it
// has returned.
func (r *Runner) closeIfRetired(q Querier, gen int) {
	r.mu.Lock()
	retired := r.retired[gen]
	delete(r.retired, gen)
	r.mu.Unlock()
	if c, ok := q.(interface{ Close(context.Context) error }); ok && retired {
		ctx, cancel := context.WithTimeout(context.Background(), abandonGrace)
		defer cancel()
		_ = c.Close(ctx)
	}
}

func (r *Runner) finish(e *entry, t Target, res result, took time.Duration, timedOut bool) {
	name := e.c.Name()
	now := time.Now()
	r.mu.Lock()
	st := &e.stats
	st.LastDuration = took
	cur := r.signals[t.ID]
	warm := errors.Is(res.err, ErrFirstSample)
	switch {
	case res.err == nil || warm:
		// Adopt the collector's copy: it changed only its own fields.
		res.s.Unknown = cur.Unknown
		res.s.At = now
		*cur = res.s
		if warm {
			cur.Unknown[name] = true
			st.Warmups++
		} else {
			delete(cur.Unknown, name)
			st.Successes++
			st.LastSuccessAt = now
			e.okAt[t.ID] = now
		}
	default:
		// Keep the previous values (the graph builder still needs the
		// node list) but flag them: Unknown means "do not trust".
		cur.Unknown[name] = true
		cur.At = now
		st.Errors++
		if timedOut {
			st.Timeouts++
		}
		if res.panicked {
			st.Panics++
		}
		st.LastError = fmt.Sprintf("%s: %v", t.Name, res.err)
		st.LastErrorAt = now
	}
	var snap health.Signals
	if r.opts.OnSample != nil {
		snap = copySignals(cur)
	}
	r.mu.Unlock()
	if r.opts.OnSample != nil {
		r.opts.OnSample(snap)
	}
}

// Stats returns a snapshot of every collector's counters, in the order the
// collectors were given.
func (r *Runner) Stats() []CollectorStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]CollectorStats, len(r.entries))
	for i, e := range r.entries {
		out[i] = e.stats
	}
	return out
}

// Signals returns a copy of a target's latest signals.
func (r *Runner) Signals(collectionID int) (health.Signals, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.signals[collectionID]
	if !ok {
		return health.Signals{}, false
	}
	return copySignals(s), true
}

// copySignals copies s deeply enough that neither side can change the
// other: collectors replace slices, so only the map needs a new backing;
// slices are cloned anyway because callers of Signals may mutate them.
func copySignals(s *health.Signals) health.Signals {
	c := *s
	c.Unknown = maps.Clone(s.Unknown)
	if c.Unknown == nil {
		c.Unknown = map[string]bool{}
	}
	c.Partitions = cloneSlice(s.Partitions)
	c.Centroids = cloneSlice(s.Centroids)
	c.Replicas = cloneSlice(s.Replicas)
	c.Maintenance = cloneSlice(s.Maintenance)
	c.Indexes = cloneSlice(s.Indexes)
	c.Memory.Consumers = cloneSlice(s.Memory.Consumers)
	return c
}

func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append([]T(nil), s...)
}
