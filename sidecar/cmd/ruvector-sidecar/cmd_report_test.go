package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// cycleBase is the start of the recorded cycle; the report window is
// [cycleBase, cycleBase+1h].
var cycleBase = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)

func at(min float64) time.Time { return cycleBase.Add(time.Duration(min * float64(time.Minute))) }

// cycle is a recorded healing cycle, written as the monitor and the engine
// write it: transitions normal→stress→normal twice, λ samples (through the
// contracted graph, whose trigger keeps the history), one outcome verified
// and one rolled back.
type cycle struct {
	env        *sensortest.Env
	verifiedID int64
	rolledID   int64
	pendingID  int64
	decision   classify.Decision
}

// cycleStrategy is a strategy as selection sees it; it is never run.
type cycleStrategy struct {
	name    string
	classes []classify.Class
	impact  float64
}

func (s cycleStrategy) Name() string                     { return s.name }
func (s cycleStrategy) Handles() []classify.Class        { return s.classes }
func (s cycleStrategy) Impact() float64                  { return s.impact }
func (s cycleStrategy) EstimatedDuration() time.Duration { return time.Minute }
func (s cycleStrategy) Reversible() bool                 { return true }
func (s cycleStrategy) Execute(context.Context, *strategy.Context) (strategy.Result, error) {
	return strategy.Result{}, nil
}
func (s cycleStrategy) Rollback(context.Context, *strategy.Context) error { return nil }

func startCycle(t *testing.T, ctx context.Context) *cycle {
	t.Helper()
	env := sensortest.Start(t, ctx, 4, `
CREATE TABLE other (id bigserial, embedding real[], shard int NOT NULL);
SELECT ruvector_collection_register('other', 'other');`)
	c := &cycle{env: env}
	conn := env.Conn
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%v\nSQL: %s", err, sql)
		}
	}
	var cid int64
	if err := conn.QueryRow(ctx, `SELECT collection_id FROM ruvector.collections WHERE name = 'emb'`).Scan(&cid); err != nil {
		t.Fatal(err)
	}
	event := func(min float64, from, to string, lambda float64) {
		exec(`INSERT INTO ruvector.integrity_events (collection_id, event_type, previous_state, new_state, lambda_cut,
				witness_edge_count, metadata, created_at)
			VALUES ($1, 'state_transition', $2, $3, $4, 4, jsonb_build_object('reason', $5::text), $6)`,
			cid, from, to, lambda, "test: "+from+" -> "+to, at(min))
	}
	graph := func(min, lambda float64) {
		exec(`INSERT INTO ruvector.contracted_graph (collection_id, lambda_cut, graph, updated_at)
			VALUES ($1, $2, '{}', $3)
			ON CONFLICT (collection_id) DO UPDATE SET lambda_cut = EXCLUDED.lambda_cut, updated_at = EXCLUDED.updated_at`,
			cid, lambda, at(min))
	}
	event(-10, "unknown", "normal", 0.9) // before the window: the initial state
	graph(5, 0.92)
	event(10, "normal", "stress", 0.5)
	event(15, "stress", "normal", 0.88)
	graph(20, 0.86)
	event(30, "normal", "stress", 0.45)
	graph(40, 0.47)
	event(45, "stress", "normal", 0.9)
	graph(50, 0.91)

	// The decision exactly as the engine records it (healing.Engine.Heal).
	witness := []classify.WitnessEdge{}
	for i := int64(1); i <= 4; i++ {
		witness = append(witness, classify.WitnessEdge{
			Source:   classify.NodeRef{Kind: classify.NodePartition, ID: 0, Name: "emb_0"},
			Target:   classify.NodeRef{Kind: classify.NodePartition, ID: i, Name: "emb_" + strconv.FormatInt(i, 10)},
			EdgeType: classify.EdgePartitionLink, Capacity: 0.1 * float64(i)})
	}
	metrics := classify.Metrics{PartitionLoad: map[int64]float64{0: 400, 1: 10, 2: 10, 3: 10, 4: 10}}
	dec := classify.Classify(witness, metrics, classify.DefaultThresholds())
	if dec.Problem.Class != classify.ClassHotspotCongestion {
		t.Fatalf("fixture: classified as %s, want hotspot_congestion:\n%s", dec.Problem.Class, dec.Explain())
	}
	c.decision = dec
	reg, err := strategy.NewRegistry(
		cycleStrategy{"throttle_ingestion", []classify.Class{classify.ClassHotspotCongestion}, 0.2},
		cycleStrategy{"rebalance_partitions", []classify.Class{classify.ClassHotspotCongestion}, 0.6},
		cycleStrategy{"scale_replicas", []classify.Class{classify.ClassReplicationLag}, 0.3})
	if err != nil {
		t.Fatal(err)
	}
	sel := reg.Select(ctx, dec.Problem, strategy.Limits{MaxImpact: 0.5, Weights: map[string]float64{"throttle_ingestion": 0.9}})
	decision, _ := json.Marshal(map[string]any{"classification": dec, "explanation": dec.Explain(),
		"selection": sel, "selection_explanation": sel.Explain()})
	problem, _ := json.Marshal(dec.Problem)
	witnessJSON, _ := json.Marshal(witness)
	metricsJSON, _ := json.Marshal(metrics)

	insert := `INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name,
			started_at, completed_at, duration_ms, success, verified, actions_taken, improvement_pct, initial_lambda,
			final_lambda, witness_edges, system_metrics, state, decision, rolled_back, metadata)
		VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, 1, $9, $10, $11, $12, $13, 'done', $14, $15, $16) RETURNING id`
	if err := conn.QueryRow(ctx, insert, cid, string(dec.Problem.Class), string(problem), "throttle_ingestion",
		at(12), at(13), 60000, true, float32(70), float32(0.5), float32(0.85), string(witnessJSON), string(metricsJSON),
		string(decision), false,
		`{"status": "verified", "result": {"success": true, "actions_taken": 1, "metadata": {"throttle_pct": 50}},
		  "actions": [{"op": "insert", "previous_pct": 0, "pct": 50}]}`).Scan(&c.verifiedID); err != nil {
		t.Fatal(err)
	}
	// Maintenance contention, whose strategy needs approval: the engine
	// seals a pending action; an operator approves it and the engine runs
	// it as a new record that names the pending one and nothing else.
	var depWitness []classify.WitnessEdge
	for i := int64(1); i <= 3; i++ {
		depWitness = append(depWitness, classify.WitnessEdge{
			Source:   classify.NodeRef{Kind: classify.NodeMaintenanceDep, ID: 100 + i, Name: "vacuum"},
			Target:   classify.NodeRef{Kind: classify.NodePartition, ID: i, Name: "emb_" + strconv.FormatInt(i, 10)},
			EdgeType: classify.EdgeDependency, Capacity: 0.2})
	}
	depMetrics := classify.Metrics{MaintenanceQueueDepth: 7,
		MaintenanceJobs: []classify.MaintenanceJob{{NodeID: 101, Type: "vacuum", Queued: 7}}}
	dep := classify.Classify(depWitness, depMetrics, classify.DefaultThresholds())
	if dep.Problem.Class != classify.ClassMaintenanceContention {
		t.Fatalf("fixture: classified as %s, want maintenance_contention:\n%s", dep.Problem.Class, dep.Explain())
	}
	reg2, err := strategy.NewRegistry(
		cycleStrategy{"pause_maintenance", []classify.Class{classify.ClassMaintenanceContention}, 0.1})
	if err != nil {
		t.Fatal(err)
	}
	depSel := reg2.Select(ctx, dep.Problem, strategy.Limits{MaxImpact: 0.5, ApprovalStrategies: []string{"pause_maintenance"}})
	depDecision, _ := json.Marshal(map[string]any{"classification": dep, "explanation": dep.Explain(),
		"selection": depSel, "selection_explanation": depSel.Explain()})
	depProblem, _ := json.Marshal(dep.Problem)
	depWitnessJSON, _ := json.Marshal(depWitness)
	if err := conn.QueryRow(ctx, `INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details,
			strategy_name, started_at, success, initial_lambda, witness_edges, state, decision)
		VALUES ($1, 'maintenance_contention', $2, 'pause_maintenance', $3, false, 0.45, $4, 'pending_approval', $5)
		RETURNING id`, cid, string(depProblem), at(31), string(depWitnessJSON), string(depDecision)).Scan(&c.pendingID); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, insert, cid, "maintenance_contention", string(depProblem),
		"pause_maintenance", at(32), at(34), 120000, false, float32(2), float32(0.45), float32(0.46), string(depWitnessJSON), "{}",
		fmt.Sprintf(`{"approved_action": %d}`, c.pendingID), true,
		fmt.Sprintf(`{"status": "unverified", "kind": "approved", "approved_action": %d}`, c.pendingID)).Scan(&c.rolledID); err != nil {
		t.Fatal(err)
	}
	return c
}

// svgNode is a generic XML element.
type svgNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []svgNode  `xml:",any"`
}

func (n svgNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n svgNode) hasClass(c string) bool {
	return strings.Contains(" "+n.attr("class")+" ", " "+c+" ")
}

// find returns the descendants (depth first, document order) with class c.
func (n svgNode) find(c string) []svgNode {
	var out []svgNode
	for _, ch := range n.Children {
		if ch.hasClass(c) {
			out = append(out, ch)
		}
		out = append(out, ch.find(c)...)
	}
	return out
}

func parseSVG(t *testing.T, b []byte) svgNode {
	t.Helper()
	var root svgNode
	if err := xml.Unmarshal(b, &root); err != nil {
		t.Fatalf("the report is not well-formed XML: %v\n%s", err, b)
	}
	if root.XMLName.Local != "svg" {
		t.Fatalf("root element %q, want svg", root.XMLName.Local)
	}
	return root
}

// pathPoints reads the coordinates of an "M x y L x y ..." path.
func pathPoints(t *testing.T, d string) [][2]float64 {
	t.Helper()
	f := strings.Fields(d)
	if len(f)%3 != 0 {
		t.Fatalf("path %q is not a list of M/L x y", d)
	}
	var pts [][2]float64
	for i := 0; i < len(f); i += 3 {
		x, err1 := strconv.ParseFloat(f[i+1], 64)
		y, err2 := strconv.ParseFloat(f[i+2], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("path %q: bad coordinate at %d", d, i)
		}
		pts = append(pts, [2]float64{x, y})
	}
	return pts
}

// The plot's geometry, as svg.go lays it out: x spans 64..976 over the hour,
// y spans 62 (λ = 1) to 222 (λ = 0).
func wantX(min float64) float64 { return 64 + min/60*912 }
func wantY(l float64) float64   { return 62 + 160*(1-l) }

func near(a, b float64) bool { return math.Abs(a-b) <= 0.11 }

func TestReportRendersARecordedCycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCycle(t, ctx)
	dsn := c.env.Cluster.DSN("postgres")
	out := filepath.Join(t.TempDir(), "report.svg")
	args := []string{"--dsn", dsn, "--since", "1h", "--until", at(60).Format(time.RFC3339), "-o", out}
	if err := runReport(ctx, args, io.Discard); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Deterministic: the same data renders to the same bytes, on stdout too.
	var stdout bytes.Buffer
	if err := runReport(ctx, append(args[:len(args)-1], "-"), &stdout); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, stdout.Bytes()) {
		t.Fatalf("two renderings of the same data differ")
	}
	if keep := os.Getenv("RUVECTOR_REPORT_KEEP"); keep != "" {
		// For a person to look at the picture the test checked.
		if err := os.WriteFile(keep, file, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := parseSVG(t, file)

	panels := root.find("panel")
	if len(panels) != 2 || panels[0].attr("data-collection") != "emb" || panels[1].attr("data-collection") != "other" {
		t.Fatalf("panels %d, want emb then other", len(panels))
	}
	emb, other := panels[0], panels[1]
	if len(other.find("lambda")) != 0 || len(other.find("no-data")) != 1 || len(other.find("remediation")) != 0 {
		t.Errorf("the collection without data should say so and draw nothing")
	}

	// λ: 4 samples (from the graph trigger), 4 transitions in the window,
	// and each outcome's initial and final λ, in time order.
	paths := emb.find("lambda")
	if len(paths) != 1 {
		t.Fatalf("%d lambda paths, want 1", len(paths))
	}
	pts := pathPoints(t, paths[0].attr("d"))
	want := []struct{ min, lambda float64 }{
		{5, 0.92}, {10, 0.5}, {12, 0.5}, {13, 0.85}, {15, 0.88}, {20, 0.86},
		{30, 0.45}, {32, 0.45}, {34, 0.46}, {40, 0.47}, {45, 0.9}, {50, 0.91},
	}
	if len(pts) != len(want) || paths[0].attr("data-points") != strconv.Itoa(len(want)) {
		t.Fatalf("lambda path has %d points (data-points %s), want %d: %s", len(pts), paths[0].attr("data-points"), len(want), paths[0].attr("d"))
	}
	for i, w := range want {
		if !near(pts[i][0], wantX(w.min)) || !near(pts[i][1], wantY(w.lambda)) {
			t.Errorf("point %d = %v, want λ %.2f at +%vmin = (%.1f, %.1f)", i, pts[i], w.lambda, w.min, wantX(w.min), wantY(w.lambda))
		}
	}

	// States: normal (from before the window), stress, normal, stress, normal.
	var states []string
	for _, s := range emb.find("state") {
		states = append(states, strings.TrimPrefix(strings.Fields(s.attr("class"))[1], "state-")+"@"+s.attr("data-from"))
	}
	wantStates := []string{"normal@" + at(0).Format(time.RFC3339), "stress@" + at(10).Format(time.RFC3339),
		"normal@" + at(15).Format(time.RFC3339), "stress@" + at(30).Format(time.RFC3339), "normal@" + at(45).Format(time.RFC3339)}
	if strings.Join(states, " ") != strings.Join(wantStates, " ") {
		t.Errorf("state strip %v, want %v", states, wantStates)
	}
	if len(emb.find("band-normal")) != 1 || len(emb.find("band-stress")) != 1 || len(emb.find("band-critical")) != 1 {
		t.Errorf("threshold bands missing")
	}

	// Remediations in time order, with their ids, strategies and results.
	rems := emb.find("remediation")
	if len(rems) != 3 {
		t.Fatalf("%d remediations, want 3", len(rems))
	}
	type mark struct {
		id              int64
		strategy        string
		result          string
		startMin, endMn float64
		markTag         string
	}
	wantRems := []mark{
		{c.verifiedID, "throttle_ingestion", "verified", 12, 13, "circle"},
		{c.pendingID, "pause_maintenance", "pending", 31, -1, ""},
		{c.rolledID, "pause_maintenance", "rolled_back", 32, 34, "path"},
	}
	for i, w := range wantRems {
		g := rems[i]
		if g.attr("data-outcome-id") != strconv.FormatInt(w.id, 10) || g.attr("data-strategy") != w.strategy ||
			g.attr("data-result") != w.result {
			t.Errorf("remediation %d: id %s strategy %s result %s, want %d %s %s", i, g.attr("data-outcome-id"),
				g.attr("data-strategy"), g.attr("data-result"), w.id, w.strategy, w.result)
		}
		wantEnd := ""
		if w.endMn >= 0 {
			wantEnd = at(w.endMn).Format(time.RFC3339)
		}
		if g.attr("data-start") != at(w.startMin).Format(time.RFC3339) || g.attr("data-end") != wantEnd {
			t.Errorf("remediation %d: %s..%s", i, g.attr("data-start"), g.attr("data-end"))
		}
		var title, label string
		var startX, endX float64
		var markTag string
		for _, ch := range g.Children {
			switch {
			case ch.XMLName.Local == "title":
				title = ch.Text
			case ch.hasClass("label"):
				label = ch.Text
			case ch.hasClass("start"):
				startX, _ = strconv.ParseFloat(ch.attr("x1"), 64)
			case ch.hasClass("end"):
				endX, _ = strconv.ParseFloat(ch.attr("x1"), 64)
			case ch.hasClass("mark"):
				markTag = ch.XMLName.Local
			}
		}
		idText := "outcome " + strconv.FormatInt(w.id, 10) + ": " + w.strategy
		if !strings.Contains(title, idText) || !strings.Contains(title, "result: "+w.result) {
			t.Errorf("remediation %d tooltip %q lacks %q", i, title, idText)
		}
		if !strings.HasPrefix(label, "#"+strconv.FormatInt(w.id, 10)+" "+w.strategy) {
			t.Errorf("remediation %d label %q", i, label)
		}
		if w.endMn < 0 {
			if endX != 0 {
				t.Errorf("remediation %d: a pending action has no end, got an end line at x %.1f", i, endX)
			}
			endX = wantX(w.endMn)
		}
		if !near(startX, wantX(w.startMin)) || !near(endX, wantX(w.endMn)) {
			t.Errorf("remediation %d drawn from x %.1f to %.1f, want %.1f to %.1f", i, startX, endX, wantX(w.startMin), wantX(w.endMn))
		}
		if markTag != w.markTag {
			t.Errorf("remediation %d end mark <%s>, want <%s>", i, markTag, w.markTag)
		}
	}

	// One collection only; an unknown one is refused by name.
	stdout.Reset()
	if err := runReport(ctx, []string{"--dsn", dsn, "--collection", "other", "-o", "-"}, &stdout); err != nil {
		t.Fatal(err)
	}
	if p := parseSVG(t, stdout.Bytes()).find("panel"); len(p) != 1 || p[0].attr("data-collection") != "other" {
		t.Errorf("--collection other drew %d panels", len(p))
	}
	err = runReport(ctx, []string{"--dsn", dsn, "--collection", "nosuch", "-o", "-"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("unknown collection: err %v", err)
	}
	for _, bad := range [][]string{{"--since", "-1h"}, {"--until", "yesterday"}, {"extra"}} {
		if err := runReport(ctx, append([]string{"--dsn", dsn, "-o", "-"}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The samples table is written by the trigger on the contracted graph,
// whoever writes the graph, and is readable by the monitoring role.
func TestIntegritySamplesFollowTheGraph(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCycle(t, ctx)
	var n int
	var first, last time.Time
	if err := c.env.Conn.QueryRow(ctx, `SELECT count(*), min(sampled_at), max(sampled_at) FROM ruvector.integrity_samples`).
		Scan(&n, &first, &last); err != nil {
		t.Fatal(err)
	}
	if n != 4 || !first.Equal(at(5)) || !last.Equal(at(50)) {
		t.Fatalf("samples %d from %s to %s, want 4 from +5 to +50 min", n, first, last)
	}
	// Older than 7 days before the newest sample: pruned on the next write.
	if _, err := c.env.Conn.Exec(ctx, `UPDATE ruvector.contracted_graph SET lambda_cut = 0.7, updated_at = $1`,
		at(50).Add(8*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.integrity_samples`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d samples after a write 8 days later, want only it", n)
	}
	c.env.Cluster.MustExec(ctx, `CREATE ROLE sample_reader LOGIN IN ROLE ruvector_monitor`)
	out, err := c.env.Cluster.Psql(`SET ROLE sample_reader; SELECT count(*) FROM ruvector.integrity_samples`)
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("monitor role reads samples: %v %q", err, out)
	}
}

// The real daemon's monitor feeds the λ history through the contracted
// graph, and the report draws it.
func TestReportDrawsTheDaemonsSamples(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 4, "")
	dsn := env.Cluster.DSN("postgres")
	dctx, stopDaemon := context.WithCancel(ctx)
	daemonDone := make(chan error, 1)
	go func() {
		daemonDone <- runDaemon(dctx, []string{"--dsn", dsn, "--sample-interval", "250ms", "--heartbeat-interval", "200ms",
			"--metrics-listen", "127.0.0.1:0", "--audit-key", filepath.Join(t.TempDir(), "k"), "--log-level", "error"}, io.Discard)
	}()
	defer func() {
		stopDaemon()
		if err := <-daemonDone; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	// The monitor writes the graph at its first sample and every 10 s.
	var n int
	pgtest.WaitFor(t, 40*time.Second, "two λ samples from the monitor", func() (bool, error) {
		err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.integrity_samples s
			JOIN ruvector.collections c USING (collection_id) WHERE c.name = 'emb'`).Scan(&n)
		return n >= 2, err
	})
	var out bytes.Buffer
	if err := runReport(ctx, []string{"--dsn", dsn, "--since", "10m", "-o", "-"}, &out); err != nil {
		t.Fatal(err)
	}
	panels := parseSVG(t, out.Bytes()).find("panel")
	if len(panels) != 1 || panels[0].attr("data-collection") != "emb" {
		t.Fatalf("panels %v", panels)
	}
	paths := panels[0].find("lambda")
	if len(paths) != 1 {
		t.Fatalf("no λ path drawn from the daemon's samples:\n%s", out.String())
	}
	if got, _ := strconv.Atoi(paths[0].attr("data-samples")); got < n {
		t.Errorf("λ path of %d samples, the history holds %d", got, n)
	}
}
