package healing_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// heavier is a fake remedy ranked after throttle_ingestion (impact 0.45
// against its 0.4), as rebalance_partitions is when learning favours the
// cap.
type heavier struct{ *fake }

func (heavier) Impact() float64 { return 0.45 }

// A strategy that declines (a noop) hands over to the next candidate in
// the same call. A shard cap that stops a hot writer but leaves λ where it
// was (the shard stays as large as it grew) is held, not rolled back: the
// writer, still running, is delayed by the cap; the next attempt of the
// episode does not choose throttle_ingestion again (its measure is in
// force) but the next remedy, which runs with the cap still on; the held
// cap is lifted after
// the bound when the collection never got back to normal, as a rollback
// record of its own. The same attempt with no writer held back is rolled
// back (TestThrottleIngestionShardCapRestoresAndPins).
func TestShardCapHeldForTheNextRemedy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "vec", Dim: 4, Partitions: 4, Lists: 2, Seed: 9})
	srv, seg := liveSegment(ctx, t, env.Conn)
	col, err := seg.Find("vec", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 0,
		"max_attempts_per_hour": 1000, "stabilization_seconds": 0, "attempt_window_seconds": 600}')`); err != nil {
		t.Fatal(err)
	}

	// The hot writer names shard 1 on every row and keeps trying when a
	// statement is refused, as an application would.
	const hot = 1
	var stop atomic.Bool
	var wrote, refused atomic.Int64
	var writer sync.WaitGroup
	writerErr := make(chan error, 1)
	writer.Add(1)
	go func() {
		defer writer.Done()
		for !stop.Load() {
			n, err := env.W.HotPartition(ctx, hot, 1000, time.Second)
			wrote.Add(int64(n))
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53000" {
				refused.Add(1)
				continue
			}
			if err != nil {
				writerErr <- err
				return
			}
		}
	}()
	defer func() { stop.Store(true); writer.Wait() }()
	time.Sleep(2 * time.Second)

	rows, err := env.Conn.Query(ctx, `SELECT c.oid::int8, (regexp_match(pg_get_expr(c.relpartbound, c.oid), '\((\d+)\)'))[1]::int
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass`, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	load := map[int64]float64{}
	var witness []classify.WitnessEdge
	var rel int64
	var shard int
	if _, err := pgx.ForEachRow(rows, []any{&rel, &shard}, func() error {
		load[rel] = 10
		if shard == hot {
			load[rel] = 1000
		}
		witness = append(witness, classify.WitnessEdge{EdgeType: classify.EdgePartitionLink,
			Source: classify.NodeRef{Kind: classify.NodePartition, ID: rel}, Target: classify.NodeRef{Kind: classify.NodeRoot}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tr := healing.Trigger{Collection: "vec", CollectionID: int64(env.W.ID), State: strategy.StateCritical, Lambda: 0.1,
		Witness: witness, Metrics: classify.Metrics{PartitionLoad: load}}

	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.Cluster.DSN("postgres")) }
	throttle := healing.ThrottleIngestion{Segment: seg, DatabaseOID: srv.DatabaseOID, Dial: dial, RateWindow: 2 * time.Second}
	var capDuringMove atomic.Uint32
	mover := heavier{&fake{name: "move_rows", classes: []classify.Class{classify.ClassHotspotCongestion}, estimate: 5 * time.Second,
		run: func(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
			sc, err := seg.ReadShardCap(col.Slot, hot)
			if err != nil {
				return strategy.Result{}, err
			}
			capDuringMove.Store(sc.RowsPerSec)
			if err := rc.Record(map[string]any{"moved": true}); err != nil {
				return strategy.Result{}, err
			}
			return strategy.Result{Success: true, ActionsTaken: 1}, nil
		}}}
	// Ranked first (impact 0.2) and declining, as drain_hot_partition does
	// against a writer that names its shard: the next candidate runs in the
	// same call.
	decliner := &fake{name: "decline_first", classes: []classify.Class{classify.ClassHotspotCongestion}, estimate: 5 * time.Second,
		run: func(context.Context, *strategy.Context) (strategy.Result, error) {
			return strategy.NoopResult("routing cannot cool it"), nil
		}}
	reg, err := strategy.NewRegistry(throttle, mover, decliner)
	if err != nil {
		t.Fatal(err)
	}
	s := &sampler{}
	e, err := healing.New(ctx, env.Cluster.Connect(ctx, "postgres"), reg, s, key, healing.Options{Holder: t.Name()})
	if err != nil {
		t.Fatal(err)
	}

	// λ does not move under the cap: unverified, but held.
	s.set(0.1, nil)
	first, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first attempt %d: %s %s; held %q; hold check %q; writer %d rows, %d statements refused",
		first.ID, first.Strategy, first.Status, first.Held, first.HoldCheck, wrote.Load(), refused.Load())
	if first.Strategy != "throttle_ingestion" || first.Status != healing.StatusUnverified || first.RolledBack ||
		!strings.Contains(first.Held, "hold the hot writer back") {
		t.Fatalf("first attempt: %s %s rolled_back=%v held %q (check %q) error %q", first.Strategy, first.Status, first.RolledBack,
			first.Held, first.HoldCheck, first.Error)
	}
	var declinedID int64
	var declinedStatus string
	if err := env.Conn.QueryRow(ctx, `SELECT id, metadata->>'status' FROM ruvector.healing_outcomes
		WHERE strategy_name = 'decline_first'`).Scan(&declinedID, &declinedStatus); err != nil ||
		declinedID >= first.ID || declinedStatus != "noop" {
		t.Fatalf("the declining strategy's record: id %d status %q (throttle %d): %v", declinedID, declinedStatus, first.ID, err)
	}
	sc, err := seg.ReadShardCap(col.Slot, hot)
	if err != nil || sc.OutcomeID != first.ID || sc.RowsPerSec == 0 {
		t.Fatalf("the held cap: %+v %v", sc, err)
	}
	heldCap := sc.RowsPerSec
	// The held cap is learned as a success: it did what it is for.
	if err := e.UpdateWeights(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if w, err := e.Weights(ctx); err != nil || w["throttle_ingestion"] < 0.99 {
		t.Fatalf("throttle_ingestion's weight after one held cap: %v (%v), want about 1 (one success in one attempt)", w, err)
	}
	var heldDoc, reason string
	var rolled bool
	if err := env.Conn.QueryRow(ctx, `SELECT metadata->>'held', rolled_back, metadata->>'status' FROM ruvector.healing_outcomes WHERE id = $1`,
		first.ID).Scan(&heldDoc, &rolled, &reason); err != nil || heldDoc != first.Held || rolled || reason != "unverified" {
		t.Fatalf("record of the held attempt: held %q rolled_back %v status %q (%v)", heldDoc, rolled, reason, err)
	}

	// The next attempt: throttle_ingestion is held, the next remedy acts
	// under the cap and verifies.
	s.set(0.9, nil)
	second, err := e.Heal(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if second.Strategy != "move_rows" || second.Status != healing.StatusVerified || capDuringMove.Load() != heldCap {
		t.Fatalf("second attempt: %s %s; cap during it %d (held %d); %s", second.Strategy, second.Status, capDuringMove.Load(), heldCap,
			second.Selection.Explain())
	}
	i := slices.IndexFunc(second.Selection.Candidates, func(c strategy.Candidate) bool { return c.Name == "throttle_ingestion" })
	if i < 0 || second.Selection.Candidates[i].Verdict != strategy.VerdictHeld {
		t.Fatalf("throttle_ingestion in the second selection: %+v", second.Selection.Candidates)
	}

	// Bounded: not lifted before the bound, lifted after it.
	if ids, err := e.LiftHeld(ctx, time.Hour); err != nil || len(ids) != 0 {
		t.Fatalf("lifted before the bound: %v %v", ids, err)
	}
	ids, err := e.LiftHeld(ctx, time.Millisecond)
	if err != nil || !slices.Equal(ids, []int64{first.ID}) {
		t.Fatalf("lift after the bound: %v %v (want [%d])", ids, err, first.ID)
	}
	if sc, err := seg.ReadShardCap(col.Slot, hot); err != nil || sc.RowsPerSec != 0 {
		t.Fatalf("cap after the lift: %+v %v", sc, err)
	}
	var why string
	if err := env.Conn.QueryRow(ctx, `SELECT decision->>'lifted' FROM ruvector.healing_outcomes
		WHERE metadata->>'kind' = 'rollback' AND metadata->>'rollback_of' = ($1::bigint)::text AND success`, first.ID).Scan(&why); err != nil ||
		!strings.Contains(why, "--held-max") {
		t.Fatalf("lift record: %q %v", why, err)
	}
	if ids, err := e.LiftHeld(ctx, time.Millisecond); err != nil || len(ids) != 0 {
		t.Fatalf("lifted twice: %v %v", ids, err)
	}
	stop.Store(true)
	writer.Wait()
	select {
	case err := <-writerErr:
		t.Fatalf("hot writer: %v", err)
	default:
	}
}

// A strategy that declines does not act, so its noops do not make healing
// "ineffective": the third attempt after two declines is tried, not
// deferred (the README walkthrough stopped there before).
func TestDeclinesDoNotStopHealingAsIneffective(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, embID := startEnv(ctx, t)
	decliner := &fake{name: "decline_always", classes: []classify.Class{classify.ClassMemoryPressure}, estimate: time.Second,
		run: func(context.Context, *strategy.Context) (strategy.Result, error) {
			return strategy.NoopResult("nothing to do here"), nil
		}}
	// IneffectiveAfter: the default 2. The decline backoff is off, so the
	// strategy is asked every time and the gate sees three noops.
	e := v.engineWith(ctx, t, healing.Options{Holder: t.Name(), DeclineBackoff: -1}, &sampler{}, decliner)
	for i := range 3 {
		out, err := e.Heal(ctx, memoryPressure("emb", embID, 0.5))
		if err != nil || out.Status != healing.StatusNoop {
			t.Fatalf("attempt %d: %s (%s) %v", i+1, out.Status, out.Reason, err)
		}
	}
}
