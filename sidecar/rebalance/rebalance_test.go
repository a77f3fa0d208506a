package rebalance_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

type rowState struct {
	shard int
	sum   string
}

// snapshot is every row's shard and content hash.
func snapshot(t *testing.T, conn *pgx.Conn, table string) map[int64]rowState {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT id, shard, md5(embedding::text) FROM %s`, table))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]rowState{}
	for rows.Next() {
		var id int64
		var r rowState
		if err := rows.Scan(&id, &r.shard, &r.sum); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func shardCounts(t *testing.T, conn *pgx.Conn, table string) map[int]int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT shard, count(*) FROM %s GROUP BY 1`, table))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for rows.Next() {
		var s int
		var n int64
		_ = rows.Scan(&s, &n)
		out[s] = n
	}
	return out
}

// hotEnv: 4 shards, 1000 rows in shard 0 and 100 in each other.
func hotEnv(t *testing.T) *workloadtest.Env {
	t.Helper()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hot", Dim: 4, Partitions: 4, Lists: 4, Seed: 3})
	ctx := context.Background()
	if err := env.W.CopyInsert(ctx, 1000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	if err := env.W.CopyInsert(ctx, 300, func(i int) int { return 1 + i%3 }); err != nil {
		t.Fatal(err)
	}
	return env
}

// Moves while other sessions insert into the same shards: every batch
// verified, counts and the ledger exact, the journal complete.
func TestMoveVerifiesUnderConcurrentInserts(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var insErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := env.W.InsertShard(ctx, i%2, 5); err != nil {
				insErr = err
				return
			}
		}
	}()
	var lambdas int
	res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 7, From: 0, To: []int{1, 2}, Rows: 600, BatchSize: 100},
		func(_ context.Context, b rebalance.Batch) (rebalance.Decision, error) {
			if b.ChecksumBefore != b.ChecksumAfter || b.ChecksumBefore == "" {
				t.Errorf("batch %d checksums %q %q", b.Number, b.ChecksumBefore, b.ChecksumAfter)
			}
			lambdas++
			l := float32(lambdas)
			return rebalance.Decision{Lambda: &l}, nil
		})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if insErr != nil {
		t.Fatal(insErr)
	}
	if res.Moved != 600 || len(res.Batches) != 6 {
		t.Fatalf("moved %d in %d batches, want 600 in 6", res.Moved, len(res.Batches))
	}
	var journal, verified, withLambda int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves WHERE outcome_id = 7`).Scan(&journal)
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'verified'), count(lambda_after) FROM ruvector.healing_move_batches WHERE outcome_id = 7`).Scan(&verified, &withLambda)
	if journal != 600 || verified != 6 || withLambda != 6 {
		t.Fatalf("journal %d rows, %d verified batches, %d with lambda; want 600, 6, 6", journal, verified, withLambda)
	}
	var misplaced int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves m LEFT JOIN hot h ON h.id = m.row_id AND h.shard = m.to_shard
WHERE m.outcome_id = 7 AND h.id IS NULL`).Scan(&misplaced)
	if misplaced != 0 {
		t.Fatalf("%d journaled rows not in their destination shard", misplaced)
	}
	chk, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	if !chk.TotalOK() {
		t.Fatalf("rows lost or duplicated: %s", chk)
	}
	if chk.ShardsOK() {
		t.Fatal("ledger per shard still matches after moving 600 rows: nothing moved?")
	}
}

func TestRollbackIsExact(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	before := snapshot(t, env.Conn, env.W.Table)
	if _, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 9, From: 0, To: []int{1, 2, 3}, Rows: 450, BatchSize: 100}, nil); err != nil {
		t.Fatal(err)
	}
	moved := snapshot(t, env.Conn, env.W.Table)
	if maps.Equal(before, moved) {
		t.Fatal("move changed nothing")
	}
	if c := shardCounts(t, env.Conn, env.W.Table); c[0] != 550 {
		t.Fatalf("shard 0 holds %d rows after moving 450 of 1000", c[0])
	}
	r, err := rebalance.Rollback(ctx, env.Conn, 9)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rows != 450 || r.Batches != 5 {
		t.Fatalf("rollback moved %d rows in %d batches, want 450 in 5", r.Rows, r.Batches)
	}
	if after := snapshot(t, env.Conn, env.W.Table); !maps.Equal(before, after) {
		t.Fatal("rows after rollback differ from before the move")
	}
	chk, _ := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if !chk.ShardsOK() {
		t.Fatalf("ledger per shard after rollback: %s", chk)
	}
	var reverted int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_move_batches WHERE outcome_id = 9 AND state = 'reverted'`).Scan(&reverted)
	if reverted != 5 {
		t.Fatalf("%d batches reverted, want 5", reverted)
	}
	if r, err := rebalance.Rollback(ctx, env.Conn, 9); err != nil || r.Rows != 0 {
		t.Fatalf("second rollback: %+v %v, want nothing to do", r, err)
	}
}

func TestUndoDecisionMovesTheBatchBack(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 11, From: 0, To: []int{3}, Rows: 1000, BatchSize: 50},
		func(_ context.Context, b rebalance.Batch) (rebalance.Decision, error) {
			return rebalance.Decision{Undo: b.Number == 2}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 50 || res.Undone != 50 {
		t.Fatalf("moved %d undone %d, want 50 and 50", res.Moved, res.Undone)
	}
	if c := shardCounts(t, env.Conn, env.W.Table); c[0] != 950 || c[3] != 150 {
		t.Fatalf("counts %v, want shard 0 950 and shard 3 150", c)
	}
	var state string
	_ = env.Conn.QueryRow(ctx, `SELECT state FROM ruvector.healing_move_batches WHERE outcome_id = 11 AND batch = 2`).Scan(&state)
	if state != "undone" {
		t.Fatalf("batch 2 state %q, want undone", state)
	}
	if n, _ := rebalance.Pending(ctx, env.Conn, 11); n != 50 {
		t.Fatalf("%d rows pending rollback, want 50 (batch 1)", n)
	}
}

func TestBadPlans(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	before := snapshot(t, env.Conn, env.W.Table)
	for _, p := range []rebalance.Plan{
		{Collection: "hot", From: 9, To: []int{1}, Rows: 10},
		{Collection: "hot", From: 0, To: []int{0}, Rows: 10},
		{Collection: "hot", From: 0, To: nil, Rows: 10},
		{Collection: "hot", From: 0, To: []int{4}, Rows: 10},
		{Collection: "hot", From: 0, To: []int{1}, Rows: 0},
	} {
		if _, err := rebalance.Move(ctx, env.Conn, p, nil); !errors.Is(err, rebalance.ErrBadPlan) {
			t.Errorf("%+v: %v, want ErrBadPlan", p, err)
		}
	}
	if _, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "x'; drop table hot; --", From: 0, To: []int{1}, Rows: 1}, nil); !errors.Is(err, rebalance.ErrUnknownCollection) {
		t.Errorf("unknown collection: %v", err)
	}
	if after := snapshot(t, env.Conn, env.W.Table); !maps.Equal(before, after) {
		t.Fatal("a rejected plan changed rows")
	}
}

// The mover runs in a child process that is SIGKILLed between (or in the
// middle of) batches; a rollback from the journal alone restores every
// row exactly.
func TestRollbackAfterMoverKilled(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	before := snapshot(t, env.Conn, env.W.Table)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMoverChild$")
	cmd.Env = append(os.Environ(), "REBALANCE_CHILD_DSN="+env.Cluster.DSN("postgres")+" application_name=rebalance_child")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 30*time.Second, "3 committed batches", func() (bool, error) {
		var n int
		err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_move_batches WHERE outcome_id = 13`).Scan(&n)
		return n >= 3, err
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	pgtest.WaitFor(t, 10*time.Second, "the child's session to end", func() (bool, error) {
		var n int
		err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rebalance_child'`).Scan(&n)
		return n == 0, err
	})
	var batches, journal int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_move_batches WHERE outcome_id = 13`).Scan(&batches)
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves WHERE outcome_id = 13`).Scan(&journal)
	if batches >= 50 {
		t.Fatalf("the child finished all %d batches before the kill", batches)
	}
	mid := snapshot(t, env.Conn, env.W.Table)
	movedNow := 0
	for id, r := range mid {
		if before[id].shard != r.shard {
			movedNow++
		}
	}
	if movedNow != journal || journal != batches*20 {
		t.Fatalf("%d rows moved, %d journaled, %d batches of 20: the journal must be exact", movedNow, journal, batches)
	}
	r, err := rebalance.Rollback(ctx, env.Conn, 13)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rows != journal {
		t.Fatalf("rollback moved %d rows back, journal has %d", r.Rows, journal)
	}
	if after := snapshot(t, env.Conn, env.W.Table); !maps.Equal(before, after) {
		t.Fatal("rows after rollback differ from before the killed move")
	}
}

// TestMoverChild is the killed mover of TestRollbackAfterMoverKilled.
func TestMoverChild(t *testing.T) {
	dsn := os.Getenv("REBALANCE_CHILD_DSN")
	if dsn == "" {
		t.Skip("runs only as TestRollbackAfterMoverKilled's child process")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rebalance.Move(ctx, conn, rebalance.Plan{Collection: "hot", OutcomeID: 13, From: 0, To: []int{1, 2}, Rows: 1000, BatchSize: 20},
		func(context.Context, rebalance.Batch) (rebalance.Decision, error) {
			time.Sleep(100 * time.Millisecond)
			return rebalance.Decision{}, nil
		})
	t.Fatalf("the mover should have been killed; it ended with %v", err)
}
