// Package workloadtest starts a private cluster with the extension and one
// vector collection made by ruvector_collection_create, for the
// integration tests of the IVF, rebalance, jobs and workload packages.
package workloadtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
)

// Env is a cluster with one collection.
type Env struct {
	Cluster *pgtest.Cluster
	Pool    *pgxpool.Pool
	Conn    *pgx.Conn // superuser, database postgres
	W       *workload.Workload
}

// Spec is the collection to create.
type Spec struct {
	Name                   string
	Dim, Partitions, Lists int
	Seed                   uint64
	Conf                   []string // postgresql.conf lines
}

// Start starts a cluster, creates the extension and the collection, and
// opens a workload on it.
func Start(t testing.TB, spec Spec) *Env {
	t.Helper()
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{Conf: spec.Conf})
	// The extension's SQL functions call each other unqualified, like its
	// regression tests and `make run`: ruvector on the search path.
	c.MustExec(ctx, `CREATE EXTENSION ruvector_healing;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector`)
	pool, err := pgxpool.New(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := workload.Create(ctx, pool, spec.Name, spec.Dim, spec.Partitions, spec.Lists); err != nil {
		t.Fatal(err)
	}
	w, err := workload.Open(ctx, pool, spec.Name, spec.Seed)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Cluster: c, Pool: pool, Conn: c.Connect(ctx, "postgres"), W: w}
}
