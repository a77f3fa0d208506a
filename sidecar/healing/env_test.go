package healing_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// startEnv starts a server with setupSQL, maps its segment, keeps a sidecar
// heartbeat going (the watchdog releases the throttles of a silent sidecar)
// until the test ends, and returns the environment and collection emb's id.
func startEnv(ctx context.Context, t *testing.T) (*env, int64) {
	t.Helper()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	v := &env{c: c, db: c.Connect(ctx, "postgres")}
	v.srv, v.seg = liveSegment(ctx, t, v.db)
	var err error
	if v.key, _, err = audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key")); err != nil {
		t.Fatal(err)
	}
	var embID int64
	if err := v.db.QueryRow(ctx, `SELECT collection_id FROM ruvector.collections WHERE name = 'emb'`).Scan(&embID); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "sidecar alive", func() (bool, error) {
		var alive bool
		err := v.db.QueryRow(ctx, `SELECT (ruvector._segment_status()->>'sidecar_alive')::boolean`).Scan(&alive)
		return alive, err
	})
	return v, embID
}

// liveSegment maps the segment of the server behind conn and keeps a
// sidecar heartbeat going until the test ends (the watchdog releases the
// throttles and caps of a silent sidecar).
func liveSegment(ctx context.Context, t *testing.T, conn *pgx.Conn) (instance.Server, *shmproto.Segment) {
	t.Helper()
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		_ = (&instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop()}).Run(hbCtx)
	}()
	t.Cleanup(func() { stopHB(); <-hbDone; seg.Close() })
	return srv, seg
}
