package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/collect"
)

type stepStats struct {
	mu    sync.Mutex
	s     []collect.CollectorStats
	looks int // Stats calls: the loop's baseline, then one per look
}

func (f *stepStats) Stats() []collect.CollectorStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.looks++
	return append([]collect.CollectorStats(nil), f.s...)
}

func (f *stepStats) lookCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.looks
}

// waitLooks waits until the loop has looked at the stats n times in all:
// fixed sleeps raced the loop's goroutine on a loaded machine.
func (f *stepStats) waitLooks(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); f.lookCount() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the loop looked at the stats %d times in 30 s, want %d", f.lookCount(), n)
		}
	}
}

func (f *stepStats) set(errors uint64, last string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s[0].Errors, f.s[0].LastError = errors, last
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// A collector that failed since the last look is logged once, with its
// last error; errors from before the loop started, and a period without
// new errors, are not.
func TestCollectorErrorsAreLoggedWithTheirCause(t *testing.T) {
	src := &stepStats{s: []collect.CollectorStats{{Name: "partitions", Errors: 5, LastError: "old"}, {Name: "memory"}}}
	var buf syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		logCollectorErrors(ctx, src, 50*time.Millisecond, zerolog.New(&buf))
	}()
	// The baseline and two looks with nothing new.
	src.waitLooks(t, 3)
	if got := buf.String(); got != "" {
		t.Fatalf("logged %q before any new error", got)
	}
	src.set(8, "sc: partitions: query pg_stat_user_tables: canceling statement due to lock timeout (SQLSTATE 55P03)")
	// A look that sees the new errors, then two more that must not repeat
	// them.
	at := src.lookCount()
	src.waitLooks(t, at+3)
	cancel()
	<-done
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"collector":"partitions"`) || !strings.Contains(lines[0], `"errors":3`) ||
		!strings.Contains(lines[0], "55P03") || !strings.Contains(lines[0], `"level":"warn"`) {
		t.Fatalf("want one warning for partitions' 3 new errors with the cause, got:\n%s", buf.String())
	}
}
