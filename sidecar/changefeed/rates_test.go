package changefeed

import (
	"testing"
	"time"
)

func one(rel uint32, ins, del int64) *tally {
	t := newTally()
	t.rels[rel] = Counts{Inserts: ins, Deletes: del}
	t.lists[ListKey{rel, 7}] = Counts{Inserts: ins}
	return &t
}

// The window holds exactly the seconds (now-secs, now]; seconds older than
// the ring are dropped, future ones (clock skew) are filed under now, and a
// bucket reused by a later second forgets the earlier one.
func TestRingWindow(t *testing.T) {
	r := newRing(60 * time.Second)
	r.add(100, 100, one(1, 1, 0))
	r.add(101, 101, one(1, 2, 0))
	r.add(150, 150, one(1, 4, 1))
	r.add(99, 160, one(1, 1000, 0)) // older than the ring: dropped
	r.add(170, 160, one(1, 8, 0))   // from the future: counted at 160
	if got := r.sum(160, 60).rels[1]; got != (Counts{Inserts: 14, Deletes: 1}) {
		t.Fatalf("60 s window at 160: %+v", got)
	}
	if got := r.sum(160, 11).rels[1]; got != (Counts{Inserts: 12, Deletes: 1}) {
		t.Fatalf("11 s window at 160: %+v", got)
	}
	if got := r.sum(160, 1).lists[ListKey{1, 7}]; got != (Counts{Inserts: 8}) {
		t.Fatalf("1 s window list: %+v", got)
	}
	// Second 161 lands in the bucket of 101 (and 41): 101 must be gone.
	r.add(161, 161, one(1, 16, 0))
	if got := r.sum(161, 60).rels[1]; got != (Counts{Inserts: 28, Deletes: 1}) {
		t.Fatalf("after reuse: %+v", got)
	}
}

func TestNewValidatesNames(t *testing.T) {
	const dsn = "host=/tmp dbname=postgres"
	for _, c := range []Config{
		{DSN: "x"}, // not a connection string
		{DSN: dsn, Publication: "Bad-Name"},
		{DSN: dsn, Publication: "a234567890123456789012345678901234567890123456789012345678901"},
		{DSN: dsn, SlotName: "no spaces"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	f, err := New(Config{DSN: dsn})
	if err != nil || f.cfg.StatusInterval != 10*time.Second || f.pubInsert != DefaultPublication+"_ins" {
		t.Fatalf("defaults: %+v %v", f, err)
	}
	// An empty DSN means the PG* environment, like every sidecar connection.
	if _, err := New(Config{}); err != nil {
		t.Fatalf("empty DSN: %v", err)
	}
}
