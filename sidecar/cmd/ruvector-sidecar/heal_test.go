package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
)

// The whole loop through the daemon's own code path (runDaemon): a real
// hotspot made by a writer that sends every row to half of the shards is
// detected by the collectors and the integrity loop, the transition
// triggers the engine, throttle_ingestion acts through the segment, λ is
// verified after the stabilisation wait, the outcome is recorded and
// sealed, the weights are learned, and the healing metrics move on
// /metrics. A request from psql is served by the same daemon, also after
// a server restart.
func TestDaemonHealsARealHotspot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 8, `
SELECT ruvector_integrity_policy_set('emb', 'test',
  '{"degrade_samples": 3, "critical_samples": 2, "restore_hold_seconds": 2, "cooldown_after_transition_seconds": 1}');
SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 0, "max_attempts_per_hour": 1000}');`)
	c, conn := env.Cluster, env.Conn

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dctx, stopDaemon := context.WithCancel(ctx)
	daemonDone := make(chan error, 1)
	go func() {
		daemonDone <- runDaemon(dctx, []string{"--dsn", c.DSN("postgres"), "--sample-interval", "250ms",
			"--heartbeat-interval", "200ms", "--metrics-listen", addr, "--audit-key", filepath.Join(t.TempDir(), "k"),
			"--heal-every", "3s", "--leader-ttl", "3s", "--stabilization", "3s", "--log-level", "warn"}, io.Discard)
	}()
	defer func() {
		stopDaemon()
		if err := <-daemonDone; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()

	scrape := func() string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	pgtest.WaitFor(t, 30*time.Second, "the daemon leads and serves /metrics", func() (bool, error) {
		var leader *string
		if err := conn.QueryRow(ctx, `SELECT ruvector_healing_status()->'leader'->>'holder'`).Scan(&leader); err != nil {
			return false, err
		}
		return leader != nil && strings.Contains(scrape(), "ruvector_healing_enabled 1"), nil
	})
	if m := scrape(); strings.Contains(m, "ruvector_healing_attempts_total{") {
		t.Fatalf("attempts before any trouble:\n%s", grepLines(m, "ruvector_healing_"))
	}

	hot := make(chan bool, 1)
	hot <- false
	writer := c.Connect(ctx, "postgres")
	writerDone := make(chan struct{})
	wctx, stopWriter := context.WithCancel(ctx)
	defer func() { stopWriter(); <-writerDone }()
	go func() {
		defer close(writerDone)
		isHot := false
		for wctx.Err() == nil {
			select {
			case isHot = <-hot:
			default:
			}
			sql := "INSERT INTO emb (embedding, shard) SELECT '{1,2}', g % 8 FROM generate_series(1, 400) g"
			if isHot {
				sql = "INSERT INTO emb (embedding, shard) SELECT '{1,2}', g % 4 FROM generate_series(1, 400) g"
			}
			if _, err := writer.Exec(wctx, sql); err != nil && wctx.Err() == nil {
				// A throttled insert is refused or delayed: that is the
				// remediation working, keep writing.
				time.Sleep(50 * time.Millisecond)
			}
			_, _ = writer.Exec(wctx, "SELECT pg_stat_force_next_flush()")
			time.Sleep(100 * time.Millisecond)
		}
	}()
	state := func() string {
		var s string
		_ = conn.QueryRow(ctx, `SELECT ruvector_integrity_status('emb')->>'state'`).Scan(&s)
		return s
	}
	pgtest.WaitFor(t, 60*time.Second, "normal under a balanced load", func() (bool, error) { return state() == "normal", nil })

	hot <- true
	var id int64
	pgtest.WaitFor(t, 90*time.Second, "a finished remediation of the hotspot", func() (bool, error) {
		err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM ruvector.healing_outcomes
			WHERE state = 'done' AND strategy_name = 'throttle_ingestion'`).Scan(&id)
		return id > 0, err
	})
	var (
		class              string
		success, rolled    bool
		verified           *bool
		actions            int
		initial            float32
		final              *float32
		sealed             bool
		transitionRecorded bool
	)
	if err := conn.QueryRow(ctx, `SELECT problem_class, success, verified, rolled_back, actions_taken, initial_lambda, final_lambda,
			signature IS NOT NULL,
			EXISTS (SELECT 1 FROM ruvector_integrity_history('emb', 'state_transition') h WHERE h.new_state IN ('stress', 'critical'))
		FROM ruvector.healing_outcomes WHERE id = $1`, id).
		Scan(&class, &success, &verified, &rolled, &actions, &initial, &final, &sealed, &transitionRecorded); err != nil {
		t.Fatal(err)
	}
	t.Logf("outcome %d: %s success=%v verified=%v rolled_back=%v actions=%d λ %.3f → %v", id, class, success, deref(verified),
		rolled, actions, initial, derefF(final))
	if class != "hotspot_congestion" || actions != 2 || !sealed || !transitionRecorded || initial >= 0.8 || final == nil || verified == nil {
		t.Fatalf("outcome %d: class %s actions %d sealed %v transition %v initial λ %v final %v", id, class, actions, sealed,
			transitionRecorded, initial, final)
	}
	// Verified or not, the record must be consistent with what the engine did.
	if *verified != (*final > initial*1.1) || (*verified == rolled) {
		t.Fatalf("verified=%v with λ %.3f → %.3f, rolled_back=%v", *verified, initial, *final, rolled)
	}
	var weight float32
	if err := conn.QueryRow(ctx, `SELECT weight FROM ruvector.healing_strategy_weights WHERE strategy_name = 'throttle_ingestion'`).
		Scan(&weight); err != nil {
		t.Fatalf("no learned weight: %v", err)
	}
	// The daemon's one audit key signs the integrity events too (the
	// transitions and the SQL-written policy change), and the server
	// verifies them; the healing record carries the same key.
	pgtest.WaitFor(t, 30*time.Second, "every integrity event signed and verified", func() (bool, error) {
		var n, good, transitions int
		err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE is_signed AND is_verified),
				count(*) FILTER (WHERE event_type = 'state_transition')
			FROM ruvector_integrity_history('emb', NULL, now() - interval '1 hour', 100000)`).Scan(&n, &good, &transitions)
		return n > 0 && transitions > 0 && good == n, err
	})
	var eventKeys, outcomeKey string
	if err := conn.QueryRow(ctx, `SELECT string_agg(DISTINCT e.key_id, ','), (SELECT key_id FROM ruvector.healing_outcomes WHERE id = $1)
		FROM ruvector.integrity_events e`, id).Scan(&eventKeys, &outcomeKey); err != nil {
		t.Fatal(err)
	}
	if eventKeys != outcomeKey || !strings.HasPrefix(outcomeKey, "ed25519:") {
		t.Fatalf("integrity events signed by %q, healing records by %q", eventKeys, outcomeKey)
	}
	if ok, err := verifyAuditOK(ctx, conn); err != nil || !ok {
		t.Fatalf("ruvector_healing_verify_audit: %v %v", ok, err)
	}

	m := scrape()
	attempts := metricValue(t, m, `ruvector_healing_attempts_total{collection="emb",strategy="throttle_ingestion"}`)
	durations := metricValue(t, m, `ruvector_healing_duration_seconds_count{collection="emb",strategy="throttle_ingestion"}`)
	if attempts < 1 || durations < 1 || !strings.Contains(m, `ruvector_healing_success_rate{collection="emb"}`) {
		t.Fatalf("healing metrics after a cycle:\n%s", grepLines(m, "ruvector_healing_"))
	}

	// A request from psql reaches the same daemon without polling.
	stopWriter()
	<-writerDone
	writerDone = make(chan struct{})
	close(writerDone)
	var req int64
	if err := conn.QueryRow(ctx, `SELECT (ruvector_healing_trigger('emb')->>'request_id')::bigint`).Scan(&req); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 60*time.Second, "the trigger request served", func() (bool, error) {
		var st, by string
		err := conn.QueryRow(ctx, `SELECT r->>'status', coalesce(r->>'claimed_by', '') FROM ruvector_healing_request_status($1) r`, req).Scan(&st, &by)
		if st == "failed" && strings.Contains(by, "ruvector-sidecar@") {
			return true, nil // e.g. the lease still held by the automatic attempt: served, and said so
		}
		return st == "done" && strings.Contains(by, "ruvector-sidecar@"), err
	})

	// A server restart drops every connection: the daemon re-LISTENs,
	// takes the leader row again and serves a request made afterwards.
	c.Restart("fast")
	conn2 := c.Connect(ctx, "postgres")
	if err := conn2.QueryRow(ctx, `SELECT (ruvector_healing_trigger('emb')->>'request_id')::bigint`).Scan(&req); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 60*time.Second, "a request after a server restart served", func() (bool, error) {
		var st string
		err := conn2.QueryRow(ctx, `SELECT r->>'status' FROM ruvector_healing_request_status($1) r`, req).Scan(&st)
		return st == "done" || st == "failed", err
	})
}

func verifyAuditOK(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT (ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&ok)
	return ok, err
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func derefF(f *float32) any {
	if f == nil {
		return nil
	}
	return *f
}

func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("series %s not scraped:\n%s", series, grepLines(text, "ruvector_healing_"))
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(strings.Join(out, "\n"))
}
