package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
)

// The command creates a collection, drives it with a hot partition and
// reports a matching ledger; a bad injector is refused.
func TestCommand(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector`)
	bin := filepath.Join(t.TempDir(), "ruvector-workload")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-dsn", c.DSN("postgres"), "-collection", "cmdc", "-create", "-dim", "4", "-partitions", "4",
		"-lists", "4", "-preload", "500", "-rate", "100", "-inject", "hot_partition", "-shard", "3", "-hot-rate", "300", "-duration", "2s").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"created collection cmdc", "hot_partition:", "into shard 3", "every inserted row is present"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	var hot, total int
	conn := c.Connect(ctx, "postgres")
	_ = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE shard = 3), count(*) FROM cmdc`).Scan(&hot, &total)
	if hot*2 < total {
		t.Fatalf("shard 3 holds %d of %d rows: not hot", hot, total)
	}
	out, err = exec.Command(bin, "-dsn", c.DSN("postgres"), "-collection", "cmdc", "-inject", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `-inject "nope"`) {
		t.Fatalf("bad injector: %v\n%s", err, out)
	}
}
