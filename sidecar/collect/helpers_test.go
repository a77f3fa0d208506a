package collect

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// setupSQL is a LIST-partitioned collection with one shard per partition,
// plus a range-partitioned part to check the shard fallback.
const setupSQL = `
CREATE EXTENSION ruvector_healing;
SET search_path = public, ruvector;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE emb_0 PARTITION OF emb FOR VALUES IN (0);
CREATE TABLE emb_1 PARTITION OF emb FOR VALUES IN (1);
CREATE TABLE emb_many PARTITION OF emb FOR VALUES IN (7, 8);
SELECT ruvector_collection_register('emb', 'emb');
`

// startCollection starts a server with the emb collection and returns a
// connection configured as the sidecar's (cancel on timeout) and the
// target.
func startCollection(t *testing.T) (*pgtest.Cluster, *pgx.Conn, Target) {
	t.Helper()
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	conn := sidecarConn(t, c)
	tg, err := LoadTarget(ctx, conn, "emb")
	if err != nil {
		t.Fatal(err)
	}
	return c, conn, tg
}

func sidecarConn(t *testing.T, c *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	ConfigureConn(cfg)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// collectOnce runs one collector call with a timeout, as the Runner does.
func collectOnce(t *testing.T, col Collector, q Querier, tg Target) (health.Signals, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := health.Signals{Collection: tg.Name, CollectionID: tg.ID}
	err := col.Collect(ctx, q, tg, &s)
	return s, err
}

func mustCollect(t *testing.T, col Collector, q Querier, tg Target) health.Signals {
	t.Helper()
	s, err := collectOnce(t, col, q, tg)
	if err != nil && !errors.Is(err, ErrFirstSample) {
		t.Fatalf("%s: %v", col.Name(), err)
	}
	return s
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\nSQL: %s", err, sql)
	}
}
