package monitor_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/monitor"
)

// Integrity events are signed by the sidecar's key, those SQL functions
// wrote included, and the server verifies the signatures itself: an event
// altered afterwards reads is_verified = false.
func TestEventsSignedAndVerifiedByTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
SELECT ruvector_integrity_policy_set('emb', 'strict', '{"threshold_high": 0.9}');
SELECT ruvector_integrity_override('emb', 'stress', 'maintenance window', 60);`)
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	runner := collect.NewRunner(env.Cluster.Connect(ctx, "postgres"), []collect.Target{env.Target}, nil, collect.RunnerOptions{})
	mon, err := monitor.New(monitor.Config{AuditKey: key}, env.Cluster.Connect(ctx, "postgres"), env.Segment, runner,
		env.Server.DatabaseOID, []collect.Target{env.Target}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var unsigned int
	if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.integrity_events WHERE signature IS NULL`).Scan(&unsigned); err != nil || unsigned != 2 {
		t.Fatalf("unsigned events before the loop: %d %v, want the 2 SQL wrote", unsigned, err)
	}
	if err := mon.Step(ctx, time.Now()); err != nil {
		t.Logf("step: %v (no collectors: the sample itself may fail; the sealer runs anyway)", err)
	}

	verified := func() map[string]*bool {
		t.Helper()
		rows, err := env.Conn.Query(ctx, `SELECT event_type, is_signed, is_verified FROM ruvector_integrity_history('emb')`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]*bool{}
		for rows.Next() {
			var typ string
			var signed bool
			var v *bool
			if err := rows.Scan(&typ, &signed, &v); err != nil {
				t.Fatal(err)
			}
			if !signed {
				t.Fatalf("event %s is not signed", typ)
			}
			out[typ] = v
		}
		return out
	}
	got := verified()
	for _, typ := range []string{"policy_changed", "override"} {
		if v := got[typ]; v == nil || !*v {
			t.Fatalf("%s: is_verified %v, want true (all: %v)", typ, v, got)
		}
	}

	// Tampering: the reason of the override changed after signing.
	if _, err := env.Conn.Exec(ctx, `UPDATE ruvector.integrity_events SET metadata = metadata || '{"reason": "nothing to see"}'
		WHERE event_type = 'override'`); err != nil {
		t.Fatal(err)
	}
	got = verified()
	if v := got["override"]; v == nil || *v {
		t.Fatalf("altered override: is_verified %v, want false", v)
	}
	if v := got["policy_changed"]; v == nil || !*v {
		t.Fatalf("untouched event: is_verified %v, want true", v)
	}
	// A monitor role reads verification without reading the key inventory.
	env.Cluster.MustExec(ctx, `CREATE ROLE seal_reader LOGIN IN ROLE ruvector_monitor`)
	out, err := env.Cluster.Psql(`SELECT string_agg(event_type || '=' || coalesce(is_verified::text, 'null'), ',' ORDER BY id) FROM ruvector_integrity_history('emb') WHERE event_type <> 'state_transition'`, "-U", "seal_reader")
	if err != nil || strings.TrimSpace(out) != "policy_changed=true,override=false" {
		t.Fatalf("as ruvector_monitor: %q %v", out, err)
	}
}
