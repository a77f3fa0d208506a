package remedy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Rollback re-warms through the server when its role may read server
// files, and from the sidecar itself when it may not (SQLSTATE 42501):
// either way every page that was resident is resident again.
func TestEvictRollbackWithoutServerFileRights(t *testing.T) {
	ctx := context.Background()
	env := sensortest.Start(t, ctx, 4, `
INSERT INTO emb (embedding, shard)
SELECT array_fill(random()::real, ARRAY[32]), g % 4 FROM generate_series(1, 40000) g;
CHECKPOINT;
CREATE ROLE plain LOGIN;`)
	// The plain role is refused by the server: the fallback is exercised.
	plainDial := func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.Connect(ctx, env.Cluster.DSN("postgres")+" user=plain")
	}
	pc, err := plainDial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	if _, err := pc.Exec(ctx, `SELECT pg_read_binary_file('/etc/hostname')`); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("plain role reading a server file: %v, want SQLSTATE 42501", err)
	}
	pc.Close(ctx)

	for _, mode := range []struct {
		name string
		dial Dialer
	}{{"through the server", dialer(env)}, {"from the sidecar (no rights to server files)", plainDial}} {
		before := map[string]residency{}
		for _, p := range []string{"emb_0", "emb_1", "emb_2", "emb_3"} {
			if _, err := env.Conn.Exec(ctx, `SELECT count(*) FROM `+p); err != nil {
				t.Fatal(err)
			}
			for f, r := range partitionResidency(t, ctx, env, p) {
				before[f] = r
			}
		}
		s := &EvictColdData{Dial: dialer(env), ActivityWindow: 200 * time.Millisecond}
		rec := &strategy.MemoryRecorder{}
		rc := &strategy.Context{Collection: "emb", CollectionID: int64(env.Target.ID), Recorder: rec, Started: time.Now(), Timeout: time.Minute}
		res, err := s.Execute(ctx, rc)
		if err != nil || !res.Success {
			t.Fatalf("%s: execute: %+v %v", mode.name, res, err)
		}
		var gone int64
		for f := range before {
			r, _ := fileResidency(f)
			gone += before[f].Resident - r.Resident
		}
		if gone <= 0 {
			t.Fatalf("%s: nothing was evicted", mode.name)
		}
		s.Dial = mode.dial
		if err := s.Rollback(ctx, rc); err != nil {
			t.Fatalf("%s: rollback: %v", mode.name, err)
		}
		now := map[string]residency{}
		for f := range before {
			r, err := fileResidency(f)
			if err != nil {
				t.Fatal(err)
			}
			now[f] = r
		}
		back, evicted := residentAgain(before, now)
		if evicted == 0 || back*100 < evicted*95 {
			t.Fatalf("%s: %d of %d pages resident before are resident after the rollback", mode.name, back, evicted)
		}
		t.Logf("%s: %d of %d pages resident before are resident again", mode.name, back, evicted)
		t.Logf("%s: %d evicted pages resident again", mode.name, gone)
	}
}
