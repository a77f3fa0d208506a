package scorecard

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/bench/workload"
)

// Op kinds the recorder keeps.
const (
	OpInsert = iota
	OpSearch
)

// Result kinds.
const (
	ResultOK = iota
	ResultThrottled
	ResultError
)

type event struct {
	at     time.Time
	op     uint8
	result uint8
	rows   int32
	lat    time.Duration
}

// Recorder keeps every workload statement's completion time and latency,
// so throughput and latency can be cut into phases after the fact.
type Recorder struct {
	mu     sync.Mutex
	events []event
}

// Add records one statement that completed at at.
func (r *Recorder) Add(at time.Time, op, result, rows int, lat time.Duration) {
	r.mu.Lock()
	r.events = append(r.events, event{at: at, op: uint8(op), result: uint8(result), rows: int32(rows), lat: lat})
	r.mu.Unlock()
}

// Phase summarises the statements that completed in [from, to).
func (r *Recorder) Phase(from, to time.Time) Phase {
	p := Phase{Seconds: to.Sub(from).Seconds()}
	if p.Seconds <= 0 {
		return Phase{}
	}
	var ins, srch []time.Duration
	r.mu.Lock()
	for _, e := range r.events {
		if e.at.Before(from) || !e.at.Before(to) {
			continue
		}
		switch {
		case e.result == ResultThrottled:
			p.Throttled++
		case e.result == ResultError:
			p.Errors++
		case e.op == OpInsert:
			p.Rows += int(e.rows)
			ins = append(ins, e.lat)
		default:
			p.Searches++
			srch = append(srch, e.lat)
		}
	}
	r.mu.Unlock()
	p.InsertCount = len(ins)
	p.InsertP50, p.InsertP99 = Percentile(ins, 0.5), Percentile(ins, 0.99)
	p.SearchP50, p.SearchP99 = Percentile(srch, 0.5), Percentile(srch, 0.99)
	return p
}

// Classify maps a statement's error to a result kind: the write gate
// refuses or times out throttled writes with SQLSTATE 53000.
func Classify(err error) int {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return ResultOK
	case errors.As(err, &pe) && pe.Code == "53000":
		return ResultThrottled
	default:
		return ResultError
	}
}

// DriverOptions shape the workload. Rate 0 means closed loop (as fast as
// the server admits) with Writers and Searchers sessions.
type DriverOptions struct {
	Rate       float64 // routed single-row inserts per second, all writers together
	SearchRate float64 // searches per second, all searchers together
	Writers    int
	Searchers  int
	K, Probes  int
}

// Drive runs the workload until ctx ends, recording every statement.
func Drive(ctx context.Context, w *workload.Workload, o DriverOptions, rec *Recorder) {
	if o.Writers <= 0 {
		o.Writers = 1
	}
	if o.Searchers <= 0 {
		o.Searchers = 1
	}
	if o.K == 0 {
		o.K = 10
	}
	if o.Probes == 0 {
		o.Probes = 4
	}
	// Statements run to completion when the workload stops: a statement
	// cancelled after its commit would be in the table and not in the
	// ledger. ctx only ends the loops.
	sctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	loop := func(n int, perSec float64, step func() (op, rows int, err error)) {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var interval time.Duration
				if perSec > 0 {
					interval = time.Duration(float64(time.Second) * float64(n) / perSec)
				}
				next := time.Now()
				for ctx.Err() == nil {
					start := time.Now()
					op, rows, err := step()
					res := Classify(err)
					rec.Add(time.Now(), op, res, rows, time.Since(start))
					if res != ResultOK {
						// A refused write is the throttle working: back off
						// a little, as an application would.
						sleepCtx(ctx, 20*time.Millisecond)
					}
					if interval > 0 {
						next = next.Add(interval)
						if d := time.Until(next); d > 0 {
							sleepCtx(ctx, d)
						} else if d < -time.Second {
							next = time.Now() // fell behind: do not burst to catch up
						}
					}
				}
			}()
		}
	}
	loop(o.Writers, o.Rate, func() (int, int, error) {
		c, cancel := context.WithTimeout(sctx, time.Minute)
		defer cancel()
		return OpInsert, 1, w.InsertRouted(c, 1)
	})
	if o.SearchRate >= 0 {
		loop(o.Searchers, o.SearchRate, func() (int, int, error) {
			c, cancel := context.WithTimeout(sctx, time.Minute)
			defer cancel()
			_, _, err := w.Search(c, o.K, o.Probes)
			return OpSearch, 0, err
		})
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// median of a float slice (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
