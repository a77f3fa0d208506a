package rebalance_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

// settledInserts waits until the shared statistics show want rows
// inserted into the collection's partitions: the pool's sessions are
// closed, and a closing backend flushes what it had pending.
func settledInserts(t *testing.T, env *workloadtest.Env, want int64) {
	t.Helper()
	env.Pool.Reset()
	settled(t, env, "n_tup_ins", func(n int64) bool { return n == want }, fmt.Sprintf("%d rows inserted", want))
}

// settled waits until the sum of column of pg_stat_user_tables over the
// collection's partitions satisfies ok.
func settled(t *testing.T, env *workloadtest.Env, column string, ok func(int64) bool, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int64
		if err := env.Conn.QueryRow(context.Background(), `SELECT coalesce(sum(`+column+`), 0)::bigint FROM pg_stat_user_tables
WHERE relid IN (SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf)`, env.W.Table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if ok(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("statistics show %s = %d, want %s", column, n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func partitionTarget(t *testing.T, env *workloadtest.Env) collect.Target {
	t.Helper()
	var ids []uint32
	if err := env.Conn.QueryRow(context.Background(), `SELECT array_agg(relid::oid) FROM pg_partition_tree($1::regclass)`,
		env.W.Table).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	return collect.Target{ID: 1, Name: "hot", Relations: ids}
}

// window is one collector sample and the span its rates cover. The span
// starts at the previous sample (PartitionsSince, exact) and ends when the
// collector read the counters, somewhere inside the Collect call: lo and hi
// bracket it. Converting rates back into rows over the test's own clock
// instead was off by the time the other collector's call took (a CI run on
// a loaded machine: 236.7 of 250 rows).
type window struct {
	s      health.Signals
	lo, hi time.Duration
}

// collectWindow takes a sample of col; first reports whether it was the
// collector's first (no rates, no window).
func collectWindow(t *testing.T, ctx context.Context, col *collect.Partitions, q collect.Querier, target collect.Target) (w window, first bool) {
	t.Helper()
	before := time.Now()
	err := col.Collect(ctx, q, target, &w.s)
	after := time.Now()
	if errors.Is(err, collect.ErrFirstSample) {
		return w, true
	}
	if err != nil {
		t.Fatal(err)
	}
	if w.s.PartitionsSince.IsZero() {
		t.Fatal("a sample after the first has no rate window")
	}
	w.lo, w.hi = before.Sub(w.s.PartitionsSince), after.Sub(w.s.PartitionsSince)
	return w, false
}

// rows turns the sample's rates back into rows per shard, as the bounds
// [lo, hi] that the window's bracket allows.
func (w window) rows(read bool) map[int64][2]float64 {
	out := map[int64][2]float64{}
	for _, p := range w.s.Partitions {
		r := p.WriteRowsPerSec
		if read {
			r = p.ReadRowsPerSec
		}
		out[p.Shard] = [2]float64{r * w.lo.Seconds(), r * w.hi.Seconds()}
	}
	return out
}

// The rows a metered move (and its rollback) reads and writes are left out
// of the partitions collector's rates, and the application's writes in the
// same period are not: a collector without the ledger, sampling the same
// counters at the same moments, sees the moves.
func TestMeteredMovesAreLeftOutOfPartitionLoad(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	settledInserts(t, env, 1300)
	target := partitionTarget(t, env)
	ledger := ownload.New()
	metered := collect.NewPartitions()
	metered.Own = ledger
	plain := collect.NewPartitions()
	sample := func() (m, p window) {
		t.Helper()
		m, _ = collectWindow(t, ctx, metered, env.Conn, target)
		p, _ = collectWindow(t, ctx, plain, env.Conn, target)
		return m, p
	}
	check := func(what string, got map[int64][2]float64, want map[int64]float64, tol float64) {
		t.Helper()
		for shard, w := range want {
			if g := got[shard]; g[1] < w-tol*w-1 || g[0] > w+tol*w+1 {
				t.Fatalf("%s: shard %d: %.1f-%.1f rows, want %.0f (all shards %v)", what, shard, g[0], g[1], w, got)
			}
		}
	}

	sample()
	if _, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 11, From: 0, To: []int{1, 2, 3},
		Rows: 600, BatchSize: 100, Ledger: ledger}, nil); err != nil {
		t.Fatal(err)
	}
	// The application writes 250 rows into shard 2 meanwhile.
	if err := env.W.CopyInsert(ctx, 250, func(int) int { return 2 }); err != nil {
		t.Fatal(err)
	}
	settledInserts(t, env, 1300+600+250)
	m, p := sample()
	check("metered writes after the move", m.rows(false), map[int64]float64{0: 0, 1: 0, 2: 250, 3: 0}, 0.03)
	check("metered reads after the move", m.rows(true), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	// 600 rows left shard 0 (deleted) and arrived 200 each in 1-3.
	check("unmetered writes after the move", p.rows(false), map[int64]float64{0: 600, 1: 200, 2: 450, 3: 200}, 0.03)
	if r := p.rows(true); r[0][1] < 600*0.97 {
		t.Fatalf("unmetered reads of shard 0 after the move: %.0f rows, want at least the 600 moved (%v)", r[0][1], r)
	}

	if r, err := rebalance.RollbackWith(ctx, env.Conn, 11, ledger); err != nil || r.Rows != 600 {
		t.Fatalf("rollback: %+v, %v; want 600 rows back", r, err)
	}
	settledInserts(t, env, 1300+600+250+600)
	m, p = sample()
	check("metered writes after the rollback", m.rows(false), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	check("metered reads after the rollback", m.rows(true), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	check("unmetered writes after the rollback", p.rows(false), map[int64]float64{0: 600, 1: 200, 2: 200, 3: 200}, 0.03)
	c := shardCounts(t, env.Conn, env.W.Table)
	if got := fmt.Sprint(c); got != "map[0:1000 1:100 2:350 3:100]" {
		t.Fatalf("rows per shard after the rollback: %s", got)
	}
}

// A metered read that the planner would run in parallel is metered whole:
// parallel workers count their reads in their own sessions, out of the
// metering's sight, so metered work runs without them.
func TestMeteredReadsStayInTheSession(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	settledInserts(t, env, 1300)
	target := partitionTarget(t, env)
	if _, err := env.Conn.Exec(ctx, `SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET min_parallel_index_scan_size = 0; SET enable_indexonlyscan = off; SET enable_indexscan = off; SET enable_bitmapscan = off; SET parallel_leader_participation = off`); err != nil {
		t.Fatal(err)
	}
	var plan string
	rows, err := env.Conn.Query(ctx, `EXPLAIN SELECT shard, count(*) FROM `+env.W.Table+` GROUP BY shard`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		_ = rows.Scan(&line)
		plan += line + "\n"
	}
	if !strings.Contains(plan, "Parallel") {
		t.Fatalf("the count is not planned in parallel, so this test would prove nothing:\n%s", plan)
	}
	ledger := ownload.New()
	metered := collect.NewPartitions()
	metered.Own = ledger
	plain := collect.NewPartitions()
	for _, c := range []*collect.Partitions{metered, plain} {
		if _, first := collectWindow(t, ctx, c, env.Conn, target); !first {
			t.Fatal("a new collector's first sample has rates")
		}
	}
	if err := ledger.InTx(ctx, env.Conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, leafIDs(target), func(tx pgx.Tx) error {
		var n int64
		return tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT shard, count(*) FROM `+env.W.Table+` GROUP BY shard) s`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	// Both collectors must sample after the reads reached the shared
	// statistics, or the comparison means nothing.
	settled(t, env, "seq_tup_read", func(n int64) bool { return n >= 1300 }, "the count's 1300 rows read")
	p, _ := collectWindow(t, ctx, plain, env.Conn, target)
	var read float64
	for _, r := range p.rows(true) {
		read += r[1]
	}
	if read < 1300*0.97 {
		t.Fatalf("the unmetered collector saw %.0f rows read, want the count's 1300 (%v)", read, p.rows(true))
	}
	m, _ := collectWindow(t, ctx, metered, env.Conn, target)
	for shard, r := range m.rows(true) {
		if r[1] != 0 {
			t.Fatalf("metered collector: shard %d read %.0f rows; the metered count should be left out entirely (%v)", shard, r[1], m.rows(true))
		}
	}
}

func leafIDs(t collect.Target) []int64 {
	out := make([]int64, len(t.Relations))
	for i, r := range t.Relations {
		out[i] = int64(r)
	}
	return out
}
