package collect

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
)

// A partition's reads stay in its long rates after they have left the
// short ones, and leave the long rates once the window has moved past
// them. Strategies that choose where rows go judge by the long rates: a
// backend's counts reach pg_stat up to 10 s late, so one short window can
// show a busily scanned partition reading nothing (scorecard run 15).
func TestPartitionsLongWindowKeepsReadsPastTheShortWindow(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	db := c.Connect(ctx, "postgres")
	mustExec(t, db, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', 1 FROM generate_series(1, 500)")
	mustExec(t, db, "SELECT pg_stat_force_next_flush()")
	seqRead := func() int64 {
		var n int64
		if err := db.QueryRow(ctx, `SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'emb_1'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pgtest.WaitFor(t, 15*time.Second, "the inserts in pg_stat", func() (bool, error) {
		var n int64
		err := db.QueryRow(ctx, `SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'emb_1'`).Scan(&n)
		return n == 500, err
	})
	read0 := seqRead()

	const window = 3 * time.Second
	p := &Partitions{Interval: 500 * time.Millisecond, LongWindow: window}
	if _, err := collectOnce(t, p, conn, tg); !errors.Is(err, ErrFirstSample) {
		t.Fatalf("first sample: %v", err)
	}
	for range 4 {
		mustExec(t, db, "SELECT count(*) FROM emb_1")
	}
	mustExec(t, db, "SELECT pg_stat_force_next_flush()")
	pgtest.WaitFor(t, 15*time.Second, "the four scans in pg_stat", func() (bool, error) { return seqRead()-read0 == 2000, nil })

	// take samples emb_1 and turns its long read rate back into rows over
	// the window it covers, which ends inside the Collect call: lo and hi.
	type sample struct {
		short, lo, hi float64
		since, long   time.Time
	}
	take := func() sample {
		t.Helper()
		before := time.Now()
		s, err := collectOnce(t, p, conn, tg)
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		e1, _ := partition(s, "emb_1")
		return sample{short: e1.ReadRowsPerSec, since: s.PartitionsSince, long: s.PartitionsLongSince,
			lo: e1.LongReadRowsPerSec * before.Sub(s.PartitionsLongSince).Seconds(),
			hi: e1.LongReadRowsPerSec * after.Sub(s.PartitionsLongSince).Seconds()}
	}
	near := func(lo, hi, want float64) bool { return hi >= want*0.999-1 && lo <= want*1.001+1 }

	s2 := take()
	if !near(s2.lo, s2.hi, 2000) || s2.since != s2.long {
		t.Fatalf("the sample after the scans: long reads %.0f–%.0f rows, want 2000, over the short window (%v, %v)", s2.lo, s2.hi, s2.since, s2.long)
	}
	time.Sleep(500 * time.Millisecond)
	s3 := take()
	if s3.short != 0 {
		t.Fatalf("the next sample's short window shows %.1f rows/s read; nothing read since", s3.short)
	}
	if !near(s3.lo, s3.hi, 2000) || !s3.long.Equal(s2.long) {
		t.Fatalf("the next sample's long window: %.0f–%.0f rows read since %v, want the 2000 since %v", s3.lo, s3.hi, s3.long, s2.long)
	}

	// Once the window has moved past the sample before the scans, they
	// are out of the long rates too.
	deadline := time.Now().Add(window + 15*time.Second)
	for {
		time.Sleep(500 * time.Millisecond)
		s := take()
		if s.long.After(s2.long) {
			// The first sample after the scans (s3's short window began
			// at it) is the earliest base after the first one.
			if s.long.Before(s3.since) || s.lo != 0 || s.hi != 0 {
				t.Fatalf("a long window from %v (samples before the scans %v, after them %v): %.0f–%.0f rows read, want none",
					s.long, s2.long, s3.since, s.lo, s.hi)
			}
			break
		}
		if !near(s.lo, s.hi, 2000) {
			t.Fatalf("a long window from %v still before the scans: %.0f–%.0f rows, want 2000", s.long, s.lo, s.hi)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the long window still starts at %v, %v after it: want it kept within %v", s.long, time.Since(s.long).Round(time.Millisecond), window)
		}
	}
}
