package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/shmproto"
)

// status against a real server: the collection, its manual throttle, a
// sidecar throttle, the counters, and "unknown" while no sidecar beats.
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
SELECT ruvector_throttle_set('emb', 'insert', 20, '1 hour');
INSERT INTO emb (embedding, shard) SELECT '{1}', g % 2 FROM generate_series(1, 500) g;`)
	col, err := env.Segment.Find("emb", env.Server.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Segment.SetSidecarThrottle(col.Slot, shmproto.OpBulkInsert, 70, time.Now()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runStatus(ctx, []string{"--dsn", env.Cluster.DSN("postgres")}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	var row string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "emb ") {
			row = line
		}
	}
	for _, want := range []string{"unknown", "20% manual for", "70% sidecar", " 500 "} {
		if !strings.Contains(row, want) {
			t.Errorf("status row %q lacks %q\n%s", row, want, text)
		}
	}
	if !strings.Contains(text, "alive false") {
		t.Errorf("status does not say the sidecar is away:\n%s", text)
	}
}
