package shmproto_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// heartbeat runs the sidecar's heartbeat in-process; stop detaches cleanly.
func heartbeat(t *testing.T, seg *shmproto.Segment) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	hb := &instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}
	go func() { done <- hb.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func routing(t *testing.T, seg *shmproto.Segment, slot int) []shmproto.Weight {
	t.Helper()
	r, err := seg.ReadRouting(slot)
	if err != nil {
		t.Fatal(err)
	}
	return r.Weights
}

// The weights SQL writes are the weights Go reads, an aborted change is
// undone in the segment, a centroid version appears at commit, the
// watchdog puts the sidecar's weights back to 1 when the sidecar goes, and
// a restart reloads the rest from the catalog.
func TestRoutingAndCentroidsFromSQL(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{SidecarTimeout: "1s"})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;`)
	conn := c.Connect(ctx, "postgres")
	mustExec(t, ctx, conn, "SELECT ruvector_collection_create('vecs', 2, 4, 2)")
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	stop := heartbeat(t, seg)
	col, err := seg.Find("vecs", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}

	w := routing(t, seg, col.Slot)
	if len(w) != 4 {
		t.Fatalf("a new 4-shard collection has %d weights in the segment", len(w))
	}
	for sh, x := range w {
		if x.Weight != 1 || x.SetBy != shmproto.SetByNone {
			t.Fatalf("shard %d starts at %+v, want weight 1 by none", sh, x)
		}
	}

	mustExec(t, ctx, conn, "SELECT ruvector_routing_set('vecs', 1, 0)")
	mustExec(t, ctx, conn, "SELECT ruvector_routing_set('vecs', 2, 2.5, 'sidecar', 7)")
	w = routing(t, seg, col.Slot)
	want := []shmproto.Weight{{1, shmproto.SetByNone}, {0, shmproto.SetByManual}, {2.5, shmproto.SetBySidecar}, {1, shmproto.SetByNone}}
	for sh := range want {
		if w[sh] != want[sh] {
			t.Fatalf("after routing_set: shard %d is %+v, want %+v", sh, w[sh], want[sh])
		}
	}
	// What the column default does with them: no row lands on shard 1.
	mustExec(t, ctx, conn, "INSERT INTO vecs (embedding) SELECT ARRAY[g, g]::real[] FROM generate_series(1, 400) g")
	var onZero, onHeavy, onOne int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE shard = 1), count(*) FILTER (WHERE shard = 2),
		count(*) FILTER (WHERE shard = 0) FROM vecs`).Scan(&onZero, &onHeavy, &onOne); err != nil {
		t.Fatal(err)
	}
	if onZero != 0 || onHeavy <= onOne {
		t.Fatalf("rows per shard: weight 0 got %d, weight 2.5 got %d, weight 1 got %d", onZero, onHeavy, onOne)
	}

	// Inside a transaction the change is in the segment at once; a rollback
	// takes it out again.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT ruvector_routing_set('vecs', 3, 7)"); err != nil {
		t.Fatal(err)
	}
	if got := routing(t, seg, col.Slot)[3]; got.Weight != 7 {
		t.Fatalf("inside the transaction shard 3 reads %+v, want 7", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := routing(t, seg, col.Slot)[3]; got != (shmproto.Weight{Weight: 1, SetBy: shmproto.SetByNone}) {
		t.Fatalf("after rollback shard 3 reads %+v, want the default", got)
	}

	// A centroid version is published when its transaction commits.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
		 SELECT collection_id, 3, 'training', 2 FROM ruvector.collections WHERE name = 'vecs'`,
		`INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
		 SELECT collection_id, 3, l, ARRAY[l * 100, l * 100]::real[] FROM ruvector.collections, generate_series(0, 1) l
		 WHERE name = 'vecs'`,
		"SELECT ruvector._centroids_activate('vecs', 3)",
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if v, err := seg.ReadCentroidVersion(col.Slot); err != nil || v != 0 {
		t.Fatalf("before commit the segment publishes version %d (%v), want 0", v, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := seg.ReadCentroidVersion(col.Slot); err != nil || v != 3 {
		t.Fatalf("after commit the segment publishes version %d (%v), want 3", v, err)
	}

	// The sidecar goes: its weight goes back to 1 in the segment and the
	// catalog; the manual one stays.
	stop()
	pgtest.WaitFor(t, 10*time.Second, "the watchdog to release the sidecar's weight", func() (bool, error) {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM ruvector.routing_weights WHERE set_by = 'sidecar'").Scan(&n); err != nil {
			return false, err
		}
		return n == 0 && routing(t, seg, col.Slot)[2] == shmproto.Weight{Weight: 1, SetBy: shmproto.SetByNone}, nil
	})
	if got := routing(t, seg, col.Slot)[1]; got != (shmproto.Weight{Weight: 0, SetBy: shmproto.SetByManual}) {
		t.Fatalf("the manual weight did not survive the sidecar's departure: %+v", got)
	}

	// A restart gives a fresh segment; the watchdog reloads routing and the
	// active centroid version from the catalog.
	mustExec(t, ctx, conn, "SELECT ruvector_routing_set('vecs', 0, 4)")
	conn.Close(ctx)
	before, err := seg.Info()
	if err != nil {
		t.Fatal(err)
	}
	c.Restart("fast")
	pgtest.WaitFor(t, 30*time.Second, "the segment to be reloaded after the restart", func() (bool, error) {
		if _, err := seg.Refresh(); err != nil {
			return false, err
		}
		// The old mapping still holds the old weights: insist on the new one.
		if in, err := seg.Info(); err != nil || in.Generation <= before.Generation {
			return false, err
		}
		col, err = seg.Find("vecs", srv.DatabaseOID)
		if err != nil {
			return false, err
		}
		r, err := seg.ReadRouting(col.Slot)
		if err != nil || len(r.Weights) != 4 {
			return false, err
		}
		v, err := seg.ReadCentroidVersion(col.Slot)
		return r.Weights[0] == shmproto.Weight{Weight: 4, SetBy: shmproto.SetByManual} &&
			r.Weights[1] == shmproto.Weight{Weight: 0, SetBy: shmproto.SetByManual} &&
			r.Weights[2] == shmproto.Weight{Weight: 1, SetBy: shmproto.SetByNone} && v == 3, err
	})
}
