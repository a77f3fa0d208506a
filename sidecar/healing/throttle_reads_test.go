package healing_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// A shard hot from reads is not throttled: its writes, measured by the
// trigger and afresh on the server (nothing writes), are none of its load,
// so throttle_ingestion declines, as a noop that says so, and sets no cap
// and no throttle (scorecard run 15 throttled such a shard once a minute,
// each time unverified and rolled back). With the same loads but the hot
// shard written, it caps the shard as before.
func TestThrottleIngestionDeclinesAReadHotspot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 4, Partitions: 4, Lists: 2, Seed: 13})
	srv, seg := liveSegment(ctx, t, env.Conn)
	col, err := seg.Find("vec", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	const hot = 2
	rows, err := env.Conn.Query(ctx, `SELECT c.oid::int8, (regexp_match(pg_get_expr(c.relpartbound, c.oid), '\((\d+)\)'))[1]::int
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass`, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	load, reads, writes := map[int64]float64{}, map[int64]float64{}, map[int64]float64{}
	var witness []classify.WitnessEdge
	var rel int64
	var shard int
	if _, err := pgx.ForEachRow(rows, []any{&rel, &shard}, func() error {
		load[rel], reads[rel], writes[rel] = 100, 0, 0
		if shard == hot {
			load[rel], writes[rel] = 4000, 300
		}
		witness = append(witness, classify.WitnessEdge{EdgeType: classify.EdgePartitionLink,
			Source: classify.NodeRef{Kind: classify.NodePartition, ID: rel}, Target: classify.NodeRef{Kind: classify.NodeRoot}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
	throttle := healing.ThrottleIngestion{Segment: seg, DatabaseOID: srv.DatabaseOID, Dial: dial, RateWindow: 300 * time.Millisecond}
	reg, err := strategy.NewRegistry(throttle)
	if err != nil {
		t.Fatal(err)
	}
	e2s := &sampler{}
	e, err := healing.New(ctx, env.Cluster.Connect(ctx, "postgres"), reg, e2s, key, healing.Options{Holder: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	trigger := func(writes map[int64]float64) healing.Trigger {
		return healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateCritical, Lambda: 0.1,
			Witness: witness, Metrics: classify.Metrics{PartitionLoad: load, PartitionWrites: writes}}
	}
	untouched := func(what string) {
		t.Helper()
		if sc, err := seg.ReadShardCap(col.Slot, hot); err != nil || sc.RowsPerSec != 0 {
			t.Fatalf("%s: the hot shard's cap %+v %v", what, sc, err)
		}
		for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
			if th, _ := seg.ReadThrottle(col.Slot, op); th.Pct != 0 {
				t.Fatalf("%s: the collection is throttled: %+v", what, th)
			}
		}
	}

	doc, err := e.Plan(ctx, trigger(reads), "throttle_ingestion", nil)
	if err != nil {
		t.Fatal(err)
	}
	would, _ := doc["would_do"].(map[string]any)
	if would["noop"] != true || !strings.Contains(would["reason"].(string), "shard 2: 0 of 4000 rows/s written, the other shards' median 0") {
		t.Fatalf("dry run against a read hotspot: %v", doc["would_do"])
	}
	out, err := e.Execute(ctx, trigger(reads), "throttle_ingestion", nil)
	if err != nil {
		t.Fatal(err)
	}
	why, _ := out.Result.Metadata["noop_reason"].(string)
	if out.Status != healing.StatusNoop || !strings.Contains(why, "loaded by reads") ||
		!strings.Contains(why, "a write cap or throttle cannot cool them") {
		t.Fatalf("against a read hotspot: %s %q", out.Status, why)
	}
	untouched("after the decline")

	// The same loads with the hot shard written at 300 rows/s, beside
	// peers written at none: a small share of its load, but a writer to
	// hold back. Capped (while λ is judged), from the trigger's write rates.
	var during shmproto.ShardCap
	e2s.set(0.1, func() { during, _ = seg.ReadShardCap(col.Slot, hot) })
	out, err = e.Execute(ctx, trigger(writes), "throttle_ingestion", nil)
	if err != nil {
		t.Fatal(err)
	}
	caps, _ := json.Marshal(out.Result.Metadata["shard_caps"])
	if out.Status == healing.StatusNoop || during.RowsPerSec == 0 || during.OutcomeID != out.ID ||
		!strings.Contains(string(caps), `"measured_from":"partition_writes"`) {
		t.Fatalf("against a written hotspot: %s (%s, %v), cap while judged %+v, caps %s", out.Status, out.Reason, out.Result.Metadata, during, caps)
	}

	// Every shard read about alike, the hot one a little more and written
	// by one writer at 334 rows/s beside the routed 14 of each: the cut
	// names every shard (run 20, episode 12). Only the written one is
	// capped, at its peers' median; the others are left alone.
	busy, routed := map[int64]float64{}, map[int64]float64{}
	for r := range load {
		busy[r], routed[r] = 46000, 14
		if writes[r] == 300 {
			busy[r], routed[r] = 71000, 334
		}
	}
	tr := healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateStress, Lambda: 0.8,
		Witness: witness, Metrics: classify.Metrics{PartitionLoad: busy, PartitionWrites: routed}}
	if n := len(classify.Classify(tr.Witness, tr.Metrics, classify.DefaultThresholds()).Problem.HotspotCongestion.PartitionIDs); n != len(load) {
		t.Fatalf("the classifier names %d hot partitions, want all %d (the case under test)", n, len(load))
	}
	capsDuring := map[int]shmproto.ShardCap{}
	e2s.set(0.8, func() {
		for s := range 4 {
			capsDuring[s], _ = seg.ReadShardCap(col.Slot, s)
		}
	})
	if out, err = e.Execute(ctx, tr, "throttle_ingestion", nil); err != nil {
		t.Fatal(err)
	}
	for s, sc := range capsDuring {
		if (s == hot) != (sc.RowsPerSec != 0) || (s == hot && sc.RowsPerSec != 14) {
			t.Fatalf("every shard named: caps while judged %v (%s: %s), want shard %d alone capped at 14 rows/s", capsDuring, out.Status, out.Reason, hot)
		}
	}
}
