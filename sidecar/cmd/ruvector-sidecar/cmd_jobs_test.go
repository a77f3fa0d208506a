package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
)

// lockedBuffer lets the test read what a running --watch has written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestJobsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, state, progress, owner, created_at, started_at)
SELECT collection_id, 'centroid_rebuild', 500, 'running', 0.4, 'sidecar@test:42', now() - interval '5 minutes',
       now() - interval '3 minutes'
FROM ruvector.collections WHERE name = 'emb';
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, state)
SELECT collection_id, 'vacuum', 50, 'queued' FROM ruvector.collections WHERE name = 'emb';
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, state, progress, created_at, started_at, finished_at, error)
SELECT collection_id, 'compaction', 'failed', 0.7, now() - interval '1 hour', now() - interval '50 minutes',
       now() - interval '40 minutes', 'disk full'
FROM ruvector.collections WHERE name = 'emb';`)
	dsn := env.Cluster.DSN("postgres")
	var out bytes.Buffer
	if err := runJobs(ctx, []string{"--dsn", dsn}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "JOB") {
		t.Fatalf("want a header and 3 jobs:\n%s", text)
	}
	// Open jobs by priority first, then the finished one.
	for i, want := range [][]string{
		{"centroid_rebuild", "running", "[########------------]  40%", "sidecar@test:42", "5m0s", "running for 3m0s"},
		{"vacuum", "queued", "[--------------------]   0%", " - "},
		{"compaction", "failed", "[##############------]  70%", "1h0m", "disk full"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
	// Columns line up: PROGRESS starts at the same offset in every row.
	col := strings.Index(lines[0], "PROGRESS")
	for _, l := range lines[1:] {
		if strings.Index(l, "[") != col {
			t.Errorf("progress column at %d, header at %d:\n%s", strings.Index(l, "["), col, text)
		}
	}

	// --watch refreshes until interrupted, sees progress move, and exits
	// cleanly on Ctrl-C (the context main cancels on SIGINT).
	wctx, stop := context.WithCancel(ctx)
	var live lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runJobs(wctx, []string{"--dsn", dsn, "--watch", "--interval", "100ms"}, &live) }()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(live.String(), "--- ") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	env.Cluster.MustExec(ctx, `UPDATE ruvector.maintenance_jobs SET progress = 0.9 WHERE kind = 'centroid_rebuild'`)
	for !strings.Contains(live.String(), "[##################--]  90%") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("--watch ended with %v after Ctrl-C", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--watch did not stop on Ctrl-C")
	}
	got := live.String()
	if strings.Count(got, "--- ") < 3 || !strings.Contains(got, "[##################--]  90%") {
		t.Errorf("--watch did not refresh with the new progress:\n%s", got)
	}
	if strings.Contains(got, "\033[") {
		t.Errorf("screen-clearing codes written to a non-terminal")
	}

	for _, bad := range [][]string{{"--interval", "0s"}, {"extra"}} {
		if err := runJobs(ctx, append([]string{"--dsn", dsn}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		p    float32
		want string
	}{{0, "[----------]   0%"}, {0.25, "[###-------]  25%"}, {1, "[##########] 100%"}, {1.5, "[##########] 100%"}, {-1, "[----------]   0%"}} {
		if got := progressBar(tc.p, 10); got != tc.want {
			t.Errorf("progressBar(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}
