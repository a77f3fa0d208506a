// Package sqlmatrix holds the bad-input and privilege matrix over every SQL
// function of the extension. It finds the functions in the catalog rather
// than from a list, so a function added later is covered without anyone
// remembering to add it here.
package sqlmatrix

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/sensortest"
)

// fn is one function of the extension.
type fn struct {
	sig      string // regprocedure text
	schema   string
	name     string
	argNames []string
	argTypes []string
	strict   bool
	trigger  bool
}

// Acting functions change state; ruvector_monitor must not be able to
// call them successfully, and neither may a role with no ruvector grant.
var acting = regexp.MustCompile(`_(set|clear|register|unregister|refresh|create|drop|adopt|configure|trigger|approve|abort|execute|rollback|override|enqueue|reset|activate|attach|detach|apply|install|request|init|publish|follow|rebaseline)$`)

// Functions every role may execute, with why.
var public = map[string]string{
	"_route_shard":              "column default of every collection table: whoever may insert must be able to route",
	"_l2":                       "a pure distance function, used by searches",
	"_allowed_operations":       "a constant table of what each state allows",
	"_integrity_default_policy": "the constant default policy",
	"_require_admin":            "the privilege check itself: it raises 42501 for everyone but admins",
	"_ed25519_verify":           "a pure signature check (public keys are not secret)",
	"_operation_risk":           "a constant table of operation risk classes",
	"_check_collection_name":    "an argument check: raises invalid_name or returns nothing",
	"_check_sizes":              "an argument check: raises on out-of-range sizes or returns nothing",
}

const setupSQL = `
CREATE ROLE matrix_plain LOGIN;
CREATE ROLE matrix_monitor LOGIN IN ROLE ruvector_monitor;
GRANT USAGE ON SCHEMA ruvector TO matrix_plain;
DO $$ BEGIN
  IF to_regprocedure('ruvector_collection_create(text,integer,integer,integer)') IS NOT NULL THEN
    PERFORM ruvector_collection_create('vecs', 4, 4, 8);
    INSERT INTO vecs (embedding) SELECT ARRAY[g, g+1, g+2, g+3]::real[] FROM generate_series(1, 50) g;
  END IF;
END $$;
INSERT INTO emb (embedding, shard) SELECT ARRAY[g]::real[], g % 4 FROM generate_series(1, 40) g;
`

func loadFunctions(t *testing.T, ctx context.Context, conn *pgx.Conn) []fn {
	t.Helper()
	rows, err := conn.Query(ctx, `
		SELECT p.oid::regprocedure::text, n.nspname, p.proname,
		       coalesce(p.proargnames[1:p.pronargs], ARRAY[]::text[]),
		       ARRAY(SELECT format_type(a, NULL) FROM unnest(p.proargtypes) a),
		       p.proisstrict, p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
		FROM pg_proc p
		JOIN pg_namespace n ON n.oid = p.pronamespace
		JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
		     AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
		JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ruvector_healing'
		WHERE p.prokind = 'f'
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fn, error) {
		var f fn
		err := r.Scan(&f.sig, &f.schema, &f.name, &f.argNames, &f.argTypes, &f.strict, &f.trigger)
		return f, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("found only %d extension functions; the catalog query is wrong", len(out))
	}
	return out
}

// plausible is a value of the type that a caller would typically pass, so
// that a call reaches the check of the argument under test.
func plausible(typ, name string) string {
	switch typ {
	case "text", "character varying", "name":
		switch {
		case strings.Contains(name, "op"):
			return "'insert'"
		case strings.Contains(name, "state"):
			return "'stress'"
		case strings.Contains(name, "strategy"):
			return "'throttle_ingestion'"
		case strings.Contains(name, "kind"):
			return "'vacuum'"
		case strings.Contains(name, "reason"), strings.Contains(name, "action"):
			return "'matrix test'"
		}
		return "'emb'"
	case "integer", "smallint":
		return "1"
	case "bigint":
		return "1"
	case "real", "double precision", "numeric":
		return "0.5"
	case "boolean":
		return "false"
	case "jsonb", "json":
		return "'{}'::" + typ
	case "interval":
		return "'1 minute'::interval"
	case "timestamp with time zone":
		return "now() - interval '1 hour'"
	case "real[]":
		return "'{0,0,0,0}'::real[]"
	case "regclass":
		return "'emb'::regclass"
	case "oid":
		return "'emb'::regclass::oid"
	case "oid[]":
		return "ARRAY['emb'::regclass::oid]"
	case "integer[]":
		return "ARRAY[0]"
	case "bigint[]":
		return "ARRAY[0]::bigint[]"
	case "bytea":
		return "'\\x00'::bytea"
	}
	return "NULL"
}

// bad returns the hostile values for a type.
func bad(typ string) []string {
	common := []string{"NULL"}
	switch typ {
	case "text", "character varying", "name":
		return append(common, "''", "'no_such_thing'", `'x"; DROP TABLE ruvector.collections; --'`,
			`'emb'' OR ''1''=''1'`, "repeat('a', 100000)", `'Emb Upper'`)
	case "integer", "smallint":
		return append(common, "-1", "0", "-2147483648", "2147483647")
	case "bigint":
		return append(common, "-1", "0", "9223372036854775807")
	case "real", "double precision":
		return append(common, "'NaN'::"+typ, "'-Infinity'::"+typ, "'Infinity'::"+typ, "-1", "1e30")
	case "jsonb":
		return append(common, `'{"no_such_key": 1}'::jsonb`, `'[]'::jsonb`, `'null'::jsonb`, `'"text"'::jsonb`,
			`'{"enabled": "yes"}'::jsonb`, `'{"dry_run": 7}'::jsonb`)
	case "interval":
		return append(common, "'-1 day'::interval", "'100000 years'::interval")
	case "timestamp with time zone":
		return append(common, "'infinity'::timestamptz", "'-infinity'::timestamptz")
	case "real[]":
		return append(common, "'{}'::real[]", "'{NaN,0,0,0}'::real[]", "'{1,2}'::real[]", "'{1,NULL,3,4}'::real[]",
			"'{{1,2},{3,4}}'::real[]", "array_fill(1::real, ARRAY[20000])")
	case "regclass":
		return append(common, "'pg_class'::regclass")
	}
	return common
}

// snapshot fingerprints every ordinary table of the schemas the product
// touches, and the segment's throttles, so a failed call can be shown to
// have changed nothing.
func snapshot(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname IN ('ruvector', 'public') ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, tbl := range tables {
		var h string
		q := fmt.Sprintf(`SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM %s t`, tbl)
		if err := conn.QueryRow(ctx, q).Scan(&h); err != nil {
			return nil, fmt.Errorf("%s: %w", tbl, err)
		}
		out[tbl] = h
	}
	var thr string
	if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(format('%s/%s/%s/%s', collection, op, pct, set_by), ',' ORDER BY collection, op), '')
		FROM ruvector.ruvector_throttle_status()`).Scan(&thr); err != nil {
		return nil, err
	}
	out["segment throttles"] = thr
	return out, nil
}

func diff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k+" (new)")
		}
	}
	slices.Sort(out)
	return out
}

// call casts every argument to its declared type, so that overloaded
// functions (ruvector._canon) resolve to the one under test.
func call(f fn, args []string) string {
	typed := make([]string, len(args))
	for i, a := range args {
		typed[i] = fmt.Sprintf("(%s)::%s", a, f.argTypes[i])
	}
	return fmt.Sprintf("SELECT %s.%s(%s)", pgx.Identifier{f.schema}.Sanitize(), pgx.Identifier{f.name}.Sanitize(), strings.Join(typed, ", "))
}

// TestBadInputMatrix calls every extension function with a hostile value in
// each argument position (the others plausible). Each call must either
// succeed or fail with a proper SQLSTATE (never an internal error or a
// crash), an error raised by a user-facing function (not the internal
// ruvector._ helpers) must carry a hint, and a failed call must change
// nothing. Accepted calls are listed with -v.
func TestBadInputMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 4, setupSQL)
	conn := env.Conn
	funcs := loadFunctions(t, ctx, conn)
	// Without the extension's schema on the search path: a function body
	// that calls another unqualified fails here (42883, no hint).
	if _, err := conn.Exec(ctx, `SET search_path = public`); err != nil {
		t.Fatal(err)
	}

	var calls, failed, succeeded int
	var problems []string
	for _, f := range funcs {
		if f.trigger {
			continue
		}
		for i, typ := range f.argTypes {
			for _, v := range bad(typ) {
				args := make([]string, len(f.argTypes))
				for j := range args {
					name := ""
					if j < len(f.argNames) {
						name = f.argNames[j]
					}
					args[j] = plausible(f.argTypes[j], name)
				}
				args[i] = v
				q := call(f, args)
				// A value whose own cast fails never reaches the function.
				if _, err := conn.Exec(ctx, "SELECT "+strings.Join(args, ", ")); err != nil {
					continue
				}
				before, err := snapshot(ctx, conn)
				if err != nil {
					t.Fatal(err)
				}
				calls++
				// Each call in its own transaction, rolled back on error,
				// exactly as a client's statement would be.
				_, callErr := conn.Exec(ctx, "SET LOCAL statement_timeout = '20s'; "+q)
				if err := conn.Ping(ctx); err != nil {
					t.Fatalf("%s: the connection died (backend crash?): %v", q, err)
				}
				if callErr == nil {
					succeeded++
					if testing.Verbose() {
						t.Logf("accepted: %s", short(q))
					}
					continue
				}
				failed++
				var pe *pgconn.PgError
				if !errors.As(callErr, &pe) {
					problems = append(problems, fmt.Sprintf("%s: not a server error: %v", short(q), callErr))
					continue
				}
				switch {
				case strings.HasPrefix(pe.Code, "XX"), strings.HasPrefix(pe.Code, "58"):
					problems = append(problems, fmt.Sprintf("%s: internal error %s: %s", short(q), pe.Code, pe.Message))
				case pe.Code == "57014":
					problems = append(problems, fmt.Sprintf("%s: hung until statement_timeout", short(q)))
				case pe.Hint == "" && !builtinError(pe) && !strings.HasPrefix(f.name, "_"):
					problems = append(problems, fmt.Sprintf("%s: %s %q has no hint", short(q), pe.Code, pe.Message))
				}
				after, err := snapshot(ctx, conn)
				if err != nil {
					t.Fatal(err)
				}
				if d := diff(before, after); len(d) > 0 {
					problems = append(problems, fmt.Sprintf("%s failed (%s) but changed %v", short(q), pe.Code, d))
				}
			}
		}
	}
	t.Logf("%d functions, %d hostile calls: %d rejected, %d accepted", len(funcs), calls, failed, succeeded)
	if calls < 100 {
		t.Fatalf("only %d calls were made", calls)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// builtinError: errors PostgreSQL itself raises while evaluating a call's
// arguments inside the function (for example a value too long for an index
// row), which carry no hint of ours. Only these classes are exempt.
func builtinError(pe *pgconn.PgError) bool {
	switch pe.Code {
	case "54000", // program_limit_exceeded (index row size, array size)
		"22001": // string_data_right_truncation
		return true
	}
	return false
}

func short(q string) string {
	if len(q) > 160 {
		return q[:160] + "…"
	}
	return q
}

// TestPrivilegeMatrix: a role without ruvector_admin cannot call any acting
// function successfully; ruvector_monitor can read status but cannot act or
// read the audit keys; a role with no grant cannot read either.
func TestPrivilegeMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 4, setupSQL)
	funcs := loadFunctions(t, ctx, env.Conn)

	as := func(role string) *pgx.Conn {
		cfg, err := pgx.ParseConfig(env.Cluster.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.User = role
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	plain, monitor := as("matrix_plain"), as("matrix_monitor")

	var actingCount, readCount int
	for _, f := range funcs {
		if f.trigger {
			continue
		}
		args := make([]string, len(f.argTypes))
		for j := range args {
			name := ""
			if j < len(f.argNames) {
				name = f.argNames[j]
			}
			args[j] = plausible(f.argTypes[j], name)
		}
		q := call(f, args)
		base := strings.TrimPrefix(f.name, "ruvector")
		if why, ok := public[base]; ok {
			t.Logf("%s is executable by every role: %s", f.sig, why)
			continue
		}
		isActing := acting.MatchString(f.name)
		for _, r := range []struct {
			role string
			conn *pgx.Conn
		}{{"matrix_plain", plain}, {"ruvector_monitor", monitor}} {
			before, err := snapshot(ctx, env.Conn)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.conn.Exec(ctx, q)
			var pe *pgconn.PgError
			denied := errors.As(err, &pe) && pe.Code == "42501"
			switch {
			case isActing && !denied:
				t.Errorf("%s as %s: want permission denied (42501), got %v", short(q), r.role, err)
			case !isActing && r.role == "matrix_plain" && !denied:
				t.Errorf("%s as a role with no grant: want permission denied (42501), got %v", short(q), err)
			case !isActing && r.role == "ruvector_monitor" && denied:
				t.Errorf("%s: ruvector_monitor must be able to read it, got %v", short(q), err)
			}
			after, err := snapshot(ctx, env.Conn)
			if err != nil {
				t.Fatal(err)
			}
			if isActing || denied {
				if d := diff(before, after); len(d) > 0 {
					t.Errorf("%s as %s changed %v", short(q), r.role, d)
				}
			}
		}
		if isActing {
			actingCount++
		} else {
			readCount++
		}
	}
	t.Logf("%d acting and %d reading functions checked", actingCount, readCount)
	if actingCount < 8 || readCount < 5 {
		t.Fatalf("acting %d / reading %d: the classification found too few", actingCount, readCount)
	}
	for _, r := range []struct {
		role string
		conn *pgx.Conn
	}{{"matrix_plain", plain}, {"ruvector_monitor", monitor}} {
		_, err := r.conn.Exec(ctx, `SELECT * FROM ruvector.healing_audit_keys`)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s read the audit keys: %v", r.role, err)
		}
	}
}
