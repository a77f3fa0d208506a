// Package rebalance moves rows of a vector collection from a hot shard to
// cold ones in small journaled batches. Each batch's journal rows
// (ruvector.healing_moves) and its shard-key UPDATEs commit in one
// transaction and are verified inside it (every selected row updated, all
// of them in the destination shard afterwards, each id present exactly
// once, the moved rows' content checksum unchanged), so after any crash
// the journal says exactly which rows moved and Rollback can move exactly
// those back.
//
// The verification reads only the batch's rows: counting the shards'
// rows before and after each batch read every row of both partitions, four
// times a batch, and the healer then judged those reads as the
// application's load (bench/RESULTS.md, scorecard run 11). What a batch
// does read and write is metered (sidecar/ownload) when the plan carries a
// ledger.
package rebalance

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/sidecar/ownload"
)

// ErrUnknownCollection: the name is not a vector collection.
var ErrUnknownCollection = errors.New("rebalance: unknown vector collection")

// ErrVerify: a batch failed its verification; its transaction was rolled
// back, so nothing of it moved.
var ErrVerify = errors.New("rebalance: batch verification failed")

// ErrBadPlan: the plan names shards the collection does not have, or
// nonsensical sizes.
var ErrBadPlan = errors.New("rebalance: bad plan")

// Plan is one rebalance: up to Rows rows from From, the newest Rows ids
// (in ascending order), in batches of BatchSize, each batch's rows dealt
// round-robin over To. Each batch spreads over every destination so that
// no one of them takes a whole batch: with two batches of 1,461 rows, the
// first made its one destination the next hotspot (λ 0.56, scorecard run
// 25). The newest rows append at the right edge of each
// destination's primary key, as its own new rows do, and ascending
// batches append after one another; the oldest ids interleave with the
// destination's and split its pages throughout, which index_fragmentation
// then had to repair (bench/RESULTS.md, scorecard run 23). A row moves at most
// once per OutcomeID (the journal's key is (outcome_id, row_id)): a second
// plan under the same outcome must not move rows the first one moved or
// undid; give it its own outcome id.
type Plan struct {
	Collection string
	OutcomeID  int64 // the journal key; the healing outcome that asked for the move
	From       int
	To         []int
	Rows       int
	BatchSize  int // default 500
	// Ledger, when set, is where the batches' own reads and writes of the
	// collection's partitions are recorded, for the partitions collector
	// to leave out of the load it measures.
	Ledger *ownload.Ledger
}

// Batch is what one committed batch did.
type Batch struct {
	OutcomeID      int64
	Number         int
	Rows           int
	ToShards       []int // where its rows went, round-robin in id order
	ChecksumBefore string
	ChecksumAfter  string
}

// Decision is what the caller wants after a batch.
type Decision struct {
	// Lambda, when set, is recorded on the batch (the strategy samples the
	// health graph's λ after each batch).
	Lambda *float32
	// Undo moves the batch back (state 'undone') and stops the move.
	Undo bool
	// Stop ends the move after this batch.
	Stop bool
}

// AfterBatch is called after each batch committed and verified. An error
// stops the move (the batch stays moved and journaled).
type AfterBatch func(ctx context.Context, b Batch) (Decision, error)

// Result sums a move.
type Result struct {
	Batches []Batch
	Moved   int // rows moved and not undone
	Undone  int // rows moved back by an Undo decision
}

type collection struct {
	id         int
	table      string
	partitions int
	// leaves are the table's leaf partitions (the table itself when it is
	// not partitioned): the relations a batch's counts are metered on.
	leaves []int64
	ledger *ownload.Ledger
	// passCaps: the batches set ruvector.shard_cap_exempt, so that rows
	// moved into a shard the sidecar capped (a rollback into the hot
	// shard) are not held to the cap meant for its writer: 1,461 rows
	// moved back at 12 rows/s took two minutes in scorecard run 25.
	passCaps bool
}

// withCapExemption sets passCaps when the session may set
// ruvector.shard_cap_exempt (a superuser, or GRANT SET ON PARAMETER); an
// extension without the setting, or a role without the grant, moves under
// the caps as before.
func (c collection) withCapExemption(ctx context.Context, conn *pgx.Conn) (collection, error) {
	err := conn.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT FROM pg_settings WHERE name = 'ruvector.shard_cap_exempt')
  THEN has_parameter_privilege('ruvector.shard_cap_exempt', 'SET') ELSE false END`).Scan(&c.passCaps)
	if err != nil {
		return c, fmt.Errorf("rebalance: may the moves pass the sidecar's shard caps: %w", err)
	}
	return c, nil
}

// withLeaves loads the leaf partitions of c when its batches are to be
// metered in l.
func (c collection) withLeaves(ctx context.Context, conn *pgx.Conn, l *ownload.Ledger) (collection, error) {
	c.ledger = l
	if l == nil {
		return c, nil
	}
	rows, err := conn.Query(ctx, `SELECT relid::bigint FROM pg_partition_tree($1::regclass) WHERE isleaf`, c.table)
	if err != nil {
		return c, fmt.Errorf("rebalance: partitions of %s: %w", c.table, err)
	}
	if c.leaves, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		return c, fmt.Errorf("rebalance: partitions of %s: %w", c.table, err)
	}
	return c, nil
}

// inTx runs f in one REPEATABLE READ transaction and commits it, metered
// when c has a ledger.
func (c collection) inTx(ctx context.Context, conn *pgx.Conn, f func(pgx.Tx) error) error {
	return c.ledger.InTx(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, c.leaves, func(tx pgx.Tx) error {
		if c.passCaps {
			if _, err := tx.Exec(ctx, `SELECT set_config('ruvector.shard_cap_exempt', 'on', true)`); err != nil {
				return err
			}
		}
		return f(tx)
	})
}

func loadCollection(ctx context.Context, conn *pgx.Conn, name string) (collection, error) {
	var c collection
	err := conn.QueryRow(ctx, `
SELECT c.collection_id, c.relid::regclass::text, v.partitions
FROM ruvector.collections c JOIN ruvector.vector_collections v USING (collection_id)
WHERE c.name = $1`, name).Scan(&c.id, &c.table, &c.partitions)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("%w: %q", ErrUnknownCollection, name)
	}
	if err != nil {
		return c, fmt.Errorf("rebalance: load collection %q: %w", name, err)
	}
	return c, nil
}

func loadCollectionByID(ctx context.Context, conn *pgx.Conn, id int) (collection, error) {
	c := collection{id: id}
	err := conn.QueryRow(ctx, `
SELECT c.relid::regclass::text, coalesce(v.partitions, 0)
FROM ruvector.collections c LEFT JOIN ruvector.vector_collections v USING (collection_id)
WHERE c.collection_id = $1`, id).Scan(&c.table, &c.partitions)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("%w: id %d", ErrUnknownCollection, id)
	}
	if err != nil {
		return c, fmt.Errorf("rebalance: load collection %d: %w", id, err)
	}
	return c, nil
}

// checksumSQL: md5 over id:embedding of the given rows, ordered by id: the
// same text before and after a move means the same rows with the same
// content.
const checksumSQL = `SELECT count(*), coalesce(md5(string_agg(id::text || ':' || embedding::text, ',' ORDER BY id)), '')
FROM %s WHERE shard = $1 AND id = ANY ($2)`

// checksumAtSQL is checksumSQL over rows each in its own shard
// ($1 ids, $2 their shards).
const checksumAtSQL = `SELECT count(*), coalesce(md5(string_agg(t.id::text || ':' || t.embedding::text, ',' ORDER BY t.id)), '')
FROM %s t JOIN unnest($1::bigint[], $2::int[]) j(id, shard) ON t.id = j.id AND t.shard = j.shard`

// Move runs plan. It stops early when From runs out of rows, when after
// says so, or on the first error (committed batches stay moved; Rollback
// undoes them).
func Move(ctx context.Context, conn *pgx.Conn, plan Plan, after AfterBatch) (Result, error) {
	var res Result
	c, err := loadCollection(ctx, conn, plan.Collection)
	if err != nil {
		return res, err
	}
	if err := validate(plan, c); err != nil {
		return res, err
	}
	if c, err = c.withLeaves(ctx, conn, plan.Ledger); err != nil {
		return res, err
	}
	if c, err = c.withCapExemption(ctx, conn); err != nil {
		return res, err
	}
	size := plan.BatchSize
	if size <= 0 {
		size = 500
	}
	var next int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(batch), 0) + 1 FROM ruvector.healing_move_batches WHERE outcome_id = $1`,
		plan.OutcomeID).Scan(&next); err != nil {
		return res, fmt.Errorf("rebalance: next batch: %w", err)
	}
	minID, err := c.newest(ctx, conn, plan.From, plan.Rows)
	if err != nil {
		return res, err
	}
	for res.Moved < plan.Rows {
		b, err := moveBatchRetry(ctx, conn, c, plan.OutcomeID, next, plan.From, minID, plan.To, min(size, plan.Rows-res.Moved))
		if err != nil {
			return res, err
		}
		if b.Rows == 0 {
			break
		}
		next++
		res.Batches = append(res.Batches, b)
		res.Moved += b.Rows
		if after == nil {
			continue
		}
		d, err := after(ctx, b)
		if err != nil {
			return res, fmt.Errorf("rebalance: after batch %d: %w", b.Number, err)
		}
		if d.Lambda != nil {
			if _, err := conn.Exec(ctx, `UPDATE ruvector.healing_move_batches SET lambda_after = $3 WHERE outcome_id = $1 AND batch = $2`,
				plan.OutcomeID, b.Number, *d.Lambda); err != nil {
				return res, fmt.Errorf("rebalance: record lambda of batch %d: %w", b.Number, err)
			}
		}
		if d.Undo {
			n, err := revertBatch(ctx, conn, c, plan.OutcomeID, b.Number, "undone")
			if err != nil {
				return res, err
			}
			res.Moved -= n
			res.Undone += n
			return res, nil
		}
		if d.Stop {
			return res, nil
		}
	}
	return res, nil
}

// newest is the lowest id of the n newest rows of shard, or MinInt64 when
// the shard holds no more than n.
func (c collection) newest(ctx context.Context, conn *pgx.Conn, shard, n int) (int64, error) {
	cut := int64(math.MinInt64)
	err := c.inTx(ctx, conn, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT id FROM %s WHERE shard = $1 ORDER BY id DESC OFFSET $2 LIMIT 1`, c.table), shard, n-1).Scan(&cut)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rebalance: the %d newest rows of shard %d: %w", n, shard, err)
	}
	return cut, nil
}

func validate(p Plan, c collection) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadPlan, fmt.Sprintf(format, args...))
	}
	if p.Rows <= 0 {
		return bad("rows = %d, want > 0", p.Rows)
	}
	if p.From < 0 || p.From >= c.partitions {
		return bad("from shard %d, collection %q has shards 0..%d", p.From, p.Collection, c.partitions-1)
	}
	if len(p.To) == 0 {
		return bad("no destination shard")
	}
	for _, s := range p.To {
		if s < 0 || s >= c.partitions || s == p.From {
			return bad("destination shard %d: want 0..%d and not the source %d", s, c.partitions-1, p.From)
		}
	}
	return nil
}

// moveBatchRetry retries a batch that lost a serialization race (a
// concurrent update of a selected row under REPEATABLE READ): nothing of
// the failed attempt committed.
func moveBatchRetry(ctx context.Context, conn *pgx.Conn, c collection, outcome int64, batch, from int, minID int64, to []int, n int) (Batch, error) {
	for attempt := 1; ; attempt++ {
		b, err := moveBatch(ctx, conn, c, outcome, batch, from, minID, to, n)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pgErr) || pgErr.Code != "40001" {
			return b, err
		}
	}
}

// moveBatch moves up to n rows of from, the lowest ids from minID on, to
// the shards of to in turn, in one REPEATABLE READ transaction, so what it
// verifies is one snapshot plus its own changes, whatever other sessions
// commit meanwhile.
func moveBatch(ctx context.Context, conn *pgx.Conn, c collection, outcome int64, batch, from int, minID int64, to []int, n int) (Batch, error) {
	b := Batch{OutcomeID: outcome, Number: batch}
	err := c.inTx(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT id FROM %s WHERE shard = $1 AND id >= $3 ORDER BY id LIMIT $2 FOR UPDATE`, c.table), from, n, minID)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		b.Rows = len(ids)
		dest := make([]int32, len(ids))
		for i := range ids {
			dest[i] = int32(to[i%len(to)])
		}
		for i := range min(len(to), len(ids)) {
			b.ToShards = append(b.ToShards, to[i])
		}
		var seen int64
		if err := tx.QueryRow(ctx, fmt.Sprintf(checksumSQL, c.table), from, ids).Scan(&seen, &b.ChecksumBefore); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
INSERT INTO ruvector.healing_moves (outcome_id, collection_id, batch, row_id, from_shard, to_shard)
SELECT $1, $2, $3, j.id, $4, j.t FROM unnest($5::bigint[], $6::int[]) j(id, t)`, outcome, c.id, batch, from, ids, dest); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE %s t SET shard = j.t FROM unnest($2::bigint[], $3::int[]) j(id, t)
WHERE t.shard = $1 AND t.id = j.id`, c.table), from, ids, dest)
		if err != nil {
			return err
		}
		var arrived int64
		if err := tx.QueryRow(ctx, fmt.Sprintf(checksumAtSQL, c.table), ids, dest).Scan(&arrived, &b.ChecksumAfter); err != nil {
			return err
		}
		var copies int64
		if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE id = ANY ($1)`, c.table), ids).Scan(&copies); err != nil {
			return err
		}
		k := int64(len(ids))
		switch {
		case tag.RowsAffected() != k:
			return fmt.Errorf("%w: batch %d updated %d rows, selected %d", ErrVerify, batch, tag.RowsAffected(), k)
		case seen != k || arrived != k || copies != k:
			return fmt.Errorf("%w: batch %d: %d rows before, %d arrived, %d copies, want %d", ErrVerify, batch, seen, arrived, copies, k)
		case b.ChecksumBefore != b.ChecksumAfter:
			return fmt.Errorf("%w: batch %d: checksum %s before, %s after", ErrVerify, batch, b.ChecksumBefore, b.ChecksumAfter)
		}
		_, err = tx.Exec(ctx, `
INSERT INTO ruvector.healing_move_batches (outcome_id, batch, collection_id, rows_moved, checksum_before, checksum_after, state)
VALUES ($1, $2, $3, $4, $5, $6, 'verified')`, outcome, batch, c.id, k, b.ChecksumBefore, b.ChecksumAfter)
		return err
	})
	if err != nil {
		return Batch{}, fmt.Errorf("rebalance: batch %d (%d rows, shard %d → %v) of outcome %d: %w", batch, n, from, to, outcome, err)
	}
	return b, nil
}

// revertBatch moves a batch's not yet reverted journal rows back to their
// from shards in one transaction, marks them reverted and the batch state.
// Rows deleted since the move are gone; they are marked reverted too (there
// is nothing to move back) and not counted.
func revertBatch(ctx context.Context, conn *pgx.Conn, c collection, outcome int64, batch int, state string) (int, error) {
	var moved int
	err := c.inTx(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT row_id, from_shard, to_shard FROM ruvector.healing_moves
WHERE outcome_id = $1 AND batch = $2 AND reverted_at IS NULL ORDER BY row_id FOR UPDATE`, outcome, batch)
		if err != nil {
			return err
		}
		var ids []int64
		var froms, tos []int32
		for rows.Next() {
			var id int64
			var f, t int32
			if err := rows.Scan(&id, &f, &t); err != nil {
				rows.Close()
				return err
			}
			ids, froms, tos = append(ids, id), append(froms, f), append(tos, t)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		var before, after string
		var n int64
		sum := fmt.Sprintf(checksumAtSQL, c.table)
		if err := tx.QueryRow(ctx, sum, ids, tos).Scan(&n, &before); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE %s t SET shard = j.f FROM unnest($1::bigint[], $2::int[], $3::int[]) j(id, f, s)
WHERE t.id = j.id AND t.shard = j.s`, c.table), ids, froms, tos)
		if err != nil {
			return err
		}
		moved = int(tag.RowsAffected())
		if err := tx.QueryRow(ctx, sum, ids, froms).Scan(&n, &after); err != nil {
			return err
		}
		if before != after {
			return fmt.Errorf("%w: reverting batch %d: checksum %s before, %s after", ErrVerify, batch, before, after)
		}
		if _, err := tx.Exec(ctx, `UPDATE ruvector.healing_moves SET reverted_at = now()
WHERE outcome_id = $1 AND batch = $2 AND reverted_at IS NULL`, outcome, batch); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE ruvector.healing_move_batches SET state = $3, at = now() WHERE outcome_id = $1 AND batch = $2`,
			outcome, batch, state)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rebalance: revert batch %d of outcome %d: %w", batch, outcome, err)
	}
	return moved, nil
}

// RollbackResult sums a rollback.
type RollbackResult struct {
	Batches int // batches reverted
	Rows    int // rows moved back
}

// Rollback moves back every journaled row of the outcome not yet
// reverted, newest batch first, one transaction per batch. It needs only
// the journal, so it works after the mover crashed; running it twice is
// harmless (the second finds nothing pending).
func Rollback(ctx context.Context, conn *pgx.Conn, outcomeID int64) (RollbackResult, error) {
	return RollbackWith(ctx, conn, outcomeID, nil)
}

// RollbackWith is Rollback with the moves back metered in ledger (see
// Plan.Ledger).
func RollbackWith(ctx context.Context, conn *pgx.Conn, outcomeID int64, ledger *ownload.Ledger) (RollbackResult, error) {
	var res RollbackResult
	rows, err := conn.Query(ctx, `SELECT DISTINCT collection_id, batch FROM ruvector.healing_moves
WHERE outcome_id = $1 AND reverted_at IS NULL ORDER BY batch DESC`, outcomeID)
	if err != nil {
		return res, fmt.Errorf("rebalance: rollback %d: %w", outcomeID, err)
	}
	type pending struct{ cid, batch int }
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pending, error) {
		var p pending
		return p, r.Scan(&p.cid, &p.batch)
	})
	if err != nil {
		return res, fmt.Errorf("rebalance: rollback %d: %w", outcomeID, err)
	}
	cols := map[int]collection{}
	for _, p := range ps {
		c, ok := cols[p.cid]
		if !ok {
			if c, err = loadCollectionByID(ctx, conn, p.cid); err != nil {
				return res, err
			}
			if c, err = c.withLeaves(ctx, conn, ledger); err != nil {
				return res, err
			}
			if c, err = c.withCapExemption(ctx, conn); err != nil {
				return res, err
			}
			cols[p.cid] = c
		}
		n, err := revertBatch(ctx, conn, c, outcomeID, p.batch, "reverted")
		if err != nil {
			return res, err
		}
		res.Batches++
		res.Rows += n
	}
	return res, nil
}

// Pending is how many journaled rows of the outcome are not reverted.
func Pending(ctx context.Context, conn *pgx.Conn, outcomeID int64) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_moves WHERE outcome_id = $1 AND reverted_at IS NULL`, outcomeID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("rebalance: pending %d: %w", outcomeID, err)
	}
	return n, nil
}
