package healing

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// A persisting problem sends automatic triggers one after another; a
// person's request queued meanwhile must run next, not race them (CI once
// saw a psql trigger wait a minute behind seven automatic attempts).
func TestCollectionQueueServesRequestsFirstAndCoalescesAutomaticAttempts(t *testing.T) {
	s := &Service{queues: map[int64]*collQueue{}}
	ctx := context.Background()
	var mu sync.Mutex
	var ran []string
	record := func(name string) func(context.Context) {
		return func(context.Context) {
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
		}
	}
	release := make(chan struct{})
	started := make(chan struct{})
	s.spawnAuto(ctx, 1, func(context.Context) {
		close(started)
		<-release
		record("auto-running")(ctx)
	})
	<-started
	s.spawnAuto(ctx, 1, record("auto-old"))
	s.spawn(ctx, 1, record("request-1"))
	s.spawnAuto(ctx, 1, record("auto-new"))
	s.spawn(ctx, 1, record("request-2"))
	// Another collection is not held up by the first one's work.
	s.spawn(ctx, 2, record("other"))
	waitUntil(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(ran, "other")
	})
	close(release)
	s.wg.Wait()
	want := []string{"other", "auto-running", "request-1", "request-2", "auto-new"}
	if !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
	if len(s.queues) != 0 {
		t.Fatalf("queues left behind: %v", s.queues)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition never met")
}
