package remedy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// EvictColdData is evict_cold_data: it frees the operating system's page
// cache held for the coldest partitions of the collection, so the memory
// goes to the partitions that are being read (and to the server's own
// allocations) before the kernel has to reclaim anything else.
//
// What and how, exactly:
//   - Coldest: the partitions with the fewest block reads (heap, index and
//     TOAST, hits and misses, from pg_statio_user_tables) over a short
//     window (ActivityWindow), ties broken by the cumulative count since
//     the statistics were reset; PostgreSQL 15 keeps no last-read time.
//     The coldest ColdFraction of them (at least one, never all) are
//     evicted, but never one read in the window more than a tenth as much
//     as the busiest partition: when fewer than ColdFraction of them are
//     idle, only the idle ones go (the cache of a partition being read
//     would only come straight back from disk).
//   - Files: each partition's table, TOAST table and all their indexes
//     (pg_relation_filepath under data_directory), every fork (main, fsm,
//     vm, init) and every 1 GB segment (.1, .2, …).
//   - Eviction: posix_fadvise(POSIX_FADV_DONTNEED) on each file. Clean
//     pages leave the cache; dirty ones are the kernel's to write back.
//   - Measured: the files' resident pages before and after through mincore
//     on a read-only mapping; the difference is the memory regained.
//     /proc/meminfo's Cached is reported too, as the machine-wide view.
//
// What it does not free: pages in shared_buffers. PostgreSQL 15 has no way
// to evict a relation's buffers from outside (pg_buffercache_evict is 17),
// and the sidecar holds no per-partition data of its own.
//
// The sidecar must run on the database host, as the server's OS user (or
// root), to open the files; it never writes to them.
//
// Rollback reads back the page ranges that were resident (recorded per
// file before the eviction), so the previous residency returns. It reads
// them through the server (pg_read_binary_file, which needs superuser or
// pg_read_server_files) when allowed: a page is charged to the memory
// cgroup of the process that reads it into the cache, so read by a backend
// the pages are charged to the server's cgroup, where the eviction took
// them from; read by the sidecar itself (the fallback, with readahead
// disabled, so exactly the recorded pages) they would be charged to the
// sidecar's own cgroup, on Kubernetes its container's, whose limit may
// reclaim them at once. Either way the pages come back read once, on the
// kernel's inactive list, which the memory collector counts as
// reclaimable: a rollback restores the cache, not the pressure. Read by
// the server, the kernel may read ahead a little past a range's end
// (at most its readahead window).
type EvictColdData struct {
	Dial Dialer
	// ColdFraction of the partitions is evicted (default 0.5).
	ColdFraction float64
	// ActivityWindow is how long reads are counted to find the coldest
	// partitions (default 2 s).
	ActivityWindow time.Duration
	// MemInfo is the meminfo file (default /proc/meminfo).
	MemInfo string
}

func (*EvictColdData) Name() string { return "evict_cold_data" }
func (*EvictColdData) Handles() []classify.Class {
	return []classify.Class{classify.ClassMemoryPressure}
}

// Impact is low: only cache of partitions nobody is reading is dropped; the
// cost is a slower first read of them afterwards.
func (*EvictColdData) Impact() float64                  { return 0.2 }
func (*EvictColdData) EstimatedDuration() time.Duration { return 20 * time.Second }
func (*EvictColdData) Reversible() bool                 { return true }

// evictAction is recorded per file before its eviction.
type evictAction struct {
	Kind      string      `json:"kind"` // "evict"
	Partition string      `json:"partition"`
	RelID     int64       `json:"relid"`
	Path      string      `json:"path"`
	PageSize  int64       `json:"page_size"`
	Resident  int64       `json:"resident_pages"`
	Ranges    []pageRange `json:"ranges"`
}

type coldPartition struct {
	RelID      int64  `json:"relid"`
	Name       string `json:"partition"`
	WindowRead int64  `json:"blocks_read_in_window"`
	TotalRead  int64  `json:"blocks_read_total"`
	files      []string
	res        []residency
	Resident   int64 `json:"resident_bytes"`
}

func (e *EvictColdData) fraction() float64 {
	if e.ColdFraction > 0 && e.ColdFraction <= 1 {
		return e.ColdFraction
	}
	return 0.5
}

func (e *EvictColdData) window() time.Duration {
	if e.ActivityWindow > 0 {
		return e.ActivityWindow
	}
	return 2 * time.Second
}

const readsSQL = `
SELECT c.oid::int8, c.oid::regclass::text,
       coalesce(s.heap_blks_read + s.heap_blks_hit, 0) + coalesce(s.idx_blks_read + s.idx_blks_hit, 0)
     + coalesce(s.toast_blks_read + s.toast_blks_hit, 0) + coalesce(s.tidx_blks_read + s.tidx_blks_hit, 0)
FROM ruvector.collection_relations r
JOIN pg_class c ON c.oid = r.relid
LEFT JOIN pg_statio_all_tables s ON s.relid = c.oid
WHERE r.collection_id = $1 AND c.relkind IN ('r', 'm')
ORDER BY c.oid`

func readCounts(ctx context.Context, conn *pgx.Conn, id int64) (map[int64]coldPartition, error) {
	rows, err := conn.Query(ctx, readsSQL, id)
	if err != nil {
		return nil, fmt.Errorf("evict_cold_data: read statistics: %w", err)
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (coldPartition, error) {
		var p coldPartition
		return p, r.Scan(&p.RelID, &p.Name, &p.TotalRead)
	})
	if err != nil {
		return nil, fmt.Errorf("evict_cold_data: read statistics: %w", err)
	}
	out := make(map[int64]coldPartition, len(parts))
	for _, p := range parts {
		out[p.RelID] = p
	}
	return out, nil
}

// relationFiles lists every file of the relation, its TOAST table and all
// their indexes: each fork and each segment that exists.
func relationFiles(ctx context.Context, conn *pgx.Conn, dataDir string, relid int64) ([]string, error) {
	rows, err := conn.Query(ctx, `
SELECT pg_relation_filepath(o) FROM (
  SELECT $1::oid AS o
  UNION ALL SELECT reltoastrelid FROM pg_class WHERE oid = $1 AND reltoastrelid <> 0
  UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = $1
  UNION ALL SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON c.reltoastrelid = i.indrelid WHERE c.oid = $1
) x WHERE pg_relation_filepath(o) IS NOT NULL`, relid)
	if err != nil {
		return nil, fmt.Errorf("evict_cold_data: relation files: %w", err)
	}
	bases, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("evict_cold_data: relation files: %w", err)
	}
	var files []string
	for _, b := range bases {
		if !filepath.IsAbs(b) {
			b = filepath.Join(dataDir, b)
		}
		for _, fork := range []string{"", "_fsm", "_vm", "_init"} {
			for seg := 0; ; seg++ {
				p := b + fork
				if seg > 0 {
					p += "." + strconv.Itoa(seg)
				}
				if _, err := os.Stat(p); err != nil {
					break
				}
				files = append(files, p)
			}
		}
	}
	return files, nil
}

// coldest finds the partitions to evict and measures their files.
func (e *EvictColdData) coldest(ctx context.Context, conn *pgx.Conn, rc *strategy.Context) ([]coldPartition, int, string, error) {
	var dataDir string
	if err := conn.QueryRow(ctx, `SELECT current_setting('data_directory')`).Scan(&dataDir); err != nil {
		return nil, 0, "", fmt.Errorf("evict_cold_data: data_directory (needs superuser or pg_read_all_settings): %w", err)
	}
	first, err := readCounts(ctx, conn, rc.CollectionID)
	if err != nil {
		return nil, 0, "", err
	}
	select {
	case <-time.After(e.window()):
	case <-ctx.Done():
		return nil, 0, "", ctx.Err()
	}
	second, err := readCounts(ctx, conn, rc.CollectionID)
	if err != nil {
		return nil, 0, "", err
	}
	var parts []coldPartition
	for id, p := range second {
		if f, ok := first[id]; ok {
			p.WindowRead = p.TotalRead - f.TotalRead
		}
		parts = append(parts, p)
	}
	total := len(parts)
	if total < 2 {
		return nil, total, "", nil
	}
	slices.SortFunc(parts, func(a, b coldPartition) int {
		if a.WindowRead != b.WindowRead {
			return cmpInt(a.WindowRead, b.WindowRead)
		}
		if a.TotalRead != b.TotalRead {
			return cmpInt(a.TotalRead, b.TotalRead)
		}
		return cmpInt(a.RelID, b.RelID)
	})
	n := max(1, int(float64(total)*e.fraction()))
	n = min(n, total-1, readIdle(parts))
	parts = parts[:n]
	ps := int64(os.Getpagesize())
	for i := range parts {
		files, err := relationFiles(ctx, conn, dataDir, parts[i].RelID)
		if err != nil {
			return nil, total, "", err
		}
		parts[i].files = files
		for _, f := range files {
			r, err := fileResidency(f)
			if err != nil {
				return nil, total, "", fmt.Errorf("evict_cold_data: residency of %s (the sidecar must run on the database host as its OS user): %w", f, err)
			}
			parts[i].res = append(parts[i].res, r)
			parts[i].Resident += r.Resident * ps
		}
	}
	return parts, total, dataDir, nil
}

// hotShare: a partition read more than this share of the busiest one's
// blocks in the window is being read, not cold.
const hotShare = 0.1

// readIdle is how many of parts (sorted coldest first) were read in the
// window at most hotShare of the busiest partition's reads: the ones whose
// cache nobody is using. Dropping a partition that is being read only
// sends its next reads to disk, and the cache comes straight back. When
// nothing was read in the window at all, every partition qualifies and
// the cumulative counts rank them.
func readIdle(parts []coldPartition) int {
	var busiest int64
	for _, p := range parts {
		busiest = max(busiest, p.WindowRead)
	}
	n := 0
	for _, p := range parts {
		if float64(p.WindowRead) <= hotShare*float64(busiest) {
			n++
		}
	}
	return n
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Plan reports the partitions Execute would evict and what of them is cached.
func (e *EvictColdData) Plan(ctx context.Context, rc *strategy.Context) (Plan, error) {
	conn, err := e.Dial(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("evict_cold_data: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	parts, total, _, err := e.coldest(ctx, conn, rc)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Strategy: e.Name(), Steps: []Step{}}
	var cached int64
	for _, c := range parts {
		cached += c.Resident
		p.Steps = append(p.Steps, Step{Action: "evict_page_cache", Target: c.Name,
			Detail: map[string]any{"resident_bytes": c.Resident, "files": len(c.files),
				"blocks_read_in_window": c.WindowRead, "blocks_read_total": c.TotalRead}})
	}
	if reason := noopReason(total, len(parts), cached); reason != "" {
		return Plan{Strategy: e.Name(), Noop: true, Reason: reason, Steps: []Step{}}, nil
	}
	return p, nil
}

func noopReason(total, cold int, cached int64) string {
	switch {
	case total < 2:
		return fmt.Sprintf("the collection has %d partition(s): there is no colder one to evict", total)
	case cold == 0:
		return fmt.Sprintf("all %d partitions were read in the last window: none is cold", total)
	case cached == 0:
		return "nothing of the coldest partitions is in the page cache"
	}
	return ""
}

// Execute evicts the coldest partitions' files from the page cache.
func (e *EvictColdData) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	conn, err := e.Dial(ctx)
	if err != nil {
		return strategy.Result{}, fmt.Errorf("evict_cold_data: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	parts, total, _, err := e.coldest(ctx, conn, rc)
	if err != nil {
		return strategy.Result{}, err
	}
	var before int64
	for _, p := range parts {
		before += p.Resident
	}
	if reason := noopReason(total, len(parts), before); reason != "" {
		return strategy.NoopResult(reason), nil
	}
	cachedBefore, _ := e.cachedBytes()
	ps := int64(os.Getpagesize())
	done := 0
	var after int64
	type evicted struct {
		Partition string `json:"partition"`
		Before    int64  `json:"resident_bytes_before"`
		After     int64  `json:"resident_bytes_after"`
	}
	var report []evicted
	for _, p := range parts {
		ev := evicted{Partition: p.Name, Before: p.Resident}
		for i, f := range p.files {
			if err := ctx.Err(); err != nil {
				return strategy.Result{ActionsTaken: done, Metadata: map[string]any{"evicted": report}}, err
			}
			r := p.res[i]
			if r.Resident == 0 {
				continue // nothing cached: nothing to drop, nothing to restore
			}
			if err := rc.Record(evictAction{Kind: "evict", Partition: p.Name, RelID: p.RelID, Path: f,
				PageSize: ps, Resident: r.Resident, Ranges: r.Ranges}); err != nil {
				return strategy.Result{ActionsTaken: done, Metadata: map[string]any{"evicted": report}}, err
			}
			if err := dropFromCache(f); err != nil {
				return strategy.Result{ActionsTaken: done, Metadata: map[string]any{"evicted": report}},
					fmt.Errorf("evict_cold_data: %w", err)
			}
			done++
		}
		for _, f := range p.files {
			r, err := fileResidency(f)
			if err != nil {
				return strategy.Result{ActionsTaken: done}, fmt.Errorf("evict_cold_data: residency of %s: %w", f, err)
			}
			ev.After += r.Resident * ps
		}
		after += ev.After
		report = append(report, ev)
	}
	meta := map[string]any{
		"evicted":               report,
		"partitions_total":      total,
		"resident_bytes_before": before,
		"resident_bytes_after":  after,
		"memory_regained_bytes": max(before-after, 0),
		"not_freed":             "shared_buffers pages of these partitions (PostgreSQL 15 cannot evict them from outside)",
	}
	if cachedAfter, err := e.cachedBytes(); err == nil && cachedBefore > 0 {
		meta["meminfo_cached_delta_bytes"] = cachedAfter - cachedBefore
	}
	return strategy.Result{Success: before > after, ActionsTaken: done, Metadata: meta}, nil
}

// Rollback reads back the recorded resident ranges, last file first.
func (e *EvictColdData) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	// Through the server when it lets us; else (no connection, or no
	// right to read server files) from here.
	var conn *pgx.Conn
	if e.Dial != nil {
		if c, err := e.Dial(ctx); err == nil {
			conn = c
			defer conn.Close(context.WithoutCancel(ctx))
		}
	}
	var errs []error
	for i := len(acts) - 1; i >= 0; i-- {
		var a evictAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			errs = append(errs, fmt.Errorf("evict_cold_data: action %d: %w", i, err))
			continue
		}
		if a.Kind != "evict" {
			continue
		}
		ranges := a.Ranges
		if a.PageSize != int64(os.Getpagesize()) && a.PageSize > 0 {
			// Recorded on a machine with another page size: restore by bytes.
			ps := int64(os.Getpagesize())
			ranges = make([]pageRange, len(a.Ranges))
			for j, r := range a.Ranges {
				start := r.Start * a.PageSize / ps
				end := ((r.Start+r.Len)*a.PageSize + ps - 1) / ps
				ranges[j] = pageRange{Start: start, Len: end - start}
			}
		}
		// A file that is gone was rewritten (VACUUM FULL, TRUNCATE):
		// its old pages no longer exist to be cached.
		var serverErr error
		if conn != nil {
			serverErr = serverReadBack(ctx, conn, a.Path, ranges)
			if serverErr == nil {
				continue
			}
			if errors.Is(serverErr, context.Canceled) || errors.Is(serverErr, context.DeadlineExceeded) {
				return errors.Join(append(errs, serverErr)...)
			}
			if pgErr := (*pgconn.PgError)(nil); errors.As(serverErr, &pgErr) && pgErr.Code == "42501" {
				conn, serverErr = nil, nil // no right to read server files: read them here from now on
			}
		}
		// From here: cached on the sidecar's account, but cached.
		if _, err := readBack(a.Path, ranges, ctx.Err); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return errors.Join(append(errs, err)...)
			}
			if serverErr != nil {
				err = errors.Join(fmt.Errorf("through the server: %w", serverErr), err)
			}
			errs = append(errs, fmt.Errorf("evict_cold_data: re-warm %s: %w", a.Path, err))
		}
	}
	return errors.Join(errs...)
}

// serverReadChunk bounds one pg_read_binary_file: the backend holds what it
// reads in memory until the call returns.
const serverReadChunk = 8 << 20

// serverReadBack has a backend read the ranges of path (only their length
// comes back), so the pages are cached on the server's account.
func serverReadBack(ctx context.Context, conn *pgx.Conn, path string, ranges []pageRange) error {
	ps := int64(os.Getpagesize())
	for _, r := range ranges {
		for off, end := r.Start*ps, (r.Start+r.Len)*ps; off < end; off += serverReadChunk {
			var n *int64
			if err := conn.QueryRow(ctx, `SELECT length(pg_read_binary_file($1, $2, $3, true))::int8`,
				path, off, min(int64(serverReadChunk), end-off)).Scan(&n); err != nil {
				return err
			}
			if n == nil || *n < min(int64(serverReadChunk), end-off) {
				return nil // gone or shorter now: nothing more of it to cache
			}
		}
	}
	return nil
}

// cachedBytes is /proc/meminfo's Cached.
func (e *EvictColdData) cachedBytes() (int64, error) {
	path := e.MemInfo
	if path == "" {
		path = "/proc/meminfo"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(sc.Text(), "Cached: %d kB", &kb); n == 1 {
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no Cached line in " + path)
}
