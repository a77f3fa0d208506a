package changefeed

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Counts are row changes (and TRUNCATE statements) seen for one key.
type Counts struct {
	Inserts   int64
	Deletes   int64
	Updates   int64
	Truncates int64
}

func (c *Counts) add(o Counts) {
	c.Inserts += o.Inserts
	c.Deletes += o.Deletes
	c.Updates += o.Updates
	c.Truncates += o.Truncates
}

// ListKey names one IVF list of one collection. Lists are numbered per
// collection, so the collection's root relation is part of the key.
type ListKey struct {
	CollectionRelID uint32
	List            int64
}

// ShardKey names one shard (the partition key value) of one collection.
type ShardKey struct {
	CollectionRelID uint32
	Shard           int64
}

// tally is what one committed transaction (or one second of commits)
// contributed.
type tally struct {
	rels   map[uint32]Counts
	lists  map[ListKey]Counts
	shards map[ShardKey]Counts
	// deletes whose IVF list the old tuple did not carry (replica identity
	// is not FULL and ivf_list is not part of the key), per collection.
	unattributedListDeletes map[uint32]int64
}

func newTally() tally {
	return tally{
		rels:                    map[uint32]Counts{},
		lists:                   map[ListKey]Counts{},
		shards:                  map[ShardKey]Counts{},
		unattributedListDeletes: map[uint32]int64{},
	}
}

func (t *tally) empty() bool {
	return len(t.rels) == 0 && len(t.lists) == 0 && len(t.shards) == 0 && len(t.unattributedListDeletes) == 0
}

func (t *tally) merge(o *tally) {
	for k, v := range o.rels {
		c := t.rels[k]
		c.add(v)
		t.rels[k] = c
	}
	for k, v := range o.lists {
		c := t.lists[k]
		c.add(v)
		t.lists[k] = c
	}
	for k, v := range o.shards {
		c := t.shards[k]
		c.add(v)
		t.shards[k] = c
	}
	for k, v := range o.unattributedListDeletes {
		t.unattributedListDeletes[k] += v
	}
}

// bucket holds the commits of one wall-clock second.
type bucket struct {
	sec int64 // unix second this bucket currently holds; stale when older than the ring
	t   tally
}

// ring is a sliding window of per-second buckets. Rates are sums over the
// buckets inside the window divided by the window: no per-event timestamps,
// bounded memory (one bucket per second of MaxWindow, holding only keys that
// changed in that second).
type ring struct {
	buckets []bucket
}

func newRing(span time.Duration) ring {
	n := int(span / time.Second)
	if n < 1 {
		n = 1
	}
	return ring{buckets: make([]bucket, n)}
}

// add files a committed transaction's tally under second sec. Seconds older
// than the ring are dropped (the totals still have them); seconds in the
// future (clock skew between server and sidecar) are filed under now.
func (r *ring) add(sec, now int64, t *tally) {
	n := int64(len(r.buckets))
	if sec > now {
		sec = now
	}
	if sec <= now-n {
		return
	}
	b := &r.buckets[((sec%n)+n)%n]
	if b.sec != sec || b.t.rels == nil {
		b.sec = sec
		b.t = newTally()
	}
	b.t.merge(t)
}

// sum adds up the buckets of the last `secs` seconds ending at now.
func (r *ring) sum(now, secs int64) tally {
	out := newTally()
	for i := range r.buckets {
		b := &r.buckets[i]
		if b.t.rels != nil && b.sec > now-secs && b.sec <= now {
			out.merge(&b.t)
		}
	}
	return out
}

// Rates are changes per second over a window.
type Rates struct {
	InsertsPerSec float64
	DeletesPerSec float64
}

// RelationRates are one published relation's (a partition, or an
// unpartitioned collection table) changes per second.
type RelationRates struct {
	RelID           uint32
	Namespace, Name string
	// CollectionRelID is the collection's root table (the relation itself
	// when it is not partitioned); 0 when the relation is not registered.
	CollectionRelID uint32
	// Shard is the partition's LIST value when it is a single integer, else -1.
	Shard         int64
	InsertsPerSec float64
	DeletesPerSec float64
	UpdatesPerSec float64
	Truncates     int64 // TRUNCATE statements in the window (not a rate: one empties the table)
	// DeletesObserved is false when the relation has no usable replica
	// identity: it is published for inserts only, because publishing its
	// deletes would make the application's DELETE and UPDATE fail. Its
	// DeletesPerSec and UpdatesPerSec are then unknown, not zero.
	DeletesObserved bool
}

// Snapshot is the feed's view over one window.
type Snapshot struct {
	At     time.Time
	Window time.Duration // the window used (clamped to Config.MaxWindow)

	Relations map[uint32]RelationRates
	Lists     map[ListKey]Rates
	Shards    map[ShardKey]Rates
	// UnattributedListDeletesPerSec are deletes per second, per collection
	// root, whose IVF list is unknown because the old tuple did not carry it.
	UnattributedListDeletesPerSec map[uint32]float64

	Stats Stats
}

// Totals are cumulative counts since the Feed was created (across
// reconnects), for exact accounting; Rates is for the health signals.
type Totals struct {
	Relations               map[uint32]Counts
	Lists                   map[ListKey]Counts
	Shards                  map[ShardKey]Counts
	UnattributedListDeletes map[uint32]int64
}

// Stats are the feed's counters.
type Stats struct {
	SlotName     string
	Publications []string
	Connected    bool // streaming right now
	SystemID     string
	Timeline     int32

	Messages     int64 // CopyData messages received (XLogData and keepalives)
	Changes      int64 // row changes decoded (insert, update, delete)
	Transactions int64 // committed transactions decoded
	Keepalives   int64
	StatusSent   int64 // standby status updates sent
	Reconnects   int64 // sessions started after the first
	// SlotsRecreated counts slots found invalidated (WAL removed) and
	// recreated: each is a gap in the counts.
	SlotsRecreated int64
	Errors         int64

	LastReceivedLSN  pglogrepl.LSN // end of the last WAL data or keepalive position seen
	ConfirmedLSN     pglogrepl.LSN // processed up to here: sent in status updates
	PersistedLSN     pglogrepl.LSN // last written to ruvector.changefeed_state
	StartLSN         pglogrepl.LSN // where the current (or last) session started
	LastKeepalive    time.Time
	LastStatusUpdate time.Time
	LastCommit       time.Time // server commit time of the last transaction
	LastError        string
	LastErrorAt      time.Time
}
