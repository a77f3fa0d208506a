package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/shmproto"
)

// status against a real server: the collection, its manual throttle, a
// sidecar throttle, the counters, and "unknown" while no sidecar beats.
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
SELECT ruvector_throttle_set('emb', 'insert', 20, '1 hour');
INSERT INTO emb (embedding, shard) SELECT '{1}', g % 2 FROM generate_series(1, 500) g;`)
	col, err := env.Segment.Find("emb", env.Server.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Segment.SetSidecarThrottle(col.Slot, shmproto.OpBulkInsert, 70, time.Now()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runStatus(ctx, []string{"--dsn", env.Cluster.DSN("postgres")}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	var row string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "emb ") {
			row = line
		}
	}
	for _, want := range []string{"unknown", "20% manual for", "70% sidecar", " 500 "} {
		if !strings.Contains(row, want) {
			t.Errorf("status row %q lacks %q\n%s", row, want, text)
		}
	}
	if !strings.Contains(text, "alive false") {
		t.Errorf("status does not say the sidecar is away:\n%s", text)
	}
}

// The healer's side of status: the active remediation, routing weights
// changed by a remediation and the last outcomes with their verdicts.
func TestStatusShowsRemediations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name, started_at,
    completed_at, success, verified, rolled_back, initial_lambda, final_lambda, state, error_message)
SELECT c.collection_id, v.class, '{}', v.strategy, now() - v.ago, now() - v.ago + interval '3 seconds',
       v.success, v.verified, v.rolled_back, 0.5, v.final, v.state, v.err
FROM ruvector.collections c, (VALUES
    ('hotspot_congestion', 'throttle_ingestion', interval '10 minutes', true, true, false, 0.9::real, 'done', NULL),
    ('maintenance_contention', 'pause_maintenance', interval '5 minutes', true, false, true, 0.52::real, 'done', NULL),
    ('hotspot_congestion', 'rebalance_partitions', interval '20 seconds', false, NULL, false, NULL, 'running', NULL)
) v(class, strategy, ago, success, verified, rolled_back, final, state, err)
WHERE c.name = 'emb';
INSERT INTO ruvector.routing_weights (collection_id, shard, weight, set_by, outcome_id)
SELECT collection_id, 1, 0, 'sidecar', 3 FROM ruvector.collections WHERE name = 'emb';`)
	var out bytes.Buffer
	if err := runStatus(ctx, []string{"--dsn", env.Cluster.DSN("postgres")}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	section := func(title string) string {
		i := strings.Index(text, title)
		if i < 0 {
			t.Fatalf("no %q section:\n%s", title, text)
		}
		rest := text[i+len(title):]
		if j := strings.Index(rest, "\n\n"); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	active := section("active remediations:")
	if !strings.Contains(active, "rebalance_partitions") || !strings.Contains(active, "running") || strings.Contains(active, "pause_maintenance") {
		t.Errorf("active remediations:\n%s", active)
	}
	if r := section("routing weights changed:"); !strings.Contains(r, "shard 1") || !strings.Contains(r, "weight 0") || !strings.Contains(r, "outcome #3") {
		t.Errorf("routing:\n%s", r)
	}
	last := section("last outcomes:")
	for _, want := range []string{"throttle_ingestion", "verified", "0.500 -> 0.900", "pause_maintenance", "unverified, rolled back"} {
		if !strings.Contains(last, want) {
			t.Errorf("last outcomes lack %q:\n%s", want, last)
		}
	}
	if strings.Contains(last, "rebalance_partitions") {
		t.Errorf("a running remediation listed as an outcome:\n%s", last)
	}
}
