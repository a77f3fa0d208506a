// Package collect fills health.Signals from the live server: one Collector
// per concern (partitions, gateway, replicas, maintenance, indexes, memory)
// behind one small interface, run by a Runner at each collector's cadence,
// in the style of postgres_exporter.
//
// The sidecar's role needs pg_monitor (or superuser) to see other sessions'
// queries and the replication views, and superuser once to create the
// pgstattuple extension the indexes collector relies on.
package collect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Querier is the part of pgx the collectors use; *pgx.Conn, pgx.Tx and
// *pgxpool.Pool all satisfy it. The Runner calls collectors one at a time,
// so a single *pgx.Conn is enough (see ConfigureConn).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Target is the collection a collector measures.
type Target struct {
	ID   int    // ruvector.collections.collection_id
	Name string // ruvector.collections.name
	// RelID is the registered table (partitioned or not).
	RelID uint32
	// Relations are the table and every partition of it, the relations
	// whose statistics, jobs and indexes belong to the collection.
	Relations []uint32
	// DatabaseOID is the database the collection lives in; the gateway
	// collector needs it to find the collection's slot in the segment.
	DatabaseOID uint32
}

// Collector measures one concern of a collection and writes its own part
// of a Signals. It must honour ctx (queries take it; loops check it), must
// assign its fields only once it has a complete result, and must replace
// slices rather than mutate the ones it finds in s (s starts as a shallow
// copy of the previous sample).
type Collector interface {
	// Name is the signal kind, the key the Runner marks in Signals.Unknown
	// when the collector fails ("partitions", "gateway", ...).
	Name() string
	// Cadence is how often the Runner calls Collect.
	Cadence() time.Duration
	Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error
}

// TimeoutHinter is implemented by collectors whose work legitimately takes
// longer than the Runner's default timeout (pgstatindex reads whole
// indexes).
type TimeoutHinter interface {
	Timeout() time.Duration
}

// ErrFirstSample is returned (wrapped) by rate collectors on the first
// sample for a target, or after their counters reset (server restart,
// pg_stat_reset): there is no previous sample to take a delta from. The
// collector has filled what needs no delta (live/dead rows) and left the
// rates at 0; the Runner keeps those values but still marks the kind
// Unknown for this sample, so a 0 is never read as "idle".
var ErrFirstSample = errors.New("collect: first sample, no rate yet")

// LoadTarget reads a registered collection from the ruvector catalog. Its
// relations are the catalog's list united with the live partition tree, so
// a partition attached after registration is measured too.
func LoadTarget(ctx context.Context, q Querier, name string) (Target, error) {
	var t Target
	err := q.QueryRow(ctx, `
SELECT c.collection_id, c.name, c.relid::oid,
       (SELECT oid FROM pg_database WHERE datname = current_database()),
       ARRAY(SELECT r.relid FROM ruvector.collection_relations r WHERE r.collection_id = c.collection_id
             UNION
             SELECT p.relid FROM pg_partition_tree(c.relid) p
             ORDER BY 1)
FROM ruvector.collections c WHERE c.name = $1`, name).
		Scan(&t.ID, &t.Name, &t.RelID, &t.DatabaseOID, &t.Relations)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("collect: collection %q is not registered: %w", name, err)
	}
	if err != nil {
		return t, fmt.Errorf("collect: load collection %q: %w", name, err)
	}
	if len(t.Relations) == 0 {
		t.Relations = []uint32{t.RelID}
	}
	return t, nil
}

// ConfigureConn makes a timed-out query cancel itself on the server and
// leave the connection usable. pgx's default closes the connection when a
// context ends mid-query, which would turn one slow collector into a dead
// connection for all the others.
func ConfigureConn(cfg *pgx.ConnConfig) {
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		// DeadlineDelay: if the server does not answer the cancel request
		// in time, give up on the connection after all.
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 3 * time.Second}
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "ruvector-sidecar-collect"
	}
}

// rate is a per-second rate from a counter delta, 0 when the counter went
// backwards (a reset) or no time passed.
func rate(cur, prev int64, elapsed time.Duration) float64 {
	if cur < prev || elapsed <= 0 {
		return 0
	}
	return float64(cur-prev) / elapsed.Seconds()
}
