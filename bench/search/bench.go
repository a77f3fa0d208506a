package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

// Config is one benchmark run.
type Config struct {
	Collection string
	Dim        int
	Partitions int
	Lists      int
	Rows       int     // rows of the initial (clustered) distribution
	Drift      int     // rows inserted after training, from the drifted blob
	Spread     float64 // the blob's spread (workload.Drift)
	Queries    int
	K          int
	Probes     []int
	Seed       uint64
	// Rounds > 1 switches back to the skewed version (ivf.RollbackTo: the
	// same assignment as before) and forward again, measuring each time:
	// before, after, before, after... so that a change in the machine's
	// load between the two phases shows as a difference between rounds.
	Rounds int
}

// Phase is the collection measured at one moment.
type Phase struct {
	Version    int     `json:"version"`
	SkewFactor float64 `json:"skew_factor"`
	LargestPct float64 `json:"largest_list_pct"`
	// ByProbes holds one measurement per probes value, in Config order.
	ByProbes []ivf.RecallReport `json:"by_probes"`
}

// Round is one before/after pair.
type Round struct {
	Before Phase `json:"before"`
	After  Phase `json:"after"`
}

// Result is the whole run.
type Result struct {
	Config  Config        `json:"config"`
	Total   int64         `json:"rows"`
	Rounds  []Round       `json:"rounds"`
	Rebuild time.Duration `json:"rebuild_ns"`
	// Switch is how long each later switch of version took (activate +
	// reassign every row).
	Switch []time.Duration `json:"switch_ns,omitempty"`
}

// run builds the skewed collection (train on the clustered rows, then
// drift: the new rows all land in the lists nearest the blob), measures,
// rebuilds (train + reassign), measures again. Both measurements use the
// same query seed, so they search for the same vectors (ivf.Recall picks
// rows by a hash of their ids; the rebuild changes lists, not rows).
func run(ctx context.Context, pool *pgxpool.Pool, conn *pgx.Conn, cfg Config, log io.Writer) (Result, error) {
	res := Result{Config: cfg}
	step := func(format string, a ...any) {
		fmt.Fprintf(log, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, a...)...)
	}
	if err := workload.Create(ctx, pool, cfg.Collection, cfg.Dim, cfg.Partitions, cfg.Lists); err != nil {
		return res, err
	}
	w, err := workload.Open(ctx, pool, cfg.Collection, cfg.Seed)
	if err != nil {
		return res, err
	}
	step("insert %d clustered rows", cfg.Rows)
	for done := 0; done < cfg.Rows; {
		n := min(5000, cfg.Rows-done)
		if err := w.CopyInsert(ctx, n, nil); err != nil {
			return res, err
		}
		done += n
	}
	step("train %d lists and assign", cfg.Lists)
	if _, err := ivf.Rebuild(ctx, conn, cfg.Collection, ivf.TrainOptions{Seed: cfg.Seed}, 5000, nil); err != nil {
		return res, err
	}
	step("drift: %d rows in one blob", cfg.Drift)
	if err := w.Drift(ctx, cfg.Drift, nil, cfg.Spread); err != nil {
		return res, err
	}
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s`, w.Table)).Scan(&res.Total); err != nil {
		return res, fmt.Errorf("count rows: %w", err)
	}
	var skewed, rebuilt int
	for round := 0; round < max(cfg.Rounds, 1); round++ {
		var rd Round
		if round > 0 {
			step("round %d: back to the skewed version %d", round+1, skewed)
			t0 := time.Now()
			if err := ivf.RollbackTo(ctx, conn, cfg.Collection, skewed, 5000, nil); err != nil {
				return res, err
			}
			res.Switch = append(res.Switch, time.Since(t0))
		}
		if rd.Before, err = measure(ctx, conn, cfg, w.Table, step); err != nil {
			return res, err
		}
		t0 := time.Now()
		if round == 0 {
			skewed = rd.Before.Version
			step("rebuild (train + reassign)")
			if rebuilt, err = ivf.Rebuild(ctx, conn, cfg.Collection, ivf.TrainOptions{Seed: cfg.Seed + 1}, 5000, nil); err != nil {
				return res, err
			}
			res.Rebuild = time.Since(t0)
		} else {
			step("round %d: forward to the rebuilt version %d", round+1, rebuilt)
			if err := ivf.RollbackTo(ctx, conn, cfg.Collection, rebuilt, 5000, nil); err != nil {
				return res, err
			}
			res.Switch = append(res.Switch, time.Since(t0))
		}
		if rd.After, err = measure(ctx, conn, cfg, w.Table, step); err != nil {
			return res, err
		}
		res.Rounds = append(res.Rounds, rd)
	}
	return res, nil
}

// measure vacuums and analyzes first (the reassignment leaves a dead
// version of every moved row; autovacuum would clean it, but not on a
// schedule the benchmark controls), warms the cache, then measures each
// probes value.
func measure(ctx context.Context, conn *pgx.Conn, cfg Config, table string, step func(string, ...any)) (Phase, error) {
	var p Phase
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
		return p, fmt.Errorf("vacuum analyze: %w", err)
	}
	sk, err := ivf.Skew(ctx, conn, cfg.Collection)
	if err != nil {
		return p, err
	}
	p.Version, p.SkewFactor = sk.Version, sk.Factor
	var total int64
	for _, n := range sk.Sizes {
		total += n
	}
	if total > 0 {
		p.LargestPct = 100 * float64(sk.Max) / float64(total)
	}
	step("version %d: skew factor %.1f, largest list %.1f%% of rows", p.Version, p.SkewFactor, p.LargestPct)
	if _, err := ivf.Recall(ctx, conn, cfg.Collection, ivf.RecallOptions{Queries: 20, K: cfg.K, Probes: cfg.Probes[0], Seed: cfg.Seed + 99}); err != nil {
		return p, fmt.Errorf("warm-up: %w", err)
	}
	curve, err := ivf.RecallCurve(ctx, conn, cfg.Collection, ivf.RecallOptions{Queries: cfg.Queries, K: cfg.K, Seed: cfg.Seed}, cfg.Probes)
	if err != nil {
		return p, err
	}
	for i, probes := range cfg.Probes {
		r := curve[i]
		step("  probes %d: recall@%d %.3f, p50 %v, p99 %v, %.0f rows scanned per search (exact scan p50 %v)",
			probes, cfg.K, r.RecallAtK, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Scanned,
			r.ExactP50.Round(time.Microsecond))
	}
	p.ByProbes = curve
	return p, nil
}

// markdown prints the result as the table bench/RESULTS.md takes.
func markdown(w io.Writer, r Result) {
	c := r.Config
	fmt.Fprintf(w, "Collection: %d rows (%d clustered, then %d drifted into one blob of spread %g), dim %d, %d partitions, %d lists; %d queries (own rows + 1%% noise), k = %d; %d round(s); rebuild (train + reassign) took %v",
		r.Total, c.Rows, c.Drift, c.Spread, c.Dim, c.Partitions, c.Lists, c.Queries, c.K, len(r.Rounds), r.Rebuild.Round(time.Millisecond))
	for _, d := range r.Switch {
		fmt.Fprintf(w, ", a switch of version %v", d.Round(time.Millisecond))
	}
	fmt.Fprintf(w, ".\n\n")
	b0, a0 := r.Rounds[0].Before, r.Rounds[0].After
	fmt.Fprintf(w, "| | version | skew factor (max/median) | largest list |\n|---|---|---|---|\n")
	fmt.Fprintf(w, "| before (skewed) | %d | %.1f | %.1f%% |\n", b0.Version, b0.SkewFactor, b0.LargestPct)
	fmt.Fprintf(w, "| after rebuild | %d | %.1f | %.1f%% |\n\n", a0.Version, a0.SkewFactor, a0.LargestPct)
	fmt.Fprintf(w, "Search p50/p99 is ruvector_ivf_search's round trip; \"/ exact\" divides its p50 by the p50 of the exact scan measured on the same queries in the same transactions (a gauge of the machine's load at that moment).\n\n")
	fmt.Fprintf(w, "| probes | round | phase | recall@%d | worst query | search p50 | search p99 | rows scanned / search | exact scan p50 | p50 / exact |\n|---|---|---|---|---|---|---|---|---|---|\n", c.K)
	for i, probes := range c.Probes {
		for k, rd := range r.Rounds {
			for _, ph := range []struct {
				name string
				p    Phase
			}{{"before", rd.Before}, {"after", rd.After}} {
				m := ph.p.ByProbes[i]
				fmt.Fprintf(w, "| %d | %d | %s | %.3f | %.1f | %s | %s | %.0f | %s | %.2f |\n", probes, k+1, ph.name, m.RecallAtK, m.MinRecall,
					ms(m.P50), ms(m.P99), m.Scanned, ms(m.ExactP50), float64(m.P50)/float64(max(m.ExactP50, 1)))
			}
		}
	}
	fmt.Fprintf(w, "\nAt equal cost (ivf.MatchedCost: the rebuilt version at the fewest probes that scan at least as many rows as the skewed one):\n\n")
	fmt.Fprintf(w, "| skewed: probes, rows scanned, recall@%d | rebuilt: probes, rows scanned, recall@%d |\n|---|---|\n", c.K, c.K)
	for _, b := range b0.ByProbes {
		m, ok := ivf.MatchedCost(a0.ByProbes, b.Scanned)
		note := ""
		if !ok {
			note = " (curve ends below that cost)"
		}
		fmt.Fprintf(w, "| %d, %.0f, %.3f | %d, %.0f, %.3f%s |\n", b.Probes, b.Scanned, b.RecallAtK, m.Probes, m.Scanned, m.RecallAtK, note)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
