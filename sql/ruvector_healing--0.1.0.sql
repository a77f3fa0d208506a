/* sql/ruvector_healing--0.1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ruvector_healing" to load this file. \quit

-- Roles are cluster-wide and may already exist (another database, an
-- earlier install): create them only when missing, never drop them.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ruvector_monitor') THEN
        CREATE ROLE ruvector_monitor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ruvector_admin') THEN
        CREATE ROLE ruvector_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT ruvector_monitor TO ruvector_admin;
GRANT USAGE ON SCHEMA ruvector TO ruvector_monitor;

-- Loading any C function loads the library; _PG_init refuses unless the
-- library is in shared_preload_libraries, so CREATE EXTENSION fails early
-- with a clear message instead of later with a missing segment.
CREATE FUNCTION ruvector._segment_status()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'ruvector_segment_status'
LANGUAGE C STRICT VOLATILE;
SELECT ruvector._segment_status() IS NOT NULL;

CREATE TABLE ruvector.collections (
    collection_id serial PRIMARY KEY,
    name          text NOT NULL UNIQUE
                  CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_$]*$' AND octet_length(name) < 64),
    relid         regclass NOT NULL UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE ruvector.collections IS
    'Collections whose writes pass the ruvector_healing write gate.';

-- Every relation that routes to a collection's gate: the table itself and
-- its partitions, because clients may write to a partition directly.
CREATE TABLE ruvector.collection_relations (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    relid         oid NOT NULL UNIQUE,
    PRIMARY KEY (collection_id, relid)
);

-- Manual throttles survive a restart: the watchdog reloads them.
CREATE TABLE ruvector.throttles (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    op            text NOT NULL CHECK (op IN ('insert', 'bulk_insert')),
    pct           integer NOT NULL CHECK (pct BETWEEN 0 AND 100),
    expires_at    timestamptz,
    set_at        timestamptz NOT NULL DEFAULT now(),
    set_by        name NOT NULL DEFAULT current_user,
    PRIMARY KEY (collection_id, op)
);

GRANT SELECT ON ruvector.collections, ruvector.collection_relations, ruvector.throttles
    TO ruvector_monitor;
GRANT INSERT, UPDATE, DELETE ON ruvector.collections, ruvector.collection_relations,
    ruvector.throttles TO ruvector_admin;
GRANT USAGE ON SEQUENCE ruvector.collections_collection_id_seq TO ruvector_admin;

-- Internal: segment writers. They check privileges themselves too, since
-- they change shared memory that no table privilege guards.
CREATE FUNCTION ruvector._registry_attach(collection_id integer, name text, relids oid[])
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_registry_attach' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._registry_detach(collection_id integer)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_registry_detach' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._throttle_apply(collection_id integer, op text, pct integer, expires_at timestamptz)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_throttle_apply' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION ruvector._segment_status(), ruvector._registry_attach(integer, text, oid[]),
    ruvector._registry_detach(integer), ruvector._throttle_apply(integer, text, integer, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._registry_attach(integer, text, oid[]),
    ruvector._registry_detach(integer), ruvector._throttle_apply(integer, text, integer, timestamptz)
    TO ruvector_admin;
GRANT EXECUTE ON FUNCTION ruvector._segment_status() TO ruvector_monitor, pg_monitor;

-- Raises insufficient_privilege with a hint unless the caller may act.
CREATE FUNCTION ruvector._require_admin(action text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT (pg_has_role(current_user, 'ruvector_admin', 'USAGE')
            OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) THEN
        RAISE EXCEPTION 'permission denied to %', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Only superusers and members of ruvector_admin may do this: GRANT ruvector_admin TO %I;', current_user);
    END IF;
END
$$;

-- Looks a collection up by name, raising undefined_object with a hint.
CREATE FUNCTION ruvector._collection_id(collection text)
RETURNS integer LANGUAGE plpgsql STABLE AS $$
DECLARE
    id integer;
BEGIN
    IF collection IS NULL THEN
        RAISE EXCEPTION 'collection must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the name of a registered collection; SELECT name FROM ruvector.collections lists them.';
    END IF;
    SELECT c.collection_id INTO id FROM ruvector.collections c WHERE c.name = collection;
    IF id IS NULL THEN
        RAISE EXCEPTION 'collection "%" does not exist', collection
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM ruvector.collections lists the registered collections.';
    END IF;
    RETURN id;
END
$$;

CREATE FUNCTION ruvector_collection_register(name text, tbl regclass)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    rels oid[];
    kind "char";
BEGIN
    PERFORM ruvector._require_admin('register a collection');
    IF name IS NULL OR tbl IS NULL THEN
        RAISE EXCEPTION 'collection name and table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Call ruvector_collection_register(''name'', ''schema.table''::regclass).';
    END IF;
    IF name !~ '^[A-Za-z_][A-Za-z0-9_$]*$' OR octet_length(name) >= 64 THEN
        RAISE EXCEPTION 'invalid collection name "%"', name
            USING ERRCODE = 'invalid_name',
                  HINT = 'A collection name is an identifier: a letter or underscore, then letters, digits, _ or $, at most 63 bytes.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = tbl;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Register an ordinary or partitioned table.';
    END IF;
    -- Serialises registry changes: the segment's relation map has one
    -- writer at a time, and the watchdog's reload takes the same lock.
    LOCK TABLE ruvector.collections IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM ruvector.collections c WHERE c.name = ruvector_collection_register.name) THEN
        RAISE EXCEPTION 'collection "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Unregister it first with ruvector_collection_unregister, or choose another name.';
    END IF;
    IF EXISTS (SELECT 1 FROM ruvector.collection_relations r WHERE r.relid = tbl) THEN
        RAISE EXCEPTION 'table % already belongs to collection "%"', tbl,
            (SELECT c.name FROM ruvector.collections c JOIN ruvector.collection_relations r USING (collection_id) WHERE r.relid = tbl)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'A table can belong to one collection only.';
    END IF;
    INSERT INTO ruvector.collections (name, relid) VALUES (name, tbl) RETURNING collection_id INTO id;
    -- pg_partition_tree gives nothing for a table that is not partitioned.
    SELECT coalesce(array_agg(relid ORDER BY level, relid), ARRAY[tbl::oid])
        INTO rels FROM pg_partition_tree(tbl);
    INSERT INTO ruvector.collection_relations (collection_id, relid) SELECT id, unnest(rels);
    PERFORM ruvector._registry_attach(id, name, rels);
    RETURN id;
END
$$;

CREATE FUNCTION ruvector_collection_unregister(name text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
BEGIN
    PERFORM ruvector._require_admin('unregister a collection');
    LOCK TABLE ruvector.collections IN SHARE ROW EXCLUSIVE MODE;
    id := ruvector._collection_id(name);
    PERFORM ruvector._registry_detach(id);
    DELETE FROM ruvector.collections c WHERE c.collection_id = id;
END
$$;

-- Brings a collection's relations in line with its partition tree:
-- partitions attached or created since registration are gated too, detached
-- ones no longer. Returns how many relations the collection now has.
CREATE FUNCTION ruvector_collection_refresh(name text)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    tbl regclass;
    rels oid[];
BEGIN
    PERFORM ruvector._require_admin('refresh a collection');
    LOCK TABLE ruvector.collections IN SHARE ROW EXCLUSIVE MODE;
    id := ruvector._collection_id(name);
    SELECT c.relid INTO tbl FROM ruvector.collections c WHERE c.collection_id = id;
    SELECT coalesce(array_agg(t.relid ORDER BY t.level, t.relid), ARRAY[tbl::oid])
        INTO rels FROM pg_partition_tree(tbl) t;
    DELETE FROM ruvector.collection_relations r WHERE r.collection_id = id AND NOT (r.relid = ANY (rels));
    INSERT INTO ruvector.collection_relations (collection_id, relid)
        SELECT id, x FROM unnest(rels) x
        WHERE NOT EXISTS (SELECT 1 FROM ruvector.collection_relations r WHERE r.relid = x);
    PERFORM ruvector._registry_attach(id, name, rels);
    RETURN cardinality(rels);
END
$$;

CREATE FUNCTION ruvector_throttle_set(collection text, op text, pct integer, ttl interval DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    expires timestamptz;
BEGIN
    PERFORM ruvector._require_admin('set a throttle');
    id := ruvector._collection_id(collection);
    IF op IS NULL OR op NOT IN ('insert', 'bulk_insert') THEN
        RAISE EXCEPTION 'invalid throttle op "%"', coalesce(op, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'op is ''insert'' (single-row and small statements) or ''bulk_insert'' (COPY and large statements).';
    END IF;
    IF pct IS NULL OR pct < 0 OR pct > 100 THEN
        RAISE EXCEPTION 'throttle percentage % is out of range', coalesce(pct::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range',
                  HINT = 'pct is 0 (no throttle) to 100 (refuse writes): the admitted write rate becomes (100 - pct)% of the recent unthrottled rate.';
    END IF;
    IF ttl IS NOT NULL AND ttl <= interval '0' THEN
        RAISE EXCEPTION 'throttle ttl % is not positive', ttl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a positive interval such as ''10 minutes'', or NULL for a throttle that stays until cleared.';
    END IF;
    IF ttl IS NOT NULL THEN
        expires := clock_timestamp() + ttl;
    END IF;
    INSERT INTO ruvector.throttles AS t (collection_id, op, pct, expires_at)
    VALUES (id, op, pct, expires)
    ON CONFLICT ON CONSTRAINT throttles_pkey DO UPDATE
        SET pct = EXCLUDED.pct, expires_at = EXCLUDED.expires_at, set_at = now(), set_by = current_user;
    PERFORM ruvector._throttle_apply(id, op, pct, expires);
END
$$;

CREATE FUNCTION ruvector_throttle_clear(collection text, op text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    o text;
BEGIN
    PERFORM ruvector._require_admin('clear a throttle');
    id := ruvector._collection_id(collection);
    IF op IS NOT NULL AND op NOT IN ('insert', 'bulk_insert') THEN
        RAISE EXCEPTION 'invalid throttle op "%"', op
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'op is ''insert'', ''bulk_insert'', or NULL for both.';
    END IF;
    FOR o IN SELECT unnest(ARRAY['insert', 'bulk_insert']) LOOP
        CONTINUE WHEN op IS NOT NULL AND o <> op;
        DELETE FROM ruvector.throttles t WHERE t.collection_id = id AND t.op = o;
        PERFORM ruvector._throttle_apply(id, o, 0, NULL);
    END LOOP;
END
$$;

CREATE FUNCTION ruvector_throttle_status(
    OUT collection text, OUT op text, OUT pct integer, OUT set_by text,
    OUT expires_at timestamptz, OUT admitted bigint, OUT delayed bigint,
    OUT rejected bigint, OUT wait_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ruvector_throttle_status'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ruvector_throttle_status() IS
    'One row per collection and op: throttle, who set it, when it lapses, and the gate''s counters (admitted rows, delayed and rejected statements, time spent waiting).';

REVOKE ALL ON FUNCTION ruvector_throttle_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_throttle_status() TO ruvector_monitor, pg_monitor;

-- ---------------------------------------------------------------------------
-- The sensor: integrity states, events, policies, overrides, the contracted
-- graph. The sidecar computes lambda_cut and the state and publishes them in
-- the segment every sample; the tables hold what must outlive a sample.
-- ---------------------------------------------------------------------------

CREATE TABLE ruvector.integrity_policies (
    collection_id integer PRIMARY KEY REFERENCES ruvector.collections ON DELETE CASCADE,
    policy_name   text NOT NULL,
    config        jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    name NOT NULL DEFAULT current_user
);

CREATE TABLE ruvector.integrity_overrides (
    collection_id integer PRIMARY KEY REFERENCES ruvector.collections ON DELETE CASCADE,
    new_state     text NOT NULL CHECK (new_state IN ('normal', 'stress', 'critical')),
    reason        text NOT NULL,
    expires_at    timestamptz,
    set_at        timestamptz NOT NULL DEFAULT now(),
    set_by        name NOT NULL DEFAULT current_user
);

CREATE TABLE ruvector.integrity_events (
    id                 bigserial PRIMARY KEY,
    collection_id      integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    event_type         text NOT NULL,
    previous_state     text,
    new_state          text,
    lambda_cut         double precision,
    witness_edge_count integer,
    metadata           jsonb NOT NULL DEFAULT '{}',
    is_signed          boolean NOT NULL DEFAULT false,
    is_verified        boolean,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integrity_events_collection_time ON ruvector.integrity_events (collection_id, created_at DESC);

-- The latest health graph of each collection, written by the sidecar.
CREATE TABLE ruvector.contracted_graph (
    collection_id integer PRIMARY KEY REFERENCES ruvector.collections ON DELETE CASCADE,
    lambda_cut    double precision NOT NULL,
    lambda_raw    double precision,
    graph         jsonb NOT NULL,
    witness_edges jsonb NOT NULL DEFAULT '[]',
    sample_count  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON ruvector.integrity_policies, ruvector.integrity_overrides,
    ruvector.integrity_events, ruvector.contracted_graph TO ruvector_monitor;
GRANT INSERT, UPDATE, DELETE ON ruvector.integrity_policies, ruvector.integrity_overrides,
    ruvector.integrity_events, ruvector.contracted_graph TO ruvector_admin;
GRANT USAGE ON SEQUENCE ruvector.integrity_events_id_seq TO ruvector_admin;

CREATE FUNCTION ruvector._integrity_read(
    collection_id integer,
    OUT lambda_cut double precision, OUT state text, OUT state_since timestamptz,
    OUT updated_at timestamptz, OUT sidecar_alive boolean, OUT heartbeat_age_ms bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'ruvector_integrity_read'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION ruvector._integrity_read(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._integrity_read(integer) TO ruvector_monitor, pg_monitor;

-- The default policy; the sidecar validates the same keys and ranges.
CREATE FUNCTION ruvector._integrity_default_policy()
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"threshold_high": 0.8, "threshold_low": 0.3, "degrade_samples": 3,
             "critical_samples": 2, "restore_threshold_offset": 0.1,
             "restore_hold_seconds": 300, "cooldown_after_transition_seconds": 60}'::jsonb
$$;

-- Which operations the gate matrix allows in a state (spec: low / medium /
-- high risk).
CREATE FUNCTION ruvector._allowed_operations(state text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE state
        WHEN 'normal' THEN '{"low": "allow", "medium": "allow", "high": "allow"}'::jsonb
        WHEN 'stress' THEN '{"low": "allow", "medium": "throttle(0.5)", "high": "defer(300 s)"}'::jsonb
        WHEN 'critical' THEN '{"low": "throttle(0.8)", "medium": "defer(60 s)", "high": "reject"}'::jsonb
        ELSE '{"low": "allow", "medium": "allow", "high": "defer(300 s)"}'::jsonb
    END
$$;

CREATE FUNCTION ruvector_integrity_status(collection text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    id integer;
    seg record;
    pol record;
    ovr record;
    g record;
    policy jsonb;
    state text;
BEGIN
    id := ruvector._collection_id(collection);
    SELECT * INTO seg FROM ruvector._integrity_read(id);
    SELECT * INTO pol FROM ruvector.integrity_policies p WHERE p.collection_id = id;
    SELECT * INTO ovr FROM ruvector.integrity_overrides o
        WHERE o.collection_id = id AND (o.expires_at IS NULL OR o.expires_at > now());
    SELECT * INTO g FROM ruvector.contracted_graph c WHERE c.collection_id = id;
    policy := ruvector._integrity_default_policy() || coalesce(pol.config, '{}');
    -- A silent sidecar means nobody is measuring: say unknown, not the last value.
    state := CASE WHEN seg.sidecar_alive THEN seg.state ELSE 'unknown' END;
    RETURN jsonb_build_object(
        'collection', collection,
        'state', state,
        'lambda_cut', CASE WHEN seg.updated_at IS NULL THEN NULL ELSE seg.lambda_cut END,
        'threshold_high', policy->'threshold_high',
        'threshold_low', policy->'threshold_low',
        'last_sample', seg.updated_at,
        'state_since', seg.state_since,
        'sample_count', coalesce(g.sample_count, 0),
        'current_policy', jsonb_build_object('name', coalesce(pol.policy_name, 'default'), 'config', policy),
        'override', CASE WHEN ovr.collection_id IS NULL THEN NULL ELSE jsonb_build_object(
            'state', ovr.new_state, 'reason', ovr.reason, 'expires_at', ovr.expires_at, 'set_by', ovr.set_by) END,
        'allowed_operations', ruvector._allowed_operations(state),
        'witness_edges', coalesce(g.witness_edges, '[]'::jsonb),
        'sidecar_alive', seg.sidecar_alive,
        'sidecar_heartbeat_age_ms', seg.heartbeat_age_ms);
END
$$;

-- A named row type: with RETURNS TABLE the output column event_type would
-- clash with the parameter of the same name.
CREATE TYPE ruvector.integrity_history_row AS (
    id bigint, event_type text, previous_state text, new_state text,
    lambda_cut double precision, witness_edge_count integer, metadata jsonb,
    is_signed boolean, is_verified boolean, created_at timestamptz);

CREATE FUNCTION ruvector_integrity_history(
    collection text, event_type text DEFAULT NULL,
    since timestamptz DEFAULT now() - interval '24 hours', "limit" integer DEFAULT 100)
RETURNS SETOF ruvector.integrity_history_row
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cid integer;
BEGIN
    cid := ruvector._collection_id(collection);
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a timestamp, e.g. now() - interval ''1 hour''.';
    END IF;
    IF "limit" IS NULL OR "limit" < 1 OR "limit" > 100000 THEN
        RAISE EXCEPTION 'limit % is out of range', coalesce("limit"::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'limit is 1 to 100000.';
    END IF;
    RETURN QUERY
        SELECT e.id, e.event_type, e.previous_state, e.new_state, e.lambda_cut, e.witness_edge_count,
               e.metadata, e.is_signed, e.is_verified, e.created_at
        FROM ruvector.integrity_events e
        WHERE e.collection_id = cid AND e.created_at >= since
          AND (ruvector_integrity_history.event_type IS NULL OR e.event_type = ruvector_integrity_history.event_type)
        ORDER BY e.created_at DESC, e.id DESC
        LIMIT "limit";
END
$$;

CREATE FUNCTION ruvector_contracted_graph(collection text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    id integer;
    g record;
BEGIN
    id := ruvector._collection_id(collection);
    SELECT * INTO g FROM ruvector.contracted_graph c WHERE c.collection_id = id;
    IF g.collection_id IS NULL THEN
        RETURN jsonb_build_object('collection', collection, 'nodes', '[]'::jsonb, 'edges', '[]'::jsonb,
            'node_count', 0, 'edge_count', 0, 'witness_edges', '[]'::jsonb, 'lambda_cut', NULL,
            'updated_at', NULL);
    END IF;
    RETURN g.graph || jsonb_build_object('collection', collection, 'witness_edges', g.witness_edges,
        'lambda_cut', g.lambda_cut, 'lambda_raw', g.lambda_raw, 'updated_at', g.updated_at);
END
$$;

CREATE FUNCTION ruvector_integrity_policy_set(collection text, policy_name text, config jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    k text;
    v jsonb;
    merged jsonb;
    ints text[] := ARRAY['degrade_samples', 'critical_samples'];
    secs text[] := ARRAY['restore_hold_seconds', 'cooldown_after_transition_seconds'];
    fracs text[] := ARRAY['threshold_high', 'threshold_low', 'restore_threshold_offset'];
BEGIN
    PERFORM ruvector._require_admin('set an integrity policy');
    id := ruvector._collection_id(collection);
    IF policy_name IS NULL OR policy_name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid policy name "%"', coalesce(policy_name, 'NULL')
            USING ERRCODE = 'invalid_name', HINT = 'A policy name is an identifier of at most 63 characters.';
    END IF;
    IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
        RAISE EXCEPTION 'policy config must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass keys of %s.', ruvector._integrity_default_policy());
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(config) LOOP
        IF NOT (k = ANY (ints || secs || fracs)) THEN
            RAISE EXCEPTION 'unknown policy key "%"', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Known keys: %s.', array_to_string(ints || secs || fracs, ', '));
        END IF;
        IF jsonb_typeof(v) <> 'number' THEN
            RAISE EXCEPTION 'policy key "%" must be a number, not %', k, v
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a JSON number.';
        END IF;
        IF k = ANY (ints) AND (v::numeric < 1 OR v::numeric > 1000 OR v::numeric <> trunc(v::numeric)) THEN
            RAISE EXCEPTION 'policy key "%" = % is out of range', k, v
                USING ERRCODE = 'numeric_value_out_of_range', HINT = 'A sample count is a whole number from 1 to 1000.';
        END IF;
        IF k = ANY (secs) AND (v::numeric < 0 OR v::numeric > 86400) THEN
            RAISE EXCEPTION 'policy key "%" = % is out of range', k, v
                USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Seconds are 0 to 86400.';
        END IF;
        IF k = ANY (fracs) AND (v::numeric <= 0 OR v::numeric > 1) AND NOT (k = 'restore_threshold_offset' AND v::numeric = 0) THEN
            RAISE EXCEPTION 'policy key "%" = % is out of range', k, v
                USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Thresholds are in (0, 1]; the offset in [0, 1].';
        END IF;
    END LOOP;
    merged := ruvector._integrity_default_policy() || config;
    IF (merged->>'threshold_low')::numeric >= (merged->>'threshold_high')::numeric THEN
        RAISE EXCEPTION 'threshold_low % must be below threshold_high %', merged->'threshold_low', merged->'threshold_high'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The defaults are 0.3 and 0.8.';
    END IF;
    INSERT INTO ruvector.integrity_policies AS p (collection_id, policy_name, config)
    VALUES (id, policy_name, config)
    ON CONFLICT ON CONSTRAINT integrity_policies_pkey DO UPDATE
        SET policy_name = EXCLUDED.policy_name, config = EXCLUDED.config,
            updated_at = now(), updated_by = current_user;
    INSERT INTO ruvector.integrity_events (collection_id, event_type, metadata)
    VALUES (id, 'policy_changed', jsonb_build_object('policy_name', policy_name, 'config', merged));
    PERFORM pg_notify('ruvector_healing', json_build_object('kind', 'policy', 'collection', collection)::text);
    RETURN jsonb_build_object('collection', collection, 'policy_name', policy_name, 'config', merged);
END
$$;

CREATE FUNCTION ruvector_integrity_override(collection text, new_state text, reason text,
                                            duration_secs integer DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    expires timestamptz;
BEGIN
    PERFORM ruvector._require_admin('override an integrity state');
    id := ruvector._collection_id(collection);
    IF new_state IS NULL OR new_state NOT IN ('normal', 'stress', 'critical', 'auto') THEN
        RAISE EXCEPTION 'invalid integrity state "%"', coalesce(new_state, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'new_state is normal, stress or critical; auto removes the override.';
    END IF;
    IF new_state = 'auto' THEN
        DELETE FROM ruvector.integrity_overrides o WHERE o.collection_id = id;
    ELSE
        IF reason IS NULL OR btrim(reason) = '' THEN
            RAISE EXCEPTION 'an override needs a reason'
                USING ERRCODE = 'null_value_not_allowed', HINT = 'Say why, for the audit trail.';
        END IF;
        IF duration_secs IS NOT NULL AND (duration_secs < 1 OR duration_secs > 7 * 86400) THEN
            RAISE EXCEPTION 'override duration % s is out of range', duration_secs
                USING ERRCODE = 'numeric_value_out_of_range',
                      HINT = 'duration_secs is 1 to 604800, or NULL until removed with new_state => ''auto''.';
        END IF;
        IF duration_secs IS NOT NULL THEN
            expires := now() + make_interval(secs => duration_secs);
        END IF;
        INSERT INTO ruvector.integrity_overrides AS o (collection_id, new_state, reason, expires_at)
        VALUES (id, new_state, reason, expires)
        ON CONFLICT ON CONSTRAINT integrity_overrides_pkey DO UPDATE
            SET new_state = EXCLUDED.new_state, reason = EXCLUDED.reason,
                expires_at = EXCLUDED.expires_at, set_at = now(), set_by = current_user;
    END IF;
    INSERT INTO ruvector.integrity_events (collection_id, event_type, new_state, metadata)
    VALUES (id, 'override', new_state,
            jsonb_build_object('reason', reason, 'expires_at', expires, 'set_by', current_user));
    PERFORM pg_notify('ruvector_healing', json_build_object('kind', 'override', 'collection', collection)::text);
    RETURN jsonb_build_object('collection', collection, 'new_state', new_state,
                              'reason', reason, 'expires_at', expires);
END
$$;

GRANT SELECT ON ruvector.collections, ruvector.collection_relations, ruvector.throttles,
    ruvector.integrity_policies, ruvector.integrity_overrides, ruvector.integrity_events,
    ruvector.contracted_graph TO pg_monitor;
REVOKE ALL ON FUNCTION ruvector_integrity_status(text), ruvector_contracted_graph(text),
    ruvector_integrity_history(text, text, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_integrity_status(text), ruvector_contracted_graph(text),
    ruvector_integrity_history(text, text, timestamptz, integer) TO ruvector_monitor, pg_monitor;

-- ---------------------------------------------------------------------------
-- Self-healing: outcomes, learned strategy weights, configuration and the
-- signed audit chain. The engine in ruvector-sidecar (sidecar/healing) writes
-- these tables; the functions below only read them.
-- ---------------------------------------------------------------------------

-- The design's table, every column and index as specified, plus what the
-- engine needs. collection_id deliberately has no foreign key: unregistering
-- a collection must not cascade-delete audited records, since a deleted
-- record is exactly what the audit chain is there to expose.
CREATE TABLE ruvector.healing_outcomes (
    id BIGSERIAL PRIMARY KEY,
    collection_id INTEGER NOT NULL,
    tenant_id TEXT,

    -- Problem
    problem_class TEXT NOT NULL,
    problem_details JSONB NOT NULL,

    -- Strategy
    strategy_name TEXT NOT NULL,
    strategy_params JSONB,

    -- Execution
    started_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ,
    duration_ms INTEGER,

    -- Result
    success BOOLEAN NOT NULL,
    verified BOOLEAN,
    actions_taken INTEGER,
    improvement_pct REAL,
    error_message TEXT,

    -- Context
    initial_lambda REAL NOT NULL,
    final_lambda REAL,
    witness_edges JSONB,
    system_metrics JSONB,

    -- Learning
    feedback_score REAL, -- Human feedback if provided
    created_at TIMESTAMPTZ DEFAULT NOW(),

    -- Additions. state: pending_approval (queued for a human, nothing done),
    -- running (the engine holds the collection's lease and may be acting),
    -- done (finished, whatever the result).
    state TEXT NOT NULL DEFAULT 'done'
        CHECK (state IN ('pending_approval', 'running', 'done')),
    -- The classifier's and the selection's explanations.
    decision JSONB,
    rolled_back BOOLEAN NOT NULL DEFAULT false,
    -- Rollback records (metadata->'actions'), the strategy's result metadata.
    metadata JSONB NOT NULL DEFAULT '{}',
    -- The audit chain: a record joins the chain when it is sealed (on
    -- reaching pending_approval or done), gets the next chain_seq, the
    -- previous record's record_hash as prev_hash, and an Ed25519 signature
    -- of its canonical bytes (ruvector._healing_canonical) by key_id.
    chain_seq BIGINT UNIQUE,
    prev_hash BYTEA,
    record_hash BYTEA,
    signature BYTEA,
    key_id TEXT
);
CREATE INDEX idx_healing_outcomes_class ON ruvector.healing_outcomes(problem_class);
CREATE INDEX idx_healing_outcomes_strategy ON ruvector.healing_outcomes(strategy_name);
CREATE INDEX idx_healing_outcomes_success ON ruvector.healing_outcomes(success, verified);
CREATE INDEX idx_healing_outcomes_collection_time
    ON ruvector.healing_outcomes(collection_id, started_at DESC);

-- Public keys of the sidecars' audit signing keys. Only admins read them:
-- the chain is verified by the sidecar, and the key inventory is not
-- something a monitoring role needs.
CREATE TABLE ruvector.healing_audit_keys (
    key_id     TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL UNIQUE CHECK (length(public_key) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ruvector.healing_strategy_weights (
    strategy_name TEXT PRIMARY KEY,
    weight        REAL NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row: the configuration document healconfig parses (missing keys take
-- their defaults there).
CREATE TABLE ruvector.healing_config (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    config     JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by NAME NOT NULL DEFAULT current_user
);

-- One remediation at a time per collection, across sidecars: a row lease
-- with an expiry on the server's clock. A holder that loses its connection
-- keeps the lease until it expires, so nobody else acts meanwhile (fail
-- closed), and the holder never acts past its own, earlier, local deadline.
CREATE TABLE ruvector.healing_leases (
    collection_id INTEGER PRIMARY KEY,
    holder        TEXT NOT NULL,
    token         BIGINT NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    expires_at    TIMESTAMPTZ NOT NULL
);

GRANT SELECT ON ruvector.healing_outcomes, ruvector.healing_strategy_weights,
    ruvector.healing_config, ruvector.healing_leases TO ruvector_monitor, pg_monitor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ruvector.healing_outcomes, ruvector.healing_strategy_weights,
    ruvector.healing_config, ruvector.healing_leases, ruvector.healing_audit_keys TO ruvector_admin;
GRANT USAGE ON SEQUENCE ruvector.healing_outcomes_id_seq TO ruvector_admin;
REVOKE ALL ON ruvector.healing_audit_keys FROM PUBLIC;

-- Canonical bytes of an outcome record, the input of record_hash =
-- sha256(canonical) and of the Ed25519 signature. sidecar/audit computes the
-- very same bytes (Record.Canonical); the encoding is chosen so that both
-- sides produce it without interpreting any value:
--   a field is 0x00 when NULL, else 0x01 followed by
--   int, bigint, boolean: int8send (8 bytes big-endian; booleans 0/1);
--   real: float4send (the IEEE bits, big-endian);
--   timestamptz: int8send of microseconds since 1970-01-01 UTC;
--   text, jsonb (as its text), bytea: int4send(byte length) then the bytes.
-- Fields, in order: a version tag, chain_seq, id, collection_id, tenant_id,
-- problem_class, problem_details, strategy_name, strategy_params, started_at,
-- completed_at, duration_ms, success, verified, actions_taken,
-- improvement_pct, error_message, initial_lambda, final_lambda,
-- witness_edges, system_metrics, created_at, state, decision, rolled_back,
-- metadata, key_id, prev_hash. feedback_score is left out: human feedback is
-- added after the fact and is not part of what the engine attests.
CREATE FUNCTION ruvector._canon(b bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN b IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(b)) || b END
$$;
CREATE FUNCTION ruvector._canon(t text)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT ruvector._canon(convert_to(t, 'UTF8'))
$$;
CREATE FUNCTION ruvector._canon(j jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT ruvector._canon(convert_to(j::text, 'UTF8'))
$$;
CREATE FUNCTION ruvector._canon(i bigint)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN i IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int8send(i) END
$$;
CREATE FUNCTION ruvector._canon(b boolean)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT ruvector._canon(b::int::bigint)
$$;
CREATE FUNCTION ruvector._canon(r real)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN r IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || float4send(r) END
$$;
CREATE FUNCTION ruvector._canon(ts timestamptz)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT ruvector._canon((extract(epoch FROM ts) * 1000000)::bigint)
$$;

CREATE FUNCTION ruvector._healing_canonical(o ruvector.healing_outcomes)
RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT ruvector._canon('ruvector.healing_outcomes/v1'::text)
        || ruvector._canon(o.chain_seq) || ruvector._canon(o.id)
        || ruvector._canon(o.collection_id::bigint) || ruvector._canon(o.tenant_id)
        || ruvector._canon(o.problem_class) || ruvector._canon(o.problem_details)
        || ruvector._canon(o.strategy_name) || ruvector._canon(o.strategy_params)
        || ruvector._canon(o.started_at) || ruvector._canon(o.completed_at)
        || ruvector._canon(o.duration_ms::bigint) || ruvector._canon(o.success)
        || ruvector._canon(o.verified) || ruvector._canon(o.actions_taken::bigint)
        || ruvector._canon(o.improvement_pct) || ruvector._canon(o.error_message)
        || ruvector._canon(o.initial_lambda) || ruvector._canon(o.final_lambda)
        || ruvector._canon(o.witness_edges) || ruvector._canon(o.system_metrics)
        || ruvector._canon(o.created_at) || ruvector._canon(o.state)
        || ruvector._canon(o.decision) || ruvector._canon(o.rolled_back)
        || ruvector._canon(o.metadata) || ruvector._canon(o.key_id)
        || ruvector._canon(o.prev_hash)
$$;

-- The healing configuration as stored (defaults are healconfig's; the two
-- this file needs are repeated here).
CREATE FUNCTION ruvector._healing_config()
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT '{"enabled": true, "min_healing_interval_seconds": 300}'::jsonb
        || coalesce((SELECT c.config FROM ruvector.healing_config c), '{}'::jsonb)
$$;

CREATE FUNCTION ruvector_healing_status()
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    cfg jsonb := ruvector._healing_config();
    last_start timestamptz;
    total integer;
    finished integer;
    succeeded integer;
    active jsonb;
    cooldown timestamptz;
BEGIN
    SELECT max(o.started_at) INTO last_start
        FROM ruvector.healing_outcomes o WHERE o.state IN ('running', 'done');
    SELECT count(*), count(*) FILTER (WHERE o.state = 'done'),
           count(*) FILTER (WHERE o.state = 'done' AND o.success AND coalesce(o.verified, false))
        INTO total, finished, succeeded
        FROM ruvector.healing_outcomes o
        WHERE o.state IN ('running', 'done') AND o.started_at >= now() - interval '24 hours';
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', o.id, 'collection_id', o.collection_id, 'collection', c.name,
               'strategy', o.strategy_name, 'problem_class', o.problem_class,
               'started_at', o.started_at) ORDER BY o.started_at), '[]'::jsonb)
        INTO active
        FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
        WHERE o.state = 'running';
    -- The cooldown is per collection; the status reports the latest one
    -- still in force.
    SELECT max(o.started_at) + make_interval(secs => (cfg->>'min_healing_interval_seconds')::float8)
        INTO cooldown
        FROM ruvector.healing_outcomes o WHERE o.state IN ('running', 'done');
    IF cooldown <= now() THEN
        cooldown := NULL;
    END IF;
    RETURN jsonb_build_object(
        'enabled', (cfg->>'enabled')::boolean,
        'last_healing', last_start,
        'total_healings_24h', total,
        'success_rate', CASE WHEN finished = 0 THEN NULL
                             ELSE round(succeeded::numeric / finished, 4) END,
        'active_remediations', active,
        'cooldown_until', cooldown,
        'sidecar_alive', ruvector._segment_status()->'sidecar_alive');
END
$$;

CREATE TYPE ruvector.healing_history_row AS (
    id bigint, collection text, collection_id integer, problem_class text,
    strategy_name text, state text, started_at timestamptz, completed_at timestamptz,
    duration_ms integer, success boolean, verified boolean, rolled_back boolean,
    actions_taken integer, improvement_pct real, initial_lambda real, final_lambda real,
    error_message text);

CREATE FUNCTION ruvector_healing_history(
    since timestamptz DEFAULT now() - interval '24 hours', limit_ integer DEFAULT 20)
RETURNS SETOF ruvector.healing_history_row
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a timestamp, e.g. now() - interval ''1 hour''.';
    END IF;
    IF limit_ IS NULL OR limit_ < 1 OR limit_ > 100000 THEN
        RAISE EXCEPTION 'limit_ % is out of range', coalesce(limit_::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'limit_ is 1 to 100000.';
    END IF;
    RETURN QUERY
        SELECT o.id, c.name::text, o.collection_id, o.problem_class, o.strategy_name, o.state,
               o.started_at, o.completed_at, o.duration_ms, o.success, o.verified, o.rolled_back,
               o.actions_taken, o.improvement_pct, o.initial_lambda, o.final_lambda, o.error_message
        FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
        WHERE o.started_at >= since
        ORDER BY o.started_at DESC, o.id DESC
        LIMIT limit_;
END
$$;

-- Per strategy over the learning window (30 days), with the definitions of
-- sidecar/learning: attempts are finished outcomes, successes those both
-- successful and verified, avg_improvement = sum of measured improvements /
-- attempts. weight is the persisted weight selection uses (NULL: never
-- learned, selection uses the default 1.0).
CREATE TYPE ruvector.healing_effectiveness_row AS (
    strategy_name text, weight real, attempts integer, successes integer,
    success_rate double precision, avg_improvement double precision,
    rolled_back integer, last_attempt timestamptz, weight_updated_at timestamptz);

CREATE FUNCTION ruvector_healing_effectiveness()
RETURNS SETOF ruvector.healing_effectiveness_row
LANGUAGE sql STABLE AS $$
    WITH o AS (
        SELECT h.strategy_name, count(*)::integer AS attempts,
               (count(*) FILTER (WHERE h.success AND coalesce(h.verified, false)))::integer AS successes,
               coalesce(sum(h.improvement_pct), 0)::float8 AS improvement_sum,
               (count(*) FILTER (WHERE h.rolled_back))::integer AS rolled_back,
               max(h.started_at) AS last_attempt
        FROM ruvector.healing_outcomes h
        WHERE h.state = 'done' AND h.started_at >= now() - interval '30 days'
        GROUP BY h.strategy_name)
    SELECT coalesce(o.strategy_name, w.strategy_name), w.weight, coalesce(o.attempts, 0),
           coalesce(o.successes, 0),
           CASE WHEN o.attempts > 0 THEN o.successes::float8 / o.attempts END,
           CASE WHEN o.attempts > 0 THEN o.improvement_sum / o.attempts END,
           coalesce(o.rolled_back, 0), o.last_attempt, w.updated_at
    FROM o FULL JOIN ruvector.healing_strategy_weights w ON w.strategy_name = o.strategy_name
    ORDER BY w.weight DESC NULLS LAST, 1
$$;

-- Checks what SQL can check of the audit chain: chain_seq runs 1..n without
-- gaps, each record's prev_hash is the previous record's record_hash (NULL
-- for the first), and record_hash = sha256(ruvector._healing_canonical(row)).
-- A record altered, deleted or moved breaks one of these. The Ed25519
-- signatures cannot be checked in SQL: ruvector-sidecar verifies them (and
-- this whole chain again) with sidecar/audit.Verify against
-- ruvector.healing_audit_keys.
CREATE FUNCTION ruvector_healing_verify_audit()
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
    expect_seq bigint := 1;
    prev bytea;
    n integer := 0;
    problems jsonb := '[]'::jsonb;
    nproblems integer := 0;
    unsealed integer;
    unsigned integer := 0;
BEGIN
    FOR r IN SELECT o.id, o.chain_seq, o.prev_hash, o.record_hash, o.signature,
                    sha256(ruvector._healing_canonical(o)) AS computed
             FROM ruvector.healing_outcomes o
             WHERE o.chain_seq IS NOT NULL ORDER BY o.chain_seq LOOP
        n := n + 1;
        IF r.chain_seq <> expect_seq THEN
            nproblems := nproblems + 1;
            problems := problems || jsonb_build_object('chain_seq', r.chain_seq, 'id', r.id,
                'problem', format('records %s to %s are missing', expect_seq, r.chain_seq - 1));
        END IF;
        IF r.prev_hash IS DISTINCT FROM prev THEN
            nproblems := nproblems + 1;
            problems := problems || jsonb_build_object('chain_seq', r.chain_seq, 'id', r.id,
                'problem', 'prev_hash does not match the previous record''s record_hash');
        END IF;
        IF r.record_hash IS DISTINCT FROM r.computed THEN
            nproblems := nproblems + 1;
            problems := problems || jsonb_build_object('chain_seq', r.chain_seq, 'id', r.id,
                'problem', 'record_hash does not match the record: it was altered after sealing');
        END IF;
        IF r.signature IS NULL THEN
            unsigned := unsigned + 1;
        END IF;
        prev := r.record_hash;
        expect_seq := r.chain_seq + 1;
    END LOOP;
    SELECT count(*) INTO unsealed FROM ruvector.healing_outcomes o WHERE o.chain_seq IS NULL;
    IF unsigned > 0 THEN
        nproblems := nproblems + 1;
        problems := problems || jsonb_build_object('problem', format('%s sealed records carry no signature', unsigned));
    END IF;
    RETURN jsonb_build_object(
        'ok', nproblems = 0,
        'records', n,
        'unsealed', unsealed,
        'problems', problems,
        'signatures', 'not checked in SQL: ruvector-sidecar verifies the Ed25519 signatures (sidecar/audit)');
END
$$;

REVOKE ALL ON FUNCTION ruvector._canon(bytea), ruvector._canon(text), ruvector._canon(jsonb),
    ruvector._canon(bigint), ruvector._canon(boolean), ruvector._canon(real),
    ruvector._canon(timestamptz), ruvector._healing_canonical(ruvector.healing_outcomes),
    ruvector._healing_config(), ruvector_healing_status(),
    ruvector_healing_history(timestamptz, integer), ruvector_healing_effectiveness(),
    ruvector_healing_verify_audit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._canon(bytea), ruvector._canon(text), ruvector._canon(jsonb),
    ruvector._canon(bigint), ruvector._canon(boolean), ruvector._canon(real),
    ruvector._canon(timestamptz), ruvector._healing_canonical(ruvector.healing_outcomes),
    ruvector._healing_config(), ruvector_healing_status(),
    ruvector_healing_history(timestamptz, integer), ruvector_healing_effectiveness(),
    ruvector_healing_verify_audit() TO ruvector_monitor, pg_monitor;

-- ---------------------------------------------------------------------------
-- Follow partitions: CREATE TABLE ... PARTITION OF, ATTACH/DETACH PARTITION
-- and DROP TABLE on a collection's tree keep the write gate's relation map
-- in step without anyone having to remember ruvector_collection_refresh.
-- SECURITY DEFINER: the DDL's author need not be a ruvector_admin; a
-- failure only warns, it never undoes the user's DDL.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ruvector._follow_partitions()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT col.name FROM ruvector.collections col
        WHERE EXISTS (SELECT 1 FROM pg_partition_tree(col.relid) t
                      WHERE NOT EXISTS (SELECT 1 FROM ruvector.collection_relations r
                                        WHERE r.collection_id = col.collection_id AND r.relid = t.relid))
           OR EXISTS (SELECT 1 FROM ruvector.collection_relations r
                      WHERE r.collection_id = col.collection_id
                        AND NOT EXISTS (SELECT 1 FROM pg_partition_tree(col.relid) t WHERE t.relid = r.relid))
    LOOP
        BEGIN
            PERFORM ruvector.ruvector_collection_refresh(c.name);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ruvector_healing: could not follow the partitions of collection "%": %', c.name, SQLERRM
                USING HINT = 'Run SELECT ruvector_collection_refresh(...) as a member of ruvector_admin.';
        END;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION ruvector._follow_partitions() FROM PUBLIC;

CREATE EVENT TRIGGER ruvector_follow_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'DROP TABLE')
    EXECUTE FUNCTION ruvector._follow_partitions();
