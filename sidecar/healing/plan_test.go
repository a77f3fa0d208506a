package healing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/remedy"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// planSnapshot fingerprints everything a dry run must leave alone: every
// table of schema ruvector (count and a hash of its rows) except those the
// sidecar's own start-up and the requests legitimately write, the routing
// state as the segment sees it, and every row of the collection with the
// partition it is in.
func planSnapshot(ctx context.Context, t *testing.T, conn *pgx.Conn, name, table string, skip ...string) map[string]string {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname = 'ruvector' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		if strings.Contains(strings.Join(skip, " "), tb) {
			continue
		}
		var n int64
		var h string
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM `+tb+` x`).
			Scan(&n, &h); err != nil {
			t.Fatalf("%s: %v", tb, err)
		}
		out[tb] = fmt.Sprintf("%d rows %s", n, h)
	}
	var routing string
	if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(format('%s:%s:%s:%s:%s', shard, weight, set_by, outcome_id, segment_weight), ' ' ORDER BY shard), '')
		FROM ruvector.ruvector_routing_status($1)`, name).Scan(&routing); err != nil {
		t.Fatal(err)
	}
	out["routing"] = routing
	var n int64
	var h string
	if err := conn.QueryRow(ctx, `SELECT count(*), md5(string_agg(format('%s %s', x.tableoid::regclass, x::text), '|' ORDER BY x::text)) FROM `+table+` x`).
		Scan(&n, &h); err != nil {
		t.Fatal(err)
	}
	out["rows"] = fmt.Sprintf("%d rows %s", n, h)
	return out
}

// planRequest waits for request id to finish and returns its document.
func planRequest(ctx context.Context, t *testing.T, conn *pgx.Conn, id int64) map[string]any {
	t.Helper()
	var doc map[string]any
	pgtest.WaitFor(t, 60*time.Second, fmt.Sprintf("request %d finished", id), func() (bool, error) {
		var raw []byte
		if err := conn.QueryRow(ctx, `SELECT ruvector_healing_request_status($1)`, id).Scan(&raw); err != nil {
			return false, err
		}
		doc = nil
		if err := json.Unmarshal(raw, &doc); err != nil {
			return false, err
		}
		return doc["status"] != "pending" && doc["status"] != "running", nil
	})
	return doc
}

// A dry run is a 'plan' request the active sidecar answers with the
// strategy's own plan, measured on the live collection; it is served when
// a sidecar starts if none ran, and it changes nothing: no lease, no
// outcome, no routing weight, no row moved.
func TestDryRunPlansOnRealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 8, Partitions: 4, Lists: 4, Seed: 11})
	conn := env.Conn
	// A real hotspot: an even base, then shard 1 takes every write.
	if err := env.W.CopyInsert(ctx, 2000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := env.W.HotPartition(ctx, 1, 20000, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The trigger as the integrity loop would hand it over: the partitions
	// on partition_link witness edges and their loads (rows here).
	rows, err := conn.Query(ctx, `SELECT c.oid::int8, substring(pg_get_expr(c.relpartbound, c.oid) FROM '\((\d+)\)')::int,
			(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass), false, true, '')))[1]::text::int8
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 2`, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	load := map[int64]float64{}
	var witness []classify.WitnessEdge
	var hotRel int64
	counts := map[int]int64{}
	for rows.Next() {
		var rel, n int64
		var shard int
		if err := rows.Scan(&rel, &shard, &n); err != nil {
			t.Fatal(err)
		}
		load[rel] = float64(n)
		counts[shard] = n
		witness = append(witness, classify.WitnessEdge{EdgeType: classify.EdgePartitionLink,
			Source: classify.NodeRef{Kind: classify.NodePartition, ID: rel}, Target: classify.NodeRef{Kind: classify.NodeRoot}})
		if shard == 1 {
			hotRel = rel
		}
	}
	if rows.Err() != nil || len(counts) != 4 || counts[1] < 3*counts[0] {
		t.Fatalf("setup: rows per shard %v (%v)", counts, rows.Err())
	}
	tr := healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateStress, Lambda: 0.4,
		Witness: witness, Metrics: classify.Metrics{PartitionLoad: load}}

	// Written by the sidecar's start (leader row, published strategies,
	// its audit key) and by the requests themselves; checked apart.
	skip := []string{"ruvector.healing_leader", "ruvector.healing_strategies", "ruvector.healing_audit_keys", "ruvector.healing_requests"}
	before := planSnapshot(ctx, t, conn, "vec", env.W.Table, skip...)

	// No sidecar yet: the dry run says so and waits.
	var notices []string
	cfg, err := pgx.ParseConfig(env.Cluster.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	nconn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nconn.Close(context.Background())
	dryRun := func(c *pgx.Conn, strat, params string) map[string]any {
		t.Helper()
		var raw []byte
		if err := c.QueryRow(ctx, `SELECT ruvector_healing_execute('vec', $1, $2::jsonb)`, strat, params).Scan(&raw); err != nil {
			t.Fatalf("dry run of %s: %v", strat, err)
		}
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	waiting := dryRun(nconn, "drain_hot_partition", `{"dry_run": true}`)
	if waiting["kind"] != "plan" || waiting["status"] != "pending" || waiting["sidecar_alive"] != false || waiting["dry_run"] != true ||
		!strings.Contains(fmt.Sprint(waiting["note"]), "sidecar not running") {
		t.Fatalf("dry run without a sidecar: %v", waiting)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "ruvector-sidecar is not running") {
		t.Fatalf("notices %q", notices)
	}

	// The sidecar starts: heartbeat, engine, service.
	srv, seg := liveSegment(ctx, t, conn)
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
	reg, err := strategy.NewRegistry(&remedy.DrainHotPartition{Dial: dial}, &remedy.RebalancePartitions{Dial: dial},
		healing.ThrottleIngestion{Segment: seg, DatabaseOID: srv.DatabaseOID})
	if err != nil {
		t.Fatal(err)
	}
	econn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := healing.New(ctx, econn, reg, healing.SegmentSampler{Segment: seg, DatabaseOID: srv.DatabaseOID}, key,
		healing.Options{Holder: "plan-sidecar"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := healing.NewService(healing.ServiceConfig{Engine: e, Dial: dial, Holder: "plan-sidecar", LeaderTTL: 3 * time.Second,
		Current: func(name string) (healing.Trigger, bool) { return tr, name == "vec" }, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSvc := context.WithCancel(ctx)
	var svcWG sync.WaitGroup
	svcWG.Add(1)
	go func() {
		defer svcWG.Done()
		if err := svc.Run(sctx); err != nil {
			t.Errorf("service: %v", err)
		}
	}()
	defer func() { stopSvc(); svcWG.Wait() }()

	plan := func(doc map[string]any) (map[string]any, map[string]any) {
		t.Helper()
		res, _ := doc["result"].(map[string]any)
		p, _ := res["plan"].(map[string]any)
		steps, _ := p["steps"].([]any)
		if doc["status"] != "done" || doc["outcome_id"] != nil || res["planned_by"] != "strategy" || p["noop"] != false || len(steps) != 1 {
			t.Fatalf("plan request: %v", doc)
		}
		return res, steps[0].(map[string]any)
	}
	t.Run("the dry run made while no sidecar ran is served when one starts", func(t *testing.T) {
		doc := planRequest(ctx, t, conn, reqID(t, waiting))
		res, step := plan(doc)
		detail := step["detail"].(map[string]any)
		if step["action"] != "route" || step["target"] != "vec shard 1" || detail["weight_to"] != 0.0 ||
			int64(detail["partition_relid"].(float64)) != hotRel {
			t.Fatalf("drain plan step %v", step)
		}
		// The strategy saw the problem a real execute would: classified
		// from the collection's current metrics.
		prob, _ := res["problem"].(map[string]any)
		if prob["class"] != "hotspot_congestion" || res["initial_lambda"] != 0.4 || res["state"] != "stress" {
			t.Fatalf("plan context: problem %v λ %v state %v", prob, res["initial_lambda"], res["state"])
		}
		t.Logf("drain plan: %v", step)
	})

	t.Run("rebalance_partitions plans the rows to move off the hot shard", func(t *testing.T) {
		notices = nil
		doc := dryRun(nconn, "rebalance_partitions", `{"dry_run": true, "max_moves": 300}`)
		if len(notices) != 0 || doc["sidecar_alive"] != true || doc["would_run"] != true {
			t.Fatalf("dry run with a sidecar: %v (notices %q)", doc, notices)
		}
		_, step := plan(planRequest(ctx, t, conn, reqID(t, doc)))
		detail := step["detail"].(map[string]any)
		to := fmt.Sprint(detail["to_shards"])
		if step["action"] != "move_rows" || step["target"] != "vec shard 1" || detail["rows"] != 300.0 ||
			to == "[]" || strings.Contains(to, "1") {
			t.Fatalf("rebalance plan step %v", step)
		}
		per := detail["rows_per_shard"].(map[string]any)
		if int64(per["1"].(float64)) != counts[1] {
			t.Fatalf("rows per shard in the plan %v, counted %v", per, counts)
		}
		// Without max_moves: enough to bring shard 1 down to the mean.
		_, step = plan(planRequest(ctx, t, conn, reqID(t, dryRun(conn, "rebalance_partitions", `{"dry_run": true}`))))
		var total int64
		for _, n := range counts {
			total += n
		}
		if want := float64(counts[1] - total/4); step["detail"].(map[string]any)["rows"].(float64) < want-1 ||
			step["detail"].(map[string]any)["rows"].(float64) > want+1 {
			t.Fatalf("rows to move %v, want about %v (%v)", step["detail"].(map[string]any)["rows"], want, counts)
		}
	})

	t.Run("a strategy without a planner answers with its description", func(t *testing.T) {
		doc := planRequest(ctx, t, conn, reqID(t, dryRun(conn, "throttle_ingestion", `{"dry_run": true}`)))
		res, _ := doc["result"].(map[string]any)
		if doc["status"] != "done" || res["planned_by"] != "description" || res["plan"] != nil ||
			!strings.Contains(fmt.Sprint(res["note"]), "static description") || res["description"] == nil {
			t.Fatalf("throttle dry run: %v", doc)
		}
	})

	t.Run("a plan that cannot be made fails with the reason", func(t *testing.T) {
		doc := planRequest(ctx, t, conn, reqID(t, dryRun(conn, "drain_hot_partition", `{"dry_run": true, "shard": 9}`)))
		if doc["status"] != "failed" || !strings.Contains(fmt.Sprint(doc["error"]), "shard 9 is not a shard") {
			t.Fatalf("plan for shard 9: %v", doc)
		}
	})

	t.Run("nothing changed", func(t *testing.T) {
		after := planSnapshot(ctx, t, conn, "vec", env.W.Table, skip...)
		for k, v := range before {
			if after[k] != v {
				t.Errorf("%s changed: %s -> %s", k, v, after[k])
			}
		}
		if len(after) != len(before) {
			t.Errorf("tables %d -> %d", len(before), len(after))
		}
		var kinds string
		var outcomes int
		if err := conn.QueryRow(ctx, `SELECT string_agg(DISTINCT kind, ','), count(outcome_id) FROM ruvector.healing_requests`).
			Scan(&kinds, &outcomes); err != nil || kinds != "plan" || outcomes != 0 {
			t.Errorf("requests: kinds %q with %d outcomes (%v)", kinds, outcomes, err)
		}
		check, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
		if err != nil || !check.TotalOK() || !check.ShardsOK() {
			t.Errorf("ledger: %v %v", check, err)
		}
		t.Logf("%d ruvector tables unchanged; routing %q; %s", len(before)-2, after["routing"], after["rows"])
	})
}
