package healing_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// replicaProbe samples one standby the way the integrity monitor does (the
// replicas collector on a connection of its own, after a write that gives
// it WAL to replay) and builds the monitor's trigger for it.
type replicaProbe struct {
	t      *testing.T
	ctx    context.Context
	name   string
	col    *collect.Replicas
	conn   *pgx.Conn // the collector's
	writer *pgx.Conn
	tg     collect.Target
}

func newReplicaProbe(ctx context.Context, t *testing.T, c *pgtest.Cluster, name string, stallAfter time.Duration) *replicaProbe {
	t.Helper()
	cfg, err := pgx.ParseConfig(c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	collect.ConfigureConn(cfg)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tg, err := collect.LoadTarget(ctx, conn, "emb")
	if err != nil {
		t.Fatal(err)
	}
	return &replicaProbe{t: t, ctx: ctx, name: name, col: &collect.Replicas{Interval: time.Second, StallAfter: stallAfter},
		conn: conn, writer: c.Connect(ctx, "postgres"), tg: tg}
}

// sample writes 200 rows and collects: the signals, and the standby's.
func (p *replicaProbe) sample() (health.Signals, health.ReplicaSignal) {
	p.t.Helper()
	if _, err := p.writer.Exec(p.ctx, `INSERT INTO emb (embedding, shard) SELECT '{1,2,3,4}', 0 FROM generate_series(1, 200)`); err != nil {
		p.t.Fatal(err)
	}
	s := health.Signals{Collection: p.tg.Name, CollectionID: p.tg.ID}
	if err := p.col.Collect(p.ctx, p.conn, p.tg, &s); err != nil {
		p.t.Fatal(err)
	}
	for _, r := range s.Replicas {
		if r.Name == p.name {
			return s, r
		}
	}
	return s, health.ReplicaSignal{}
}

// waitStreaming waits for the standby to stream.
func (p *replicaProbe) waitStreaming() {
	p.t.Helper()
	pgtest.WaitFor(p.t, 15*time.Second, "the standby streaming", func() (bool, error) {
		_, r := p.sample()
		return r.State == "streaming", nil
	})
}

// trigger is what the integrity monitor hands over for a lagging replica:
// its replication edge on the cut (named, or not, as a cut may leave it),
// the metrics of the same sample.
func (p *replicaProbe) trigger(s health.Signals, r health.ReplicaSignal, named bool) healing.Trigger {
	target := classify.NodeRef{Kind: classify.NodeReplica, ID: r.ID}
	if named {
		target.Name = r.Name
	}
	return healing.Trigger{Collection: "emb", CollectionID: int64(p.tg.ID), State: strategy.StateStress, Lambda: 0.3,
		Witness: []classify.WitnessEdge{{
			Source:   classify.NodeRef{Kind: classify.NodeRoot, ID: int64(p.tg.ID), Name: "emb"},
			Target:   target,
			EdgeType: classify.EdgeReplication, Capacity: 0.2, Flow: 0.2,
		}},
		Metrics: health.MetricsFrom(s)}
}
