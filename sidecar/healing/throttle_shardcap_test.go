package healing_test

import (
	"context"
	"encoding/json"
	"errors"
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

// throttle_ingestion's shard caps on a real server, without load: the
// insert rate falls back to the classified partition load when the
// statistics show none; an unverified attempt is rolled back to the exact
// previous cap word (another remediation's sidecar cap, with its outcome);
// a manual cap on the hot shard is never overridden; the dry run names the
// shard and the cap; a problem that names no shard still throttles the
// whole collection.
func TestThrottleIngestionShardCapRestoresAndPins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 4, Partitions: 4, Lists: 2, Seed: 5})
	srv, seg := liveSegment(ctx, t, env.Conn)
	col, err := seg.Find("vec", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	var relid int64
	if err := env.Conn.QueryRow(ctx, `SELECT 'vec_p1'::regclass::oid::int8`).Scan(&relid); err != nil {
		t.Fatal(err)
	}
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
	throttle := healing.ThrottleIngestion{Segment: seg, DatabaseOID: srv.DatabaseOID, Dial: dial, RateWindow: 200 * time.Millisecond}
	reg, err := strategy.NewRegistry(throttle)
	if err != nil {
		t.Fatal(err)
	}
	s := &sampler{}
	e, err := healing.New(ctx, env.Cluster.Connect(ctx, "postgres"), reg, s, key, healing.Options{Holder: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	tr := healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateCritical, Lambda: 0.1,
		Metrics: classify.Metrics{PartitionLoad: map[int64]float64{relid: 500}}}
	params := json.RawMessage(`{"shard": 1}`)

	// Another remediation's cap is in force on shard 1.
	if err := seg.SetSidecarShardCap(col.Slot, 1, 77, 7); err != nil {
		t.Fatal(err)
	}
	doc, err := e.Plan(ctx, tr, "throttle_ingestion", params)
	if err != nil {
		t.Fatal(err)
	}
	would, _ := json.Marshal(doc["would_do"])
	if !strings.Contains(string(would), `"mode":"shard_caps"`) || !strings.Contains(string(would), `"cap_rows_per_sec":50`) ||
		!strings.Contains(string(would), `"shard":1`) || !strings.Contains(string(would), `"measured_from":"partition_load"`) {
		t.Fatalf("dry run: %s", would)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 1); sc.RowsPerSec != 77 || sc.OutcomeID != 7 {
		t.Fatalf("the dry run changed the cap: %+v", sc)
	}

	var during shmproto.ShardCap
	s.set(0.1, func() { during, _ = seg.ReadShardCap(col.Slot, 1) }) // λ does not move: unverified
	out, err := e.Execute(ctx, tr, "throttle_ingestion", params)
	if err != nil {
		t.Fatal(err)
	}
	if during.RowsPerSec != 50 || during.SetBy != shmproto.SetBySidecar || during.OutcomeID != out.ID {
		t.Fatalf("cap while verifying: %+v, want 10%% of 500 rows/s for outcome %d", during, out.ID)
	}
	if out.Status != healing.StatusUnverified || !out.RolledBack {
		t.Fatalf("outcome %+v", out)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 1); sc != (shmproto.ShardCap{Shard: 1, RowsPerSec: 77, SetBy: shmproto.SetBySidecar, OutcomeID: 7}) {
		t.Fatalf("after the rollback: %+v, want the previous sidecar cap of 77 rows/s for outcome 7", sc)
	}
	for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
		if th, _ := seg.ReadThrottle(col.Slot, op); th.Pct != 0 {
			t.Fatalf("a hotspot naming its shard throttled the whole collection: %+v", th)
		}
	}

	// A manual cap pins the shard.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector_shard_cap_set('vec', 1, 300)`); err != nil {
		t.Fatal(err)
	}
	out, err = e.Execute(ctx, tr, "throttle_ingestion", params)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != healing.StatusFailed || !strings.Contains(out.Error, "manual cap of 300 rows/s") {
		t.Fatalf("over a manual cap: %s %q", out.Status, out.Error)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 1); sc.SetBy != shmproto.SetByManual || sc.RowsPerSec != 300 {
		t.Fatalf("manual cap after the attempt: %+v", sc)
	}
	if err := seg.SetSidecarShardCap(col.Slot, 1, 5, 0); !errors.Is(err, shmproto.ErrManualPinned) {
		t.Fatalf("sidecar cap over a manual one: %v", err)
	}

	// No shard named (memory pressure): the whole collection, as before.
	s.set(0.1, nil)
	mp := healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateStress, Lambda: 0.1,
		Metrics: classify.Metrics{MemoryUsagePct: 95}}
	var thDuring shmproto.Throttle
	s.set(0.1, func() { thDuring, _ = seg.ReadThrottle(col.Slot, shmproto.OpInsert) })
	if out, err = e.Execute(ctx, mp, "throttle_ingestion", nil); err != nil {
		t.Fatal(err)
	}
	if thDuring.Pct != 50 || thDuring.OutcomeID != out.ID || !out.RolledBack {
		t.Fatalf("memory pressure: insert throttle %+v while verifying, outcome %+v", thDuring, out)
	}
	if th, _ := seg.ReadThrottle(col.Slot, shmproto.OpInsert); th.Pct != 0 {
		t.Fatalf("insert throttle after the rollback: %+v", th)
	}
}
