package changefeed

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what SlotLag needs: *pgx.Conn, *pgxpool.Pool and pgx.Tx all
// satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// SlotLag is how many bytes of WAL the slot still holds back: the distance
// from the current WAL position to what its consumer confirmed. A slot that
// is never advanced makes this grow without bound (and the server keeps
// all that WAL).
func SlotLag(ctx context.Context, conn Querier, slot string) (int64, error) {
	var lag *int64
	err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("slot lag: replication slot %q does not exist", slot)
	}
	if err != nil {
		return 0, fmt.Errorf("slot lag of %q: %w", slot, err)
	}
	if lag == nil {
		return 0, fmt.Errorf("slot lag: slot %q has no confirmed_flush_lsn (not a logical slot?)", slot)
	}
	return *lag, nil
}

// ensureStateTable checks that the extension provides the table that keeps
// the confirmed LSN (sql/src/10_integrity.sql). The sidecar no longer
// creates it: that needs CREATE on schema ruvector, a right that would let
// its role put objects beside (and shadow) the extension's functions.
func ensureStateTable(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('ruvector.changefeed_state') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("look up ruvector.changefeed_state: %w", err)
	}
	if !exists {
		return errors.New("ruvector.changefeed_state does not exist: the installed ruvector_healing extension is older than this sidecar (ALTER EXTENSION ruvector_healing UPDATE, or recreate it)")
	}
	return nil
}

func readPersisted(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	var s string
	err := conn.QueryRow(ctx, `SELECT confirmed_lsn::text FROM ruvector.changefeed_state WHERE slot_name = $1`, slot).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read persisted LSN: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("read persisted LSN %q: %w", s, err)
	}
	return lsn, nil
}

// persist records the confirmed LSN. GREATEST keeps it monotonic even if two
// feeds ever shared a slot name by mistake.
func persist(ctx context.Context, conn *pgx.Conn, slot string, lsn pglogrepl.LSN) error {
	_, err := conn.Exec(ctx, `INSERT INTO ruvector.changefeed_state (slot_name, confirmed_lsn, updated_at)
		VALUES ($1, $2::text::pg_lsn, now())
		ON CONFLICT (slot_name) DO UPDATE
		SET confirmed_lsn = GREATEST(ruvector.changefeed_state.confirmed_lsn, EXCLUDED.confirmed_lsn),
		    updated_at = now()`, slot, lsn.String())
	if err != nil {
		return fmt.Errorf("persist confirmed LSN %s: %w", lsn, err)
	}
	return nil
}

// slotInfo is the slot as pg_replication_slots shows it.
type slotInfo struct {
	exists         bool
	plugin         string
	database       string
	temporary      bool
	confirmedFlush pglogrepl.LSN
	// lost: the server removed WAL the slot still needed
	// (max_slot_wal_keep_size); it can never stream again.
	lost bool
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotInfo, error) {
	var (
		si        slotInfo
		plugin    *string
		db        *string
		confirmed *string
	)
	err := conn.QueryRow(ctx, `SELECT plugin, database::text, temporary, confirmed_flush_lsn::text,
			coalesce(wal_status = 'lost', false)
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &db, &si.temporary, &confirmed, &si.lost)
	if errors.Is(err, pgx.ErrNoRows) {
		return si, nil
	}
	if err != nil {
		return si, fmt.Errorf("read slot %q: %w", slot, err)
	}
	si.exists = true
	if plugin != nil {
		si.plugin = *plugin
	}
	if db != nil {
		si.database = *db
	}
	if confirmed != nil {
		if si.confirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return si, fmt.Errorf("slot %q confirmed_flush_lsn %q: %w", slot, *confirmed, err)
		}
	}
	return si, nil
}

// createSlot creates the feed's slot over the replication connection. It is
// permanent: a temporary slot dies with the connection, and resuming after
// a restart without loss is the point.
func createSlot(ctx context.Context, rc *pgconn.PgConn, slot string) error {
	_, err := pglogrepl.CreateReplicationSlot(ctx, rc, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode: pglogrepl.LogicalReplication,
		// Nobody reads the exported snapshot; exporting it would also
		// oblige us to keep the connection idle until we used it.
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42710" {
		return nil // another process created it meanwhile: ours to use
	}
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", slot, err)
	}
	return nil
}

// leavesSQL lists every table whose rows a registered collection holds: the
// leaf partitions of partitioned collections (read live from
// pg_partition_tree, so partitions attached after registration are found)
// and unpartitioned collection tables themselves, with what decides how
// they can be published.
const leavesSQL = `
WITH roots AS (
	SELECT c.relid::oid AS root FROM ruvector.collections c
), leaves AS (
	SELECT r.root, t.relid::oid AS relid
	FROM roots r, LATERAL pg_partition_tree(r.root) t
	WHERE t.isleaf
	UNION
	SELECT r.root, r.root FROM roots r
)
SELECT l.relid, l.root, n.nspname, k.relname,
       coalesce(pg_get_expr(k.relpartbound, k.oid), ''),
       k.relreplident = 'f' OR EXISTS (
           SELECT 1 FROM pg_index i WHERE i.indrelid = k.oid AND i.indisvalid AND
               ((k.relreplident = 'd' AND i.indisprimary) OR (k.relreplident = 'i' AND i.indisreplident)))
FROM leaves l
JOIN pg_class k ON k.oid = l.relid
JOIN pg_namespace n ON n.oid = k.relnamespace
WHERE k.relkind = 'r'
ORDER BY l.relid`

var singleIntBound = regexp.MustCompile(`^FOR VALUES IN \((-?[0-9]+)\)$`)

func readLeaves(ctx context.Context, conn *pgx.Conn) (map[uint32]leafMeta, error) {
	rows, err := conn.Query(ctx, leavesSQL)
	if err != nil {
		return nil, fmt.Errorf("list collection tables: %w", err)
	}
	out := map[uint32]leafMeta{}
	for rows.Next() {
		var (
			relid, root uint32
			m           leafMeta
			bound       string
		)
		if err := rows.Scan(&relid, &root, &m.namespace, &m.name, &bound, &m.deletes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list collection tables: %w", err)
		}
		m.root, m.shard = root, -1
		if g := singleIntBound.FindStringSubmatch(bound); g != nil {
			if v, err := strconv.ParseInt(g[1], 10, 64); err == nil {
				m.shard = v
			}
		}
		out[relid] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list collection tables: %w", err)
	}
	return out, nil
}

// publishFull and publishInserts are the two publications' actions. A table
// without a usable replica identity cannot be in a publication that
// publishes updates or deletes: the server would then refuse the
// application's UPDATE and DELETE on it. Such tables go into the
// inserts-only publication instead, so watching a collection never breaks
// writing to it.
const (
	publishFull    = "insert, update, delete, truncate"
	publishInserts = "insert, truncate"
)

// syncPublications makes the two publications hold exactly the collections'
// tables (by leaf partition, so a partition's changes name the partition
// whatever publish_via_partition_root says) and returns the catalog view.
func syncPublications(ctx context.Context, conn *pgx.Conn, full, inserts string) (map[uint32]leafMeta, error) {
	leaves, err := readLeaves(ctx, conn)
	if err != nil {
		return nil, err
	}
	var fullRels, insRels []uint32
	for id, m := range leaves {
		if m.deletes {
			fullRels = append(fullRels, id)
		} else {
			insRels = append(insRels, id)
		}
	}
	slices.Sort(fullRels)
	slices.Sort(insRels)

	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("sync publications: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, p := range []struct {
		name, publish string
		rels          []uint32
	}{{full, publishFull, fullRels}, {inserts, publishInserts, insRels}} {
		if err := syncPublication(ctx, tx, p.name, p.publish, p.rels, leaves); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("sync publications: %w", err)
	}
	return leaves, nil
}

func syncPublication(ctx context.Context, tx pgx.Tx, name, publish string, want []uint32, leaves map[uint32]leafMeta) error {
	ident := pgx.Identifier{name}.Sanitize()
	wantIns, wantUpd, wantDel := true, strings.Contains(publish, "update"), strings.Contains(publish, "delete")
	var (
		oid                                uint32
		all, ins, upd, del, trunc, viaRoot bool
	)
	err := tx.QueryRow(ctx, `SELECT oid, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
		FROM pg_publication WHERE pubname = $1`, name).Scan(&oid, &all, &ins, &upd, &del, &trunc, &viaRoot)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Created empty; the tables are set below. publish_via_partition_root
		// stays false so that changes name the partition, which is what
		// per-partition rates need.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE PUBLICATION %s WITH (publish = '%s', publish_via_partition_root = false)`, ident, publish)); err != nil {
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		if err := tx.QueryRow(ctx, `SELECT oid FROM pg_publication WHERE pubname = $1`, name).Scan(&oid); err != nil {
			return fmt.Errorf("look up publication %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look up publication %s: %w", name, err)
	case all:
		return fmt.Errorf("publication %s is FOR ALL TABLES: it is not the feed's; choose another publication name", name)
	case ins != wantIns || upd != wantUpd || del != wantDel || !trunc || viaRoot:
		// Only when they differ: ALTER PUBLICATION invalidates the decoding
		// caches of every published table.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s SET (publish = '%s', publish_via_partition_root = false)`, ident, publish)); err != nil {
			return fmt.Errorf("alter publication %s: %w", name, err)
		}
	}

	rows, err := tx.Query(ctx, `SELECT prrelid FROM pg_publication_rel WHERE prpubid = $1 ORDER BY prrelid`, oid)
	if err != nil {
		return fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	if slices.Equal(have, want) {
		return nil
	}
	if len(want) == 0 {
		// SET TABLE needs at least one table: drop the current ones by OID
		// (they may not be collection tables any more).
		names := make([]string, 0, len(have))
		for _, id := range have {
			var n string
			if err := tx.QueryRow(ctx, `SELECT $1::oid::regclass::text`, id).Scan(&n); err != nil {
				return fmt.Errorf("name relation %d: %w", id, err)
			}
			names = append(names, n)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s DROP TABLE %s`, ident, strings.Join(names, ", "))); err != nil {
			return fmt.Errorf("empty publication %s: %w", name, err)
		}
		return nil
	}
	names := make([]string, 0, len(want))
	for _, id := range want {
		m := leaves[id]
		names = append(names, pgx.Identifier{m.namespace, m.name}.Sanitize())
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s SET TABLE %s`, ident, strings.Join(names, ", "))); err != nil {
		return fmt.Errorf("set tables of publication %s: %w", name, err)
	}
	return nil
}
