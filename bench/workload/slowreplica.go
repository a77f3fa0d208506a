package workload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupCPURoot is where the cgroup v1 cpu controller is mounted.
const CgroupCPURoot = "/sys/fs/cgroup/cpu"

// SlowedReplica is a standby whose startup (recovery) process runs in its
// own cgroup v1 cpu group with a CFS quota: it keeps replaying, only slower
// than a busy primary generates WAL, so its lag grows while its replay_lsn
// still moves. That is the case the WAL-reducing remediations
// (throttle_ingestion, pause_maintenance) can fix, unlike a paused replay
// (LaggingReplica).
type SlowedReplica struct {
	pid    int    // the startup process
	group  string // our cgroup directory
	origin string // the cpu cgroup the process came from
}

// SlowReplica moves the standby's startup process into a new cpu cgroup
// limited to cpuPct percent of one CPU (CFS quota over a 100 ms period).
// It needs root and a writable cgroup v1 cpu hierarchy. Undo puts the
// process back where it was and removes the group.
func SlowReplica(ctx context.Context, sb *Standby, cpuPct float64) (*SlowedReplica, error) {
	if sb == nil {
		return nil, errors.New("workload: SlowReplica needs a running standby")
	}
	pid, err := startupPID(sb.spec.Dir)
	if err != nil {
		return nil, err
	}
	origin, err := cpuCgroupOf(pid)
	if err != nil {
		return nil, err
	}
	group := filepath.Join(CgroupCPURoot, fmt.Sprintf("ruvector_slowreplica_%d", pid))
	if err := os.Mkdir(group, 0o755); err != nil {
		return nil, fmt.Errorf("workload: create cpu cgroup %s (root and cgroup v1 needed): %w", group, err)
	}
	s := &SlowedReplica{pid: pid, group: group, origin: origin}
	if err := writeCgroup(group, "cpu.cfs_period_us", "100000"); err != nil {
		_ = os.Remove(group)
		return nil, err
	}
	if err := s.SetCPU(cpuPct); err != nil {
		_ = os.Remove(group)
		return nil, err
	}
	if err := writeCgroup(group, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		_ = os.Remove(group)
		return nil, fmt.Errorf("workload: move the startup process %d: %w", pid, err)
	}
	return s, ctx.Err()
}

// PID is the startup process the quota applies to.
func (s *SlowedReplica) PID() int { return s.pid }

// SetCPU changes the quota to cpuPct percent of one CPU (0.1 .. 100).
func (s *SlowedReplica) SetCPU(cpuPct float64) error {
	if !(cpuPct >= 0.1 && cpuPct <= 100) {
		return fmt.Errorf("workload: cpu percent %v out of range: want 0.1 to 100", cpuPct)
	}
	// 1000 µs per percent of the 100 ms period; the kernel's minimum is 1 ms.
	quota := max(int(cpuPct*1000), 1000)
	return writeCgroup(s.group, "cpu.cfs_quota_us", strconv.Itoa(quota))
}

// Undo moves the startup process back to its cgroup and removes ours. A
// process that is gone (the standby stopped or promoted) is not an error.
func (s *SlowedReplica) Undo(context.Context) error {
	err := writeCgroup(filepath.Join(CgroupCPURoot, s.origin), "cgroup.procs", strconv.Itoa(s.pid))
	if err != nil && processAlive(s.pid) {
		return fmt.Errorf("workload: move the startup process %d back to %s: %w", s.pid, s.origin, err)
	}
	if err := os.Remove(s.group); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("workload: remove cpu cgroup %s: %w", s.group, err)
	}
	return nil
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("workload: write %s to %s/%s: %w", value, dir, file, err)
	}
	return nil
}

func processAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

// startupPID finds the standby's startup process: the child of its
// postmaster (postmaster.pid, first line) whose title names "startup".
func startupPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("workload: the standby's postmaster: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("workload: postmaster.pid of %s: %w", dataDir, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pm) {
			continue
		}
		title, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(title), "startup") {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("workload: no startup process under postmaster %d of %s (not a standby?)", pm, dataDir)
}

// cpuCgroupOf is the process's cgroup in the v1 cpu hierarchy.
func cpuCgroupOf(pid int) (string, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				return parts[2], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("workload: process %d is in no cgroup v1 cpu hierarchy", pid)
}
