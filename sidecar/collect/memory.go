package collect

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Memory measures the memory the server can use and its largest users.
//
// Used/limit come from, in order: cgroup v2 (memory.current, memory.max),
// cgroup v1 (memory.usage_in_bytes, memory.limit_in_bytes), else
// /proc/meminfo (MemTotal - MemAvailable). The cgroup read is the
// postmaster's own when /proc/<postmaster>/cgroup names a directory that
// is visible, else the one mounted at /sys/fs/cgroup (inside a container,
// the container's). A cgroup without a limit ("max", or v1's huge
// sentinel) is limited by the host: MemTotal. Reclaimable page cache
// (inactive_file in memory.stat) is subtracted from cgroup usage, because
// the kernel drops it before the OOM killer fires: counting it would show
// a busy but healthy database as nearly out of memory.
//
// Consumers are shared_buffers and the five server processes using the
// most private memory (RssAnon from /proc/<pid>/status, VmRSS when the
// kernel does not report it). Private rather than VmRSS because VmRSS
// counts every shared_buffers page a process touched, so each backend
// would appear to hold the buffer pool again.
//
// The sidecar must run on the database host (same /proc and cgroup view).
type Memory struct {
	// Interval is the cadence (default 10 s).
	Interval time.Duration
	// FS is the file system root that holds proc/ and sys/ (default: the
	// machine's /). Tests substitute an fstest.MapFS.
	FS fs.FS

	// Memory is the instance's, not a collection's: one reading serves
	// every target of a round (it read every server process 64 times per
	// round at 64 collections: bench/RESULTS.md, P2).
	mu     sync.Mutex
	last   health.MemorySignal
	lastAt time.Time
}

// NewMemory returns the memory collector reading the real machine.
func NewMemory() *Memory { return &Memory{} }

func (m *Memory) Name() string { return "memory" }

func (m *Memory) Cadence() time.Duration { return orDefault(m.Interval, 10*time.Second) }

func (m *Memory) fsys() fs.FS {
	if m.FS != nil {
		return m.FS
	}
	return os.DirFS("/")
}

const processesSQL = `
SELECT pg_backend_pid(), current_setting('block_size')::bigint *
       (SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'),
       coalesce((SELECT array_agg(pid ORDER BY pid) FROM pg_stat_activity), '{}'),
       coalesce((SELECT array_agg(coalesce(backend_type, '') ORDER BY pid) FROM pg_stat_activity), '{}')`

// Collect reads the limits and the consumers.
func (m *Memory) Collect(ctx context.Context, q Querier, _ Target, s *health.Signals) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.lastAt.IsZero() && time.Since(m.lastAt) < m.Cadence()/2 {
		s.Memory = m.last
		s.Memory.Consumers = slices.Clone(m.last.Consumers)
		return nil
	}
	var (
		ownPID       int32
		sharedBytes  int64
		pids         []int32
		backendTypes []string
	)
	if err := q.QueryRow(ctx, processesSQL).Scan(&ownPID, &sharedBytes, &pids, &backendTypes); err != nil {
		return fmt.Errorf("memory: server processes: %w", err)
	}
	fsys := m.fsys()
	// SQL has no function for the postmaster's pid; every backend is its
	// child, so our own backend's parent is the postmaster.
	pmPID, err := parentPID(fsys, int(ownPID))
	if err != nil {
		return fmt.Errorf("memory: find the postmaster (is the sidecar on the database host?): %w", err)
	}
	ms, err := ReadMemory(fsys, int(pmPID))
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	var procs []health.MemoryConsumer
	procs = appendProcess(procs, fsys, int(pmPID), "postmaster")
	for i, pid := range pids {
		if pid == ownPID || i >= len(backendTypes) {
			continue
		}
		procs = appendProcess(procs, fsys, int(pid), backendTypes[i])
	}
	slices.SortStableFunc(procs, func(a, b health.MemoryConsumer) int { return cmp.Compare(b.Bytes, a.Bytes) })
	if len(procs) > 5 {
		procs = procs[:5]
	}
	ms.Consumers = append([]health.MemoryConsumer{{Name: "shared_buffers", Bytes: sharedBytes}}, procs...)
	s.Memory = ms
	m.last, m.lastAt = ms, time.Now()
	s.Memory.Consumers = slices.Clone(ms.Consumers)
	return nil
}

// appendProcess adds one process; one that exited since the query (or is
// not visible from here) is skipped: it uses no memory any more.
func appendProcess(out []health.MemoryConsumer, fsys fs.FS, pid int, label string) []health.MemoryConsumer {
	b, err := processMemory(fsys, pid)
	if err != nil {
		return out
	}
	return append(out, health.MemoryConsumer{Name: fmt.Sprintf("%s (pid %d)", label, pid), Bytes: b})
}

func parentPID(fsys fs.FS, pid int) (int, error) {
	raw, err := fs.ReadFile(fsys, path.Join("proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no PPid in /proc/%d/status", pid)
}

func processMemory(fsys fs.FS, pid int) (int64, error) {
	kv, err := readKB(fsys, path.Join("proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	if v, ok := kv["RssAnon"]; ok {
		return v, nil
	}
	if v, ok := kv["VmRSS"]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("memory: pid %d: no VmRSS (kernel thread or zombie)", pid)
}

// ReadMemory reads used and limit bytes for the server whose postmaster is
// pmPID (0: use the mounted cgroup) from fsys, a view of the root file
// system. It fills everything but Consumers.
func ReadMemory(fsys fs.FS, pmPID int) (health.MemorySignal, error) {
	meminfo, err := readKB(fsys, "proc/meminfo")
	if err != nil {
		return health.MemorySignal{}, fmt.Errorf("memory: %w", err)
	}
	total, ok := meminfo["MemTotal"]
	if !ok {
		return health.MemorySignal{}, errors.New("memory: /proc/meminfo has no MemTotal")
	}
	v2Path, v1Path := cgroupPaths(fsys, pmPID)
	var ms health.MemorySignal
	switch {
	case exists(fsys, path.Join(v2Path, "memory.current")):
		used, err := readInt(fsys, path.Join(v2Path, "memory.current"))
		if err != nil {
			return ms, err
		}
		limit := total
		raw, err := fs.ReadFile(fsys, path.Join(v2Path, "memory.max"))
		if err != nil {
			return ms, fmt.Errorf("memory: %w", err)
		}
		if s := strings.TrimSpace(string(raw)); s != "max" {
			if limit, err = strconv.ParseInt(s, 10, 64); err != nil {
				return ms, fmt.Errorf("memory: memory.max %q: %w", s, err)
			}
		}
		used -= statValue(fsys, path.Join(v2Path, "memory.stat"), "inactive_file")
		ms = health.MemorySignal{UsedBytes: used, LimitBytes: min(limit, total), Source: "cgroup v2"}
	case exists(fsys, path.Join(v1Path, "memory.usage_in_bytes")):
		used, err := readInt(fsys, path.Join(v1Path, "memory.usage_in_bytes"))
		if err != nil {
			return ms, err
		}
		limit, err := readInt(fsys, path.Join(v1Path, "memory.limit_in_bytes"))
		if err != nil {
			return ms, err
		}
		// "No limit" in v1 is a page-rounded LONG_MAX: anything above the
		// host's memory is no limit at all.
		used -= statValue(fsys, path.Join(v1Path, "memory.stat"), "total_inactive_file")
		ms = health.MemorySignal{UsedBytes: used, LimitBytes: min(limit, total), Source: "cgroup v1"}
	default:
		avail, ok := meminfo["MemAvailable"]
		if !ok {
			return ms, errors.New("memory: /proc/meminfo has no MemAvailable")
		}
		ms = health.MemorySignal{UsedBytes: total - avail, LimitBytes: total, Source: "/proc/meminfo"}
	}
	ms.UsedBytes = max(ms.UsedBytes, 0)
	if ms.LimitBytes > 0 {
		ms.UsagePct = 100 * float64(ms.UsedBytes) / float64(ms.LimitBytes)
	}
	return ms, nil
}

// cgroupPaths returns the v2 and v1 memory cgroup directories to read: the
// postmaster's, when /proc/<pid>/cgroup names one that exists here, else
// the mount points themselves.
func cgroupPaths(fsys fs.FS, pmPID int) (v2, v1 string) {
	v2, v1 = "sys/fs/cgroup", "sys/fs/cgroup/memory"
	if pmPID <= 0 {
		return v2, v1
	}
	raw, err := fs.ReadFile(fsys, path.Join("proc", strconv.Itoa(pmPID), "cgroup"))
	if err != nil {
		return v2, v1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" {
			continue
		}
		rel := strings.TrimPrefix(path.Clean(parts[2]), "/")
		switch {
		case parts[0] == "0" && parts[1] == "":
			if p := path.Join(v2, rel); exists(fsys, path.Join(p, "memory.current")) {
				v2 = p
			}
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			if p := path.Join(v1, rel); exists(fsys, path.Join(p, "memory.usage_in_bytes")) {
				v1 = p
			}
		}
	}
	return v2, v1
}

func exists(fsys fs.FS, name string) bool {
	_, err := fs.Stat(fsys, name)
	return err == nil
}

func readInt(fsys fs.FS, name string) (int64, error) {
	raw, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory: %s: %w", name, err)
	}
	return v, nil
}

// statValue reads one key of a memory.stat file, 0 when absent.
func statValue(fsys fs.FS, name, key string) int64 {
	raw, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// readKB parses "Key:   123 kB" lines (/proc/meminfo, /proc/<pid>/status)
// into bytes.
func readKB(fsys fs.FS, name string) (map[string]int64, error) {
	raw, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		out[key] = v * 1024
	}
	return out, sc.Err()
}
