package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/metrics"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// Four rows in one small statement: the gate counts it as an insert (not
// bulk_insert), one row per shard.
const insertSQL = `INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0), ('{1,2}', 1), ('{1,2}', 2), ('{1,2}', 3)`

// The endpoint over a real server, segment, collectors and integrity loop,
// scraped over HTTP as Prometheus would: the state goes from unknown to
// normal, admitted rows grow with writes, a sidecar throttle of 100 shows
// with set_by sidecar and its refusals are counted, and promtool accepts
// the exposition.
func TestMetricsOnRealServer(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: run scripts/deps.sh (Debian package prometheus)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := sensortest.Start(t, ctx, 4, "")
	c, conn, srv, seg, target := env.Cluster, env.Conn, env.Server, env.Segment, env.Target
	loopCtx, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	// Defers run before the harness's cleanups close the connections.
	defer func() { stopLoops(); loops.Wait() }()
	loops.Add(1)
	go func() {
		defer loops.Done()
		(&instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}).Run(loopCtx)
	}()

	parts := collect.NewPartitions()
	parts.Interval = time.Second
	runner := collect.NewRunner(c.Connect(ctx, "postgres"), []collect.Target{target},
		[]collect.Collector{parts, collect.NewGateway(seg)}, collect.RunnerOptions{})
	mon, err := monitor.New(monitor.Config{Sample: 250 * time.Millisecond, Warmup: 5 * time.Second},
		c.Connect(ctx, "postgres"), seg, runner, srv.DatabaseOID, []collect.Target{target}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}

	snaps := &metrics.SnapshotCache{}
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, metrics.Sources{Segment: seg, DatabaseOID: srv.DatabaseOID, Stats: runner, Snapshots: snaps}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(metrics.Handler(reg, metrics.HandlerOptions{Log: zerolog.Nop()}))
	defer hs.Close()

	var lastText string
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := http.Get(hs.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, body)
		}
		lastText = string(body)
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(lastText))
		if err != nil {
			t.Fatalf("parse scrape: %v", err)
		}
		return mfs
	}
	emb := map[string]string{"collection": "emb"}
	insert := map[string]string{"collection": "emb", "op": "insert"}

	// Before any sample: unknown, no λ yet, nothing admitted.
	mfs := scrape()
	if v, ok := value(mfs, "ruvector_integrity_state", emb); !ok || v != float64(shmproto.StateUnknown) {
		t.Fatalf("state before the first sample: %v %v", v, ok)
	}
	if _, ok := value(mfs, "ruvector_integrity_lambda_cut", emb); ok {
		t.Fatal("λ reported before the first sample")
	}
	if v, ok := value(mfs, "ruvector_gate_admitted_rows_total", insert); !ok || v != 0 {
		t.Fatalf("admitted rows before any write: %v %v", v, ok)
	}
	if v, ok := value(mfs, "ruvector_segment_generation", nil); !ok || v < 1 {
		t.Fatalf("segment generation: %v %v", v, ok)
	}

	// The collectors, the loop as the daemon runs it (snapshots handed over
	// between samples), and a balanced writer.
	loopsStarted := time.Now()
	loops.Add(3)
	go func() { defer loops.Done(); runner.Run(loopCtx) }()
	go func() {
		defer loops.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = mon.Step(loopCtx, time.Now())
			snaps.Store(mon.Snapshots())
			select {
			case <-loopCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	writer := c.Connect(ctx, "postgres")
	writeCtx, cancelWriter := context.WithCancel(loopCtx)
	writerDone := make(chan struct{})
	// Stopping waits for the writer: an insert still in flight would meet
	// the 100% throttle below and count as a second refusal.
	stopWriter := func() { cancelWriter(); <-writerDone }
	go func() {
		defer loops.Done()
		defer close(writerDone)
		for writeCtx.Err() == nil {
			if _, err := writer.Exec(writeCtx, insertSQL); err != nil {
				return
			}
			_, _ = writer.Exec(writeCtx, "SELECT pg_stat_force_next_flush()")
			time.Sleep(50 * time.Millisecond)
		}
	}()

	start := time.Now()
	pgtest.WaitFor(t, 30*time.Second, "the scraped state to become normal", func() (bool, error) {
		v, ok := value(scrape(), "ruvector_integrity_state", emb)
		return ok && v == float64(shmproto.StateNormal), nil
	})
	t.Logf("unknown -> normal in %v", time.Since(start).Round(time.Millisecond))
	mfs = scrape()
	if v, ok := value(mfs, "ruvector_integrity_lambda_cut", emb); !ok || v < 0.8 || v > 1 {
		t.Fatalf("λ in the normal state: %v %v", v, ok)
	}
	// A sample taken since the loops started, in seconds since the epoch
	// (bracketed: "within 5 s of now" failed when a loaded machine delayed
	// a step).
	if v, ok := value(mfs, "ruvector_integrity_last_sample_timestamp_seconds", emb); !ok ||
		v < float64(loopsStarted.Unix()) || v > float64(time.Now().Unix()+1) {
		t.Fatalf("last sample timestamp %v (%v), want between the loops' start %v and now %v", v, ok, loopsStarted.Unix(), time.Now().Unix())
	} else {
		// And it follows the samples: a later scrape shows a later one.
		pgtest.WaitFor(t, 30*time.Second, "the last sample timestamp to advance", func() (bool, error) {
			w, _ := value(scrape(), "ruvector_integrity_last_sample_timestamp_seconds", emb)
			return w > v, nil
		})
	}
	var witness float64
	for _, et := range []string{"partition_link", "routing_link", "dependency", "replication"} {
		v, ok := value(mfs, "ruvector_integrity_witness_edges", map[string]string{"collection": "emb", "edge_type": et})
		if !ok {
			t.Fatalf("no witness edge series for %s", et)
		}
		witness += v
	}
	if witness == 0 {
		t.Fatal("the minimum cut has no witness edges")
	}
	for _, name := range []string{"gateway", "partitions"} {
		if v, ok := value(mfs, "ruvector_collector_success", map[string]string{"collector": name}); !ok || v != 1 {
			t.Fatalf("collector %s success: %v %v", name, v, ok)
		}
		if v, ok := value(mfs, "ruvector_collector_errors_total", map[string]string{"collector": name}); !ok || v != 0 {
			t.Fatalf("collector %s errors: %v %v", name, v, ok)
		}
		if _, ok := value(mfs, "ruvector_collector_last_duration_seconds", map[string]string{"collector": name}); !ok {
			t.Fatalf("collector %s has no duration", name)
		}
	}
	admitted, _ := value(mfs, "ruvector_gate_admitted_rows_total", insert)
	if admitted == 0 {
		t.Fatal("no admitted rows while writing")
	}
	pgtest.WaitFor(t, 30*time.Second, "admitted rows to grow between scrapes", func() (bool, error) {
		v, _ := value(scrape(), "ruvector_gate_admitted_rows_total", insert)
		return v > admitted, nil
	})
	stopWriter()

	// The sidecar refuses inserts through the segment alone.
	col, err := seg.Find("emb", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	mfs = scrape()
	if v, ok := value(mfs, "ruvector_throttle_percent", map[string]string{"collection": "emb", "op": "insert", "set_by": "sidecar"}); !ok || v != 100 {
		t.Fatalf("throttle after the sidecar set 100: %v %v\n%s", v, ok, grep(lastText, "ruvector_throttle_percent"))
	}
	if v, ok := value(mfs, "ruvector_throttle_percent", map[string]string{"collection": "emb", "op": "bulk_insert", "set_by": "none"}); !ok || v != 0 {
		t.Fatalf("bulk_insert throttle: %v %v", v, ok)
	}
	rejected, _ := value(mfs, "ruvector_gate_rejected_statements_total", insert)
	_, err = conn.Exec(ctx, insertSQL)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53000" {
		t.Fatalf("insert under a 100%% throttle: %v", err)
	}
	mfs = scrape()
	if v, _ := value(mfs, "ruvector_gate_rejected_statements_total", insert); v != rejected+1 {
		t.Fatalf("rejected statements %v after one refusal, was %v", v, rejected)
	}
	// Process and Go metrics are served too.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "ruvector_sidecar_outages_total", "ruvector_watchdog_heartbeat_age_seconds"} {
		if _, ok := mfs[name]; !ok {
			t.Fatalf("%s missing from the scrape", name)
		}
	}

	// Prometheus's own linter on exactly what was served.
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(lastText)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// value returns the value of the series of name whose labels include want.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
		panic(fmt.Sprintf("%s: unexpected metric type", name))
	}
	return 0, false
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
