package shmproto_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// exactLists counts the collection's rows by ivf_list: lists 0..n-1, the
// unassigned (NULL) rows and the rest.
func exactLists(t *testing.T, ctx context.Context, conn *pgx.Conn, table string, n int) (counts []int64, unassigned, other int64) {
	t.Helper()
	counts = make([]int64, n)
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT ivf_list, count(*) FROM %s GROUP BY 1`, table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var l *int64
		var c int64
		if err := rows.Scan(&l, &c); err != nil {
			t.Fatal(err)
		}
		switch {
		case l == nil:
			unassigned += c
		case *l >= 0 && *l < int64(n):
			counts[*l] = c
		default:
			other += c
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts, unassigned, other
}

// assertExact fails unless the segment's counters equal an exact count.
func assertExact(t *testing.T, ctx context.Context, conn *pgx.Conn, seg *shmproto.Segment, slot int, what string) shmproto.ListCounts {
	t.Helper()
	const n = 8 // more than the collection's lists: hand-set lists 5..7 too
	lc, err := seg.ReadListCounts(slot, n)
	if err != nil {
		t.Fatal(err)
	}
	if !lc.Valid {
		t.Fatalf("%s: counters not valid (epoch %d)", what, lc.Epoch)
	}
	want, wantU, wantO := exactLists(t, ctx, conn, "lv", n)
	// Rows beyond the n lists read are "other" to the exact count but
	// counted per list by the segment, which has 4096.
	if fmt.Sprint(lc.Counts) != fmt.Sprint(want) || lc.Unassigned != wantU || lc.Other != wantO {
		t.Fatalf("%s: segment %v unassigned %d other %d, exact %v unassigned %d other %d",
			what, lc.Counts, lc.Unassigned, lc.Other, want, wantU, wantO)
	}
	return lc
}

// The list counters the C triggers keep equal an exact GROUP BY after
// every kind of write, including several concurrent writers that abort
// some of their transactions and a rebaseline taken while they write;
// they are invalid before the first baseline, after TRUNCATE and after a
// restart, and ReadListCounts refuses more lists than the segment counts.
func TestListCountsExact(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;`)
	conn := c.Connect(ctx, "postgres")
	mustExec(t, ctx, conn, "SELECT ruvector_collection_create('lv', 2, 4, 3)")
	mustExec(t, ctx, conn, `
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
SELECT collection_id, 1, 'training', 3 FROM ruvector.collections WHERE name = 'lv';
INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
SELECT c.collection_id, 1, l.id, l.v FROM ruvector.collections c,
    (VALUES (0, '{10,0}'::real[]), (1, '{0,10}'), (2, '{-10,-10}')) l(id, v) WHERE c.name = 'lv';
SELECT ruvector._centroids_activate('lv', 1);`)
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	col, err := seg.Find("lv", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}

	if lc, err := seg.ReadListCounts(col.Slot, 3); err != nil || lc.Valid || lc.Epoch != 0 {
		t.Fatalf("before a baseline: %+v, %v; want invalid epoch 0", lc, err)
	}
	if _, err := seg.ReadListCounts(col.Slot, 4097); !errors.Is(err, shmproto.ErrListsUncounted) {
		t.Fatalf("4097 lists: %v, want ErrListsUncounted", err)
	}
	mustExec(t, ctx, conn, `INSERT INTO lv (embedding) SELECT ARRAY[random() * 20 - 10, random() * 20 - 10]::real[]
FROM generate_series(1, 500)`)
	mustExec(t, ctx, conn, "SELECT ruvector._list_counts_rebaseline('lv')")
	first := assertExact(t, ctx, conn, seg, col.Slot, "after the baseline")
	if first.Epoch != 2 || first.Version != 1 || time.Since(first.BaselineAt) > time.Minute {
		t.Fatalf("first baseline: epoch %d version %d at %v", first.Epoch, first.Version, first.BaselineAt)
	}

	// Concurrent writers: inserts, deletes, moves between shards (with and
	// without a list change), hand-set lists, aborted transactions and
	// rolled-back savepoints; one rebaseline while they run.
	const writers = 4
	const txPerWriter = 60
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		wconn := c.Connect(ctx, "postgres")
		wg.Add(1)
		go func(w int, wconn *pgx.Conn) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			stmts := []string{
				`INSERT INTO lv (embedding) SELECT ARRAY[random() * 20 - 10, random() * 20 - 10]::real[] FROM generate_series(1, 5)`,
				`DELETE FROM lv WHERE id IN (SELECT id FROM lv ORDER BY random() LIMIT 2)`,
				`UPDATE lv SET shard = (shard + 1) % 4 WHERE id IN (SELECT id FROM lv ORDER BY random() LIMIT 3)`,
				`UPDATE lv SET shard = (shard + 1) % 4, embedding = '{-10,-10}' WHERE id IN (SELECT id FROM lv ORDER BY random() LIMIT 2)`,
				`UPDATE lv SET ivf_list = 5 + (id % 3)::int WHERE id IN (SELECT id FROM lv ORDER BY random() LIMIT 2)`,
				`UPDATE lv SET ivf_list = NULL WHERE id IN (SELECT id FROM lv ORDER BY random() LIMIT 2)`,
			}
			for i := 0; i < txPerWriter; i++ {
				tx, err := wconn.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				for k := 0; k < 3; k++ {
					sql := stmts[rng.Intn(len(stmts))]
					if rng.Intn(5) == 0 {
						// A savepoint rolled back after a write.
						if _, err = tx.Exec(ctx, "SAVEPOINT s"); err == nil {
							if _, err = tx.Exec(ctx, sql); err == nil {
								_, err = tx.Exec(ctx, "ROLLBACK TO s")
							}
						}
					} else {
						_, err = tx.Exec(ctx, sql)
					}
					if err != nil {
						break
					}
				}
				if err != nil || rng.Intn(4) == 0 {
					// Deadlocks among the random updates are expected; either
					// way this transaction aborts.
					_ = tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					continue // a serialization or deadlock failure: aborted too
				}
			}
		}(w, wconn)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(300 * time.Millisecond)
		bconn := c.Connect(ctx, "postgres")
		// A wait for the table lock long enough for the writers' open
		// transactions (a deadlock among them alone holds one for
		// deadlock_timeout, 1 s, the default wait): the test is about the
		// counts under writers, not how soon the lock comes.
		if _, err := bconn.Exec(ctx, "SELECT ruvector._list_counts_rebaseline('lv', '60 s')"); err != nil {
			errs <- fmt.Errorf("rebaseline under writers: %w", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := assertExact(t, ctx, conn, seg, col.Slot, "after concurrent writers")
	if after.Epoch != 4 {
		t.Fatalf("epoch %d after one more baseline, want 4", after.Epoch)
	}
	var handSet int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM lv WHERE ivf_list >= 5").Scan(&handSet); err != nil {
		t.Fatal(err)
	}
	if handSet == 0 {
		t.Fatal("the writers set no list by hand: the test exercised less than it claims")
	}

	// TRUNCATE makes them stale; a restart starts them unknown.
	mustExec(t, ctx, conn, "TRUNCATE lv_p2")
	if lc, _ := seg.ReadListCounts(col.Slot, 3); lc.Valid {
		t.Fatalf("after TRUNCATE: valid %+v", lc)
	}
	mustExec(t, ctx, conn, "SELECT ruvector._list_counts_rebaseline('lv')")
	assertExact(t, ctx, conn, seg, col.Slot, "after TRUNCATE and a baseline")

	conn.Close(ctx)
	c.Restart("fast")
	conn = c.Connect(ctx, "postgres")
	if _, err := seg.Refresh(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the watchdog to reload lv", func() (bool, error) {
		_, err := seg.Find("lv", srv.DatabaseOID)
		return err == nil, nil
	})
	col, err = seg.Find("lv", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if lc, err := seg.ReadListCounts(col.Slot, 3); err != nil || lc.Valid {
		t.Fatalf("after a restart: %+v, %v; want invalid", lc, err)
	}
	mustExec(t, ctx, conn, "SELECT ruvector._list_counts_rebaseline('lv')")
	assertExact(t, ctx, conn, seg, col.Slot, "after a restart and a baseline")
}
