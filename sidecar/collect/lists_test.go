package collect_test

import (
	"context"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

// The list sizes follow training, drift and a rebuild, and agree with an
// exact count.
func TestListsCollector(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "lc", Dim: 8, Partitions: 2, Lists: 6, Seed: 1})
	tg, err := collect.LoadTarget(ctx, env.Conn, "lc")
	if err != nil {
		t.Fatal(err)
	}
	l := collect.NewLists()
	sample := func() []health.CentroidSignal {
		var s health.Signals
		s.Centroids = []health.CentroidSignal{{ID: 99}}
		if err := l.Collect(ctx, env.Conn, tg, &s); err != nil {
			t.Fatal(err)
		}
		return s.Centroids
	}
	if err := env.W.CopyInsert(ctx, 3000, nil); err != nil {
		t.Fatal(err)
	}
	if got := sample(); got != nil {
		t.Fatalf("no trained version: lists %v, want none", got)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "lc", ivf.TrainOptions{Seed: 2}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	check := func() []health.CentroidSignal {
		got := sample()
		sk, err := ivf.Skew(ctx, env.Conn, "lc")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 6 {
			t.Fatalf("%d lists, want 6", len(got))
		}
		for i, c := range got {
			if c.ID != int64(i) || c.ListSize != sk.Sizes[i] {
				t.Fatalf("list %d: %+v, exact count %d", i, c, sk.Sizes[i])
			}
		}
		return got
	}
	before := check()
	if err := env.W.Drift(ctx, 4000, nil, 0); err != nil {
		t.Fatal(err)
	}
	after := check()
	var grew int64
	for i := range after {
		grew = max(grew, after[i].ListSize-before[i].ListSize)
	}
	if grew < 3000 {
		t.Fatalf("largest growth of a list after drifting 4000 rows: %d", grew)
	}
}

// With the segment the sizes are the extension's counters: after the one
// rebaseline of the first sample they follow inserts, drift, deletes, moves
// between shards, an aborted transaction and two reassignment passes
// exactly without another count (the epoch stays), a TRUNCATE makes the
// next sample rebaseline, and a rebaseline that cannot get its lock in
// time falls back to a scan and leaves the counters stale until it can.
func TestListsCollectorFromSegment(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "lcs", Dim: 8, Partitions: 2, Lists: 6, Seed: 3})
	tg, err := collect.LoadTarget(ctx, env.Conn, "lcs")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := instance.Discover(ctx, env.Conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	col, err := seg.Find("lcs", tg.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	l := collect.NewListsFromSegment(seg)
	l.LockWait = 200 * time.Millisecond
	sample := func() []health.CentroidSignal {
		t.Helper()
		var s health.Signals
		if err := l.Collect(ctx, env.Conn, tg, &s); err != nil {
			t.Fatal(err)
		}
		return s.Centroids
	}
	counters := func() shmproto.ListCounts {
		t.Helper()
		lc, err := seg.ReadListCounts(col.Slot, 6)
		if err != nil {
			t.Fatal(err)
		}
		return lc
	}
	check := func(what string) {
		t.Helper()
		got := sample()
		sk, err := ivf.Skew(ctx, env.Conn, "lcs")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 6 {
			t.Fatalf("%s: %d lists, want 6", what, len(got))
		}
		for i, c := range got {
			if c.ID != int64(i) || c.ListSize != sk.Sizes[i] {
				t.Fatalf("%s: list %d: %+v, exact count %d", what, i, c, sk.Sizes[i])
			}
		}
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := env.Conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	if err := env.W.CopyInsert(ctx, 3000, nil); err != nil {
		t.Fatal(err)
	}
	if got := sample(); got != nil {
		t.Fatalf("no trained version: lists %v, want none", got)
	}
	if lc := counters(); lc.Valid {
		t.Fatalf("counters valid before any baseline: %+v", lc)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "lcs", ivf.TrainOptions{Seed: 2}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	check("first sample (rebaseline)")
	epoch := counters().Epoch
	if epoch != 2 {
		t.Fatalf("epoch %d after the first baseline, want 2", epoch)
	}

	if err := env.W.Drift(ctx, 4000, nil, 0); err != nil {
		t.Fatal(err)
	}
	check("after drift")
	exec(`DELETE FROM lcs WHERE id % 7 = 0`)
	check("after deletes")
	exec(`UPDATE lcs SET shard = 1 - shard WHERE id % 5 = 0`)
	check("after moves between shards")
	tx, err := env.Conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO lcs (embedding) SELECT embedding FROM lcs LIMIT 500`,
		`DELETE FROM lcs WHERE id % 3 = 0`,
		`UPDATE lcs SET ivf_list = 0`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check("after an aborted transaction")
	if _, err := ivf.Rebuild(ctx, env.Conn, "lcs", ivf.TrainOptions{Seed: 9}, 700, nil); err != nil {
		t.Fatal(err)
	}
	check("after a rebuild's reassignment pass")
	if _, err := ivf.Rollback(ctx, env.Conn, "lcs", 700, nil); err != nil {
		t.Fatal(err)
	}
	check("after a rollback's reassignment pass")
	if e := counters().Epoch; e != epoch {
		t.Fatalf("epoch moved from %d to %d: the collector counted again instead of reading the counters", epoch, e)
	}

	// TRUNCATE: stale. A writer holds the table, so the rebaseline gives up
	// after LockWait and the sample is a scan; once it commits, the next
	// sample rebaselines.
	exec(`TRUNCATE lcs_p1`)
	writer := env.Cluster.Connect(ctx, "postgres")
	wtx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wtx.Exec(ctx, `INSERT INTO lcs (embedding) SELECT embedding FROM lcs LIMIT 100`); err != nil {
		t.Fatal(err)
	}
	// A sample that waited for the writer would hang here (it commits
	// below); one that waited for its own lock_timeout instead of LockWait
	// would take far longer than the bound, which only has to be clear of
	// a loaded machine's scan time.
	start := time.Now()
	check("while a writer blocks the rebaseline (scan)")
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the blocked sample took %v", d)
	}
	if lc := counters(); lc.Valid {
		t.Fatalf("counters valid although the rebaseline could not lock: %+v", lc)
	}
	if err := wtx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	check("after the writer committed (rebaseline)")
	if lc := counters(); !lc.Valid || lc.Epoch <= epoch {
		t.Fatalf("after the second baseline: %+v, want valid with epoch above %d", lc, epoch)
	}
}
