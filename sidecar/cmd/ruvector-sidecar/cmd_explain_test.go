package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestHealingExplain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCycle(t, ctx)
	conn := c.env.Conn
	explain := func(id int64) map[string]any {
		t.Helper()
		var doc []byte
		if err := conn.QueryRow(ctx, `SELECT ruvector_healing_explain($1)::text`, id).Scan(&doc); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	get := func(m map[string]any, path string) any {
		var v any = m
		for _, k := range strings.Split(path, ".") {
			mm, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = mm[k]
		}
		return v
	}

	// The verified outcome: everything the engine records, in place.
	m := explain(c.verifiedID)
	for path, want := range map[string]any{
		"outcome_id":                   float64(c.verifiedID),
		"collection":                   "emb",
		"kind":                         "automatic",
		"status":                       "verified",
		"strategy":                     "throttle_ingestion",
		"problem.class":                "hotspot_congestion",
		"trigger.lambda":               0.5,
		"trigger.witness_edge_count":   float64(4),
		"trigger.state":                "stress",
		"trigger.state_event.from":     "normal",
		"classification.rule":          "hotspot_congestion",
		"classification.fired.rule":    "hotspot_congestion",
		"classification.fired.matched": true,
		"selection.chosen":             "throttle_ingestion",
		"lambda.before":                0.5,
		"lambda.after":                 0.85,
		"signal.name":                  "load_ratio",
		"verification.verified":        true,
		"verification.passed":          true,
		"verification.target_lambda":   0.55,
		"rollback.rolled_back":         false,
		"execution.actions_taken":      float64(1),
		"audit.sealed":                 false,
	} {
		if got := get(m, path); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	fired := c.decision.Fired()
	if get(m, "classification.fired.observed") != fired.Observed || get(m, "classification.fired.threshold") != fired.Threshold {
		t.Errorf("fired rule values %v > %v, want %v > %v", get(m, "classification.fired.observed"),
			get(m, "classification.fired.threshold"), fired.Observed, fired.Threshold)
	}
	if before, _ := get(m, "signal.before").(float64); before != c.decision.Problem.HotspotCongestion.LoadRatio || before <= 1 {
		t.Errorf("signal.before %v, want the recorded load ratio %v", before, c.decision.Problem.HotspotCongestion.LoadRatio)
	}
	verdicts := map[string]string{}
	for _, cand := range get(m, "selection.candidates").([]any) {
		cm := cand.(map[string]any)
		verdicts[cm["name"].(string)] = cm["verdict"].(string) + "/" + strconv.FormatBool(cm["chosen"].(bool))
	}
	wantVerdicts := map[string]string{"throttle_ingestion": "chosen/true", "rebalance_partitions": "impact_exceeds_limit/false",
		"scale_replicas": "class_not_handled/false"}
	for k, v := range wantVerdicts {
		if verdicts[k] != v {
			t.Errorf("candidate %s: %s, want %s", k, verdicts[k], v)
		}
	}
	if edges, _ := get(m, "trigger.witness_edges").([]any); len(edges) != 4 {
		t.Errorf("witness edges %v", get(m, "trigger.witness_edges"))
	}
	nr := toStrings(get(m, "not_recorded"))
	if !slices.Contains(nr, "metadata.signal.after") || !slices.Contains(nr, "decision.limits") || slices.Contains(nr, "decision.classification") {
		t.Errorf("not_recorded %v", nr)
	}

	// The rolled-back, approved outcome: its why comes from the pending
	// action it carried out.
	m = explain(c.rolledID)
	for path, want := range map[string]any{
		"rollback.rolled_back":         true,
		"rollback.by":                  "engine",
		"kind":                         "approved",
		"verification.verified":        false,
		"verification.passed":          false,
		"signal.name":                  "queue_depth",
		"signal.before":                float64(7),
		"approved_action":              float64(c.pendingID),
		"decision_source":              float64(c.pendingID),
		"classification.rule":          "maintenance_contention",
		"selection.chosen":             "pause_maintenance",
		"selection.requires_approval":  true,
		"trigger.witness_edge_count":   float64(3),
		"classification.fired.matched": true,
	} {
		if got := get(m, path); got != want {
			t.Errorf("rolled-back outcome: %s = %#v, want %#v", path, got, want)
		}
	}
	if p := explain(c.pendingID); get(p, "state") != "pending_approval" || get(p, "decision_source") != float64(c.pendingID) ||
		get(p, "verification.verified") != nil {
		t.Errorf("pending action explained as %v", p)
	}

	// An operator's later rollback shows on the original.
	var rid int64
	if err := conn.QueryRow(ctx, `INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details,
			strategy_name, started_at, completed_at, success, initial_lambda, state, rolled_back, metadata)
		SELECT collection_id, problem_class, problem_details, strategy_name, started_at + interval '1 hour',
			completed_at + interval '1 hour', true, initial_lambda, 'done', true,
			jsonb_build_object('kind', 'rollback', 'rollback_of', id)
		FROM ruvector.healing_outcomes WHERE id = $1 RETURNING id`, c.verifiedID).Scan(&rid); err != nil {
		t.Fatal(err)
	}
	later, _ := get(explain(c.verifiedID), "rollback.later_rollbacks").([]any)
	if len(later) != 1 || later[0].(map[string]any)["id"] != float64(rid) {
		t.Errorf("later rollbacks %v, want outcome %d", later, rid)
	}
	r := explain(rid)
	if get(r, "rollback.by") != "operator" || get(r, "rollback.rollback_of") != float64(c.verifiedID) {
		t.Errorf("rollback record explained as %v", r["rollback"])
	}
	// A record without a decision says so rather than inventing one.
	if nr := toStrings(get(r, "not_recorded")); !slices.Contains(nr, "decision.classification") ||
		!slices.Contains(nr, "decision.selection") || get(r, "classification") != nil {
		t.Errorf("rollback record: not_recorded %v, classification %v", nr, get(r, "classification"))
	}

	// Bad ids: a clear error with SQLSTATE and hint.
	for _, tc := range []struct {
		arg  any
		code string
		msg  string
	}{{int64(987654), "42704", "healing outcome 987654 does not exist"}, {nil, "22004", "must not be NULL"}} {
		_, err := conn.Exec(ctx, `SELECT ruvector_healing_explain($1::bigint)`, tc.arg)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Message, tc.msg) || pe.Hint == "" {
			t.Errorf("explain(%v): %v, want %s %q with a hint", tc.arg, err, tc.code, tc.msg)
		}
	}

	// Monitoring roles may read it.
	c.env.Cluster.MustExec(ctx, `CREATE ROLE explain_reader LOGIN IN ROLE ruvector_monitor;
		CREATE ROLE explain_pgmon LOGIN IN ROLE pg_monitor; GRANT USAGE ON SCHEMA ruvector TO explain_pgmon`)
	for _, role := range []string{"explain_reader", "explain_pgmon"} {
		out, err := c.env.Cluster.Psql(`SET ROLE ` + role + `; SELECT ruvector.ruvector_healing_explain(` +
			strconv.FormatInt(c.verifiedID, 10) + `)->>'strategy'`)
		if err != nil || strings.TrimSpace(out) != "throttle_ingestion" {
			t.Errorf("%s: %v %q", role, err, out)
		}
	}

	// The command, for a person.
	dsn := c.env.Cluster.DSN("postgres")
	var out bytes.Buffer
	if err := runExplain(ctx, []string{"--dsn", dsn, strconv.FormatInt(c.verifiedID, 10)}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if testing.Verbose() {
		t.Logf("explain %d:\n%s", c.verifiedID, text)
	}
	for _, want := range []string{
		"outcome " + strconv.FormatInt(c.verifiedID, 10) + ": throttle_ingestion on emb, verified (automatic)",
		"rule fired", "hotspot_congestion: " + fired.Reason,
		"chosen", "throttle_ingestion",
		"rebalance_partitions", "impact_exceeds_limit", "impact 0.6 > max_auto_heal_impact 0.5",
		"witness edges", "partition_link partition:0(emb_0) -> partition:1(emb_1)",
		"0.500 -> 0.850", "load_ratio", "not recorded",
		"verified", "yes", "rolled back",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("explain output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\033[") {
		t.Errorf("colour codes written to a non-terminal:\n%s", text)
	}
	// Aligned: the value column of the RESULT rows starts at one offset.
	col := -1
	for _, line := range strings.Split(text, "\n") {
		for _, key := range []string{"  started ", "  completed ", "  success ", "  verified "} {
			if strings.HasPrefix(line, key) {
				v := len(key) + len(line[len(key):]) - len(strings.TrimLeft(line[len(key):], " "))
				if col >= 0 && v != col {
					t.Errorf("RESULT values not aligned (column %d vs %d):\n%s", v, col, text)
				}
				col = v
			}
		}
	}
	out.Reset()
	if err := runExplain(ctx, []string{strconv.FormatInt(c.verifiedID, 10), "--dsn", dsn, "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(out.Bytes()) || !strings.Contains(out.String(), `"selection"`) {
		t.Errorf("--json output %q", out.String())
	}
	err := runExplain(ctx, []string{"--dsn", dsn, "987654"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "hint:") {
		t.Errorf("unknown id: %v", err)
	}
	for _, bad := range [][]string{{}, {"abc"}, {"0"}, {"1", "2"}} {
		if err := runExplain(ctx, append([]string{"--dsn", dsn}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range toSlice(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func toSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
