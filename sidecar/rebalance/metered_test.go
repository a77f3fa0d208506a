package rebalance_test

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// rowsByShard turns a sample's rates back into rows over el.
func rowsByShard(s health.Signals, el time.Duration, read bool) map[int64]float64 {
	out := map[int64]float64{}
	for _, p := range s.Partitions {
		r := p.WriteRowsPerSec
		if read {
			r = p.ReadRowsPerSec
		}
		out[p.Shard] = r * el.Seconds()
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
	sample := func() (m, p health.Signals) {
		t.Helper()
		for _, c := range []struct {
			col *collect.Partitions
			s   *health.Signals
		}{{metered, &m}, {plain, &p}} {
			if err := c.col.Collect(ctx, env.Conn, target, c.s); err != nil && !errors.Is(err, collect.ErrFirstSample) {
				t.Fatal(err)
			}
		}
		return m, p
	}
	check := func(what string, got, want map[int64]float64, tol float64) {
		t.Helper()
		for shard, w := range want {
			if math.Abs(got[shard]-w) > tol*w+1 {
				t.Fatalf("%s: shard %d: %.1f rows, want %.0f (all shards %v)", what, shard, got[shard], w, got)
			}
		}
	}

	sample()
	start := time.Now()
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
	el := time.Since(start)
	check("metered writes after the move", rowsByShard(m, el, false), map[int64]float64{0: 0, 1: 0, 2: 250, 3: 0}, 0.03)
	check("metered reads after the move", rowsByShard(m, el, true), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	// 600 rows left shard 0 (deleted) and arrived 200 each in 1-3.
	check("unmetered writes after the move", rowsByShard(p, el, false), map[int64]float64{0: 600, 1: 200, 2: 450, 3: 200}, 0.03)
	if r := rowsByShard(p, el, true); r[0] < 600 {
		t.Fatalf("unmetered reads of shard 0 after the move: %.0f rows, want at least the 600 moved (%v)", r[0], r)
	}

	start = time.Now()
	if r, err := rebalance.RollbackWith(ctx, env.Conn, 11, ledger); err != nil || r.Rows != 600 {
		t.Fatalf("rollback: %+v, %v; want 600 rows back", r, err)
	}
	settledInserts(t, env, 1300+600+250+600)
	m, p = sample()
	el = time.Since(start)
	check("metered writes after the rollback", rowsByShard(m, el, false), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	check("metered reads after the rollback", rowsByShard(m, el, true), map[int64]float64{0: 0, 1: 0, 2: 0, 3: 0}, 0)
	check("unmetered writes after the rollback", rowsByShard(p, el, false), map[int64]float64{0: 600, 1: 200, 2: 200, 3: 200}, 0.03)
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
	var m, p health.Signals
	for _, c := range []*collect.Partitions{metered, plain} {
		if err := c.Collect(ctx, env.Conn, target, &m); err != nil && !errors.Is(err, collect.ErrFirstSample) {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := ledger.InTx(ctx, env.Conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, leafIDs(target), func(tx pgx.Tx) error {
		var n int64
		return tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT shard, count(*) FROM `+env.W.Table+` GROUP BY shard) s`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	// Both collectors must sample after the reads reached the shared
	// statistics, or the comparison means nothing.
	settled(t, env, "seq_tup_read", func(n int64) bool { return n >= 1300 }, "the count's 1300 rows read")
	if err := plain.Collect(ctx, env.Conn, target, &p); err != nil {
		t.Fatal(err)
	}
	var read float64
	for _, r := range rowsByShard(p, time.Since(start), true) {
		read += r
	}
	if read < 1300*0.97 {
		t.Fatalf("the unmetered collector saw %.0f rows read, want the count's 1300 (%v)", read, rowsByShard(p, time.Since(start), true))
	}
	if err := metered.Collect(ctx, env.Conn, target, &m); err != nil {
		t.Fatal(err)
	}
	for shard, r := range rowsByShard(m, time.Since(start), true) {
		if r != 0 {
			t.Fatalf("metered collector: shard %d read %.0f rows; the metered count should be left out entirely (%v)", shard, r, rowsByShard(m, time.Since(start), true))
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
