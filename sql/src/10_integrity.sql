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
    -- Signed by the sidecar's audit key (ruvector.healing_audit_keys):
    -- events it writes itself at once, events written by SQL functions
    -- (policy changes, overrides) within a sample. The signature covers
    -- ruvector._integrity_event_canonical(row); is_verified is computed
    -- when read (ruvector_integrity_history), never stored.
    is_signed          boolean NOT NULL DEFAULT false,
    signature          bytea,
    key_id             text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integrity_events_collection_time ON ruvector.integrity_events (collection_id, created_at DESC);
-- The sidecar's sealer looks for these every sample.
CREATE INDEX integrity_events_unsigned ON ruvector.integrity_events (id) WHERE signature IS NULL;

-- What an event's signature covers. Timestamps as microseconds and floats
-- with extra_float_digits fixed, so the bytes depend on the row alone, not
-- on the reader's TimeZone or float settings.
CREATE FUNCTION ruvector._integrity_event_canonical(e ruvector.integrity_events)
RETURNS bytea LANGUAGE sql IMMUTABLE SET extra_float_digits = 3 AS $$
    SELECT convert_to(jsonb_build_array('ruvector.integrity_events/v1', e.id, e.collection_id, e.event_type,
        e.previous_state, e.new_state, e.lambda_cut, e.witness_edge_count, e.metadata,
        (extract(epoch FROM e.created_at) * 1000000)::bigint)::text, 'UTF8')
$$;

-- NULL when unsigned, else whether the signature verifies against the
-- registered public key. SECURITY DEFINER: readers of events may not read
-- the key inventory itself. (PL/pgSQL: the key table is created later in
-- the script.)
CREATE FUNCTION ruvector._integrity_event_verified(e ruvector.integrity_events)
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF e.signature IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN coalesce((SELECT ruvector._ed25519_verify(k.public_key, ruvector._integrity_event_canonical(e), e.signature)
                     FROM ruvector.healing_audit_keys k WHERE k.key_id = e.key_id), false);
END
$$;

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

-- The change feed's confirmed position per replication slot, so a
-- restarted sidecar resumes (sidecar/changefeed). Part of the extension
-- rather than created by the sidecar: that would need CREATE on the schema.
CREATE TABLE ruvector.changefeed_state (
    slot_name     text PRIMARY KEY,
    confirmed_lsn pg_lsn NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON ruvector.changefeed_state TO ruvector_monitor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ruvector.changefeed_state TO ruvector_admin;

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

-- The gate matrix applied to one operation: may it run now, throttled, or
-- later? Operations map to the spec's risk classes; the risk names
-- themselves are accepted too. For the writes the gate enforces (insert,
-- bulk_insert) the write gate's live throttle counts as well, since that is
-- what the statement will meet.
CREATE FUNCTION ruvector._operation_risk(operation text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(operation)
        WHEN 'low' THEN 'low' WHEN 'medium' THEN 'medium' WHEN 'high' THEN 'high'
        WHEN 'search' THEN 'low' WHEN 'read' THEN 'low' WHEN 'insert' THEN 'low'
        WHEN 'bulk_insert' THEN 'medium' WHEN 'update' THEN 'medium' WHEN 'delete' THEN 'medium'
        WHEN 'vacuum' THEN 'medium' WHEN 'analyze' THEN 'medium'
        WHEN 'reindex' THEN 'high' WHEN 'index_build' THEN 'high' WHEN 'rebuild_centroids' THEN 'high'
        WHEN 'rebalance' THEN 'high' WHEN 'compaction' THEN 'high' WHEN 'ddl' THEN 'high'
    END
$$;

CREATE FUNCTION ruvector_integrity_gate(collection text, operation text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    st jsonb;
    risk text;
    rule text;
    state text;
    gate_pct integer := 0;
    gate_by text;
    pct integer := 0;
    allowed boolean := true;
    retry integer;
    actions jsonb := '[]'::jsonb;
    reason text;
BEGIN
    IF operation IS NULL THEN
        RAISE EXCEPTION 'operation must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the operation, e.g. ruvector_integrity_gate(''docs'', ''bulk_insert'').';
    END IF;
    risk := ruvector._operation_risk(operation);
    IF risk IS NULL THEN
        RAISE EXCEPTION 'unknown operation "%"', operation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a risk class (low, medium, high) or one of: search, read, insert (low); bulk_insert, update, delete, vacuum, analyze (medium); reindex, index_build, rebuild_centroids, rebalance, compaction, ddl (high).';
    END IF;
    st := ruvector.ruvector_integrity_status(collection);
    state := st->>'state';
    rule := ruvector._allowed_operations(state)->>risk;
    IF rule LIKE 'throttle(%' THEN
        pct := round(100 * substring(rule FROM 'throttle\(([0-9.]+)\)')::numeric);
        actions := actions || to_jsonb(format('throttle %s%%', pct));
    ELSIF rule LIKE 'defer(%' THEN
        allowed := false;
        retry := substring(rule FROM 'defer\(([0-9]+) s\)')::integer;
        actions := actions || to_jsonb(format('defer %s s', retry));
    ELSIF rule = 'reject' THEN
        allowed := false;
        actions := actions || to_jsonb('reject'::text);
    END IF;
    reason := CASE state
        WHEN 'unknown' THEN format('the state of %s is unknown (no live sidecar measurement): %s-risk operations get %s',
                                   collection, risk, rule)
        ELSE format('%s is %s (λ %s; thresholds %s / %s): %s-risk operation %s gets %s',
                    collection, state, coalesce(round((st->>'lambda_cut')::numeric, 3)::text, 'not sampled'),
                    st->>'threshold_high', st->>'threshold_low', risk, lower(operation), rule)
    END;
    IF lower(operation) IN ('insert', 'bulk_insert') THEN
        SELECT t.pct, t.set_by INTO gate_pct, gate_by
        FROM ruvector.ruvector_throttle_status() t WHERE t.collection = ruvector_integrity_gate.collection AND t.op = lower(operation);
        IF coalesce(gate_pct, 0) > pct THEN
            pct := gate_pct;
            actions := actions || to_jsonb(format('write gate throttles %s at %s%% (set by %s)', lower(operation), gate_pct, gate_by));
            reason := reason || format('; the write gate throttles %s at %s%% (set by %s)', lower(operation), gate_pct, gate_by);
            IF gate_pct >= 100 THEN
                allowed := false;
            END IF;
        END IF;
    END IF;
    RETURN jsonb_build_object(
        'allowed', allowed,
        'throttle_pct', pct,
        'state', state,
        'risk', risk,
        'operation', lower(operation),
        'retry_after_seconds', retry,
        'reason', reason,
        'actions', actions);
END
$$;
COMMENT ON FUNCTION ruvector_integrity_gate(text, text) IS
    'Applies the integrity gate matrix (risk low/medium/high × state) and the write gate''s live throttle to one operation: allowed, throttle_pct, state, reason, actions.';

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
               e.metadata, e.is_signed,
               ruvector._integrity_event_verified(e),
               e.created_at
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
    ruvector_integrity_history(text, text, timestamptz, integer), ruvector_integrity_gate(text, text),
    ruvector._integrity_event_canonical(ruvector.integrity_events),
    ruvector._integrity_event_verified(ruvector.integrity_events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_integrity_status(text), ruvector_contracted_graph(text),
    ruvector_integrity_history(text, text, timestamptz, integer), ruvector_integrity_gate(text, text),
    ruvector._integrity_event_canonical(ruvector.integrity_events),
    ruvector._integrity_event_verified(ruvector.integrity_events)
    TO ruvector_monitor, pg_monitor;

