package rebalance_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/rebalance"
)

// Moving rows back into a shard the sidecar capped (the rollback of a
// rebalance whose hot shard's writer is held in check) does not wait on
// that cap, which is meant for the writer: 1,461 rows at 12 rows/s took two
// minutes in scorecard run 25. A cap set by hand still holds the moves.
func TestMovesPassTheSidecarsCapsNotManualOnes(t *testing.T) {
	ctx := context.Background()
	env := hotEnv(t)
	srv, err := instance.Discover(ctx, env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	// The watchdog lifts the sidecar's caps when its heartbeat stops.
	beatCtx, stopBeat := context.WithCancel(ctx)
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for beatCtx.Err() == nil {
			_ = seg.Heartbeat(os.Getpid(), time.Now())
			select {
			case <-tk.C:
			case <-beatCtx.Done():
			}
		}
	}()
	// Registered after seg.Close, so it runs before it.
	t.Cleanup(func() { stopBeat(); <-beating })
	col, err := seg.Find("hot", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 21, From: 0, To: []int{1, 2}, Rows: 60}, nil)
	if err != nil || res.Moved != 60 {
		t.Fatalf("moved %d: %v", res.Moved, err)
	}
	// The writer's cap: 1 row/s. Held to it, the 60 rows would take a
	// minute and run into the guard below.
	if err := seg.SetSidecarShardCap(col.Slot, 0, 1, 20); err != nil {
		t.Fatal(err)
	}
	before, err := seg.ReadShardCapCounters(col.Slot)
	if err != nil {
		t.Fatal(err)
	}
	guard, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rb, err := rebalance.Rollback(guard, env.Conn, 21)
	if err != nil || rb.Rows != 60 {
		t.Fatalf("rollback moved %d rows back: %v", rb.Rows, err)
	}
	after, err := seg.ReadShardCapCounters(col.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if after.AdmittedRows != before.AdmittedRows || after.DelayedRows != before.DelayedRows {
		t.Fatalf("the rollback's rows went through the sidecar's cap: %+v → %+v", before, after)
	}
	if n := shardCounts(t, env.Conn, "hot")[0]; n != 1000 {
		t.Fatalf("shard 0 holds %d rows after the rollback, want 1000", n)
	}
	// The application's own writes into the capped shard are still held.
	if _, err := env.Conn.Exec(ctx, `INSERT INTO hot (embedding, shard) VALUES (ARRAY[1,2,3,4]::real[], 0)`); err != nil {
		t.Fatal(err)
	}
	if c, _ := seg.ReadShardCapCounters(col.Slot); c.AdmittedRows != after.AdmittedRows+1 {
		t.Fatalf("an application row was not held to the sidecar's cap: %+v → %+v", after, c)
	}

	// A cap set by hand on a destination holds the moves into it.
	if _, err := env.Conn.Exec(ctx, `SELECT ruvector_shard_cap_set('hot', 1, 100000)`); err != nil {
		t.Fatal(err)
	}
	manual, _ := seg.ReadShardCapCounters(col.Slot)
	if res, err := rebalance.Move(ctx, env.Conn, rebalance.Plan{Collection: "hot", OutcomeID: 22, From: 0, To: []int{1}, Rows: 40}, nil); err != nil || res.Moved != 40 {
		t.Fatalf("moved %d: %v", res.Moved, err)
	}
	if c, _ := seg.ReadShardCapCounters(col.Slot); c.AdmittedRows != manual.AdmittedRows+40 {
		t.Fatalf("the moves passed a cap set by hand: %+v → %+v", manual, c)
	}
}
