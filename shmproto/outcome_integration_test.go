package shmproto_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// beatWithoutDetach heartbeats like a live sidecar until stop, which leaves
// the throttles in place the way a killed sidecar would: only the watchdog
// can release them then.
func beatWithoutDetach(t *testing.T, seg *shmproto.Segment) (stop func()) {
	t.Helper()
	quit := make(chan struct{})
	done := make(chan struct{})
	beat := func() {
		if err := seg.Heartbeat(os.Getpid(), time.Now()); err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}
	beat()
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			close(quit)
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func insertErr(t *testing.T, ctx context.Context, conn *pgx.Conn) *pgconn.PgError {
	t.Helper()
	_, err := conn.Exec(ctx, "INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0)")
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("insert: %v", err)
	}
	return pe
}

func throttleOutcome(t *testing.T, ctx context.Context, conn *pgx.Conn, op string) *int64 {
	t.Helper()
	var id *int64
	if err := conn.QueryRow(ctx, `SELECT outcome_id FROM ruvector_throttle_status()
		WHERE collection = 'emb' AND op = $1`, op).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// A write the sidecar's throttle refuses names the remediation outcome
// that set it, in the error's detail and hint, through a real server; the
// watchdog releasing the throttle clears the id.
func TestRefusedWriteNamesRemediationOutcome(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{SidecarTimeout: "1s"})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SET search_path = public, ruvector;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE emb_0 PARTITION OF emb FOR VALUES IN (0);
SELECT ruvector_collection_register('emb', 'emb');`)
	conn := c.Connect(ctx, "postgres")
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	stop := beatWithoutDetach(t, seg)
	col, err := seg.Find("emb", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}

	// Refused outright (100%).
	if err := seg.SetSidecarThrottleFor(col.Slot, shmproto.OpInsert, 100, time.Now(), 42); err != nil {
		t.Fatal(err)
	}
	if th, err := seg.ReadThrottle(col.Slot, shmproto.OpInsert); err != nil || th.OutcomeID != 42 || th.SetBy != shmproto.SetBySidecar {
		t.Fatalf("throttle read back: %+v %v", th, err)
	}
	pe := insertErr(t, ctx, conn)
	if pe == nil || pe.Code != "53000" ||
		!strings.Contains(pe.Detail, "remediation outcome 42") || !strings.Contains(pe.Detail, "self-healing sidecar") ||
		!strings.Contains(pe.Hint, "ruvector_healing_explain(42)") ||
		!strings.Contains(pe.Hint, "ruvector_healing_rollback('emb')") ||
		!strings.Contains(pe.Hint, "ruvector_throttle_clear('emb', 'insert')") {
		t.Fatalf("insert at sidecar throttle 100 for outcome 42: %#v", pe)
	}
	if id := throttleOutcome(t, ctx, conn, "insert"); id == nil || *id != 42 {
		t.Fatalf("ruvector_throttle_status().outcome_id for insert = %v, want 42", id)
	}
	if id := throttleOutcome(t, ctx, conn, "bulk_insert"); id != nil {
		t.Fatalf("unthrottled bulk_insert shows outcome %d", *id)
	}

	// Delayed past the cap: the other error names the outcome too.
	if err := seg.SetSidecarThrottleFor(col.Slot, shmproto.OpInsert, 99, time.Now(), 43); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET ruvector.throttle_max_wait = 0"); err != nil {
		t.Fatal(err)
	}
	pe = nil
	for i := 0; i < 5 && pe == nil; i++ { // the burst admits the first
		pe = insertErr(t, ctx, conn)
	}
	if pe == nil || pe.Code != "53000" || !strings.Contains(pe.Message, "throttle_max_wait") ||
		!strings.Contains(pe.Detail, "99%") || !strings.Contains(pe.Detail, "remediation outcome 43") ||
		!strings.Contains(pe.Hint, "ruvector_healing_explain(43)") {
		t.Fatalf("insert over the wait cap at sidecar throttle 99 for outcome 43: %#v", pe)
	}
	if _, err := conn.Exec(ctx, "RESET ruvector.throttle_max_wait"); err != nil {
		t.Fatal(err)
	}

	// Set outside a remediation: no outcome to name.
	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	pe = insertErr(t, ctx, conn)
	if pe == nil || pe.Code != "53000" || strings.Contains(pe.Detail, "outcome") ||
		!strings.Contains(pe.Detail, "outside any remediation") || strings.Contains(pe.Hint, "explain") {
		t.Fatalf("insert at a sidecar throttle outside any remediation: %#v", pe)
	}
	if id := throttleOutcome(t, ctx, conn, "insert"); id != nil {
		t.Fatalf("a throttle outside any remediation shows outcome %d", *id)
	}

	// A manual throttle set over it and rolled back brings the sidecar's
	// throttle back with its outcome.
	if err := seg.SetSidecarThrottleFor(col.Slot, shmproto.OpInsert, 100, time.Now(), 42); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT ruvector_throttle_set('emb', 'insert', 20)"); err != nil {
		t.Fatal(err)
	}
	if th, _ := seg.ReadThrottle(col.Slot, shmproto.OpInsert); th.SetBy != shmproto.SetByManual || th.OutcomeID != 0 {
		t.Fatalf("manual throttle over the sidecar's: %+v", th)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if th, _ := seg.ReadThrottle(col.Slot, shmproto.OpInsert); th.SetBy != shmproto.SetBySidecar || th.Pct != 100 || th.OutcomeID != 42 {
		t.Fatalf("after rolling the manual throttle back: %+v, want the sidecar's 100%% for outcome 42", th)
	}

	// The sidecar goes silent: the watchdog releases the throttle and its id.
	if raw, _ := seg.RawOutcomeID(col.Slot, shmproto.OpInsert); raw != 42 {
		t.Fatalf("outcome id stored %d, want 42", raw)
	}
	stop()
	deadline := time.Now().Add(15 * time.Second)
	for {
		th, err := seg.ReadThrottle(col.Slot, shmproto.OpInsert)
		if err != nil {
			t.Fatal(err)
		}
		if th.Pct == 0 && th.SetBy == shmproto.SetByNone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watchdog did not release the sidecar's throttle: %+v", th)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if raw, err := seg.RawOutcomeID(col.Slot, shmproto.OpInsert); err != nil || raw != 0 {
		t.Fatalf("outcome id after the watchdog's release: %d %v, want 0", raw, err)
	}
	if pe := insertErr(t, ctx, conn); pe != nil {
		t.Fatalf("insert after the release: %#v", pe)
	}
	if id := throttleOutcome(t, ctx, conn, "insert"); id != nil {
		t.Fatalf("released throttle shows outcome %d", *id)
	}
}
