package audit_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/audit"
)

func TestKeyFileCreatedOnceAndGuarded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.key")
	k1, created, err := audit.LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	k2, created, err := audit.LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second start: created=%v err=%v", created, err)
	}
	if k1.ID != k2.ID || !bytes.Equal(k1.Public, k2.Public) {
		t.Fatal("reloaded key differs")
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := audit.LoadOrCreateKey(path); !errors.Is(err, audit.ErrKeyFile) {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		// Root can hand the file to someone else and see the refusal.
		if err := os.Chown(path, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if _, _, err := audit.LoadOrCreateKey(path); !errors.Is(err, audit.ErrKeyFile) {
			t.Fatalf("foreign-owned key accepted: %v", err)
		}
	}
	link := filepath.Join(t.TempDir(), "link.key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := audit.LoadOrCreateKey(link); !errors.Is(err, audit.ErrKeyFile) {
		t.Fatalf("symlinked key accepted: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := audit.LoadOrCreateKey(garbage); !errors.Is(err, audit.ErrKeyFile) {
		t.Fatalf("garbage key accepted: %v", err)
	}
}

const setupSQL = `CREATE EXTENSION ruvector_healing;`

// insert adds an unsealed outcome row with awkward values: NULLs, non-ASCII
// text, JSON that jsonb normalises, reals that are not exact decimals, and
// timestamps with microseconds.
func insert(ctx context.Context, t *testing.T, conn *pgx.Conn, strategy string, improvement any) int64 {
	t.Helper()
	var id int64
	err := conn.QueryRow(ctx, `INSERT INTO ruvector.healing_outcomes (collection_id, tenant_id, problem_class,
		problem_details, strategy_name, strategy_params, started_at, completed_at, duration_ms, success, verified,
		actions_taken, improvement_pct, error_message, initial_lambda, final_lambda, witness_edges, state, decision, metadata)
		VALUES (7, $1, 'memory_pressure', '{"b": 1, "a": [1.50, "é\u00e9"]}', $2, NULL,
		'2026-01-02 03:04:05.123456+00', clock_timestamp(), 1234, true, NULL, 2, $3, 'über "quoted"',
		0.1, 0.30000001, '[]', 'done', '{"rule":"x"}', '{"actions": [{"op": "insert", "previous": 0}]}')
		RETURNING id`, nil, strategy, improvement).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(ctx context.Context, t *testing.T, conn *pgx.Conn, key *audit.Key, id int64) {
	t.Helper()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Seal(ctx, tx, key, id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func kinds(rep audit.Report) map[string]bool {
	m := map[string]bool{}
	for _, p := range rep.Problems {
		m[p.Kind] = true
	}
	return m
}

func sqlVerify(ctx context.Context, t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT (ruvector.ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestChainOnRealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	conn := c.Connect(ctx, "postgres")
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.RegisterKey(ctx, conn, key); err != nil {
		t.Fatal(err)
	}
	if err := audit.RegisterKey(ctx, conn, key); err != nil {
		t.Fatalf("registering twice: %v", err)
	}

	ids := []int64{
		insert(ctx, t, conn, "throttle_ingestion", float32(0.1)),
		insert(ctx, t, conn, "pause_maintenance", nil),
		insert(ctx, t, conn, "throttle_ingestion", float32(-3.4028235e38)),
		insert(ctx, t, conn, "throttle_ingestion", float32(1e-45)),
	}
	for _, id := range ids {
		seal(ctx, t, conn, key, id)
	}

	t.Run("go and sql canonical bytes agree", func(t *testing.T) {
		sqlCanon := map[int64][]byte{}
		rows, err := conn.Query(ctx, `SELECT id, ruvector._healing_canonical(o) FROM ruvector.healing_outcomes o`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			var b []byte
			if err := rows.Scan(&id, &b); err != nil {
				t.Fatal(err)
			}
			sqlCanon[id] = b
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		rows, err = conn.Query(ctx, `SELECT `+audit.Columns+` FROM ruvector.healing_outcomes ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			r, err := audit.Scan(rows)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Canonical(), sqlCanon[r.ID]) {
				t.Fatalf("record %d: go canonical\n%x\nsql canonical\n%x", r.ID, r.Canonical(), sqlCanon[r.ID])
			}
			n++
		}
		if rows.Err() != nil || n != len(ids) {
			t.Fatalf("compared %d rows, err %v", n, rows.Err())
		}
	})

	t.Run("intact chain verifies", func(t *testing.T) {
		rep, err := audit.Verify(ctx, conn, int64(len(ids)))
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Records != len(ids) {
			t.Fatalf("intact chain: %+v", rep)
		}
		if !sqlVerify(ctx, t, conn) {
			t.Fatal("sql check rejects the intact chain")
		}
	})

	// Each tampering runs in a transaction that is rolled back, so the next
	// one starts from the intact chain.
	tamper := func(t *testing.T, stmt string, minRecords int64, want ...string) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
		rep, err := audit.Verify(ctx, tx, minRecords)
		if err != nil {
			t.Fatal(err)
		}
		got := kinds(rep)
		for _, w := range want {
			if !got[w] {
				t.Fatalf("%s: want %s, got %+v", stmt, w, rep.Problems)
			}
		}
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT (ruvector.ruvector_healing_verify_audit()->>'ok')::boolean`).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		sqlCan := true
		for _, w := range want {
			if w == audit.KindBadSignature || w == audit.KindTruncated || w == audit.KindUnknownKey {
				sqlCan = false
			}
		}
		if sqlCan && ok {
			t.Fatalf("%s: the sql check did not notice", stmt)
		}
	}
	n := int64(len(ids))
	t.Run("altered value", func(t *testing.T) {
		tamper(t, `UPDATE ruvector.healing_outcomes SET verified = true WHERE chain_seq = 2`, n, audit.KindHashMismatch)
	})
	t.Run("altered json", func(t *testing.T) {
		tamper(t, `UPDATE ruvector.healing_outcomes SET metadata = '{"actions": []}' WHERE chain_seq = 1`, n, audit.KindHashMismatch)
	})
	t.Run("deleted record", func(t *testing.T) {
		tamper(t, `DELETE FROM ruvector.healing_outcomes WHERE chain_seq = 2`, n, audit.KindMissing, audit.KindBrokenLink)
	})
	t.Run("reordered records", func(t *testing.T) {
		tamper(t, `UPDATE ruvector.healing_outcomes SET chain_seq = -2 WHERE chain_seq = 2;
			UPDATE ruvector.healing_outcomes SET chain_seq = 2 WHERE chain_seq = 3;
			UPDATE ruvector.healing_outcomes SET chain_seq = 3 WHERE chain_seq = -2`, n, audit.KindBrokenLink, audit.KindHashMismatch)
	})
	t.Run("rehashed without the key", func(t *testing.T) {
		// Someone who knows the canonical form can fix the hash, not the signature.
		tamper(t, `UPDATE ruvector.healing_outcomes o SET success = false WHERE chain_seq = 4;
			UPDATE ruvector.healing_outcomes o SET record_hash = sha256(ruvector._healing_canonical(o)) WHERE chain_seq = 4`,
			n, audit.KindBadSignature)
	})
	t.Run("truncated tail", func(t *testing.T) {
		tamper(t, `DELETE FROM ruvector.healing_outcomes WHERE chain_seq = 4`, n, audit.KindTruncated)
	})
	t.Run("unknown key", func(t *testing.T) {
		tamper(t, `DELETE FROM ruvector.healing_audit_keys`, n, audit.KindUnknownKey)
	})
	t.Run("sealing twice is refused", func(t *testing.T) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := audit.Seal(ctx, tx, key, ids[0]); !errors.Is(err, audit.ErrNotFound) {
			t.Fatalf("resealing: %v", err)
		}
	})
}
