package remedy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageRange is a run of resident pages of a file: [Start, Start+Len) in
// pages of the machine's page size.
type pageRange struct {
	Start int64 `json:"s"`
	Len   int64 `json:"n"`
}

// residency is the page-cache residency of one file.
type residency struct {
	Size     int64
	Pages    int64 // pages of the file
	Resident int64 // of which in the page cache
	Ranges   []pageRange
}

// fileResidency asks the kernel which pages of path are in the page cache:
// mincore on a read-only shared mapping reports the file's cached pages
// whether or not this process ever touched them. A missing file (dropped
// or truncated relation segment) has no residency.
func fileResidency(path string) (residency, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return residency{}, nil
	}
	if err != nil {
		return residency{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return residency{}, err
	}
	r := residency{Size: st.Size()}
	if r.Size == 0 {
		return r, nil
	}
	ps := int64(os.Getpagesize())
	r.Pages = (r.Size + ps - 1) / ps
	m, err := unix.Mmap(int(f.Fd()), 0, int(r.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return r, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, r.Pages)
	// x/sys/unix has no Linux wrapper for mincore(2).
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return r, fmt.Errorf("mincore %s: %w", path, errno)
	}
	for i := int64(0); i < r.Pages; i++ {
		if vec[i]&1 == 0 {
			continue
		}
		r.Resident++
		if n := len(r.Ranges); n > 0 && r.Ranges[n-1].Start+r.Ranges[n-1].Len == i {
			r.Ranges[n-1].Len++
		} else {
			r.Ranges = append(r.Ranges, pageRange{Start: i, Len: 1})
		}
	}
	return r, nil
}

// dropFromCache writes the file's dirty cached pages back and then asks the
// kernel to drop its cached pages. DONTNEED only drops clean pages, and a
// relation's pages are usually dirty well after a checkpoint (hint bits,
// the background writer); fdatasync only brings forward a write-back the
// kernel would do anyway, and PostgreSQL's own fsync at the next
// checkpoint then has nothing left to do for them.
func dropFromCache(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("posix_fadvise(DONTNEED) %s: %w", path, err)
	}
	return nil
}

// readBack reads the given page ranges of path so they are cached again.
// Readahead is disabled on the descriptor (FADV_RANDOM) so that exactly the
// pages that were resident come back, not their neighbours too. A range
// past the current end of file (the relation shrank) reads what is left.
func readBack(path string, ranges []pageRange, stop func() error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	ps := int64(os.Getpagesize())
	buf := make([]byte, 256*ps)
	var read int64
	for _, r := range ranges {
		if err := stop(); err != nil {
			return read, err
		}
		off, end := r.Start*ps, (r.Start+r.Len)*ps
		for off < end {
			n := min(int64(len(buf)), end-off)
			got, err := f.ReadAt(buf[:n], off)
			read += int64(got)
			off += int64(got)
			if err != nil {
				if got == 0 {
					break // end of file
				}
				continue
			}
		}
	}
	return read, nil
}
