package metrics

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// fakeSegment is a segment with fixed contents.
type fakeSegment struct {
	info      shmproto.Info
	infoErr   error
	cols      []shmproto.Collection
	integrity map[int]shmproto.Integrity
	intErr    map[int]error
	throttles map[int][shmproto.NumOps]shmproto.Throttle
	counters  map[int][shmproto.NumOps]shmproto.Counters
}

func (f *fakeSegment) Info() (shmproto.Info, error) { return f.info, f.infoErr }
func (f *fakeSegment) Collections() ([]shmproto.Collection, error) {
	// A copy: collections() filters in place.
	return append([]shmproto.Collection(nil), f.cols...), nil
}
func (f *fakeSegment) ReadIntegrity(i int) (shmproto.Integrity, error) {
	if err := f.intErr[i]; err != nil {
		return shmproto.Integrity{}, err
	}
	return f.integrity[i], nil
}
func (f *fakeSegment) ReadThrottle(i int, op shmproto.Op) (shmproto.Throttle, error) {
	return f.throttles[i][op], nil
}
func (f *fakeSegment) ReadCounters(i int, op shmproto.Op) (shmproto.Counters, error) {
	return f.counters[i][op], nil
}

type fakeStats []collect.CollectorStats

func (f fakeStats) Stats() []collect.CollectorStats { return f }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testSegment() *fakeSegment {
	return &fakeSegment{
		info: shmproto.Info{Generation: 7, SidecarOutages: 2, WatchdogBeat: t0.Add(-1500 * time.Millisecond)},
		cols: []shmproto.Collection{
			{Slot: 0, DatabaseOID: 5, Name: "emb"},
			{Slot: 1, DatabaseOID: 5, Name: "fresh"},
			// Another database's collection: not the sidecar's.
			{Slot: 2, DatabaseOID: 9, Name: "emb"},
		},
		integrity: map[int]shmproto.Integrity{
			0: {Lambda: 0.25, State: shmproto.StateCritical, Updated: t0.Add(-time.Second)},
			1: {State: shmproto.StateUnknown}, // never sampled
			2: {Lambda: 1, State: shmproto.StateNormal, Updated: t0},
		},
		throttles: map[int][shmproto.NumOps]shmproto.Throttle{
			0: {{Pct: 100, SetBy: shmproto.SetBySidecar}, {Pct: 40, SetBy: shmproto.SetByManual}},
		},
		counters: map[int][shmproto.NumOps]shmproto.Counters{
			0: {{AdmittedRows: 1200, DelayedStatements: 3, RejectedStatements: 4, WaitMicros: 2_500_000, BaselineRowsPerSec: 812.5}, {AdmittedRows: 50000}},
		},
	}
}

func TestSegmentCollector(t *testing.T) {
	seg := testSegment()
	c := NewSegmentCollector(seg)
	c.now = func() time.Time { return t0 }
	want := `
# HELP ruvector_segment_generation Generation of the shared segment, bumped at every server start including crash restarts (gate counters restart from zero with it).
# TYPE ruvector_segment_generation gauge
ruvector_segment_generation 7
# HELP ruvector_segment_up 1 if the shared segment's header could be read at this scrape, else 0.
# TYPE ruvector_segment_up gauge
ruvector_segment_up 1
# HELP ruvector_sidecar_outages_total Sidecar outages the watchdog detected (heartbeat older than ruvector.sidecar_timeout) since the server started.
# TYPE ruvector_sidecar_outages_total counter
ruvector_sidecar_outages_total 2
# HELP ruvector_watchdog_heartbeat_age_seconds Seconds since the extension's watchdog last checked the segment.
# TYPE ruvector_watchdog_heartbeat_age_seconds gauge
ruvector_watchdog_heartbeat_age_seconds 1.5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// Unreadable: only up=0, and the scrape itself still succeeds.
	seg.infoErr = shmproto.ErrClosed
	want = `
# HELP ruvector_segment_up 1 if the shared segment's header could be read at this scrape, else 0.
# TYPE ruvector_segment_up gauge
ruvector_segment_up 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// A watchdog that never beat has no age (not 56 years).
	seg.infoErr, seg.info.WatchdogBeat = nil, time.Time{}
	if n := testutil.CollectAndCount(c, "ruvector_watchdog_heartbeat_age_seconds"); n != 0 {
		t.Fatalf("watchdog age reported before its first beat (%d series)", n)
	}
}

func TestIntegrityCollector(t *testing.T) {
	seg := testSegment()
	snaps := &SnapshotCache{}
	snaps.Store([]monitor.Snapshot{
		{Collection: "emb", Cut: health.Cut{LambdaNorm: 0.25, Stats: health.TrackerStats{Samples: 3},
			Witness: []classify.WitnessEdge{
				{EdgeType: classify.EdgePartitionLink}, {EdgeType: classify.EdgePartitionLink},
				{EdgeType: classify.EdgeDependency}, {EdgeType: "future_link"},
			}}},
		// Not sampled yet: no witness series.
		{Collection: "fresh", Cut: health.Cut{LambdaNorm: math.NaN()}},
		// Unregistered since: the segment no longer lists it.
		{Collection: "gone", Cut: health.Cut{LambdaNorm: 1, Stats: health.TrackerStats{Samples: 9}}},
	})
	c := NewIntegrityCollector(seg, 5, snaps)
	want := `
# HELP ruvector_integrity_lambda_cut Normalised minimum cut of the collection's health graph, in [0, 1] (0.8 and 0.3 are the default stress and critical thresholds).
# TYPE ruvector_integrity_lambda_cut gauge
ruvector_integrity_lambda_cut{collection="emb"} 0.25
# HELP ruvector_integrity_last_sample_timestamp_seconds Unix time of the last integrity sample the sidecar published.
# TYPE ruvector_integrity_last_sample_timestamp_seconds gauge
ruvector_integrity_last_sample_timestamp_seconds{collection="emb"} 1.772366399e+09
# HELP ruvector_integrity_state Integrity state published in the segment: 0 normal, 1 stress, 2 critical, 3 unknown (not yet sampled, or the sidecar is away).
# TYPE ruvector_integrity_state gauge
ruvector_integrity_state{collection="emb"} 2
ruvector_integrity_state{collection="fresh"} 3
# HELP ruvector_integrity_witness_edges Edges crossing the health graph's minimum cut at the last sample, by edge type: they name the weakest components.
# TYPE ruvector_integrity_witness_edges gauge
ruvector_integrity_witness_edges{collection="emb",edge_type="dependency"} 1
ruvector_integrity_witness_edges{collection="emb",edge_type="future_link"} 1
ruvector_integrity_witness_edges{collection="emb",edge_type="partition_link"} 2
ruvector_integrity_witness_edges{collection="emb",edge_type="replication"} 0
ruvector_integrity_witness_edges{collection="emb",edge_type="routing_link"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	// A slot whose seqlock stays odd fails that slot only, not the scrape
	// of the others (the handler continues on errors).
	seg.intErr = map[int]error{0: shmproto.ErrSeqlockBusy}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if !errors.Is(err, shmproto.ErrSeqlockBusy) {
		t.Fatalf("gather error %v, want the seqlock error", err)
	}
	var states int
	for _, mf := range mfs {
		if mf.GetName() == "ruvector_integrity_state" {
			states = len(mf.GetMetric())
		}
	}
	if states != 1 {
		t.Fatalf("%d state series with one slot unreadable, want 1 (fresh)", states)
	}
}

func TestGateCollector(t *testing.T) {
	c := NewGateCollector(testSegment(), 5)
	want := `
# HELP ruvector_gate_admitted_rows_total Rows the write gate admitted.
# TYPE ruvector_gate_admitted_rows_total counter
ruvector_gate_admitted_rows_total{collection="emb",op="bulk_insert"} 50000
ruvector_gate_admitted_rows_total{collection="emb",op="insert"} 1200
ruvector_gate_admitted_rows_total{collection="fresh",op="bulk_insert"} 0
ruvector_gate_admitted_rows_total{collection="fresh",op="insert"} 0
# HELP ruvector_gate_baseline_rows_per_second The unthrottled write rate the gate measured, from which a throttle's admitted rate is derived.
# TYPE ruvector_gate_baseline_rows_per_second gauge
ruvector_gate_baseline_rows_per_second{collection="emb",op="bulk_insert"} 0
ruvector_gate_baseline_rows_per_second{collection="emb",op="insert"} 812.5
ruvector_gate_baseline_rows_per_second{collection="fresh",op="bulk_insert"} 0
ruvector_gate_baseline_rows_per_second{collection="fresh",op="insert"} 0
# HELP ruvector_gate_rejected_statements_total Statements the write gate refused (throttle 100, or a wait beyond ruvector.throttle_max_wait).
# TYPE ruvector_gate_rejected_statements_total counter
ruvector_gate_rejected_statements_total{collection="emb",op="bulk_insert"} 0
ruvector_gate_rejected_statements_total{collection="emb",op="insert"} 4
ruvector_gate_rejected_statements_total{collection="fresh",op="bulk_insert"} 0
ruvector_gate_rejected_statements_total{collection="fresh",op="insert"} 0
# HELP ruvector_gate_wait_seconds_total Seconds statements spent waiting in the write gate.
# TYPE ruvector_gate_wait_seconds_total counter
ruvector_gate_wait_seconds_total{collection="emb",op="bulk_insert"} 0
ruvector_gate_wait_seconds_total{collection="emb",op="insert"} 2.5
ruvector_gate_wait_seconds_total{collection="fresh",op="bulk_insert"} 0
ruvector_gate_wait_seconds_total{collection="fresh",op="insert"} 0
# HELP ruvector_throttle_percent Throttle of an op in percent (0 none, 100 refuses writes) and who set it (none, sidecar, manual).
# TYPE ruvector_throttle_percent gauge
ruvector_throttle_percent{collection="emb",op="bulk_insert",set_by="manual"} 40
ruvector_throttle_percent{collection="emb",op="insert",set_by="sidecar"} 100
ruvector_throttle_percent{collection="fresh",op="bulk_insert",set_by="none"} 0
ruvector_throttle_percent{collection="fresh",op="insert",set_by="none"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"ruvector_gate_admitted_rows_total", "ruvector_gate_baseline_rows_per_second",
		"ruvector_gate_rejected_statements_total", "ruvector_gate_wait_seconds_total", "ruvector_throttle_percent"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "ruvector_gate_delayed_statements_total"); n != 4 {
		t.Fatalf("%d delayed series, want 4", n)
	}
}

func TestRunnerCollector(t *testing.T) {
	stats := &RunnerStats{}
	c := NewRunnerCollector(stats)
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d series with no runner", n)
	}
	stats.Set(fakeStats{
		{Name: "gateway", Successes: 10, LastDuration: 2 * time.Millisecond, LastSuccessAt: t0},
		// Failed after succeeding: the last call failed.
		{Name: "indexes", Successes: 1, Errors: 2, Timeouts: 1, LastDuration: 5 * time.Second,
			LastSuccessAt: t0.Add(-time.Minute), LastErrorAt: t0},
		// Recovered.
		{Name: "replicas", Errors: 1, LastDuration: time.Millisecond, LastErrorAt: t0.Add(-time.Minute), LastSuccessAt: t0},
		// Only a warm-up so far: counters, but no last result.
		{Name: "partitions", Warmups: 1},
	})
	want := `
# HELP ruvector_collector_errors_total Failed collector calls, timeouts and panics included, since the collectors last started.
# TYPE ruvector_collector_errors_total counter
ruvector_collector_errors_total{collector="gateway"} 0
ruvector_collector_errors_total{collector="indexes"} 2
ruvector_collector_errors_total{collector="partitions"} 0
ruvector_collector_errors_total{collector="replicas"} 1
# HELP ruvector_collector_last_duration_seconds Duration of the collector's last call.
# TYPE ruvector_collector_last_duration_seconds gauge
ruvector_collector_last_duration_seconds{collector="gateway"} 0.002
ruvector_collector_last_duration_seconds{collector="indexes"} 5
ruvector_collector_last_duration_seconds{collector="replicas"} 0.001
# HELP ruvector_collector_success 1 if the collector's last call succeeded, 0 if it failed or timed out (absent until its first result).
# TYPE ruvector_collector_success gauge
ruvector_collector_success{collector="gateway"} 1
ruvector_collector_success{collector="indexes"} 0
ruvector_collector_success{collector="replicas"} 1
# HELP ruvector_collector_timeouts_total Collector calls that exceeded their timeout, since the collectors last started.
# TYPE ruvector_collector_timeouts_total counter
ruvector_collector_timeouts_total{collector="gateway"} 0
ruvector_collector_timeouts_total{collector="indexes"} 1
ruvector_collector_timeouts_total{collector="partitions"} 0
ruvector_collector_timeouts_total{collector="replicas"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// The cache hands out copies: a scrape cannot see the loop's next sample
// half-written, nor change what the next scrape sees.
func TestSnapshotCacheCopies(t *testing.T) {
	w := []classify.WitnessEdge{{EdgeType: classify.EdgeReplication}}
	c := &SnapshotCache{}
	c.Store([]monitor.Snapshot{{Collection: "emb", Cut: health.Cut{Witness: w, Graph: &health.Graph{}}}})
	w[0].EdgeType = classify.EdgeDependency
	got := c.Snapshots()
	if got[0].Cut.Witness[0].EdgeType != classify.EdgeReplication || got[0].Cut.Graph != nil {
		t.Fatalf("stored snapshot shares the loop's memory: %+v", got[0].Cut)
	}
	got[0].Cut.Witness[0].EdgeType = classify.EdgeDependency
	if c.Snapshots()[0].Cut.Witness[0].EdgeType != classify.EdgeReplication {
		t.Fatal("a reader's change reached the cache")
	}
}

// Every metric passes the client library's linter (naming, units, help).
func TestRegisterLints(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	stats := &RunnerStats{}
	stats.Set(fakeStats{{Name: "gateway", LastSuccessAt: t0}})
	if err := Register(reg, Sources{Segment: testSegment(), DatabaseOID: 5, Stats: stats, Snapshots: &SnapshotCache{}}); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		// The Go and process collectors are the library's own.
		if strings.HasPrefix(p.Metric, "ruvector_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	if err := Register(prometheus.NewRegistry(), Sources{}); err == nil {
		t.Fatal("Register without a segment succeeded")
	}
}

func TestServeHealthAndShutdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := Register(reg, Sources{Segment: testSegment(), DatabaseOID: 5}); err != nil {
		t.Fatal(err)
	}
	// The handler runs on the server's goroutines.
	var healthErr atomic.Pointer[error]
	h := Handler(reg, HandlerOptions{Log: zerolog.Nop(), Health: func() error {
		if p := healthErr.Load(); p != nil {
			return *p
		}
		return nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h) }()
	base := "http://" + ln.Addr().String()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `ruvector_integrity_state{collection="emb"} 2`) ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz healthy: %d %q", code, body)
	}
	unhealthy := errors.New("sidecar heartbeat is 9s old")
	healthErr.Store(&unhealthy)
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "9s old") {
		t.Fatalf("/healthz unhealthy: %d %q", code, body)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Fatalf("/nothing: %d", code)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}
