package shmproto_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

type sqlCap struct {
	shard   int
	rate    int
	setBy   string
	outcome *int64
}

func sqlCaps(t *testing.T, ctx context.Context, conn *pgx.Conn) []sqlCap {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT shard, cap_rows_per_sec, set_by, outcome_id FROM ruvector_shard_caps('vec')`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sqlCap, error) {
		var c sqlCap
		return c, r.Scan(&c.shard, &c.rate, &c.setBy, &c.outcome)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func insertShardErr(t *testing.T, ctx context.Context, conn *pgx.Conn, shard, rows int) *pgconn.PgError {
	t.Helper()
	_, err := conn.Exec(ctx, `INSERT INTO vec (embedding, shard) SELECT ARRAY[g, g]::real[], $1 FROM generate_series(1, $2) g`,
		shard, rows)
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("insert: %v", err)
	}
	return pe
}

// The sidecar's shard caps through a real server: SQL sees them with their
// outcome, the row trigger enforces them and a refused write names the
// remediation; a manual cap pins the shard against the sidecar and its
// abort brings the sidecar's back; the watchdog lifts the sidecar's caps
// (not the manual ones) when the heartbeat stops, and Detach lifts them at
// once.
func TestSidecarShardCaps(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{SidecarTimeout: "1s"})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SET search_path = public, ruvector;
SELECT ruvector_collection_create('vec', 2, 4, 2);`)
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
	col, err := seg.Find("vec", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}

	if err := seg.SetSidecarShardCap(col.Slot, 3, 1, 42); err != nil {
		t.Fatal(err)
	}
	if got := sqlCaps(t, ctx, conn); len(got) != 1 || got[0].shard != 3 || got[0].rate != 1 || got[0].setBy != "sidecar" ||
		got[0].outcome == nil || *got[0].outcome != 42 {
		t.Fatalf("ruvector_shard_caps after the sidecar capped shard 3: %+v", got)
	}
	if _, err := conn.Exec(ctx, "SET ruvector.throttle_max_wait = 0; SET ruvector.throttle_burst = 0"); err != nil {
		t.Fatal(err)
	}
	pe := insertShardErr(t, ctx, conn, 3, 2)
	if pe == nil || pe.Code != "53000" || !strings.Contains(pe.Message, `shard 3 of collection "vec"`) ||
		!strings.Contains(pe.Detail, "1 rows per second") || !strings.Contains(pe.Detail, "remediation outcome 42") ||
		!strings.Contains(pe.Hint, "ruvector_healing_explain(42)") || !strings.Contains(pe.Hint, "ruvector_healing_rollback('vec')") ||
		!strings.Contains(pe.Hint, "ruvector_shard_cap_clear('vec', 3)") {
		t.Fatalf("two rows into shard 3 capped at 1 row/s with no wait allowed: %#v", pe)
	}
	if pe := insertShardErr(t, ctx, conn, 2, 50); pe != nil {
		t.Fatalf("rows into uncapped shard 2: %#v", pe)
	}

	// A manual cap wins over the sidecar's, pins the shard, and its abort
	// restores the sidecar's cap with its outcome.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT ruvector_shard_cap_set('vec', 3, 500)"); err != nil {
		t.Fatal(err)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 3); sc.SetBy != shmproto.SetByManual || sc.RowsPerSec != 500 || sc.OutcomeID != 0 {
		t.Fatalf("manual cap over the sidecar's: %+v", sc)
	}
	if err := seg.SetSidecarShardCap(col.Slot, 3, 7, 43); !errors.Is(err, shmproto.ErrManualPinned) {
		t.Fatalf("sidecar cap over a manual one: %v, want ErrManualPinned", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 3); sc.SetBy != shmproto.SetBySidecar || sc.RowsPerSec != 1 || sc.OutcomeID != 42 {
		t.Fatalf("after rolling the manual cap back: %+v, want the sidecar's 1 row/s for outcome 42", sc)
	}

	// A committed manual cap on shard 1 outlives the sidecar.
	if _, err := conn.Exec(ctx, "SELECT ruvector_shard_cap_set('vec', 1, 1000)"); err != nil {
		t.Fatal(err)
	}
	if err := seg.SetSidecarShardCap(col.Slot, 0, 9, 44); err != nil {
		t.Fatal(err)
	}
	stop()
	deadline := time.Now().Add(15 * time.Second)
	for {
		caps, err := seg.ReadShardCaps(col.Slot)
		if err != nil {
			t.Fatal(err)
		}
		if len(caps) == 1 && caps[0].Shard == 1 && caps[0].SetBy == shmproto.SetByManual && caps[0].RowsPerSec == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watchdog did not lift the sidecar's caps (and only those): %+v", caps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pe := insertShardErr(t, ctx, conn, 3, 5); pe != nil {
		t.Fatalf("rows into shard 3 after the watchdog's release: %#v", pe)
	}

	// Detach, a clean goodbye, lifts them at once.
	beatWithoutDetach(t, seg)
	if err := seg.SetSidecarShardCap(col.Slot, 2, 5, 45); err != nil {
		t.Fatal(err)
	}
	if n, err := seg.Detach(time.Now()); err != nil || n != 1 {
		t.Fatalf("Detach: %d released, %v; want the one shard cap", n, err)
	}
	if sc, _ := seg.ReadShardCap(col.Slot, 2); sc.RowsPerSec != 0 || sc.SetBy != shmproto.SetByNone {
		t.Fatalf("shard 2 after Detach: %+v", sc)
	}
	if err := seg.SetSidecarShardCap(col.Slot, 256, 5, 0); err == nil {
		t.Fatal("a cap on shard 256 was accepted")
	}
}

// After a restart the segment starts empty: the watchdog reloads manual
// shard caps from ruvector.shard_caps (and the trigger enforces them
// again); a sidecar cap is gone with the segment it lived in.
func TestManualShardCapsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SET search_path = public, ruvector;
SELECT ruvector_collection_create('vec', 2, 4, 2);
SELECT ruvector_shard_cap_set('vec', 2, 1);`)
	conn := c.Connect(ctx, "postgres")
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	col, err := seg.Find("vec", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	stop := beatWithoutDetach(t, seg)
	if err := seg.SetSidecarShardCap(col.Slot, 0, 9, 3); err != nil {
		t.Fatal(err)
	}
	stop()
	seg.Close()
	conn.Close(ctx)

	c.Restart("fast")
	conn = c.Connect(ctx, "postgres")
	if srv, err = instance.Discover(ctx, conn); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 15*time.Second, "the watchdog's reload", func() (bool, error) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM ruvector_shard_caps('vec') WHERE shard = 2 AND cap_rows_per_sec = 1 AND set_by = 'manual'`).Scan(&n)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42704" { // the registry is not reloaded yet
			return false, nil
		}
		return n == 1, err
	})
	if got := sqlCaps(t, ctx, conn); len(got) != 1 {
		t.Fatalf("caps after the restart: %+v, want only the manual one", got)
	}
	if _, err := conn.Exec(ctx, "SET ruvector.throttle_max_wait = 0; SET ruvector.throttle_burst = 0"); err != nil {
		t.Fatal(err)
	}
	if pe := insertShardErr(t, ctx, conn, 2, 2); pe == nil || pe.Code != "53000" || !strings.Contains(pe.Detail, "set manually") {
		t.Fatalf("two rows into shard 2 capped at 1 row/s after the restart: %#v", pe)
	}
	if pe := insertShardErr(t, ctx, conn, 0, 20); pe != nil {
		t.Fatalf("shard 0 after the restart (its sidecar cap died with the segment): %#v", pe)
	}
}
