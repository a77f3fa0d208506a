// Command search is the search benchmark of "Collections" (issue 4): on a
// collection whose IVF lists a drifted distribution has skewed, the
// latency (p50, p99) and recall@k of ruvector_ivf_search before and after
// a centroid rebuild, measured in one run on one server. It connects with
// the libpq environment (PGHOST, PGPORT, ...); run.sh starts a private
// cluster for it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.Collection, "collection", "bench_search", "collection to create")
	flag.IntVar(&cfg.Dim, "dim", 32, "vector dimension")
	flag.IntVar(&cfg.Partitions, "partitions", 8, "partitions")
	flag.IntVar(&cfg.Lists, "lists", 64, "IVF lists")
	flag.IntVar(&cfg.Rows, "rows", 40000, "clustered rows before training")
	flag.IntVar(&cfg.Drift, "drift", 40000, "drifted rows after training")
	flag.Float64Var(&cfg.Spread, "spread", 2, "spread of the drifted blob")
	flag.IntVar(&cfg.Queries, "queries", 200, "query vectors per measurement")
	flag.IntVar(&cfg.Rounds, "rounds", 2, "before/after rounds (later rounds switch versions back and forth)")
	flag.IntVar(&cfg.K, "k", 10, "neighbours per search")
	probes := flag.String("probes", "4,8,16,32", "comma-separated probes values, ascending (the first is the warm-up's)")
	seed := flag.Uint64("seed", 1, "seed of the data, training and queries")
	out := flag.String("out", "", "write the JSON result here")
	flag.Parse()
	cfg.Seed = *seed
	for _, s := range strings.Split(*probes, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || p < 1 {
			fmt.Fprintf(os.Stderr, "bench-search: -probes %q: want positive integers separated by commas\n", *probes)
			os.Exit(2)
		}
		if n := len(cfg.Probes); n > 0 && p <= cfg.Probes[n-1] {
			fmt.Fprintf(os.Stderr, "bench-search: -probes %q: want ascending values\n", *probes)
			os.Exit(2)
		}
		cfg.Probes = append(cfg.Probes, p)
	}
	if err := mainErr(cfg, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench-search:", err)
		os.Exit(1)
	}
}

func mainErr(cfg Config, out string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pcfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	conn, err := pgx.Connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS ruvector_healing`); err != nil {
		return err
	}
	res, err := run(ctx, pool, conn, cfg, os.Stderr)
	if err != nil {
		return err
	}
	markdown(os.Stdout, res)
	if out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	}
	return nil
}
