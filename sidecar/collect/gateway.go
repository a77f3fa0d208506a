package collect

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Gateway measures the write gate from the shared segment's counters (no
// SQL): admitted rows, delayed and rejected statements per second, and the
// share of wall time statements spent waiting, summed over the insert and
// bulk_insert ops.
type Gateway struct {
	// Interval is the cadence (default 1 s: reading the segment is cheap).
	Interval time.Duration

	seg  *shmproto.Segment
	mu   sync.Mutex
	prev map[int]gwSample // by Target.ID
}

type gwSample struct {
	at         time.Time
	generation uint64
	slot       int
	c          shmproto.Counters
}

// NewGateway returns the gateway collector over a mapped segment.
func NewGateway(seg *shmproto.Segment) *Gateway { return &Gateway{seg: seg} }

func (g *Gateway) Name() string { return "gateway" }

func (g *Gateway) Cadence() time.Duration { return orDefault(g.Interval, time.Second) }

// Collect reads the collection's counters. The first sample, and the first
// after the segment was recreated (server restart: new generation, counters
// back to zero) or the collection moved to another slot, sets no rates and
// returns ErrFirstSample.
func (g *Gateway) Collect(ctx context.Context, _ Querier, t Target, s *health.Signals) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	info, err := g.seg.Info()
	if err != nil {
		return fmt.Errorf("gateway: segment: %w", err)
	}
	col, err := g.seg.Find(t.Name, t.DatabaseOID)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	var sum shmproto.Counters
	for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
		c, err := g.seg.ReadCounters(col.Slot, op)
		if err != nil {
			return fmt.Errorf("gateway: counters of %s: %w", shmproto.OpNames[op], err)
		}
		sum.AdmittedRows += c.AdmittedRows
		sum.DelayedStatements += c.DelayedStatements
		sum.WaitMicros += c.WaitMicros
		sum.RejectedStatements += c.RejectedStatements
	}
	cur := gwSample{at: time.Now(), generation: info.Generation, slot: col.Slot, c: sum}

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.prev == nil {
		g.prev = map[int]gwSample{}
	}
	prev, had := g.prev[t.ID]
	g.prev[t.ID] = cur
	if !had || prev.generation != cur.generation || prev.slot != cur.slot ||
		sum.AdmittedRows < prev.c.AdmittedRows || sum.DelayedStatements < prev.c.DelayedStatements ||
		sum.WaitMicros < prev.c.WaitMicros || sum.RejectedStatements < prev.c.RejectedStatements {
		s.Gateway = health.GatewaySignal{}
		return fmt.Errorf("gateway of %s: %w", t.Name, ErrFirstSample)
	}
	el := cur.at.Sub(prev.at)
	if el <= 0 {
		return fmt.Errorf("gateway of %s: no time elapsed since the previous sample", t.Name)
	}
	s.Gateway = health.GatewaySignal{
		WriteRowsPerSec: float64(sum.AdmittedRows-prev.c.AdmittedRows) / el.Seconds(),
		DelayedPerSec:   float64(sum.DelayedStatements-prev.c.DelayedStatements) / el.Seconds(),
		RejectedPerSec:  float64(sum.RejectedStatements-prev.c.RejectedStatements) / el.Seconds(),
		// Summed over backends, so it can exceed 1 when several wait at once.
		WaitFraction: float64(sum.WaitMicros-prev.c.WaitMicros) / float64(el.Microseconds()),
	}
	return nil
}
