// Package shmproto is the Go side of the shared-memory protocol between the
// ruvector_healing PostgreSQL extension and the sidecar.
//
// The Go structs in this file are the single source of truth for the layout:
// `go generate ./shmproto` writes extension_stub/ruvector_shm_layout.h from
// them, and TestCLayoutAgrees compiles a C program against that header and
// proves every offset, size and constant is the same on both sides.
//
// Concurrency rules (see also the C side, extension_stub/segment.c):
//   - Every field that more than one process touches is an atomic.
//   - Each field has one writer, except where a compare-and-swap protocol
//     makes several safe (the throttle words and the slot seqlock).
//   - No lock is ever shared with Go: a Go process that died holding one
//     would wedge every backend. Readers of seqlocked data retry a bounded
//     number of times and report "unknown" rather than spin forever.
package shmproto

//go:generate go run ./internal/gen -o ../extension_stub/ruvector_shm_layout.h

import (
	"sync/atomic"
	"unsafe"
)

// Layout constants shared with C. Changing any of them, or any struct below,
// requires bumping LayoutVersion.
const (
	// Magic spells "RUVHEAL1"; it is written last, after a write barrier,
	// so a reader that sees it sees a fully initialised header.
	Magic         uint64 = 0x314C414548565552
	LayoutVersion uint32 = 5

	CacheLine = 64
	NameLen   = 64 // NAMEDATALEN: a collection name is an identifier

	// FileName is the segment's file inside $PGDATA/pg_stat_tmp, a
	// directory that base backups and pg_rewind skip.
	FileName = "ruvector_healing.shm"
	FileDir  = "pg_stat_tmp"

	// SeqlockReadRetries bounds how long a reader waits for a writer that
	// may have died mid-write.
	SeqlockReadRetries = 1000
)

// Op is a throttled operation kind; its value indexes Slot.Ops.
type Op uint32

const (
	OpInsert     Op = 0 // single-row and small statements
	OpBulkInsert Op = 1 // COPY FROM and large multi-row statements
	NumOps          = 2
)

// OpNames are the SQL spellings of the ops, indexed by Op.
var OpNames = [NumOps]string{"insert", "bulk_insert"}

// State is a collection's integrity state. The numbers are also the values
// of the ruvector_integrity_state metric.
type State uint32

const (
	StateNormal   State = 0
	StateStress   State = 1
	StateCritical State = 2
	StateUnknown  State = 3
	NumStates           = 4
)

// StateNames are the SQL spellings of the states, indexed by State.
var StateNames = [NumStates]string{"normal", "stress", "critical", "unknown"}

// SetBy says who set a throttle.
type SetBy uint32

const (
	SetByNone    SetBy = 0
	SetBySidecar SetBy = 1
	SetByManual  SetBy = 2
	NumSetBy           = 3
)

// SetByNames are the SQL spellings of SetBy, indexed by SetBy.
var SetByNames = [NumSetBy]string{"none", "sidecar", "manual"}

// Routing: a collection has at most MaxShards shards (partitions). Each
// shard's weight is one atomic 32-bit word holding the weight in
// milli-units (weight 1 = 1000) and who set it, so the watchdog can release
// the sidecar's weights without SQL telling it which ones they are.
const (
	MaxShards           = 256
	RoutingMilliMask    = 0xffffff // weight × 1000; the SQL side caps weights at 1000
	RoutingSetByShift   = 24
	RoutingDefaultMilli = 1000 // weight 1: what a shard without a routing_weights row gets
)

// Shard caps: a write cap on one shard, enforced per row by the row trigger
// on INSERT (a hotspot made by a writer that names its shard cannot be
// routed away). Each shard's cap is one atomic 32-bit word holding the cap
// in rows per second (0: no cap) and who set it, like a routing weight, so
// the watchdog can release the sidecar's caps without SQL. The caps of a
// slot count only while ShardCapOwner is the slot's collection id: a reused
// slot does not inherit the previous collection's caps.
const (
	ShardCapRateMask   = 0xffffff // rows per second, at most 16,777,215
	ShardCapSetByShift = 24
)

// IVF list counters: every slot has ListsPerSlot (a header field, from
// ruvector.max_lists) atomic row counters, one per ivf_list value
// 0..ListsPerSlot-1, in a region after the relation map. ListsEpoch in the
// slot says whether they hold an exact baseline: 0 never taken (server
// start, new slot), odd stale or being rewritten, even (>= 2) valid.
const (
	ListCounterSize  = 8 // one atomic int64 per list
	DefaultListsSlot = 4096
)

// Throttle word: one atomic 32-bit value per op so that the percentage, who
// set it and a change counter move together. The counter defeats ABA: the
// watchdog expiring a manual throttle cannot clear a fresh one that happens
// to carry the same percentage.
const (
	ThrottlePctMask    = 0xff
	ThrottleSetByShift = 8
	ThrottleSetByMask  = 0xff
	ThrottleSeqShift   = 16
)

// Header is the segment's first HeaderSize bytes.
type Header struct {
	Magic      atomic.Uint64 // written last at creation
	Version    uint32
	HeaderSize uint32
	SlotSize   uint32
	SlotCount  uint32
	// RelmapOffset and RelmapCount locate the relation map (RelmapEntry
	// array) after the slots.
	RelmapOffset      uint32
	RelmapCount       uint32
	SystemIdentifier  uint64
	PostmasterPID     uint32
	_                 uint32
	PostmasterStartUs int64 // Unix microseconds
	// Generation is bumped at every (re)initialisation, crash restarts
	// included, so the sidecar knows its view is stale.
	Generation uint64

	// Written by the watchdog worker.
	WatchdogPID         atomic.Uint32
	SidecarTimeoutMs    atomic.Uint32 // ruvector.sidecar_timeout, republished on reload
	WatchdogHeartbeatUs atomic.Int64
	// Outage is 1 while the watchdog considers the sidecar dead.
	Outage         atomic.Uint32
	_              uint32
	SidecarOutages atomic.Uint64

	// Written by the sidecar.
	SidecarPID         atomic.Uint32
	_                  uint32
	SidecarHeartbeatUs atomic.Int64

	// RegistrySeq is the seqlock over slot identities and the relation
	// map. Only the extension writes it (serialised by a table lock).
	RegistrySeq atomic.Uint64

	// ListsOffset and ListsPerSlot locate the IVF list counters: slot i's
	// counters are ListsPerSlot int64s at ListsOffset + i*ListsPerSlot*8,
	// right after the relation map.
	ListsOffset  uint32
	ListsPerSlot uint32

	_ [128]byte
}

// OpState is one op's throttle, token bucket and counters in a slot.
type OpState struct {
	Throttle atomic.Uint32 // seq<<16 | setby<<8 | pct
	_        uint32
	// ExpiresUs is when a manual throttle lapses (0: never). Written
	// before the throttle word, so a reader that sees the word sees it.
	ExpiresUs atomic.Int64
	SetAtUs   atomic.Int64
	// TatUs is the token bucket's theoretical arrival time (GCRA): writes
	// charged after the fact push it forward by rows/rate.
	TatUs atomic.Int64
	// BaselineMilli is the recent unthrottled admitted rate, rows/s × 1000.
	BaselineMilli   atomic.Uint64
	WindowStartUs   atomic.Int64
	WindowRows      atomic.Uint64
	WindowThrottled atomic.Uint32
	_               uint32

	// Live counters kept by the gate.
	AdmittedRows       atomic.Uint64
	DelayedStatements  atomic.Uint64
	WaitUs             atomic.Uint64
	RejectedStatements atomic.Uint64

	// OutcomeID is the healing outcome (remediation) whose sidecar throttle
	// is in force, so a refused write can say which one (0: none, or set
	// outside a remediation). Like ExpiresUs it is written before the
	// throttle word and trusted only while the word says SetBySidecar;
	// whoever releases a sidecar throttle clears it.
	OutcomeID atomic.Int64
	_         [24]byte
}

// Slot is one collection's cache-line-aligned record.
type Slot struct {
	// Seq is the seqlock over LambdaBits, State and StateSinceUs. Writers
	// take it by compare-and-swap from even to odd.
	Seq atomic.Uint64
	// InUse, CollectionID, DatabaseOID, RelationOID and Name are the slot's
	// identity, protected by Header.RegistrySeq.
	InUse        atomic.Uint32
	CollectionID uint32
	DatabaseOID  uint32
	RelationOID  uint32
	Name         [NameLen]byte

	LambdaBits      atomic.Uint64 // float64 bits
	State           atomic.Uint32
	_               uint32
	StateSinceUs    atomic.Int64
	LambdaUpdatedUs atomic.Int64
	_               [8]byte

	Ops [NumOps]OpState

	// RoutingSeq counts routing changes; readers that see it move while
	// copying the weights copy them again. RoutingShards is how many shards
	// the collection has (0: not a vector collection, no routing).
	// CentroidVersion is the active IVF centroid version (0: none),
	// published by the extension when the activating transaction commits.
	RoutingSeq      atomic.Uint32
	RoutingShards   atomic.Uint32
	CentroidVersion atomic.Uint32
	// ListsVersion is the centroid version active when the list counters'
	// baseline was taken (information only: the counters count ivf_list
	// values, which only row writes change, so a version change does not
	// make them stale).
	ListsVersion atomic.Uint32
	// ListsEpoch: 0 no baseline, odd stale or being rewritten, even valid;
	// it moves at every baseline and invalidation, so a reader that sees
	// the same even value before and after copying has a consistent view.
	ListsEpoch atomic.Uint64
	// ListsUnassigned counts rows with ivf_list NULL, ListsOther rows with
	// an ivf_list outside 0..ListsPerSlot-1 (set by hand): with the per-list
	// counters they add up to the collection's row count.
	ListsUnassigned atomic.Int64
	ListsOther      atomic.Int64
	ListsBaselineUs atomic.Int64 // when the current baseline was taken
	_               [16]byte
	// RoutingWeights are setby<<RoutingSetByShift | milli-weight, per shard.
	RoutingWeights [MaxShards]atomic.Uint32

	// ShardCapOwner is the collection id the shard caps below were set
	// for; caps of any other owner are void (see ShardCapRateMask).
	ShardCapOwner atomic.Uint32
	_             uint32
	// Live counters of the row trigger's shard caps: rows admitted into a
	// capped shard, rows that had to wait, the time they waited, and
	// statements refused because a row would have waited longer than
	// ruvector.throttle_max_wait.
	ShardCapAdmittedRows       atomic.Uint64
	ShardCapDelayedRows        atomic.Uint64
	ShardCapWaitUs             atomic.Uint64
	ShardCapRejectedStatements atomic.Uint64
	_                          [24]byte
	// ShardCaps are setby<<ShardCapSetByShift | rows per second, per shard.
	ShardCaps [MaxShards]atomic.Uint32
	// ShardCapOutcomes name the healing outcome whose remediation set a
	// sidecar cap, written before the word and trusted only while the word
	// says SetBySidecar (like OpState.OutcomeID).
	ShardCapOutcomes [MaxShards]atomic.Int64
	// ShardCapTatUs is each capped shard's GCRA theoretical arrival time
	// (monotonic microseconds of the C side): every admitted row pushes it
	// by 1/cap.
	ShardCapTatUs [MaxShards]atomic.Int64
}

// RelmapEntry maps a relation (a collection's table or one of its
// partitions) to a slot. SlotPlusOne is 0 for an empty entry.
type RelmapEntry struct {
	DatabaseOID uint32
	RelationOID uint32
	SlotPlusOne uint32
	_           uint32
}

// Sizes of the layout, derived from the structs.
const (
	HeaderSize      = int(unsafe.Sizeof(Header{}))
	SlotSize        = int(unsafe.Sizeof(Slot{}))
	OpStateSize     = int(unsafe.Sizeof(OpState{}))
	RelmapEntrySize = int(unsafe.Sizeof(RelmapEntry{}))
)

// SegmentSize is the file size for the given counts; slots start at
// HeaderSize, the relation map follows them and the list counters follow
// the relation map.
func SegmentSize(slots, relmap, listsPerSlot int) int {
	return ListsOffset(slots, relmap) + slots*listsPerSlot*ListCounterSize
}

// ListsOffset is where the list counters start.
func ListsOffset(slots, relmap int) int {
	return HeaderSize + slots*SlotSize + relmap*RelmapEntrySize
}

// PackThrottle builds a throttle word.
func PackThrottle(seq uint32, by SetBy, pct uint32) uint32 {
	return seq<<ThrottleSeqShift | uint32(by)<<ThrottleSetByShift | pct&ThrottlePctMask
}

// PackWeight builds a routing weight word.
func PackWeight(by SetBy, milli uint32) uint32 {
	return uint32(by)<<RoutingSetByShift | milli&RoutingMilliMask
}

// UnpackWeight splits a routing weight word.
func UnpackWeight(w uint32) (by SetBy, milli uint32) {
	return SetBy(w >> RoutingSetByShift), w & RoutingMilliMask
}

// PackShardCap builds a shard cap word.
func PackShardCap(by SetBy, rowsPerSec uint32) uint32 {
	return uint32(by)<<ShardCapSetByShift | rowsPerSec&ShardCapRateMask
}

// UnpackShardCap splits a shard cap word.
func UnpackShardCap(w uint32) (by SetBy, rowsPerSec uint32) {
	return SetBy(w >> ShardCapSetByShift), w & ShardCapRateMask
}

// UnpackThrottle splits a throttle word.
func UnpackThrottle(w uint32) (seq uint32, by SetBy, pct uint32) {
	return w >> ThrottleSeqShift, SetBy(w >> ThrottleSetByShift & ThrottleSetByMask), w & ThrottlePctMask
}
