package remedy

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// partitionResidency is the resident pages of each partition's files
// (table, TOAST, indexes; every fork and segment), keyed by file.
func partitionResidency(t *testing.T, ctx context.Context, env *sensortest.Env, part string) map[string]residency {
	t.Helper()
	var relid int64
	if err := env.Conn.QueryRow(ctx, `SELECT $1::regclass::oid::int8`, part).Scan(&relid); err != nil {
		t.Fatal(err)
	}
	files, err := relationFiles(ctx, env.Conn, env.Server.DataDir, relid)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("%s: expected table and index files, got %v", part, files)
	}
	out := map[string]residency{}
	for _, f := range files {
		r, err := fileResidency(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = r
	}
	return out
}

// residentAgain counts the pages of before that are resident in now.
//
// Checks on it allow 5% to be missing: this machine runs DAMON with a
// physical-address "pageout" scheme (/sys/kernel/mm/damon), which
// reclaims clean pages it sees idle at any moment, so a page can leave the
// cache between the strategy's read and the test's look (seen in CI).
func residentAgain(before, now map[string]residency) (back, total int64) {
	for f, was := range before {
		set := map[int64]bool{}
		for _, r := range now[f].Ranges {
			for i := r.Start; i < r.Start+r.Len; i++ {
				set[i] = true
			}
		}
		for _, r := range was.Ranges {
			for i := r.Start; i < r.Start+r.Len; i++ {
				total++
				if set[i] {
					back++
				}
			}
		}
	}
	return back, total
}

func residentPages(m map[string]residency) int64 {
	var n int64
	for _, r := range m {
		n += r.Resident
	}
	return n
}

func TestEvictColdData(t *testing.T) {
	ctx := context.Background()
	env := sensortest.Start(t, ctx, 4, `
CREATE INDEX emb_shard_idx ON emb (id);
INSERT INTO emb (embedding, shard)
SELECT array_fill(random()::real, ARRAY[32]), g % 4 FROM generate_series(1, 80000) g;
CHECKPOINT;`)
	// Partitions 0 and 1 are read a lot, 2 and 3 once: all four are cached.
	for i := 0; i < 20; i++ {
		for _, p := range []string{"emb_0", "emb_1"} {
			if _, err := env.Conn.Exec(ctx, `SELECT count(*), sum(id) FROM `+p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range []string{"emb_2", "emb_3"} {
		if _, err := env.Conn.Exec(ctx, `SELECT count(*), sum(id) FROM `+p); err != nil {
			t.Fatal(err)
		}
	}
	// Statistics reach the cumulative view when the backend flushes them.
	if _, err := env.Conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	before := map[string]map[string]residency{}
	for _, p := range []string{"emb_0", "emb_1", "emb_2", "emb_3"} {
		before[p] = partitionResidency(t, ctx, env, p)
		t.Logf("%s resident before: %d pages", p, residentPages(before[p]))
		if residentPages(before[p]) == 0 {
			t.Fatalf("setup: %s is not in the page cache", p)
		}
	}

	s := &EvictColdData{Dial: dialer(env), ActivityWindow: 200 * time.Millisecond}
	rc := &strategy.Context{Collection: "emb", CollectionID: int64(env.Target.ID),
		Recorder: &strategy.MemoryRecorder{}, Started: time.Now(), Timeout: 2 * s.EstimatedDuration()}

	p, err := s.Plan(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if p.Noop || len(p.Steps) != 2 || p.Steps[0].Target+p.Steps[1].Target != "emb_2emb_3" && p.Steps[0].Target+p.Steps[1].Target != "emb_3emb_2" {
		t.Fatalf("plan %+v, want to evict emb_2 and emb_3", p)
	}
	if got := residentPages(partitionResidency(t, ctx, env, "emb_2")); got*100 < residentPages(before["emb_2"])*95 {
		t.Fatalf("the plan evicted something: %d -> %d pages", residentPages(before["emb_2"]), got)
	}
	if acts, _ := rc.Actions(); len(acts) != 0 {
		t.Fatalf("the plan recorded %d actions", len(acts))
	}

	res, err := s.Execute(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(res.Metadata)
	t.Logf("result: %+v %s", res, meta)
	regained, _ := res.Metadata["memory_regained_bytes"].(int64)
	if !res.Success || regained <= 0 {
		t.Fatalf("want memory regained > 0, got %+v", res)
	}
	ps := int64(os.Getpagesize())
	var measured int64
	for _, part := range []string{"emb_2", "emb_3"} {
		after := residentPages(partitionResidency(t, ctx, env, part))
		t.Logf("%s resident after: %d pages (was %d)", part, after, residentPages(before[part]))
		if after*10 > residentPages(before[part]) {
			t.Errorf("%s: %d of %d pages still resident", part, after, residentPages(before[part]))
		}
		measured += (residentPages(before[part]) - after) * ps
	}
	for _, part := range []string{"emb_0", "emb_1"} {
		if after := residentPages(partitionResidency(t, ctx, env, part)); after < residentPages(before[part]) {
			t.Errorf("hot partition %s lost cache: %d -> %d pages", part, residentPages(before[part]), after)
		}
	}
	if regained < measured/2 {
		t.Errorf("reported %d bytes regained, measured %d", regained, measured)
	}
	// The rows are all still there, from disk.
	var n int64
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM emb`).Scan(&n); err != nil || n != 80000 {
		t.Fatalf("rows after eviction: %d, %v", n, err)
	}

	// Rollback from the recorded JSON only, as after a restart.
	acts, _ := rc.Actions()
	rec := &strategy.MemoryRecorder{}
	for _, a := range acts {
		var v json.RawMessage = a
		if err := rec.Record(v); err != nil {
			t.Fatal(err)
		}
	}
	// Evict again first, so the rollback (not the count(*) above) brings
	// the pages back.
	for _, part := range []string{"emb_2", "emb_3"} {
		for f := range before[part] {
			if err := dropFromCache(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Rollback(ctx, &strategy.Context{Collection: "emb", CollectionID: int64(env.Target.ID), Recorder: rec}); err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"emb_2", "emb_3"} {
		now := partitionResidency(t, ctx, env, part)
		// Every page that was resident is resident again (residentAgain).
		if back, total := residentAgain(before[part], now); total == 0 || back*100 < total*95 {
			t.Fatalf("%s: %d of %d pages resident before are resident after rollback", part, back, total)
		}
		t.Logf("%s resident after rollback: %d pages (was %d)", part, residentPages(now), residentPages(before[part]))
	}
}
