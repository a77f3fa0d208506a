package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
)

// A small run on a real server: the drift skews the lists, the rebuild
// brings skew and the rows a search scans down, and the table has a
// before and an after line per probes value.
func TestRunSmall(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing`)
	pool, err := pgxpool.New(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn := c.Connect(ctx, "postgres")
	cfg := Config{Collection: "bs", Dim: 8, Partitions: 2, Lists: 16, Rows: 3000, Drift: 3000, Spread: 2,
		Queries: 40, K: 10, Probes: []int{2, 16}, Seed: 1, Rounds: 2}
	var log bytes.Buffer
	res, err := run(ctx, pool, conn, cfg, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(log.String())
	if len(res.Rounds) != 2 || len(res.Switch) != 2 {
		t.Fatalf("%d rounds, %d switches, want 2 and 2", len(res.Rounds), len(res.Switch))
	}
	b, a := res.Rounds[0].Before, res.Rounds[0].After
	if res.Total != 6000 || a.Version <= b.Version || len(b.ByProbes) != 2 || len(a.ByProbes) != 2 {
		t.Fatalf("result %+v", res)
	}
	// The second round measures the same two assignments again: the same
	// versions, skew, rows scanned and recall (only latency may differ).
	b2, a2 := res.Rounds[1].Before, res.Rounds[1].After
	if b2.Version != b.Version || a2.Version != a.Version || b2.SkewFactor != b.SkewFactor || a2.SkewFactor != a.SkewFactor ||
		b2.ByProbes[0].Scanned != b.ByProbes[0].Scanned || a2.ByProbes[0].RecallAtK != a.ByProbes[0].RecallAtK {
		t.Fatalf("round 2 differs from round 1:\n%+v\n%+v", res.Rounds[0], res.Rounds[1])
	}
	if a.SkewFactor >= 0.6*b.SkewFactor {
		t.Fatalf("skew %.2f after the rebuild, %.2f before: want it down by 40%%", a.SkewFactor, b.SkewFactor)
	}
	if a.ByProbes[0].Scanned >= 0.8*b.ByProbes[0].Scanned {
		t.Fatalf("rows scanned per search %.0f after, %.0f before: want fewer", a.ByProbes[0].Scanned, b.ByProbes[0].Scanned)
	}
	for _, p := range []Phase{b, a, b2, a2} {
		if r := p.ByProbes[1]; r.RecallAtK != 1 || r.Scanned != 6000 {
			t.Fatalf("probes = lists: %+v, want an exact search", r)
		}
	}
	var md bytes.Buffer
	markdown(&md, res)
	if n := strings.Count(md.String(), "| before |") + strings.Count(md.String(), "| after |"); n != 8 {
		t.Fatalf("%d before/after rows in\n%s", n, md.String())
	}
	t.Log("\n" + md.String())
}
