// Package memcg gives a test server a memory cgroup of its own, with a
// limit, so memory pressure can be made and measured on a shared machine
// whose own memory could not be filled safely. It drives the cgroup v1
// memory controller (the hierarchy mounted at /sys/fs/cgroup/memory), the
// one the memory collector reads on a v1 host; it needs root.
//
// Page cache is charged in v1 to the cgroup of the process that first
// brought the page in, not to the one reading it later: pages cached before
// a process was moved in stay charged where they were.
package memcg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultRoot is where the v1 memory hierarchy is mounted.
const DefaultRoot = "/sys/fs/cgroup/memory"

// ErrUnavailable: this machine has no writable cgroup v1 memory controller
// (not root, cgroup v2 only, or no memory controller mounted). Tests skip
// on it.
var ErrUnavailable = errors.New("memcg: no writable cgroup v1 memory controller")

// Group is one memory cgroup made by Create.
type Group struct {
	Dir   string
	Limit int64
}

// Available reports why Create would fail on root, or nil.
func Available(root string) error {
	if root == "" {
		root = DefaultRoot
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: creating a cgroup needs root (euid %d)", ErrUnavailable, os.Geteuid())
	}
	for _, f := range []string{"cgroup.procs", "memory.limit_in_bytes", "memory.usage_in_bytes"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, root, err)
		}
	}
	return nil
}

// Create makes root/name with the given limit in bytes (root "" is
// DefaultRoot). The name must be a single path element.
func Create(root, name string, limit int64) (*Group, error) {
	if root == "" {
		root = DefaultRoot
	}
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("memcg: cgroup name %q: want a single path element", name)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("memcg: limit %d bytes: want a positive number", limit)
	}
	if err := Available(root); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("memcg: create %s: %w", dir, err)
	}
	g := &Group{Dir: dir, Limit: limit}
	if err := g.write("memory.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	// The kernel rounds the limit down to pages: keep what it took.
	if got, err := g.readInt("memory.limit_in_bytes"); err == nil {
		g.Limit = got
	}
	return g, nil
}

func (g *Group) write(file, value string) error {
	if err := os.WriteFile(filepath.Join(g.Dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("memcg: write %q to %s: %w", value, filepath.Join(g.Dir, file), err)
	}
	return nil
}

func (g *Group) readInt(file string) (int64, error) {
	raw, err := os.ReadFile(filepath.Join(g.Dir, file))
	if err != nil {
		return 0, fmt.Errorf("memcg: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memcg: %s: %w", filepath.Join(g.Dir, file), err)
	}
	return v, nil
}

// Move moves the processes into the group. A process that exited meanwhile
// is skipped.
func (g *Group) Move(pids ...int) error {
	for _, p := range pids {
		err := g.write("cgroup.procs", strconv.Itoa(p))
		if err != nil && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			if _, serr := os.Stat(filepath.Join("/proc", strconv.Itoa(p))); serr != nil {
				continue // it exited: ESRCH from the write
			}
			return fmt.Errorf("memcg: move pid %d: %w", p, err)
		}
	}
	return nil
}

// MoveTree moves pid and all its descendants (for a postmaster: every
// server process; backends forked later inherit the group).
func (g *Group) MoveTree(pid int) error {
	return g.Move(append([]int{pid}, Descendants(pid)...)...)
}

// Procs lists the processes in the group.
func (g *Group) Procs() ([]int, error) {
	raw, err := os.ReadFile(filepath.Join(g.Dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("memcg: %w", err)
	}
	var out []int
	for _, f := range strings.Fields(string(raw)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Usage is one reading of the group.
type Usage struct {
	Bytes int64            // memory.usage_in_bytes
	Limit int64            // memory.limit_in_bytes
	Fails int64            // memory.failcnt: times usage hit the limit (and the kernel reclaimed)
	Stat  map[string]int64 // memory.stat (total_* are the hierarchy's)
}

// Read reads the group's usage, limit and memory.stat.
func (g *Group) Read() (Usage, error) {
	var u Usage
	var err error
	if u.Bytes, err = g.readInt("memory.usage_in_bytes"); err != nil {
		return u, err
	}
	if u.Limit, err = g.readInt("memory.limit_in_bytes"); err != nil {
		return u, err
	}
	if u.Fails, err = g.readInt("memory.failcnt"); err != nil {
		return u, err
	}
	raw, err := os.ReadFile(filepath.Join(g.Dir, "memory.stat"))
	if err != nil {
		return u, fmt.Errorf("memcg: %w", err)
	}
	u.Stat = map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			u.Stat[f[0]] = v
		}
	}
	return u, nil
}

// Remove deletes the group. Its processes must have exited (or been moved
// out) first; Remove waits for them until ctx ends. Charges still held by
// page cache move to the parent.
func (g *Group) Remove(ctx context.Context) error {
	for {
		err := os.Remove(g.Dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			procs, _ := g.Procs()
			return fmt.Errorf("memcg: remove %s (processes still in it: %v): %w", g.Dir, procs, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Descendants lists pid's children, their children and so on, from
// /proc/<pid>/stat.
func Descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			parent[p] = pp
		}
	}
	var out []int
	frontier := []int{pid}
	for len(frontier) > 0 {
		var next []int
		for p, pp := range parent {
			for _, f := range frontier {
				if pp == f {
					next = append(next, p)
				}
			}
		}
		out = append(out, next...)
		frontier = next
	}
	return out
}

// CgroupOf is the memory cgroup directory (under root, "" for DefaultRoot)
// that pid is in now.
func CgroupOf(root string, pid int) (string, error) {
	if root == "" {
		root = DefaultRoot
	}
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", fmt.Errorf("memcg: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "memory") {
			return filepath.Join(root, filepath.Clean(parts[2])), nil
		}
	}
	return "", fmt.Errorf("memcg: pid %d is in no v1 memory cgroup", pid)
}

// MoveOut moves every process of the group into dir (another cgroup
// directory), so the group can be removed while they go on.
func (g *Group) MoveOut(dir string) error {
	procs, err := g.Procs()
	if err != nil {
		return err
	}
	to := &Group{Dir: dir}
	return to.Move(procs...)
}

// StartIn runs start (which starts processes, such as a server restart)
// with this process inside the group, so that what it starts is born in
// the group and all its memory is charged here from the first page: the
// v1 controller on this kernel does not move existing charges with a
// process (move_charge_at_immigrate is gone), so shared memory a server
// touched before Move stays charged to its old cgroup. This process goes
// back to its own cgroup afterwards.
func (g *Group) StartIn(start func() error) error {
	self := os.Getpid()
	home, err := CgroupOf(filepath.Dir(g.Dir), self)
	if err != nil {
		return err
	}
	if err := g.Move(self); err != nil {
		return err
	}
	runErr := start()
	if err := (&Group{Dir: home}).Move(self); err != nil {
		return errors.Join(runErr, fmt.Errorf("memcg: moving this process back to %s: %w", home, err))
	}
	return runErr
}
