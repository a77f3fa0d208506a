package workload

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Ledger is what the tool inserted: per shard, a count and an
// order-independent checksum (the sum of the first 60 bits of md5 of each
// row's embedding text). The server computes the same sum with SQL, so a
// lost, duplicated or altered row shows as a mismatch.
type Ledger struct {
	mu     sync.Mutex
	shards map[int]*Tally
}

// Tally is one shard's count and checksum.
type Tally struct {
	Count int64
	Sum   big.Int
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{shards: map[int]*Tally{}} }

// Add records one row.
func (l *Ledger) Add(shard int, v []float32) { l.AddText(shard, VectorText(v)) }

// AddText records one row by the server's text of its embedding.
func (l *Ledger) AddText(shard int, text string) { l.change(shard, text, 1) }

// RemoveText forgets one row the tool deleted.
func (l *Ledger) RemoveText(shard int, text string) { l.change(shard, text, -1) }

func (l *Ledger) change(shard int, text string, sign int64) {
	h := new(big.Int).SetUint64(rowHash(text))
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.shards[shard]
	if t == nil {
		t = &Tally{}
		l.shards[shard] = t
	}
	t.Count += sign
	if sign > 0 {
		t.Sum.Add(&t.Sum, h)
	} else {
		t.Sum.Sub(&t.Sum, h)
	}
}

func rowHash(text string) uint64 {
	sum := md5.Sum([]byte(text))
	x, _ := strconv.ParseUint(hex.EncodeToString(sum[:])[:15], 16, 64)
	return x
}

// Shards returns a copy of the per-shard tallies.
func (l *Ledger) Shards() map[int]Tally {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int]Tally, len(l.shards))
	for k, v := range l.shards {
		var t Tally
		t.Count = v.Count
		t.Sum.Set(&v.Sum)
		out[k] = t
	}
	return out
}

// Total is the tally over all shards.
func (l *Ledger) Total() Tally {
	var t Tally
	for _, s := range l.Shards() {
		t.Count += s.Count
		t.Sum.Add(&t.Sum, &s.Sum)
	}
	return t
}

// Check compares the ledger with the server.
type Check struct {
	Ledger, Server map[int]Tally
	LedgerTotal    Tally
	ServerTotal    Tally
}

// TotalOK: the server holds exactly the rows the ledger inserted (plus
// rows others inserted would show as a mismatch: use a collection the
// tool owns).
func (c Check) TotalOK() bool {
	return c.LedgerTotal.Count == c.ServerTotal.Count && c.LedgerTotal.Sum.Cmp(&c.ServerTotal.Sum) == 0
}

// ShardsOK: every shard holds what the ledger put there (false after rows
// were moved between shards on purpose).
func (c Check) ShardsOK() bool {
	keys := slices.Sorted(maps.Keys(c.Ledger))
	for k := range c.Server {
		if _, ok := c.Ledger[k]; !ok && c.Server[k].Count > 0 {
			return false
		}
	}
	for _, k := range keys {
		a, b := c.Ledger[k], c.Server[k]
		if a.Count != b.Count || a.Sum.Cmp(&b.Sum) != 0 {
			return false
		}
	}
	return true
}

func (c Check) String() string {
	return fmt.Sprintf("ledger %d rows (sum %s), server %d rows (sum %s)",
		c.LedgerTotal.Count, c.LedgerTotal.Sum.String(), c.ServerTotal.Count, c.ServerTotal.Sum.String())
}

// ChecksumSQL is the server side of the ledger's checksum, per shard.
const ChecksumSQL = `SELECT shard, count(*),
       coalesce(sum(('x' || substr(md5(embedding::text), 1, 15))::bit(60)::bigint::numeric), 0)::text
FROM %s GROUP BY shard`

// Verify reads the server's per-shard counts and checksums.
func (l *Ledger) Verify(ctx context.Context, pool *pgxpool.Pool, table string) (Check, error) {
	c := Check{Ledger: l.Shards(), Server: map[int]Tally{}}
	rows, err := pool.Query(ctx, fmt.Sprintf(ChecksumSQL, table))
	if err != nil {
		return c, fmt.Errorf("workload: verify %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var shard int
		var n int64
		var sum string
		if err := rows.Scan(&shard, &n, &sum); err != nil {
			return c, fmt.Errorf("workload: verify %s: %w", table, err)
		}
		var t Tally
		t.Count = n
		if _, ok := t.Sum.SetString(sum, 10); !ok {
			return c, fmt.Errorf("workload: verify %s: bad checksum %q", table, sum)
		}
		c.Server[shard] = t
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("workload: verify %s: %w", table, err)
	}
	for _, t := range c.Ledger {
		c.LedgerTotal.Count += t.Count
		c.LedgerTotal.Sum.Add(&c.LedgerTotal.Sum, &t.Sum)
	}
	for _, t := range c.Server {
		c.ServerTotal.Count += t.Count
		c.ServerTotal.Sum.Add(&c.ServerTotal.Sum, &t.Sum)
	}
	return c, nil
}
