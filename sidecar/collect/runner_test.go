package collect

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// sleepy is a collector whose query hangs far past its timeout.
type sleepy struct{}

func (sleepy) Name() string           { return "changefeed" }
func (sleepy) Cadence() time.Duration { return time.Second }
func (sleepy) Collect(ctx context.Context, q Querier, _ Target, s *health.Signals) error {
	if _, err := q.Exec(ctx, "SELECT pg_sleep(10)"); err != nil {
		return fmt.Errorf("sleepy: %w", err)
	}
	s.Centroids = []health.CentroidSignal{{ID: 1}}
	return nil
}

type panicky struct{}

func (panicky) Name() string           { return "panicky" }
func (panicky) Cadence() time.Duration { return time.Second }
func (panicky) Collect(context.Context, Querier, Target, *health.Signals) error {
	var m map[string]int
	m["boom"] = 1 // a real nil-map panic
	return nil
}

// stubborn ignores its context entirely.
type stubborn struct{ calls atomic.Int32 }

func (*stubborn) Name() string           { return "stubborn" }
func (*stubborn) Cadence() time.Duration { return time.Second }
func (s *stubborn) Collect(context.Context, Querier, Target, *health.Signals) error {
	s.calls.Add(1)
	time.Sleep(2500 * time.Millisecond)
	return nil
}

func stat(t *testing.T, r *Runner, name string) CollectorStats {
	t.Helper()
	for _, s := range r.Stats() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stats for %s", name)
	return CollectorStats{}
}

// A collector whose query hangs is timed out (the query is cancelled on the
// server and the connection stays usable), counted and marked Unknown; a
// panicking one is recovered and counted; the others still deliver.
func TestRunnerTimeoutPanicAndOthersDeliver(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	// Calls get 3 s (sleepy's 1 s cadence caps its own): 300 ms timed the
	// other collectors' trivial queries out on a loaded machine. The hung
	// query sleeps 10 s, so the bounds below (8 s) still tell a cut call
	// from one that was waited for.
	r := NewRunner(conn, []Target{tg},
		[]Collector{sleepy{}, panicky{}, NewPartitions(), NewMaintenance(), NewMemory()},
		RunnerOptions{Timeout: 3 * time.Second})

	start := time.Now()
	r.CollectAll(ctx)
	took := time.Since(start)
	if took > 8*time.Second {
		t.Fatalf("one round took %v: the hung query was not cut at its timeout", took)
	}
	s, ok := r.Signals(tg.ID)
	if !ok {
		t.Fatal("no signals for the target")
	}
	sl := stat(t, r, "changefeed")
	if sl.Errors != 1 || sl.Timeouts != 1 || sl.Successes != 0 || sl.LastError == "" || sl.LastDuration > 8*time.Second {
		t.Fatalf("sleepy stats %+v", sl)
	}
	if p := stat(t, r, "panicky"); p.Errors != 1 || p.Panics != 1 {
		t.Fatalf("panicky stats %+v", p)
	}
	if !s.Unknown["changefeed"] || !s.Unknown["panicky"] || s.Centroids != nil {
		t.Fatalf("unknown %v centroids %v", s.Unknown, s.Centroids)
	}
	// First samples of rate collectors: values kept, kind Unknown, not errors.
	if p := stat(t, r, "partitions"); p.Warmups != 1 || p.Errors != 0 || len(s.Partitions) != 3 || !s.Unknown["partitions"] {
		t.Fatalf("partitions after one round: %+v, %v, unknown %v", p, s.Partitions, s.Unknown)
	}
	if s.Unknown["maintenance"] || s.Unknown["memory"] || s.Memory.LimitBytes <= 0 || stat(t, r, "memory").Successes != 1 {
		t.Fatalf("other collectors did not deliver: %+v %v", s.Memory, s.Unknown)
	}
	// The server cancelled the sleep: no backend is left running it.
	var sleeping int
	pgtest.WaitFor(t, 30*time.Second, "the cancelled pg_sleep to end", func() (bool, error) {
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(10)%' AND state = 'active'").Scan(&sleeping)
		return sleeping == 0, err
	})

	// Second round: the same connection still works, partitions now have a
	// baseline; the hung one keeps failing without stopping anything.
	r.CollectAll(ctx)
	s, _ = r.Signals(tg.ID)
	if s.Unknown["partitions"] || stat(t, r, "partitions").Successes != 1 || stat(t, r, "changefeed").Timeouts != 2 {
		t.Fatalf("second round: unknown %v, stats %+v", s.Unknown, r.Stats())
	}
	_ = c
}

// patientMemory is the memory collector with a timeout of its own (as a
// TimeoutHinter): the runner's 100 ms, meant for the stubborn collector,
// timed its query out on a loaded machine.
type patientMemory struct{ *Memory }

func (patientMemory) Timeout() time.Duration { return 2 * time.Second }

// A collector that ignores its context is abandoned after its timeout plus
// a grace period, not called again while still running, and the Run loop
// keeps calling the others at their cadence.
func TestRunnerAbandonsStubbornCollectorAndKeepsRunning(t *testing.T) {
	t.Parallel()
	_, conn, tg := startCollection(t)
	st := &stubborn{}
	mem := NewMemory()
	mem.Interval = 200 * time.Millisecond
	var samples atomic.Int32
	r := NewRunner(conn, []Target{tg}, []Collector{st, patientMemory{mem}}, RunnerOptions{
		Timeout:  100 * time.Millisecond,
		OnSample: func(health.Signals) { samples.Add(1) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	if err := r.Run(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Run returned %v", err)
	}
	ss := stat(t, r, "stubborn")
	ms := stat(t, r, "memory")
	t.Logf("stubborn %+v\nmemory %+v\nsamples %d", ss, ms, samples.Load())
	if ss.Errors < 2 || ss.Timeouts < 1 || ss.Successes != 0 {
		t.Fatalf("stubborn stats %+v", ss)
	}
	// Calls while the abandoned one still ran were refused, not started.
	if n := st.calls.Load(); n > 2 {
		t.Fatalf("stubborn called %d times: calls piled up", n)
	}
	// Memory runs every 200 ms except while the runner waited 1.1 s for the
	// stubborn one (twice at most in 3.5 s).
	if ms.Successes < 4 || ms.Errors != 0 {
		t.Fatalf("memory stats %+v", ms)
	}
	s, _ := r.Signals(tg.ID)
	if !s.Unknown["stubborn"] || s.Unknown["memory"] || int(samples.Load()) != int(ss.Errors+ms.Successes) {
		t.Fatalf("unknown %v, %d samples", s.Unknown, samples.Load())
	}
}

// patient gives a collector its own timeout (TimeoutHinter).
type patient struct {
	Collector
	d time.Duration
}

func (p patient) Timeout() time.Duration { return p.d }

// hogger ignores its context in its second call for one target, while
// holding the connection (a query that will not be cancelled in time);
// otherwise it answers at once.
type hogger struct {
	slowID       int
	calls, slows atomic.Int32
}

func (*hogger) Name() string           { return "hogger" }
func (*hogger) Cadence() time.Duration { return 4 * time.Second }
func (h *hogger) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	h.calls.Add(1)
	if t.ID == h.slowID && h.slows.Add(1) == 2 {
		if _, err := q.Exec(context.Background(), "SELECT pg_sleep(6)"); err != nil {
			return err
		}
		return nil
	}
	var one int
	if err := q.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("hogger: %w", err)
	}
	s.Centroids = []health.CentroidSignal{{ID: int64(one)}}
	return nil
}

// A call abandoned for one collection neither marks the same kind of
// another collection Unknown (it was never tried) nor makes the other
// collectors fail on the connection the abandoned call still holds: they
// move to a new one, and the old one is closed once the call returns.
func TestRunnerAbandonedCallDoesNotSpillOverToOtherCollections(t *testing.T) {
	t.Parallel()
	c, conn, a := startCollection(t)
	ctx := context.Background()
	mustExec(t, conn, `CREATE TABLE other (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE other_0 PARTITION OF other FOR VALUES IN (0);
SELECT ruvector_collection_register('other', 'other')`)
	b, err := LoadTarget(ctx, conn, "other")
	if err != nil {
		t.Fatal(err)
	}
	h := &hogger{slowID: a.ID}
	parts := NewPartitions()
	parts.Interval = 3 * time.Second
	var mu sync.Mutex
	var bUnknown []string
	bKnown := false
	// The other collection's signals stay trusted for 3 cadences + the
	// timeout after its last success (15 s); the abandoned call (given up
	// after 4 s) holds the connection 6 s, 10 s after that success: a
	// margin that survives a loaded machine (with a 1 s cadence and a 2 s
	// call it was 0.3 s, and a CI run beside a scorecard campaign went
	// past it). Ordinary calls get 3 s: 300 ms to 1 s timed a trivial
	// query out on a machine running two test suites at once.
	// The partitions collector, which must never fail here, gets 8 s (a
	// TimeoutHinter): a CI run beside a scorecard campaign timed one of
	// its calls out at 3 s.
	r := NewRunner(conn, []Target{a, b}, []Collector{h, patient{parts, 8 * time.Second}}, RunnerOptions{
		Timeout: 3 * time.Second,
		Redial:  func(context.Context) (Querier, error) { return sidecarConn(t, c), nil },
		OnSample: func(s health.Signals) {
			if s.CollectionID != b.ID {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !s.Unknown["hogger"] {
				bKnown = true
			} else if bKnown {
				bUnknown = append(bUnknown, time.Now().Format("15:04:05.000"))
			}
		},
	})
	rctx, cancel := context.WithTimeout(ctx, 26*time.Second)
	defer cancel()
	if err := r.Run(rctx); err != context.DeadlineExceeded {
		t.Fatalf("Run returned %v", err)
	}
	hs, ps := stat(t, r, "hogger"), stat(t, r, "partitions")
	t.Logf("hogger %+v\npartitions %+v\ncalls %d", hs, ps, h.calls.Load())
	mu.Lock()
	defer mu.Unlock()
	if !bKnown || len(bUnknown) > 0 {
		t.Errorf("other's hogger kind: known %v, then unknown at %v (the abandoned call was the emb's)", bKnown, bUnknown)
	}
	// The abandoned call and emb's calls refused while it still ran are
	// the only errors: the last one is emb's.
	if hs.Timeouts < 1 || hs.Successes < 8 || !strings.Contains(hs.LastError, "emb:") {
		t.Errorf("hogger stats %+v", hs)
	}
	// Calls on the held connection would fail ("conn busy").
	if ps.Errors != 0 || ps.Successes < 8 {
		t.Errorf("partitions on the other connection: %+v", ps)
	}
	// The retired connections were closed once their calls returned: at
	// most the current one and one still held are left.
	var n int
	pgtest.WaitFor(t, 5*time.Second, "retired collector connections to close", func() (bool, error) {
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ruvector-sidecar-collect'").Scan(&n)
		return n <= 3, err
	})
}
