package shmproto

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testListsPerSlot is the list counters per slot of unit-test segments.
const testListsPerSlot = 8

// formatSegment writes a segment file the way the extension does (fresh
// file, zeroes, header, magic last, rename) so unit tests need no server.
func formatSegment(t *testing.T, path string, slots, relmap int, sysid, gen uint64, names ...string) {
	t.Helper()
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	size := SegmentSize(slots, relmap, testListsPerSlot)
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	h := (*Header)(unsafe.Pointer(&mem[0]))
	h.Version = LayoutVersion
	h.HeaderSize = uint32(HeaderSize)
	h.SlotSize = uint32(SlotSize)
	h.SlotCount = uint32(slots)
	h.RelmapOffset = uint32(HeaderSize + slots*SlotSize)
	h.RelmapCount = uint32(relmap)
	h.ListsOffset = uint32(ListsOffset(slots, relmap))
	h.ListsPerSlot = testListsPerSlot
	h.SystemIdentifier = sysid
	h.Generation = gen
	h.SidecarTimeoutMs.Store(5000)
	for i, n := range names {
		sl := (*Slot)(unsafe.Pointer(&mem[HeaderSize+i*SlotSize]))
		sl.CollectionID = uint32(i + 1)
		sl.DatabaseOID = 5
		copy(sl.Name[:], n)
		sl.State.Store(uint32(StateUnknown))
		sl.InUse.Store(1)
	}
	h.Magic.Store(Magic)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newSegment(t *testing.T, names ...string) (*Segment, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	formatSegment(t, path, 4, 16, 42, 1, names...)
	s, err := Open(path, Options{SystemIdentifier: 42, OwnerUID: os.Geteuid()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestOpenValidates(t *testing.T) {
	corrupt := func(field string, mutate func(h *Header)) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			mem, err := unix.Mmap(int(f.Fd()), 0, HeaderSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			mutate((*Header)(unsafe.Pointer(&mem[0])))
			unix.Munmap(mem)
		}
	}
	cases := []struct {
		name   string
		field  string
		break_ func(t *testing.T, path string)
		opts   Options
	}{
		{"magic", "magic", corrupt("magic", func(h *Header) { h.Magic.Store(0xdead) }), Options{OwnerUID: -1}},
		{"version", "layout version", corrupt("version", func(h *Header) { h.Version = 99 }), Options{OwnerUID: -1}},
		{"header size", "header size", corrupt("", func(h *Header) { h.HeaderSize = 128 }), Options{OwnerUID: -1}},
		{"slot size", "slot size", corrupt("", func(h *Header) { h.SlotSize = 64 }), Options{OwnerUID: -1}},
		{"slot count", "relation map offset", corrupt("", func(h *Header) { h.SlotCount = 5 }), Options{OwnerUID: -1}},
		{"file size", "file size", func(t *testing.T, path string) {
			if err := os.Truncate(path, int64(SegmentSize(4, 16, testListsPerSlot)+64)); err != nil {
				t.Fatal(err)
			}
		}, Options{OwnerUID: -1}},
		{"system identifier", "system identifier", nil, Options{SystemIdentifier: 43, OwnerUID: -1}},
		{"owner", "file owner uid", nil, Options{OwnerUID: os.Geteuid() + 1}},
		{"mode", "file mode", func(t *testing.T, path string) {
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, Options{OwnerUID: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			formatSegment(t, path, 4, 16, 42, 1)
			if tc.break_ != nil {
				tc.break_(t, path)
			}
			_, err := Open(path, tc.opts)
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidSegment) {
				t.Fatalf("Open: got %v, want a ValidationError", err)
			}
			if ve.Field != tc.field {
				t.Fatalf("Open: field %q, want %q (%v)", ve.Field, tc.field, err)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := Open(filepath.Join(t.TempDir(), "nope"), Options{OwnerUID: -1})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v, want ErrNotExist", err)
		}
	})
}

func TestCollectionsAndFind(t *testing.T) {
	s, _ := newSegment(t, "alpha", "beta")
	cs, err := s.Collections()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != "alpha" || cs[1].Name != "beta" || cs[1].Slot != 1 || cs[1].CollectionID != 2 {
		t.Fatalf("collections: %+v", cs)
	}
	if c, err := s.Find("beta", 5); err != nil || c.Slot != 1 {
		t.Fatalf("Find beta: %+v %v", c, err)
	}
	if _, err := s.Find("beta", 6); !errors.Is(err, ErrNoCollection) {
		t.Fatalf("Find in another database: %v", err)
	}
	if _, err := s.Find("gamma", 0); !errors.Is(err, ErrNoCollection) {
		t.Fatalf("Find gamma: %v", err)
	}
}

// A writer publishes (λ, state) pairs that satisfy an invariant while
// readers check every read against it: a torn read breaks it.
func TestIntegritySeqlockNoTornReads(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	const writes = 20000
	// The invariant must hold before readers start: a fresh slot reads
	// (0, unknown).
	if err := s.WriteIntegrity(0, 0, StateNormal, time.Now()); err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	var torn, reads atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				in, err := s.ReadIntegrity(0)
				if errors.Is(err, ErrSeqlockBusy) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
				k := uint64(in.Lambda)
				if in.State != State(k%3) {
					torn.Add(1)
				}
			}
		}()
	}
	now := time.Now()
	for k := uint64(0); k < writes; k++ {
		if err := s.WriteIntegrity(0, float64(k), State(k%3), now); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	if torn.Load() != 0 {
		t.Fatalf("%d torn reads out of %d", torn.Load(), reads.Load())
	}
	if reads.Load() == 0 {
		t.Fatal("readers never read")
	}
	in, err := s.ReadIntegrity(0)
	if err != nil || in.Lambda != writes-1 || in.State != State((writes-1)%3) {
		t.Fatalf("final read %+v %v", in, err)
	}
}

// A writer that died mid-write leaves the sequence odd: readers give up
// with ErrSeqlockBusy instead of spinning, and writers refuse.
func TestIntegrityDeadWriter(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	var seq uint64
	_ = s.view(func(_ *Header, slot func(int) *Slot) error {
		seq = slot(0).Seq.Add(1) // odd: "writer" holds it forever
		return nil
	})
	if seq&1 == 0 {
		t.Fatal("setup: sequence should be odd")
	}
	// A reader that spun would never return: it must come back with
	// ErrSeqlockBusy. (The deadline only turns a hang into a failure; how
	// fast it gives up depends on the machine, ~0.1 s of bounded retries
	// here, and is not asserted.)
	start := time.Now()
	read := make(chan error, 1)
	go func() {
		_, err := s.ReadIntegrity(0)
		read <- err
	}()
	select {
	case err := <-read:
		if !errors.Is(err, ErrSeqlockBusy) {
			t.Fatalf("read with a dead writer: %v", err)
		}
		t.Logf("the reader gave up after %v", time.Since(start))
	case <-time.After(time.Minute):
		t.Fatal("a read with a dead writer did not give up within a minute: readers must not spin")
	}
	if err := s.WriteIntegrity(0, 1, StateNormal, time.Now()); !errors.Is(err, ErrSeqlockBusy) {
		t.Fatalf("write with a dead writer: %v", err)
	}
}

func TestSidecarThrottleRespectsManual(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	now := time.Now()
	if err := s.SetSidecarThrottle(0, OpInsert, 50, now); err != nil {
		t.Fatal(err)
	}
	th, _ := s.ReadThrottle(0, OpInsert)
	if th.Pct != 50 || th.SetBy != SetBySidecar {
		t.Fatalf("after sidecar set: %+v", th)
	}
	// A manual throttle, as the extension writes it: expiry first, then the word.
	setManual := func(pct uint32, expires time.Time) {
		_ = s.view(func(_ *Header, slot func(int) *Slot) error {
			o := &slot(0).Ops[OpInsert]
			if expires.IsZero() {
				o.ExpiresUs.Store(0)
			} else {
				o.ExpiresUs.Store(expires.UnixMicro())
			}
			w := o.Throttle.Load()
			seq, _, _ := UnpackThrottle(w)
			o.Throttle.Store(PackThrottle(seq+1, SetByManual, pct))
			return nil
		})
	}
	setManual(70, time.Time{})
	if err := s.SetSidecarThrottle(0, OpInsert, 90, now); !errors.Is(err, ErrManualPinned) {
		t.Fatalf("sidecar over a manual throttle: %v", err)
	}
	if n, _ := s.ReleaseSidecarThrottles(now); n != 0 {
		t.Fatalf("released %d manual throttles", n)
	}
	th, _ = s.ReadThrottle(0, OpInsert)
	if th.Pct != 70 || th.SetBy != SetByManual {
		t.Fatalf("manual throttle changed: %+v", th)
	}
	// An expired manual throttle no longer pins the slot.
	setManual(70, now.Add(-time.Second))
	if err := s.SetSidecarThrottle(0, OpInsert, 90, now); err != nil {
		t.Fatalf("sidecar over an expired manual throttle: %v", err)
	}
	if err := s.SetSidecarThrottle(0, OpInsert, 101, now); err == nil {
		t.Fatal("101% accepted")
	}
	if err := s.SetSidecarThrottle(9, OpInsert, 1, now); err == nil {
		t.Fatal("slot 9 accepted")
	}
	// Other op untouched, then a clean detach releases the sidecar's.
	if err := s.SetSidecarThrottle(0, OpBulkInsert, 30, now); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Detach(now); err != nil || n != 2 {
		t.Fatalf("detach released %d (%v), want 2", n, err)
	}
	for _, op := range []Op{OpInsert, OpBulkInsert} {
		if th, _ := s.ReadThrottle(0, op); th.Pct != 0 || th.SetBy != SetByNone {
			t.Fatalf("op %d after detach: %+v", op, th)
		}
	}
	if in, _ := s.Info(); in.SidecarPID != 0 || !in.SidecarBeat.IsZero() {
		t.Fatalf("detach left heartbeat: %+v", in)
	}
}

// A sidecar throttle carries the outcome id of the remediation that set
// it; every way it ends (the sidecar's own release, a clean detach) clears
// the id, and an id is shown only under a sidecar word.
func TestSidecarThrottleOutcomeID(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	now := time.Now()
	raw := func(op Op) int64 {
		t.Helper()
		id, err := s.RawOutcomeID(0, op)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if err := s.SetSidecarThrottleFor(0, OpInsert, 50, now, 42); err != nil {
		t.Fatal(err)
	}
	if th, _ := s.ReadThrottle(0, OpInsert); th.Pct != 50 || th.SetBy != SetBySidecar || th.OutcomeID != 42 {
		t.Fatalf("after set for outcome 42: %+v", th)
	}
	// A later remediation takes the throttle over with its own id; the
	// plain setter names none.
	if err := s.SetSidecarThrottleFor(0, OpInsert, 90, now, 43); err != nil {
		t.Fatal(err)
	}
	if th, _ := s.ReadThrottle(0, OpInsert); th.Pct != 90 || th.OutcomeID != 43 {
		t.Fatalf("after set for outcome 43: %+v", th)
	}
	if err := s.SetSidecarThrottle(0, OpInsert, 60, now); err != nil {
		t.Fatal(err)
	}
	if th, _ := s.ReadThrottle(0, OpInsert); th.Pct != 60 || th.OutcomeID != 0 {
		t.Fatalf("after a set outside any remediation: %+v", th)
	}
	// Releasing (pct 0) clears the id even when one is passed.
	if err := s.SetSidecarThrottleFor(0, OpInsert, 50, now, 42); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSidecarThrottleFor(0, OpInsert, 0, now, 42); err != nil {
		t.Fatal(err)
	}
	if th, _ := s.ReadThrottle(0, OpInsert); th.Pct != 0 || th.SetBy != SetByNone || th.OutcomeID != 0 || raw(OpInsert) != 0 {
		t.Fatalf("after release: %+v, raw id %d", th, raw(OpInsert))
	}
	if err := s.SetSidecarThrottleFor(0, OpInsert, 50, now, -1); err == nil {
		t.Fatal("negative outcome id accepted")
	}
	if th, _ := s.ReadThrottle(0, OpInsert); th.Pct != 0 {
		t.Fatalf("a rejected set changed the throttle: %+v", th)
	}
	// A clean detach releases both ops and clears both ids.
	if err := s.SetSidecarThrottleFor(0, OpInsert, 50, now, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSidecarThrottleFor(0, OpBulkInsert, 60, now, 7); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Detach(now); err != nil || n != 2 {
		t.Fatalf("detach released %d (%v), want 2", n, err)
	}
	for _, op := range []Op{OpInsert, OpBulkInsert} {
		if id := raw(op); id != 0 {
			t.Fatalf("op %d keeps outcome id %d after detach", op, id)
		}
	}
	// An id left under a manual word (a set that lost its race to a
	// manual throttle) is not shown.
	_ = s.view(func(_ *Header, slot func(int) *Slot) error {
		o := &slot(0).Ops[OpInsert]
		o.OutcomeID.Store(99)
		seq, _, _ := UnpackThrottle(o.Throttle.Load())
		o.Throttle.Store(PackThrottle(seq+1, SetByManual, 20))
		return nil
	})
	if th, _ := s.ReadThrottle(0, OpInsert); th.SetBy != SetByManual || th.OutcomeID != 0 {
		t.Fatalf("manual throttle shows an outcome: %+v", th)
	}
	if err := s.SetSidecarThrottleFor(0, OpInsert, 90, now, 5); !errors.Is(err, ErrManualPinned) {
		t.Fatalf("sidecar over manual: %v", err)
	}
}

// Concurrent sidecar writers and a "manual" writer: the throttle word
// never holds a value nobody wrote, and the change counter moves once per
// successful write.
func TestThrottleWordConcurrent(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	var wg sync.WaitGroup
	var ok atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if s.SetSidecarThrottle(0, OpInsert, uint32(1+(g*7+i)%99), time.Now()) == nil {
					ok.Add(1)
				}
			}
		}(g)
	}
	wg.Wait()
	th, _ := s.ReadThrottle(0, OpInsert)
	if int64(th.Seq) != ok.Load()%65536 {
		t.Fatalf("sequence %d after %d successful writes", th.Seq, ok.Load())
	}
	if th.Pct < 1 || th.Pct > 99 || th.SetBy != SetBySidecar {
		t.Fatalf("final word %+v", th)
	}
}

// The server replaces the file at every start: Refresh notices the new
// inode, remaps and sees the new generation; readers racing with it never
// touch unmapped memory (run with -race).
func TestRefreshRemaps(t *testing.T) {
	s, path := newSegment(t, "alpha")
	if remapped, err := s.Refresh(); err != nil || remapped {
		t.Fatalf("refresh of an unchanged file: %v %v", remapped, err)
	}
	var wg sync.WaitGroup
	var stop atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if _, err := s.Collections(); err != nil {
				t.Error(err)
				return
			}
			_ = s.Heartbeat(1, time.Now())
			// Slot access races with the remap too (it once read the slot
			// count outside the lock).
			if _, err := s.ReadIntegrity(0); err != nil {
				t.Error(err)
				return
			}
			_, _ = s.ReadThrottle(1, OpInsert)
			_ = s.SetSidecarThrottle(0, OpInsert, 10, time.Now())
		}
	}()
	for gen := uint64(2); gen < 6; gen++ {
		formatSegment(t, path, 4, 16, 42, gen, "alpha", "beta")
		remapped, err := s.Refresh()
		if err != nil || !remapped {
			t.Fatalf("refresh after restart: %v %v", remapped, err)
		}
		in, _ := s.Info()
		if in.Generation != gen {
			t.Fatalf("generation %d, want %d", in.Generation, gen)
		}
	}
	stop.Store(true)
	wg.Wait()
	// A replacement of the wrong cluster is refused and the old mapping kept.
	formatSegment(t, path, 4, 16, 99, 7)
	if _, err := s.Refresh(); !errors.Is(err, ErrInvalidSegment) {
		t.Fatalf("refresh onto another cluster's segment: %v", err)
	}
	if in, _ := s.Info(); in.Generation != 5 {
		t.Fatalf("old mapping lost: generation %d", in.Generation)
	}
}

// A reader racing a writer of the routing words gets the weights as they
// were at one instant. The writer raises shard 0, then 1, then 2 to the
// same value, moving the change counter after each word, so at any instant
// w0 >= w1 >= w2 >= w0-1; a copy mixing words from different instants
// breaks that.
func TestReadRoutingConsistent(t *testing.T) {
	s, _ := newSegment(t, "alpha")
	var sl *Slot
	_ = s.view(func(_ *Header, slot func(int) *Slot) error { sl = slot(0); return nil })
	sl.RoutingShards.Store(3)
	if v, err := s.ReadCentroidVersion(0); err != nil || v != 0 {
		t.Fatalf("centroid version of a fresh slot: %d %v", v, err)
	}
	sl.CentroidVersion.Store(9)
	if v, err := s.ReadCentroidVersion(0); err != nil || v != 9 {
		t.Fatalf("centroid version: %d %v", v, err)
	}
	if _, err := s.ReadRouting(7); err == nil {
		t.Fatal("ReadRouting of a slot out of range succeeded")
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(1); i < 1<<20; i++ {
			select {
			case <-done:
				return
			default:
			}
			for sh := 0; sh < 3; sh++ {
				sl.RoutingWeights[sh].Store(PackWeight(SetBySidecar, i))
				sl.RoutingSeq.Add(1)
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()
	got := 0
	for n := 0; n < 5000; n++ {
		r, err := s.ReadRouting(0)
		if err != nil {
			continue // the writer kept the counter moving: allowed, never torn
		}
		got++
		w0, w1, w2 := r.Weights[0].Weight, r.Weights[1].Weight, r.Weights[2].Weight
		if len(r.Weights) != 3 || w0 < w1 || w1 < w2 || w0 > w2+0.0015 {
			t.Fatalf("torn routing copy: %+v", r.Weights)
		}
	}
	if got == 0 {
		t.Fatal("no routing copy succeeded")
	}
}
