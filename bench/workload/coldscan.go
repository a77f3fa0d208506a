package workload

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// ColdScanOptions shape ColdScan.
type ColdScanOptions struct {
	// Cold are the shards whose partitions are read: not all of the
	// collection's (the others are the hot ones the application reads).
	Cold []int
	// Reading is the memory signal to drive up: the memory collector's
	// usage percentage of the server's memory (its cgroup's used bytes
	// less inactive_file, over the limit), read afresh on each call (a
	// collector that keeps its last reading for a while makes the fill
	// overshoot: steps take milliseconds). Required.
	Reading func(ctx context.Context) (float64, error)
	// TargetPct: the fill stops once Reading is at or above it (default
	// 88, above the classifier's memory_pressure threshold of 85%). It must
	// be reached before the cgroup is at its limit: there the kernel
	// reclaims the inactive pages (read-ahead the scans did not use) and
	// then deactivates the cache the fault is made of, and the reading
	// falls instead of rising.
	TargetPct float64
	// ChunkBytes is how much more of a partition each step reads before
	// the next Reading (default 4 MiB): small against the cgroup's limit,
	// so the fill stops near the target instead of at the limit, where the
	// kernel would reclaim (and deactivate) the cache the fault is made of.
	ChunkBytes int64
}

// ColdScanReport is what ColdScan did.
type ColdScanReport struct {
	Partitions []string  // the cold partitions, in reading order
	Steps      int       // chunks read (each twice)
	BytesRead  int64     // distinct bytes of the cold partitions read
	StartPct   float64   // Reading before
	EndPct     float64   // Reading when the fill stopped
	Readings   []float64 // Reading after each step
	DataDir    string
}

// ColdScan makes memory pressure out of page cache alone, the way scans of
// partitions nobody else reads fill a database's memory: it reads the cold
// shards' partitions, a growing prefix of one after another, each chunk
// twice, until the memory collector's reading (opts.Reading) reaches the
// target. Read once, a page lands on the kernel's inactive list, which the
// collector subtracts as reclaimable; read twice it is moved to the active
// list, which it counts.
//
// The scans are plain sequential scans with a LIMIT (synchronized scans
// off, so each starts at block 0): PostgreSQL reads a table larger than a
// quarter of shared_buffers through a small ring of buffers, so what they
// read stays in the OS page cache, not in shared_buffers. A cold partition
// smaller than that would be cached in shared_buffers instead, which no
// page-cache eviction can free: ColdScan refuses it.
//
// It must run on the database host (as root or the server's OS user):
// first it drops the cold partitions' page cache (posix_fadvise DONTNEED)
// so that every page comes back charged to the server's cgroup (a page is
// charged to the cgroup of the process that first cached it, such as the
// one that loaded the rows). The undo drops them again, returning the
// memory the fault took; the fill itself is over when ColdScan returns.
func (w *Workload) ColdScan(ctx context.Context, o ColdScanOptions) (ColdScanReport, func(context.Context) error, error) {
	var rep ColdScanReport
	if o.Reading == nil {
		return rep, nil, errors.New("workload: cold scan: no Reading (the memory signal to drive up)")
	}
	if o.TargetPct == 0 {
		o.TargetPct = 88
	}
	if o.TargetPct <= 0 || o.TargetPct >= 100 {
		return rep, nil, fmt.Errorf("workload: cold scan: target %.1f%%: want a percentage between 0 and 100 (exclusive)", o.TargetPct)
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = 4 << 20
	}
	if len(o.Cold) == 0 || len(o.Cold) >= w.Partitions {
		return rep, nil, fmt.Errorf("workload: cold scan: cold shards %v: want some but not all of %q's shards 0..%d", o.Cold, w.Name, w.Partitions-1)
	}
	for _, s := range o.Cold {
		if s < 0 || s >= w.Partitions {
			return rep, nil, fmt.Errorf("workload: cold scan: shard %d: %q has shards 0..%d", s, w.Name, w.Partitions-1)
		}
	}
	conn, err := w.Pool.Acquire(ctx)
	if err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: %w", err)
	}
	defer conn.Release()
	type part struct {
		name         string
		blocks, rows int64
		files        []string
	}
	var (
		parts      []part
		blockSize  int64
		ringCutoff int64
	)
	if err := conn.QueryRow(ctx, `SELECT current_setting('data_directory'), current_setting('block_size')::int8,
  (SELECT setting::int8 FROM pg_settings WHERE name = 'shared_buffers') / 4`).Scan(&rep.DataDir, &blockSize, &ringCutoff); err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: settings (needs superuser or pg_read_all_settings): %w", err)
	}
	rows, err := conn.Query(ctx, `
SELECT t.relid::regclass::text, pg_relation_size(t.relid) / current_setting('block_size')::int8, greatest(c.reltuples, 0)::int8
FROM pg_partition_tree($1::regclass) t JOIN pg_class c ON c.oid = t.relid
WHERE t.isleaf
  AND pg_get_expr(c.relpartbound, c.oid) IN (SELECT format('FOR VALUES IN (%s)', s) FROM unnest($2::int[]) s)
ORDER BY 1`, w.Table, o.Cold)
	if err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: partitions of %s: %w", w.Table, err)
	}
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.name, &p.blocks, &p.rows); err != nil {
			rows.Close()
			return rep, nil, fmt.Errorf("workload: cold scan: %w", err)
		}
		parts = append(parts, p)
	}
	if err := rows.Err(); err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: %w", err)
	}
	if len(parts) != len(o.Cold) {
		return rep, nil, fmt.Errorf("workload: cold scan: shards %v of %s matched partitions %v: want one partition per shard", o.Cold, w.Table, partNames(parts, func(p part) string { return p.name }))
	}
	for i := range parts {
		p := &parts[i]
		if p.blocks <= ringCutoff {
			return rep, nil, fmt.Errorf("workload: cold scan: partition %s is %d blocks, not above a quarter of shared_buffers (%d blocks): "+
				"a scan of it is cached in shared_buffers, which page-cache eviction cannot free; load more rows or lower shared_buffers",
				p.name, p.blocks, ringCutoff)
		}
		if p.rows == 0 {
			return rep, nil, fmt.Errorf("workload: cold scan: partition %s has no row estimate: ANALYZE it first", p.name)
		}
		if p.files, err = relFiles(ctx, conn.Conn(), rep.DataDir, p.name); err != nil {
			return rep, nil, err
		}
		rep.Partitions = append(rep.Partitions, p.name)
	}
	drop := func() error {
		var errs []error
		for _, p := range parts {
			for _, f := range p.files {
				errs = append(errs, dropCache(f))
			}
		}
		return errors.Join(errs...)
	}
	undo := func(context.Context) error {
		if err := drop(); err != nil {
			return fmt.Errorf("workload: cold scan undo: %w", err)
		}
		return nil
	}
	if err := drop(); err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: %w", err)
	}
	// Each scan starts at block 0 and reads the table's pages through the
	// bulk-read ring (index and bitmap scans would read other pages).
	if _, err := conn.Exec(ctx, `SET synchronize_seqscans = off; SET enable_indexscan = off; SET enable_indexonlyscan = off;
SET enable_bitmapscan = off; SET max_parallel_workers_per_gather = 0`); err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: %w", err)
	}
	if rep.StartPct, err = o.Reading(ctx); err != nil {
		return rep, nil, fmt.Errorf("workload: cold scan: reading: %w", err)
	}
	rep.EndPct = rep.StartPct
	chunk := max(1, o.ChunkBytes/blockSize)
	for _, p := range parts {
		for done := int64(0); done < p.blocks && rep.EndPct < o.TargetPct; {
			prev := done
			done = min(done+chunk, p.blocks)
			limit := p.rows * done / p.blocks
			if done == p.blocks {
				limit = p.rows * 2 // the estimate may be low: read it all
			}
			for range 2 {
				if _, err := conn.Exec(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %d) s`, p.name, limit)); err != nil {
					return rep, undo, fmt.Errorf("workload: cold scan of %s: %w", p.name, err)
				}
			}
			rep.Steps++
			rep.BytesRead += (done - prev) * blockSize
			if rep.EndPct, err = o.Reading(ctx); err != nil {
				return rep, undo, fmt.Errorf("workload: cold scan: reading: %w", err)
			}
			rep.Readings = append(rep.Readings, rep.EndPct)
		}
	}
	// Its reads reach the statistics views now rather than whenever this
	// backend next reports: a strategy that ranks partitions by recent
	// reads should see the cold ones as read before the fault, not during
	// its own measurement.
	if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return rep, undo, fmt.Errorf("workload: cold scan: %w", err)
	}
	if rep.EndPct < o.TargetPct {
		return rep, undo, fmt.Errorf("workload: cold scan: read all %d MiB of the cold partitions %v and the memory reading is %.1f%%, below the target %.1f%%: "+
			"more cold rows or a smaller memory limit are needed", rep.BytesRead>>20, rep.Partitions, rep.EndPct, o.TargetPct)
	}
	return rep, undo, nil
}

func partNames[T any](xs []T, name func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = name(x)
	}
	return out
}

// relFiles lists the main-fork segments of a table (what a sequential scan
// reads) under the data directory.
func relFiles(ctx context.Context, conn *pgx.Conn, dataDir, rel string) ([]string, error) {
	var base string
	if err := conn.QueryRow(ctx, `SELECT pg_relation_filepath($1::regclass)`, rel).Scan(&base); err != nil {
		return nil, fmt.Errorf("workload: cold scan: files of %s: %w", rel, err)
	}
	if !filepath.IsAbs(base) {
		base = filepath.Join(dataDir, base)
	}
	var files []string
	for seg := 0; ; seg++ {
		p := base
		if seg > 0 {
			p += "." + strconv.Itoa(seg)
		}
		if _, err := os.Stat(p); err != nil {
			if seg == 0 {
				return nil, fmt.Errorf("workload: cold scan: %s (ColdScan must run on the database host): %w", p, err)
			}
			break
		}
		files = append(files, p)
	}
	return slices.Clip(files), nil
}

// dropCache writes the file's dirty pages back and drops its cached pages.
func dropCache(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the relation was rewritten or dropped
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
