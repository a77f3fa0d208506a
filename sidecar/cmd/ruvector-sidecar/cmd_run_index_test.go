package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// --index-sample-interval reaches the indexes collector of the integrity
// loop and, through its period, the verification wait of index_fragmentation
// (two periods plus a sample); the default stays 5 minutes.
func TestIndexSampleIntervalSetsTheCollectorAndTheWait(t *testing.T) {
	for _, c := range []struct {
		every, want time.Duration
	}{{0, 5 * time.Minute}, {20 * time.Second, 20 * time.Second}} {
		h := &healHub{periods: collectorPeriods(monitorCollectorsEvery(nil, c.every, nil))}
		if got := h.periods[classify.ClassIndexFragmentation]; got != c.want {
			t.Errorf("--index-sample-interval %v: indexes collector period %v, want %v", c.every, got, c.want)
		}
		if got := h.signalRefresh(classify.ClassIndexFragmentation); got != 2*c.want+time.Second {
			t.Errorf("--index-sample-interval %v: verification wait %v, want %v", c.every, got, 2*c.want+time.Second)
		}
	}
}

func TestIndexSampleIntervalMustBePositive(t *testing.T) {
	for _, v := range []string{"0s", "-1m"} {
		err := runDaemon(context.Background(), []string{"--index-sample-interval", v}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--index-sample-interval") {
			t.Fatalf("--index-sample-interval %s: %v, want an error naming the flag", v, err)
		}
	}
}
