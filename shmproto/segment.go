package shmproto

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors callers branch on. Validation failures wrap ErrInvalidSegment
// inside a *ValidationError that names the field.
var (
	ErrInvalidSegment = errors.New("shmproto: invalid segment")
	ErrNoCollection   = errors.New("shmproto: no such collection in the segment")
	ErrManualPinned   = errors.New("shmproto: a manual throttle pins this slot")
	ErrSeqlockBusy    = errors.New("shmproto: seqlock held by another writer")
	ErrClosed         = errors.New("shmproto: segment closed")
)

// ValidationError says which header field made a segment unusable.
type ValidationError struct {
	Path  string
	Field string
	Got   any
	Want  any
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("shmproto: segment %s: %s is %v, want %v", e.Path, e.Field, e.Got, e.Want)
}

func (e *ValidationError) Unwrap() error { return ErrInvalidSegment }

// Options says what an opened segment must match.
type Options struct {
	// SystemIdentifier, when non-zero, must equal the header's: it proves
	// the segment belongs to the cluster the sidecar is connected to.
	SystemIdentifier uint64
	// OwnerUID, when non-negative, must own the file (the server's user).
	OwnerUID int
}

// Path returns the segment file of a data directory.
func Path(dataDir string) string {
	return filepath.Join(dataDir, FileDir, FileName)
}

// Segment is a mapped, validated segment. Its methods are safe for
// concurrent use; Refresh swaps the mapping under a write lock so no reader
// ever touches unmapped memory.
type Segment struct {
	path string
	opts Options

	mu  sync.RWMutex
	mem []byte
	ino uint64
}

// Open maps and validates the segment file at path.
func Open(path string, opts Options) (*Segment, error) {
	s := &Segment{path: path, opts: opts}
	mem, ino, err := mapFile(path, opts)
	if err != nil {
		return nil, err
	}
	s.install(mem, ino)
	return s, nil
}

func (s *Segment) install(mem []byte, ino uint64) {
	s.mem = mem
	s.ino = ino
}

func mapFile(path string, opts Options) ([]byte, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("shmproto: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("shmproto: stat segment: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, 0, fmt.Errorf("shmproto: stat segment %s: no owner information", path)
	}
	if opts.OwnerUID >= 0 && int(st.Uid) != opts.OwnerUID {
		return nil, 0, &ValidationError{Path: path, Field: "file owner uid", Got: st.Uid, Want: opts.OwnerUID}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, 0, &ValidationError{Path: path, Field: "file mode", Got: fmt.Sprintf("%04o", perm), Want: "0600 (no group or other access)"}
	}
	size := fi.Size()
	if size < int64(HeaderSize) {
		return nil, 0, &ValidationError{Path: path, Field: "file size", Got: size, Want: fmt.Sprintf(">= %d", HeaderSize)}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, 0, fmt.Errorf("shmproto: mmap segment: %w", err)
	}
	if err := validate(path, mem, opts); err != nil {
		_ = unix.Munmap(mem)
		return nil, 0, err
	}
	return mem, st.Ino, nil
}

func validate(path string, mem []byte, opts Options) error {
	h := (*Header)(unsafe.Pointer(&mem[0]))
	// Magic is written last by the extension: reading it first (an atomic
	// load, so ordered before the plain loads below) means the rest is set.
	if m := h.Magic.Load(); m != Magic {
		return &ValidationError{Path: path, Field: "magic", Got: fmt.Sprintf("%#x", m), Want: fmt.Sprintf("%#x", Magic)}
	}
	if h.Version != LayoutVersion {
		return &ValidationError{Path: path, Field: "layout version", Got: h.Version, Want: LayoutVersion}
	}
	if h.HeaderSize != uint32(HeaderSize) {
		return &ValidationError{Path: path, Field: "header size", Got: h.HeaderSize, Want: HeaderSize}
	}
	if h.SlotSize != uint32(SlotSize) {
		return &ValidationError{Path: path, Field: "slot size", Got: h.SlotSize, Want: SlotSize}
	}
	if want := uint32(HeaderSize) + h.SlotCount*uint32(SlotSize); h.RelmapOffset != want {
		return &ValidationError{Path: path, Field: "relation map offset", Got: h.RelmapOffset, Want: want}
	}
	if want := uint32(ListsOffset(int(h.SlotCount), int(h.RelmapCount))); h.ListsOffset != want {
		return &ValidationError{Path: path, Field: "list counters offset", Got: h.ListsOffset, Want: want}
	}
	if want := SegmentSize(int(h.SlotCount), int(h.RelmapCount), int(h.ListsPerSlot)); len(mem) != want {
		return &ValidationError{Path: path, Field: "file size", Got: len(mem), Want: want}
	}
	if opts.SystemIdentifier != 0 && h.SystemIdentifier != opts.SystemIdentifier {
		return &ValidationError{Path: path, Field: "system identifier", Got: h.SystemIdentifier, Want: opts.SystemIdentifier}
	}
	return nil
}

// Close unmaps the segment.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return nil
	}
	err := unix.Munmap(s.mem)
	s.mem = nil
	return err
}

// Refresh remaps the segment when the server has replaced it (a restart,
// including a crash restart, creates a new file with a new generation). It
// reports whether it remapped. A missing file (server down) is an error and
// leaves the old mapping in place.
func (s *Segment) Refresh() (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(s.path, &st); err != nil {
		return false, fmt.Errorf("shmproto: stat segment: %w", err)
	}
	s.mu.RLock()
	same := s.mem != nil && st.Ino == s.ino
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	mem, ino, err := mapFile(s.path, s.opts)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	old := s.mem
	s.install(mem, ino)
	s.mu.Unlock()
	if old != nil {
		_ = unix.Munmap(old)
	}
	return true, nil
}

// view runs fn with the header and slots of the current mapping.
func (s *Segment) view(fn func(h *Header, slot func(int) *Slot) error) error {
	return s.viewMem(func(_ []byte, h *Header, slot func(int) *Slot) error { return fn(h, slot) })
}

// viewMem is view that also hands fn the mapping itself, for the regions
// after the slots.
func (s *Segment) viewMem(fn func(mem []byte, h *Header, slot func(int) *Slot) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return ErrClosed
	}
	mem := s.mem
	h := (*Header)(unsafe.Pointer(&mem[0]))
	return fn(mem, h, func(i int) *Slot {
		return (*Slot)(unsafe.Pointer(&mem[HeaderSize+i*SlotSize]))
	})
}

// viewSlot runs fn with slot i of the current mapping. The bounds are
// checked under the same read lock as the access: a remap may change the
// slot count.
func (s *Segment) viewSlot(i int, fn func(h *Header, sl *Slot) error) error {
	return s.view(func(h *Header, slot func(int) *Slot) error {
		if i < 0 || i >= int(h.SlotCount) {
			return fmt.Errorf("shmproto: slot %d out of range [0,%d)", i, h.SlotCount)
		}
		return fn(h, slot(i))
	})
}

// Info is the header's identity.
type Info struct {
	Path             string
	Generation       uint64
	SystemIdentifier uint64
	PostmasterPID    uint32
	PostmasterStart  time.Time
	SlotCount        int
	RelmapCount      int
	SidecarTimeout   time.Duration
	WatchdogPID      uint32
	WatchdogBeat     time.Time
	SidecarPID       uint32
	SidecarBeat      time.Time
	Outage           bool
	SidecarOutages   uint64
}

// Info reads the header.
func (s *Segment) Info() (Info, error) {
	var in Info
	err := s.view(func(h *Header, _ func(int) *Slot) error {
		in = Info{
			Path: s.path, Generation: h.Generation, SystemIdentifier: h.SystemIdentifier,
			PostmasterPID: h.PostmasterPID, PostmasterStart: fromUs(h.PostmasterStartUs),
			SlotCount: int(h.SlotCount), RelmapCount: int(h.RelmapCount),
			SidecarTimeout: time.Duration(h.SidecarTimeoutMs.Load()) * time.Millisecond,
			WatchdogPID:    h.WatchdogPID.Load(), WatchdogBeat: fromUs(h.WatchdogHeartbeatUs.Load()),
			SidecarPID: h.SidecarPID.Load(), SidecarBeat: fromUs(h.SidecarHeartbeatUs.Load()),
			Outage: h.Outage.Load() != 0, SidecarOutages: h.SidecarOutages.Load(),
		}
		return nil
	})
	return in, err
}

// Heartbeat tells the watchdog the sidecar (pid) is alive.
func (s *Segment) Heartbeat(pid int, now time.Time) error {
	return s.view(func(h *Header, _ func(int) *Slot) error {
		h.SidecarPID.Store(uint32(pid))
		h.SidecarHeartbeatUs.Store(now.UnixMicro())
		return nil
	})
}

// Collection is a slot's identity.
type Collection struct {
	Slot         int
	CollectionID uint32
	DatabaseOID  uint32
	RelationOID  uint32
	Name         string
}

// Collections lists the registered collections, read consistently under
// the registry seqlock.
func (s *Segment) Collections() ([]Collection, error) {
	var out []Collection
	err := s.view(func(h *Header, slot func(int) *Slot) error {
		for try := 0; try < SeqlockReadRetries; try++ {
			seq := h.RegistrySeq.Load()
			if seq&1 != 0 {
				spin(try)
				continue
			}
			out = out[:0]
			for i := 0; i < int(h.SlotCount); i++ {
				sl := slot(i)
				if sl.InUse.Load() == 0 {
					continue
				}
				out = append(out, Collection{
					Slot: i, CollectionID: sl.CollectionID, DatabaseOID: sl.DatabaseOID,
					RelationOID: sl.RelationOID, Name: cString(sl.Name[:]),
				})
			}
			if h.RegistrySeq.Load() == seq {
				return nil
			}
		}
		return fmt.Errorf("%w: registry", ErrSeqlockBusy)
	})
	return out, err
}

// Find returns the slot of a collection by name (and database, when dbOID
// is non-zero). It allocates nothing but the result's name: the sidecar
// calls it for every collection every second.
func (s *Segment) Find(name string, dbOID uint32) (Collection, error) {
	var out Collection
	found := false
	err := s.view(func(h *Header, slot func(int) *Slot) error {
		for try := 0; try < SeqlockReadRetries; try++ {
			seq := h.RegistrySeq.Load()
			if seq&1 != 0 {
				spin(try)
				continue
			}
			found = false
			for i := 0; i < int(h.SlotCount); i++ {
				sl := slot(i)
				if sl.InUse.Load() == 0 || !nameIs(sl.Name[:], name) || (dbOID != 0 && sl.DatabaseOID != dbOID) {
					continue
				}
				out = Collection{Slot: i, CollectionID: sl.CollectionID, DatabaseOID: sl.DatabaseOID, RelationOID: sl.RelationOID}
				found = true
				break
			}
			if h.RegistrySeq.Load() == seq {
				return nil
			}
		}
		return fmt.Errorf("%w: registry", ErrSeqlockBusy)
	})
	if err != nil {
		return Collection{}, err
	}
	if !found {
		return Collection{}, fmt.Errorf("%w: %q", ErrNoCollection, name)
	}
	out.Name = name
	return out, nil
}

// nameIs compares a NUL-padded name field with name without allocating.
func nameIs(field []byte, name string) bool {
	if len(name) > len(field) || string(field[:len(name)]) != name {
		return false
	}
	return len(name) == len(field) || field[len(name)] == 0
}

// Integrity is a slot's λ and state.
type Integrity struct {
	Lambda  float64
	State   State
	Since   time.Time
	Updated time.Time
}

// ReadIntegrity reads λ and state under the slot's seqlock. A writer that
// died mid-write leaves the sequence odd: after SeqlockReadRetries the read
// fails with ErrSeqlockBusy rather than spinning.
func (s *Segment) ReadIntegrity(i int) (Integrity, error) {
	var in Integrity
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		for try := 0; try < SeqlockReadRetries; try++ {
			seq := sl.Seq.Load()
			if seq&1 != 0 {
				spin(try)
				continue
			}
			in = Integrity{
				Lambda:  math.Float64frombits(sl.LambdaBits.Load()),
				State:   State(sl.State.Load()),
				Since:   fromUs(sl.StateSinceUs.Load()),
				Updated: fromUs(sl.LambdaUpdatedUs.Load()),
			}
			if sl.Seq.Load() == seq {
				return nil
			}
		}
		return fmt.Errorf("%w: slot %d integrity", ErrSeqlockBusy, i)
	})
	return in, err
}

// WriteIntegrity publishes λ and state. The sidecar is the only regular
// writer; the watchdog takes the same seqlock by compare-and-swap when it
// marks states unknown, so the two can never interleave.
func (s *Segment) WriteIntegrity(i int, lambda float64, state State, now time.Time) error {
	if state >= NumStates {
		return fmt.Errorf("shmproto: state %d out of range", state)
	}
	return s.viewSlot(i, func(_ *Header, sl *Slot) error {
		seq := sl.Seq.Load()
		if seq&1 != 0 || !sl.Seq.CompareAndSwap(seq, seq+1) {
			return fmt.Errorf("%w: slot %d", ErrSeqlockBusy, i)
		}
		if State(sl.State.Load()) != state {
			sl.StateSinceUs.Store(now.UnixMicro())
		}
		sl.LambdaBits.Store(math.Float64bits(lambda))
		sl.State.Store(uint32(state))
		sl.LambdaUpdatedUs.Store(now.UnixMicro())
		sl.Seq.Store(seq + 2)
		return nil
	})
}

// Throttle is one op's throttle setting.
type Throttle struct {
	Pct     uint32
	SetBy   SetBy
	SetAt   time.Time
	Expires time.Time // zero: never
	Seq     uint32
	// OutcomeID is the healing outcome whose remediation set a sidecar
	// throttle (0: none, or a sidecar throttle set outside a remediation);
	// always 0 unless SetBy is SetBySidecar.
	OutcomeID int64
}

// Counters are the gate's live counters for one op.
type Counters struct {
	AdmittedRows       uint64
	DelayedStatements  uint64
	WaitMicros         uint64
	RejectedStatements uint64
	BaselineRowsPerSec float64
}

// ReadThrottle reads one op's throttle.
func (s *Segment) ReadThrottle(i int, op Op) (Throttle, error) {
	if op >= NumOps {
		return Throttle{}, fmt.Errorf("shmproto: op %d out of range", op)
	}
	var t Throttle
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		o := &sl.Ops[op]
		seq, by, pct := UnpackThrottle(o.Throttle.Load())
		t = Throttle{Pct: pct, SetBy: by, Seq: seq, SetAt: fromUs(o.SetAtUs.Load()), Expires: fromUs(o.ExpiresUs.Load())}
		// The id is written before the word, so it is at least as new as
		// the word just read; it means nothing under another setter.
		if by == SetBySidecar {
			t.OutcomeID = o.OutcomeID.Load()
		}
		return nil
	})
	return t, err
}

// ReadCounters reads one op's counters.
func (s *Segment) ReadCounters(i int, op Op) (Counters, error) {
	if op >= NumOps {
		return Counters{}, fmt.Errorf("shmproto: op %d out of range", op)
	}
	var c Counters
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		o := &sl.Ops[op]
		c = Counters{
			AdmittedRows: o.AdmittedRows.Load(), DelayedStatements: o.DelayedStatements.Load(),
			WaitMicros: o.WaitUs.Load(), RejectedStatements: o.RejectedStatements.Load(),
			BaselineRowsPerSec: float64(o.BaselineMilli.Load()) / 1000,
		}
		return nil
	})
	return c, err
}

// SetSidecarThrottle sets an op's throttle on behalf of the sidecar, with
// one compare-and-swap on the throttle word and no SQL. It never overrides a
// manual throttle that is still in force (ErrManualPinned). pct 0 releases
// the sidecar's throttle. The throttle names no remediation (outcome 0);
// SetSidecarThrottleFor names one.
func (s *Segment) SetSidecarThrottle(i int, op Op, pct uint32, now time.Time) error {
	return s.SetSidecarThrottleFor(i, op, pct, now, 0)
}

// SetSidecarThrottleFor is SetSidecarThrottle on behalf of the remediation
// recorded as healing outcome outcomeID (0: none): the write gate names the
// outcome in the errors of the writes it refuses, so a client can ask
// ruvector_healing_explain why. A release (pct 0) clears the id whatever
// outcomeID says.
func (s *Segment) SetSidecarThrottleFor(i int, op Op, pct uint32, now time.Time, outcomeID int64) error {
	if op >= NumOps {
		return fmt.Errorf("shmproto: op %d out of range", op)
	}
	if pct > 100 {
		return fmt.Errorf("shmproto: throttle %d%% out of range 0..100", pct)
	}
	if outcomeID < 0 {
		return fmt.Errorf("shmproto: outcome id %d is negative", outcomeID)
	}
	if pct == 0 {
		outcomeID = 0
	}
	return s.viewSlot(i, func(_ *Header, sl *Slot) error {
		o := &sl.Ops[op]
		for {
			w := o.Throttle.Load()
			seq, by, _ := UnpackThrottle(w)
			if by == SetByManual {
				exp := o.ExpiresUs.Load()
				if exp == 0 || exp > now.UnixMicro() {
					return ErrManualPinned
				}
			}
			newBy := SetBySidecar
			if pct == 0 {
				newBy = SetByNone
			}
			// ExpiresUs belongs to manual throttles (written by the
			// extension before its word) and is read only when the word says
			// manual, so the sidecar never writes it: a store here could
			// clobber a concurrent manual setting's expiry.
			//
			// OutcomeID is the sidecar's own, and goes before the word so
			// that a backend that sees the word sees the id. Should the
			// swap fail to a manual setting, the id stays behind harmlessly:
			// it is read only under a sidecar word.
			o.OutcomeID.Store(outcomeID)
			if o.Throttle.CompareAndSwap(w, PackThrottle(seq+1, newBy, pct)) {
				o.SetAtUs.Store(now.UnixMicro())
				return nil
			}
		}
	})
}

func fromUs(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// spin yields briefly: the writer is another process, so busy-waiting on
// the sequence alone could starve it on a small machine.
func spin(try int) {
	if try < 16 {
		return
	}
	time.Sleep(time.Microsecond * time.Duration(min(try, 100)))
}

// ReleaseSidecarThrottles clears every throttle the sidecar set, leaving
// manual ones alone. It returns how many it released.
func (s *Segment) ReleaseSidecarThrottles(now time.Time) (int, error) {
	released := 0
	err := s.view(func(h *Header, slot func(int) *Slot) error {
		for i := 0; i < int(h.SlotCount); i++ {
			sl := slot(i)
			if sl.InUse.Load() == 0 {
				continue
			}
			for op := range sl.Ops {
				o := &sl.Ops[op]
				for {
					w := o.Throttle.Load()
					seq, by, _ := UnpackThrottle(w)
					if by != SetBySidecar {
						break
					}
					id := o.OutcomeID.Load()
					if o.Throttle.CompareAndSwap(w, PackThrottle(seq+1, SetByNone, 0)) {
						o.SetAtUs.Store(now.UnixMicro())
						// Only the id we released: a new setting written
						// since carries its own.
						o.OutcomeID.CompareAndSwap(id, 0)
						released++
						break
					}
				}
			}
		}
		return nil
	})
	return released, err
}

// Detach is a clean goodbye: the sidecar's throttles and shard caps are
// released at once rather than after the watchdog's timeout, and the zero
// heartbeat tells the watchdog this is no outage. The count covers both.
func (s *Segment) Detach(now time.Time) (int, error) {
	n, err := s.ReleaseSidecarThrottles(now)
	if err != nil {
		return n, err
	}
	c, err := s.ReleaseSidecarShardCaps()
	n += c
	if err != nil {
		return n, err
	}
	err = s.view(func(h *Header, _ func(int) *Slot) error {
		h.SidecarHeartbeatUs.Store(0)
		h.SidecarPID.Store(0)
		return nil
	})
	return n, err
}

// Weight is one shard's routing weight as the column default routes by.
type Weight struct {
	Weight float64 // 1 is the default; 0 means no new rows
	SetBy  SetBy   // SetByNone for a default weight
}

// Routing is a collection's routing: one weight per shard.
type Routing struct {
	Seq     uint32 // routing change counter
	Weights []Weight
}

// ReadRouting copies a slot's routing weights, consistently with respect to
// the routing change counter: a copy that saw the counter move is taken
// again. Writes go through SQL (ruvector_routing_set), never through here,
// so that they are durable and transactional.
func (s *Segment) ReadRouting(i int) (Routing, error) {
	var r Routing
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		for try := 0; try < SeqlockReadRetries; try++ {
			seq := sl.RoutingSeq.Load()
			n := min(int(sl.RoutingShards.Load()), MaxShards)
			r = Routing{Seq: seq, Weights: make([]Weight, n)}
			for sh := 0; sh < n; sh++ {
				by, milli := UnpackWeight(sl.RoutingWeights[sh].Load())
				r.Weights[sh] = Weight{Weight: float64(milli) / 1000, SetBy: by}
			}
			if sl.RoutingSeq.Load() == seq {
				return nil
			}
			spin(try)
		}
		return fmt.Errorf("%w: slot %d routing", ErrSeqlockBusy, i)
	})
	return r, err
}

// ReadCentroidVersion returns the slot's active IVF centroid version (0:
// none). The extension publishes it when the activating transaction
// commits.
func (s *Segment) ReadCentroidVersion(i int) (uint32, error) {
	var v uint32
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		v = sl.CentroidVersion.Load()
		return nil
	})
	return v, err
}

// ErrListsUncounted says the segment has fewer list counters per slot than
// the collection has lists (ruvector.max_lists is below its lists): its
// sizes must be counted by a scan.
var ErrListsUncounted = errors.New("shmproto: more lists than the segment counts")

// ListCounts is a copy of a slot's IVF list counters.
type ListCounts struct {
	// Valid is false until a baseline is taken (server start, new slot)
	// and after an invalidation (TRUNCATE, partition attach or detach):
	// then the numbers are meaningless and the caller must rebaseline
	// (ruvector._list_counts_rebaseline).
	Valid bool
	// Epoch is even and moves at every baseline and invalidation; two
	// copies with the same Epoch share a baseline.
	Epoch uint64
	// Counts[l] is the number of rows with ivf_list = l.
	Counts []int64
	// Unassigned counts rows with ivf_list NULL, Other rows with ivf_list
	// outside 0..ListsPerSlot-1.
	Unassigned int64
	Other      int64
	// Version is the centroid version active at the baseline.
	Version    uint32
	BaselineAt time.Time
}

// ReadListCounts copies the counters of lists 0..n-1 of slot i. The copy
// is consistent with respect to baselines (a baseline published while
// copying makes it copy again); committed row changes keep moving the
// counters while it copies, each counter exact at the moment it is read,
// so a copy taken under concurrent writes may show a row that moved
// between lists in both or neither.
func (s *Segment) ReadListCounts(i, n int) (ListCounts, error) {
	var lc ListCounts
	err := s.viewMem(func(mem []byte, h *Header, slot func(int) *Slot) error {
		if i < 0 || i >= int(h.SlotCount) {
			return fmt.Errorf("shmproto: slot %d out of range [0,%d)", i, h.SlotCount)
		}
		if n < 0 || n > int(h.ListsPerSlot) {
			return fmt.Errorf("%w: %d lists, %d counters per slot", ErrListsUncounted, n, h.ListsPerSlot)
		}
		sl := slot(i)
		base := int(h.ListsOffset) + i*int(h.ListsPerSlot)*ListCounterSize
		for try := 0; try < SeqlockReadRetries; try++ {
			e := sl.ListsEpoch.Load()
			if e == 0 || e&1 != 0 {
				lc = ListCounts{Epoch: e}
				return nil
			}
			lc = ListCounts{Valid: true, Epoch: e, Counts: make([]int64, n)}
			for l := 0; l < n; l++ {
				lc.Counts[l] = (*atomic.Int64)(unsafe.Pointer(&mem[base+l*ListCounterSize])).Load()
			}
			lc.Unassigned = sl.ListsUnassigned.Load()
			lc.Other = sl.ListsOther.Load()
			lc.Version = sl.ListsVersion.Load()
			lc.BaselineAt = fromUs(sl.ListsBaselineUs.Load())
			if sl.ListsEpoch.Load() == e {
				return nil
			}
			spin(try)
		}
		return fmt.Errorf("%w: slot %d list counters", ErrSeqlockBusy, i)
	})
	return lc, err
}

// ShardCap is one shard's write cap, as the row trigger enforces it.
type ShardCap struct {
	Shard      int
	RowsPerSec uint32 // 0: no cap
	SetBy      SetBy  // SetByNone when there is no cap
	// OutcomeID is the healing outcome whose remediation set a sidecar
	// cap (0: none, a manual cap, or a sidecar cap set outside one).
	OutcomeID int64
}

// ShardCapCounters are a slot's live shard cap counters.
type ShardCapCounters struct {
	AdmittedRows       uint64
	DelayedRows        uint64
	Wait               time.Duration
	RejectedStatements uint64
}

func checkShard(shard int) error {
	if shard < 0 || shard >= MaxShards {
		return fmt.Errorf("shmproto: shard %d out of range [0,%d)", shard, MaxShards)
	}
	return nil
}

// capsOwned reports whether the slot's caps belong to its collection.
func capsOwned(sl *Slot) bool { return sl.ShardCapOwner.Load() == sl.CollectionID }

// claimCaps makes the slot's caps its collection's, voiding what a previous
// owner of the slot left behind.
func claimCaps(sl *Slot) {
	if capsOwned(sl) {
		return
	}
	for sh := range sl.ShardCaps {
		sl.ShardCaps[sh].Store(0)
		sl.ShardCapOutcomes[sh].Store(0)
	}
	sl.ShardCapOwner.Store(sl.CollectionID)
}

func readShardCap(sl *Slot, shard int) ShardCap {
	c := ShardCap{Shard: shard}
	if !capsOwned(sl) {
		return c
	}
	by, rate := UnpackShardCap(sl.ShardCaps[shard].Load())
	if rate == 0 {
		return c
	}
	c.RowsPerSec, c.SetBy = rate, by
	if by == SetBySidecar {
		c.OutcomeID = sl.ShardCapOutcomes[shard].Load()
	}
	return c
}

// ReadShardCap reads one shard's cap of slot i.
func (s *Segment) ReadShardCap(i, shard int) (ShardCap, error) {
	if err := checkShard(shard); err != nil {
		return ShardCap{}, err
	}
	var c ShardCap
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		c = readShardCap(sl, shard)
		return nil
	})
	return c, err
}

// ReadShardCaps lists the capped shards of slot i, in shard order.
func (s *Segment) ReadShardCaps(i int) ([]ShardCap, error) {
	var out []ShardCap
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		for sh := range sl.ShardCaps {
			if c := readShardCap(sl, sh); c.RowsPerSec != 0 {
				out = append(out, c)
			}
		}
		return nil
	})
	return out, err
}

// ReadShardCapCounters reads slot i's shard cap counters.
func (s *Segment) ReadShardCapCounters(i int) (ShardCapCounters, error) {
	var c ShardCapCounters
	err := s.viewSlot(i, func(_ *Header, sl *Slot) error {
		c = ShardCapCounters{AdmittedRows: sl.ShardCapAdmittedRows.Load(), DelayedRows: sl.ShardCapDelayedRows.Load(),
			Wait: time.Duration(sl.ShardCapWaitUs.Load()) * time.Microsecond, RejectedStatements: sl.ShardCapRejectedStatements.Load()}
		return nil
	})
	return c, err
}

// SetSidecarShardCap caps one shard of slot i at rowsPerSec rows per
// second on behalf of healing outcome outcomeID (0: outside a
// remediation); rowsPerSec 0 lifts a sidecar cap. A manual cap is never
// overridden (ErrManualPinned). The shard's token bucket starts afresh.
func (s *Segment) SetSidecarShardCap(i, shard int, rowsPerSec uint32, outcomeID int64) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	if rowsPerSec > ShardCapRateMask {
		return fmt.Errorf("shmproto: shard cap %d rows/s out of range 0..%d", rowsPerSec, ShardCapRateMask)
	}
	if outcomeID < 0 {
		return fmt.Errorf("shmproto: outcome id %d is negative", outcomeID)
	}
	by := SetBySidecar
	if rowsPerSec == 0 {
		by, outcomeID = SetByNone, 0
	}
	return s.viewSlot(i, func(_ *Header, sl *Slot) error {
		claimCaps(sl)
		for {
			w := sl.ShardCaps[shard].Load()
			if old, _ := UnpackShardCap(w); old == SetByManual {
				return ErrManualPinned
			}
			// Like the throttle's outcome id: before the word, read only
			// under a sidecar word.
			sl.ShardCapOutcomes[shard].Store(outcomeID)
			sl.ShardCapTatUs[shard].Store(0)
			if sl.ShardCaps[shard].CompareAndSwap(w, PackShardCap(by, rowsPerSec)) {
				return nil
			}
		}
	})
}

// ReleaseSidecarShardCaps lifts every shard cap the sidecar set, leaving
// manual ones alone, and returns how many it lifted.
func (s *Segment) ReleaseSidecarShardCaps() (int, error) {
	released := 0
	err := s.view(func(h *Header, slot func(int) *Slot) error {
		for i := 0; i < int(h.SlotCount); i++ {
			sl := slot(i)
			if sl.InUse.Load() == 0 {
				continue
			}
			for sh := range sl.ShardCaps {
				w := sl.ShardCaps[sh].Load()
				if by, rate := UnpackShardCap(w); by != SetBySidecar || rate == 0 {
					continue
				}
				id := sl.ShardCapOutcomes[sh].Load()
				// A failed swap is a new setting: leave it alone.
				if sl.ShardCaps[sh].CompareAndSwap(w, 0) {
					sl.ShardCapOutcomes[sh].CompareAndSwap(id, 0)
					released++
				}
			}
		}
		return nil
	})
	return released, err
}
