// Package sensortest sets up what the sensor's integration tests share: a
// private cluster with the extension and one LIST-partitioned collection
// "emb", the sidecar's view of the server, and its mapped segment.
package sensortest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// Env is a started cluster with the collection registered.
type Env struct {
	Cluster *pgtest.Cluster
	Conn    *pgx.Conn // superuser, database postgres; closed by the harness
	Server  instance.Server
	Segment *shmproto.Segment
	Target  collect.Target
}

// CollectionSQL creates the extension and collection "emb" with the given
// number of partitions (shards 0..n-1).
func CollectionSQL(partitions int) string {
	return fmt.Sprintf(`
CREATE EXTENSION ruvector_healing;
SET search_path = public, ruvector;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
DO $$ BEGIN FOR s IN 0..%d LOOP
  EXECUTE format('CREATE TABLE emb_%%s PARTITION OF emb FOR VALUES IN (%%s)', s, s);
END LOOP; END $$;
SELECT ruvector_collection_register('emb', 'emb');
`, partitions-1)
}

// Start starts a cluster, creates the collection, runs extraSQL, and
// attaches to the segment (closed when the test ends).
func Start(t *testing.T, ctx context.Context, partitions int, extraSQL string) *Env {
	t.Helper()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, CollectionSQL(partitions)+extraSQL)
	conn := c.Connect(ctx, "postgres")
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	target, err := collect.LoadTarget(ctx, conn, "emb")
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Cluster: c, Conn: conn, Server: srv, Segment: seg, Target: target}
}
