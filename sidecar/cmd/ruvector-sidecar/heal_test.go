package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
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
	// The strategies that route or move rows cannot help against rows
	// written with an explicit shard; this test is about the throttle, so
	// those need approval here (and are never run automatically).
	c.MustExec(ctx, `SELECT ruvector_healing_configure('{"require_approval_strategies":
		["scale_replicas", "drain_hot_partition", "rebalance_partitions"]}')`)
	scrape := startDaemon(ctx, t, c, "--stabilization", "3s")
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
	// While the throttle is in force, a write the gate refuses names the
	// remediation's outcome id (detail) and how to ask why (hint).
	probe := c.Connect(ctx, "postgres")
	if _, err := probe.Exec(ctx, `SET ruvector.throttle_max_wait = 0`); err != nil {
		t.Fatal(err)
	}
	var gateErr *pgconn.PgError
	var throttling int64
	pgtest.WaitFor(t, 90*time.Second, "a write refused by the remediation's throttle", func() (bool, error) {
		if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM ruvector.healing_outcomes
			WHERE state = 'running' AND strategy_name = 'throttle_ingestion'`).Scan(&throttling); err != nil || throttling == 0 {
			return false, err
		}
		for range 5 {
			_, err := probe.Exec(ctx, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', g % 8 FROM generate_series(1, 400) g")
			if errors.As(err, &gateErr) && gateErr.Code == "53000" {
				return true, nil
			}
			if err != nil {
				return false, err
			}
		}
		return false, nil
	})
	if !regexp.MustCompile(fmt.Sprintf(`remediation outcome %d\b`, throttling)).MatchString(gateErr.Detail) ||
		!strings.Contains(gateErr.Hint, fmt.Sprintf("ruvector_healing_explain(%d)", throttling)) {
		t.Fatalf("the gate's error does not name outcome %d: %s / %s / %s", throttling, gateErr.Message, gateErr.Detail, gateErr.Hint)
	}
	t.Logf("refused while outcome %d throttles: %s (%s)", throttling, gateErr.Detail, gateErr.Hint)
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
	// --stabilization 3s is shorter than the partition rates need to show
	// the throttle (about 10 s): it is raised to that, and the record says
	// the verdict waited for fresh signals.
	var refreshed bool
	if err := conn.QueryRow(ctx, `SELECT (metadata->'verification'->>'signals_refreshed')::boolean
		FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&refreshed); err != nil || !refreshed {
		t.Fatalf("verification record of a 3 s stabilization: refreshed %v (%v)", refreshed, err)
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

// startDaemon runs runDaemon against c until the test ends, waits until it
// leads and serves /metrics, and returns a scraper of its /metrics.
func startDaemon(ctx context.Context, t *testing.T, c *pgtest.Cluster, extra ...string) (scrape func() string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dctx, stopDaemon := context.WithCancel(ctx)
	daemonDone := make(chan error, 1)
	args := append([]string{"--dsn", c.DSN("postgres"), "--sample-interval", "250ms",
		"--heartbeat-interval", "200ms", "--metrics-listen", addr, "--audit-key", filepath.Join(t.TempDir(), "k"),
		"--heal-every", "3s", "--leader-ttl", "3s", "--collections-refresh", "1s", "--log-level", "warn"}, extra...)
	go func() { daemonDone <- runDaemon(dctx, args, io.Discard) }()
	t.Cleanup(func() {
		stopDaemon()
		if err := <-daemonDone; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	scrape = func() string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	conn := c.Connect(ctx, "postgres")
	pgtest.WaitFor(t, 30*time.Second, "the daemon leads and serves /metrics", func() (bool, error) {
		var leader *string
		if err := conn.QueryRow(ctx, `SELECT ruvector_healing_status()->'leader'->>'holder'`).Scan(&leader); err != nil {
			return false, err
		}
		return leader != nil && strings.Contains(scrape(), "ruvector_healing_enabled 1"), nil
	})
	return scrape
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

// The verified healing cycle through the daemon: a vector collection made
// by ruvector_collection_create, written by an application that lets the
// collection route its rows (no shard given). A routing weight the sidecar
// may change (set_by 'sidecar') sends most new rows to shard 2: a hotspot.
// The integrity loop sees it, the engine picks drain_hot_partition (the
// least impact of the hotspot strategies), which routes new rows away from
// the hot shard; λ rises, the outcome is VERIFIED and kept (not rolled
// back), sealed with a signature the server verifies, and new rows keep
// avoiding the shard.
func TestDaemonDrainsARoutedHotShard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, `
CREATE EXTENSION ruvector_healing;
SET search_path = public, ruvector;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SELECT ruvector_collection_create('vemb', 2, 8, 4);
SELECT ruvector_integrity_policy_set('vemb', 'test',
  '{"degrade_samples": 3, "critical_samples": 2, "restore_hold_seconds": 2, "cooldown_after_transition_seconds": 1}');
SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 0, "max_attempts_per_hour": 1000}');`)
	conn := c.Connect(ctx, "postgres")
	scrape := startDaemon(ctx, t, c, "--stabilization", "12s")

	writer := c.Connect(ctx, "postgres")
	writerDone := make(chan struct{})
	wctx, stopWriter := context.WithCancel(ctx)
	defer func() { stopWriter(); <-writerDone }()
	go func() {
		defer close(writerDone)
		for wctx.Err() == nil {
			if _, err := writer.Exec(wctx, `INSERT INTO vemb (embedding)
				SELECT ARRAY[random(), random()]::real[] FROM generate_series(1, 400)`); err != nil && wctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
			_, _ = writer.Exec(wctx, "SELECT pg_stat_force_next_flush()")
			time.Sleep(100 * time.Millisecond)
		}
	}()
	state := func() string {
		var s string
		_ = conn.QueryRow(ctx, `SELECT ruvector_integrity_status('vemb')->>'state'`).Scan(&s)
		return s
	}
	pgtest.WaitFor(t, 60*time.Second, "normal under routed inserts", func() (bool, error) { return state() == "normal", nil })

	if _, err := conn.Exec(ctx, `SELECT ruvector_routing_set('vemb', 2, 8, 'sidecar')`); err != nil {
		t.Fatal(err)
	}
	var id int64
	// The first finished drain: a later trigger while the state still
	// reads degraded (the restore hold) may find the shard drained already
	// and end as a noop, which on a loaded machine can finish before this
	// poll sees the first.
	pgtest.WaitFor(t, 90*time.Second, "a finished drain of the hot shard", func() (bool, error) {
		err := conn.QueryRow(ctx, `SELECT coalesce(min(id), 0) FROM ruvector.healing_outcomes
			WHERE state = 'done' AND strategy_name = 'drain_hot_partition'`).Scan(&id)
		return id > 0, err
	})
	var (
		class                 string
		success, verified, rb bool
		initial, final        float32
		sig                   string
		otherAttempts         int
	)
	if err := conn.QueryRow(ctx, `SELECT problem_class, success, coalesce(verified, false), rolled_back, initial_lambda,
			coalesce(final_lambda, 0), ruvector._healing_outcome_signature(o),
			(SELECT count(*) FROM ruvector.healing_outcomes x WHERE x.id < o.id AND x.collection_id = o.collection_id)
		FROM ruvector.healing_outcomes o WHERE id = $1`, id).
		Scan(&class, &success, &verified, &rb, &initial, &final, &sig, &otherAttempts); err != nil {
		t.Fatal(err)
	}
	t.Logf("outcome %d: %s success=%v verified=%v rolled_back=%v λ %.3f → %.3f (%d earlier attempts)",
		id, class, success, verified, rb, initial, final, otherAttempts)
	if class != "hotspot_congestion" || !success || !verified || rb || final < initial*1.1 || sig != "verified" || otherAttempts != 0 {
		t.Fatalf("outcome %d: class %s success %v verified %v rolled_back %v λ %.3f → %.3f signature %s, %d earlier attempts",
			id, class, success, verified, rb, initial, final, sig, otherAttempts)
	}
	// 12 s covers the partition rates' refresh (two 5 s collector periods
	// and a 250 ms sample), and the record says so.
	var refreshed bool
	var refreshS float64
	if err := conn.QueryRow(ctx, `SELECT (metadata->'verification'->>'signals_refreshed')::boolean,
			(metadata->'verification'->>'signal_refresh_seconds')::float8 FROM ruvector.healing_outcomes WHERE id = $1`, id).
		Scan(&refreshed, &refreshS); err != nil || !refreshed || refreshS < 10 || refreshS > 11.5 {
		t.Fatalf("verification record: refreshed %v after %v s (%v)", refreshed, refreshS, err)
	}
	// Every strategy the daemon registers was considered; scale_replicas
	// (no cluster here) as unavailable, the costlier hotspot strategies
	// outranked by drain_hot_partition's lower impact.
	verdicts := map[string]string{}
	rows, err := conn.Query(ctx, `SELECT c->>'name', c->>'verdict'
		FROM ruvector.healing_outcomes o, jsonb_array_elements(o.decision->'selection'->'candidates') c WHERE o.id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n, v string
		if err := rows.Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		verdicts[n] = v
	}
	want := map[string]string{"drain_hot_partition": "chosen", "throttle_ingestion": "outranked",
		"rebalance_partitions": "outranked", "scale_replicas": "unavailable", "pause_maintenance": "class_not_handled",
		"compact_indexes": "class_not_handled", "evict_cold_data": "class_not_handled", "rebuild_centroids": "class_not_handled",
		"resume_replay": "class_not_handled"}
	if fmt.Sprint(verdicts) != fmt.Sprint(want) {
		t.Fatalf("candidates %v\nwant %v", verdicts, want)
	}
	// Explainability: ruvector_healing_explain finds everything it looks
	// for in what the engine recorded (nothing "not_recorded"): the witness
	// edges, the rule that fired and its values, every candidate with its
	// verdict and the limits, λ and the hotspot's load ratio before and
	// after.
	var raw []byte
	if err := conn.QueryRow(ctx, `SELECT ruvector_healing_explain($1)::text`, id).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var ex struct {
		NotRecorded []string `json:"not_recorded"`
		Trigger     struct {
			WitnessEdgeCount int `json:"witness_edge_count"`
		} `json:"trigger"`
		Classification struct {
			Rule  string `json:"rule"`
			Fired *struct {
				Observed, Threshold float64
			} `json:"fired"`
		} `json:"classification"`
		Selection struct {
			Chosen     string           `json:"chosen"`
			Limits     map[string]any   `json:"limits"`
			Candidates []map[string]any `json:"candidates"`
		} `json:"selection"`
		Signal struct {
			Name          string
			Before, After *float64
		} `json:"signal"`
		Verification struct {
			Passed *bool `json:"passed"`
		} `json:"verification"`
	}
	if err := json.Unmarshal(raw, &ex); err != nil {
		t.Fatal(err)
	}
	if len(ex.NotRecorded) != 0 || ex.Trigger.WitnessEdgeCount == 0 || ex.Classification.Rule != "hotspot_congestion" ||
		ex.Classification.Fired == nil || ex.Classification.Fired.Observed <= ex.Classification.Fired.Threshold ||
		ex.Selection.Chosen != "drain_hot_partition" || ex.Selection.Limits["max_auto_heal_impact"] != 0.5 ||
		len(ex.Selection.Candidates) != len(want) || ex.Signal.Name != "load_ratio" ||
		ex.Signal.Before == nil || ex.Signal.After == nil || *ex.Signal.Before < 1.5 || *ex.Signal.After >= *ex.Signal.Before ||
		ex.Verification.Passed == nil || !*ex.Verification.Passed {
		t.Fatalf("ruvector_healing_explain(%d):\n%s", id, raw)
	}
	t.Logf("explained: load ratio %.2f → %.2f", *ex.Signal.Before, *ex.Signal.After)

	// The drain stays: shard 2 weight 0, set by the sidecar for this outcome,
	// and routed rows avoid it.
	var weight float32
	var setBy string
	var outcome *int64
	if err := conn.QueryRow(ctx, `SELECT weight, set_by, outcome_id FROM ruvector_routing_status('vemb') WHERE shard = 2`).
		Scan(&weight, &setBy, &outcome); err != nil {
		t.Fatal(err)
	}
	if weight != 0 || setBy != "sidecar" || outcome == nil || *outcome != id {
		t.Fatalf("shard 2 routing after the drain: weight %v set_by %s outcome %v", weight, setBy, outcome)
	}
	var onHot int
	if err := conn.QueryRow(ctx, `WITH ins AS (INSERT INTO vemb (embedding)
			SELECT ARRAY[random(), random()]::real[] FROM generate_series(1, 400) RETURNING shard)
		SELECT count(*) FILTER (WHERE shard = 2) FROM ins`).Scan(&onHot); err != nil || onHot != 0 {
		t.Fatalf("%d of 400 new rows routed to the drained shard (%v)", onHot, err)
	}
	if ok, err := verifyAuditOK(ctx, conn); err != nil || !ok {
		t.Fatalf("ruvector_healing_verify_audit: %v %v", ok, err)
	}
	m := scrape()
	if v := metricValue(t, m, `ruvector_healing_attempts_total{collection="vemb",strategy="drain_hot_partition"}`); v < 1 {
		t.Fatalf("attempts %v", v)
	}
	pgtest.WaitFor(t, 60*time.Second, "back to normal after the drain", func() (bool, error) { return state() == "normal", nil })
}

// scale_replicas' flags: a half-configured workload is refused at start
// with the flag named; without a cluster the strategy is registered but
// unavailable, and says why.
func TestRunScaleFlags(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--k8s-replicas", "pod/pg"}, "--k8s-replicas"},
		{[]string{"--k8s-replicas", "statefulset", "--k8s-namespace", "db", "--max-replicas", "3"}, "--k8s-replicas"},
		{[]string{"--k8s-replicas", "statefulset/pg", "--k8s-namespace", "db"}, "--max-replicas 0"},
		{[]string{"--k8s-replicas", "statefulset/pg", "--max-replicas", "3"}, "--k8s-namespace"},
		{[]string{"--k8s-replicas", "statefulset/PG", "--k8s-namespace", "db", "--max-replicas", "3"}, "not a Kubernetes object name"},
		{[]string{"--max-replicas", "3"}, "needs --k8s-replicas"},
	} {
		// No --dsn: the flags are checked before anything connects.
		err := runDaemon(ctx, tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	for _, f := range []scaleFlags{{}, {namespace: "db", workload: "sts/pg-replicas", maxReplicas: 4}} {
		s, err := f.build()
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if ok, why := s.Available(ctx); ok || why == "" {
			t.Errorf("%+v: available=%v (%q) outside a cluster", f, ok, why)
		}
		reg, cleanup, err := buildStrategies(ctx, strategyDeps{Scale: s,
			Dial: func(context.Context) (*pgx.Conn, error) { return nil, errNoDB }})
		if err == nil || reg != nil || cleanup != nil {
			t.Fatalf("buildStrategies without a database: %v", err)
		}
	}
}

var errNoDB = errors.New("no database in this test")

// resume_replay's flags: a malformed or repeated --standby and a
// non-positive grace are refused at start with the value named (a value
// that may hold a password is not echoed); good ones are kept by name.
func TestRunStandbyFlags(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--standby", "replica1"}, `--standby "replica1": want NAME=DSN`},
		{[]string{"--standby", "=host=x"}, "want NAME=DSN"},
		{[]string{"--standby", "postgres://u:secret@h/db"}, "value withheld"},
		{[]string{"--standby", "a=host=x", "--standby", "a=host=y"}, `--standby "a" given twice`},
		{[]string{"--standby-resume-after", "0s"}, "--standby-resume-after 0s must be positive"},
	} {
		err := runDaemon(ctx, tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("run %q: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	var f standbyFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse([]string{"--standby", "b=host=/tmp port=5433", "--standby", "a = host=h2", "--standby-resume-after", "90s"}); err != nil {
		t.Fatal(err)
	}
	if err := f.check(); err != nil || f.grace != 90*time.Second || f.standbys["a"] != " host=h2" ||
		f.standbys["b"] != "host=/tmp port=5433" || fmt.Sprint(f.names()) != "[a b]" {
		t.Fatalf("parsed %+v (%v)", f, err)
	}
}

// The verification wait follows the integrity loop's own collectors: two
// periods of the one measuring the class (the change feed's window for
// write rates), plus the interval the loop samples at.
func TestSignalRefreshFollowsTheCollectors(t *testing.T) {
	h := &healHub{periods: collectorPeriods(monitorCollectors(nil))}
	want := map[classify.Class]time.Duration{
		classify.ClassHotspotCongestion:     10 * time.Second, // max(2 × 5 s partitions, 10 s feed window)
		classify.ClassReplicationLag:        10 * time.Second,
		classify.ClassMaintenanceContention: 10 * time.Second,
		classify.ClassMemoryPressure:        20 * time.Second,
		classify.ClassIndexFragmentation:    10 * time.Minute,
		classify.ClassCentroidSkew:          60 * time.Second, // no segment here: the scanning lists collector
	}
	for class, measured := range want {
		if got := h.signalRefresh(class); got != measured+time.Second {
			t.Errorf("%s before any sample: %v, want %v + the default 1 s sample", class, got, measured)
		}
	}
	if got := h.signalRefresh(classify.ClassUnknown); got != 0 {
		t.Errorf("unknown: %v", got)
	}
	// The samples' distance is bracketed by the calls, not assumed from
	// the sleep (which a loaded machine stretches).
	before1 := time.Now()
	h.onSample(nil, nil, nil)
	after1 := time.Now()
	time.Sleep(300 * time.Millisecond)
	before2 := time.Now()
	h.onSample(nil, nil, nil)
	after2 := time.Now()
	if got := h.signalRefresh(classify.ClassHotspotCongestion); got < 10*time.Second+before2.Sub(after1) || got > 10*time.Second+after2.Sub(before1) {
		t.Errorf("hotspot after samples %v..%v apart: %v", before2.Sub(after1), after2.Sub(before1), got)
	}
}
