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
//
// Waits and refusals under a throttle the sidecar set itself (a
// remediation's throttle_ingestion) are reported apart, in
// HealerWaitFraction and HealerRejectedPerSec, and not in the congestion
// the health graph judges: they are the price of that remediation, chosen
// and accounted in its outcome, not a fault of the collection. Counted as
// congestion they made every collection-wide throttle read as a collapse
// of the gateway (λ 0.01) and be rolled back even when it cured what it
// was for (a slow replica catching up: bench/RESULTS.md). Waits under
// manual throttles still count: the healer did not choose them.
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
	c          [shmproto.NumOps]shmproto.Counters
	// healer: the op's throttle was the sidecar's when sampled.
	healer [shmproto.NumOps]bool
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
	cur := gwSample{generation: info.Generation, slot: col.Slot}
	ops := []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert}
	for _, op := range ops {
		c, err := g.seg.ReadCounters(col.Slot, op)
		if err != nil {
			return fmt.Errorf("gateway: counters of %s: %w", shmproto.OpNames[op], err)
		}
		th, err := g.seg.ReadThrottle(col.Slot, op)
		if err != nil {
			return fmt.Errorf("gateway: throttle of %s: %w", shmproto.OpNames[op], err)
		}
		cur.c[op], cur.healer[op] = c, th.SetBy == shmproto.SetBySidecar && th.Pct > 0
	}
	cur.at = time.Now()

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.prev == nil {
		g.prev = map[int]gwSample{}
	}
	prev, had := g.prev[t.ID]
	g.prev[t.ID] = cur
	fresh := !had || prev.generation != cur.generation || prev.slot != cur.slot
	for _, op := range ops {
		a, b := prev.c[op], cur.c[op]
		if b.AdmittedRows < a.AdmittedRows || b.DelayedStatements < a.DelayedStatements ||
			b.WaitMicros < a.WaitMicros || b.RejectedStatements < a.RejectedStatements {
			fresh = true
		}
	}
	if fresh {
		s.Gateway = health.GatewaySignal{}
		return fmt.Errorf("gateway of %s: %w", t.Name, ErrFirstSample)
	}
	el := cur.at.Sub(prev.at)
	if el <= 0 {
		return fmt.Errorf("gateway of %s: no time elapsed since the previous sample", t.Name)
	}
	sec, us := el.Seconds(), float64(el.Microseconds())
	var gw health.GatewaySignal
	for _, op := range ops {
		a, b := prev.c[op], cur.c[op]
		gw.WriteRowsPerSec += float64(b.AdmittedRows-a.AdmittedRows) / sec
		delayed := float64(b.DelayedStatements-a.DelayedStatements) / sec
		rejected := float64(b.RejectedStatements-a.RejectedStatements) / sec
		// Summed over backends, so it can exceed 1 when several wait at once.
		wait := float64(b.WaitMicros-a.WaitMicros) / us
		// The sidecar's throttle at either end of the interval: its waits.
		if prev.healer[op] || cur.healer[op] {
			gw.HealerWaitFraction += wait
			gw.HealerRejectedPerSec += rejected
			continue
		}
		gw.DelayedPerSec += delayed
		gw.RejectedPerSec += rejected
		gw.WaitFraction += wait
	}
	s.Gateway = gw
	return nil
}
