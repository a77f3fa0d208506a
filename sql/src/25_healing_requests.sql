-- ---------------------------------------------------------------------------
-- Self-healing: the acting SQL surface. Administrators configure healing and
-- ask the sidecar to act; monitors read.
--
-- A request is a row of ruvector.healing_requests plus a pg_notify on
-- channel ruvector_healing_requests (payload: the request id). The row makes
-- the request durable: a sidecar that is down serves it when it comes back
-- (it scans pending requests at start and after every reconnect) unless it
-- expired first (expires_at; its status then reads 'expired'). The notify
-- makes the sidecar react at once without polling. A function cannot wait
-- for the sidecar's answer: the notify is delivered only when the calling
-- transaction commits. It returns the request instead (id, status, whether
-- a sidecar is alive) and ruvector_healing_request_status(id) follows it.
-- ---------------------------------------------------------------------------

CREATE TABLE ruvector.healing_requests (
    id            BIGSERIAL PRIMARY KEY,
    -- plan: a dry run of execute; the result is the strategy's plan.
    kind          TEXT NOT NULL CHECK (kind IN ('trigger', 'approve', 'abort', 'execute', 'rollback', 'plan')),
    collection_id INTEGER,
    -- approve/abort: the healing_outcomes row acted on; rollback: the
    -- outcome being rolled back.
    action_id     BIGINT,
    strategy      TEXT,
    params        JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'expired')),
    requested_by  NAME NOT NULL DEFAULT current_user,
    requested_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    expires_at    TIMESTAMPTZ NOT NULL,
    claimed_by    TEXT,
    claimed_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    -- The healing_outcomes row the request produced, if any.
    outcome_id    BIGINT,
    result        JSONB,
    error         TEXT
);
CREATE INDEX healing_requests_open ON ruvector.healing_requests (id) WHERE status IN ('pending', 'running');

-- The strategies the active sidecar has registered, published by it at
-- start, so that SQL can validate a strategy name and plan a dry run
-- without the sidecar.
CREATE TABLE ruvector.healing_strategies (
    name                  TEXT PRIMARY KEY,
    handles               TEXT[] NOT NULL,
    impact                REAL NOT NULL,
    estimated_duration_ms BIGINT NOT NULL,
    reversible            BOOLEAN NOT NULL,
    published_by          TEXT NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The active sidecar of this database: one row with an expiry the holder
-- renews (sidecar/healing/leader.go explains why a row and not an advisory
-- lock). A standby sidecar monitors but does not act.
CREATE TABLE ruvector.healing_leader (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    renewed_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    expires_at  TIMESTAMPTZ NOT NULL
);

GRANT SELECT ON ruvector.healing_requests, ruvector.healing_strategies, ruvector.healing_leader
    TO ruvector_monitor, pg_monitor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ruvector.healing_requests, ruvector.healing_strategies,
    ruvector.healing_leader TO ruvector_admin;
GRANT USAGE ON SEQUENCE ruvector.healing_requests_id_seq TO ruvector_admin;

-- How long a request waits for a sidecar before it expires.
CREATE FUNCTION ruvector._healing_request_ttl()
RETURNS interval LANGUAGE sql IMMUTABLE AS $$ SELECT interval '15 minutes' $$;

-- A request's status as a reader should see it: pending past its expiry is
-- expired even before a sidecar or a new request marks it so.
CREATE FUNCTION ruvector._healing_request_json(r ruvector.healing_requests)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'request_id', r.id, 'kind', r.kind,
        'collection', (SELECT c.name FROM ruvector.collections c WHERE c.collection_id = r.collection_id),
        'action_id', r.action_id, 'strategy', r.strategy, 'params', r.params,
        'status', CASE WHEN r.status = 'pending' AND r.expires_at <= clock_timestamp() THEN 'expired'
                       ELSE r.status END,
        'requested_by', r.requested_by, 'requested_at', r.requested_at, 'expires_at', r.expires_at,
        'claimed_by', r.claimed_by, 'finished_at', r.finished_at, 'outcome_id', r.outcome_id,
        'result', r.result, 'error', r.error)
$$;

CREATE FUNCTION ruvector._healing_sidecar_alive()
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((ruvector._segment_status()->>'sidecar_alive')::boolean, false)
$$;

-- Records a request and wakes the sidecar. Says so, as a NOTICE and in the
-- returned document, when no sidecar is running.
CREATE FUNCTION ruvector._healing_request(kind text, collection_id integer, action_id bigint,
    strategy text, params jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r ruvector.healing_requests;
    alive boolean := ruvector._healing_sidecar_alive();
    doc jsonb;
BEGIN
    UPDATE ruvector.healing_requests q SET status = 'expired', finished_at = q.expires_at,
        error = 'no sidecar served the request before it expired'
        WHERE q.status = 'pending' AND q.expires_at <= clock_timestamp();
    INSERT INTO ruvector.healing_requests (kind, collection_id, action_id, strategy, params, expires_at)
        VALUES (kind, collection_id, action_id, strategy, coalesce(params, '{}'),
                clock_timestamp() + ruvector._healing_request_ttl())
        RETURNING * INTO r;
    PERFORM pg_notify('ruvector_healing_requests', r.id::text);
    doc := ruvector._healing_request_json(r) || jsonb_build_object('sidecar_alive', alive);
    IF NOT alive THEN
        RAISE NOTICE 'ruvector-sidecar is not running: request % waits for it for at most %', r.id, ruvector._healing_request_ttl()
            USING HINT = 'Start ruvector-sidecar run; follow the request with SELECT ruvector_healing_request_status(' || r.id || ');';
        doc := doc || jsonb_build_object('note', 'sidecar not running: the request is served when it starts, or expires at expires_at');
    ELSE
        doc := doc || jsonb_build_object('note', 'the sidecar takes the request when this transaction commits; follow it with ruvector_healing_request_status(request_id)');
    END IF;
    RETURN doc;
END
$$;

CREATE FUNCTION ruvector_healing_request_status(request_id bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    r ruvector.healing_requests;
BEGIN
    IF request_id IS NULL THEN
        RAISE EXCEPTION 'request_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the request_id a healing function returned.';
    END IF;
    SELECT * INTO r FROM ruvector.healing_requests q WHERE q.id = request_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'healing request % does not exist', request_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, kind, status FROM ruvector.healing_requests ORDER BY id DESC lists recent requests.';
    END IF;
    RETURN ruvector._healing_request_json(r) || jsonb_build_object('sidecar_alive', ruvector._healing_sidecar_alive());
END
$$;

-- ---------------------------------------------------------------------------
-- Configuration. The checks mirror sidecar/healconfig exactly (keys, types,
-- ranges, the order errors are reported in); healing's integration test
-- TestConfigureAgreesWithHealconfig runs one table of documents through
-- both and fails on any disagreement, and compares the defaults.
-- ---------------------------------------------------------------------------

CREATE FUNCTION ruvector._healing_config_defaults()
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"enabled": true, "min_healing_interval_seconds": 300, "max_attempts_per_hour": 3,
             "attempt_window_seconds": 3600, "max_auto_heal_impact": 0.5, "require_approval": [],
             "require_approval_strategies": ["scale_replicas"], "learning_enabled": true,
             "stabilization_seconds": 10, "maintenance_pause_priority_below": 50,
             "classifier_thresholds": {"partition_link_edges": 3, "centroid_nodes": 5,
                "replication_edges": 0, "dependency_edges": 2, "memory_usage_pct": 85,
                "fragmentation_pct": 30, "hot_partition_ratio": 1.5, "skewed_centroid_ratio": 1.5,
                "max_memory_consumers": 5}}'::jsonb
$$;

CREATE FUNCTION ruvector._healing_config_hint(key text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE regexp_replace(key, '\[\d+\]$', '')
        WHEN 'enabled' THEN 'enabled takes true or false (default true)'
        WHEN 'min_healing_interval_seconds' THEN 'min_healing_interval_seconds takes a whole number of seconds from 0 to 86400 (default 300)'
        WHEN 'max_attempts_per_hour' THEN 'max_attempts_per_hour takes a whole number from 1 to 1000, counted per attempt_window_seconds (default 3); to stop healing set enabled to false'
        WHEN 'attempt_window_seconds' THEN 'attempt_window_seconds takes a whole number of seconds from 60 to 604800 (default 3600)'
        WHEN 'max_auto_heal_impact' THEN 'max_auto_heal_impact takes a number from 0 to 1 (default 0.5)'
        WHEN 'require_approval' THEN 'require_approval takes an array of problem classes: hotspot_congestion, centroid_skew, replication_lag, maintenance_contention, index_fragmentation, memory_pressure, unknown (default [])'
        WHEN 'require_approval_strategies' THEN 'require_approval_strategies takes an array of strategy names (default ["scale_replicas"])'
        WHEN 'learning_enabled' THEN 'learning_enabled takes true or false (default true)'
        WHEN 'stabilization_seconds' THEN 'stabilization_seconds takes a whole number of seconds from 0 to 3600 (default 10)'
        WHEN 'maintenance_pause_priority_below' THEN 'maintenance_pause_priority_below takes a whole number from 0 to 1000: pause_maintenance pauses maintenance jobs with a lower priority (default 50)'
        WHEN 'classifier_thresholds' THEN 'classifier_thresholds takes an object with any of: partition_link_edges, centroid_nodes, replication_edges, dependency_edges, memory_usage_pct, fragmentation_pct, hot_partition_ratio, skewed_centroid_ratio, max_memory_consumers'
        ELSE CASE WHEN key LIKE 'classifier_thresholds.%' THEN
            key || ' takes ' || CASE WHEN split_part(key, '.', 2) IN ('memory_usage_pct', 'fragmentation_pct',
                'hot_partition_ratio', 'skewed_centroid_ratio') THEN 'a number' ELSE 'a whole number' END
            || ' (default ' || (ruvector._healing_config_defaults()->'classifier_thresholds'->>split_part(key, '.', 2)) || ')'
        END
    END
$$;

CREATE FUNCTION ruvector._healing_config_error(key text, value jsonb, reason text, hint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'invalid healing configuration: key "%": %', key, reason
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('The value given for %s is %s. Nothing was changed.', key, coalesce(left(value::text, 80), 'null')),
              HINT = coalesce(hint, ruvector._healing_config_hint(key), 'see ruvector_healing_configure');
END
$$;

CREATE FUNCTION ruvector._jsonb_kind(v jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(v) WHEN 'null' THEN 'null' WHEN 'boolean' THEN 'a boolean'
        WHEN 'string' THEN 'a string' WHEN 'array' THEN 'an array' WHEN 'object' THEN 'an object'
        ELSE 'a number' END
$$;

-- Type checks of one value (healconfig's decode*): kind is bool, int,
-- number, strings or object.
CREATE FUNCTION ruvector._healing_config_type(key text, v jsonb, kind text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n numeric;
    i integer := 0;
    e jsonb;
BEGIN
    IF jsonb_typeof(v) = 'null' THEN
        PERFORM ruvector._healing_config_error(key, v, 'null is not allowed',
            'omit the key to keep the current value'
            || CASE WHEN key IN ('require_approval', 'require_approval_strategies') THEN '; use [] for an empty list' ELSE '' END
            || coalesce('; ' || ruvector._healing_config_hint(key), ''));
    END IF;
    CASE kind
    WHEN 'bool' THEN
        IF jsonb_typeof(v) <> 'boolean' THEN
            PERFORM ruvector._healing_config_error(key, v, 'expected a boolean, got ' || ruvector._jsonb_kind(v));
        END IF;
    WHEN 'number', 'int' THEN
        IF jsonb_typeof(v) <> 'number' THEN
            PERFORM ruvector._healing_config_error(key, v, 'expected ' ||
                CASE kind WHEN 'int' THEN 'a whole number' ELSE 'a number' END || ', got ' || ruvector._jsonb_kind(v));
        END IF;
        n := v::text::numeric;
        IF abs(n) > 1.7976931348623157e308 THEN
            PERFORM ruvector._healing_config_error(key, v, 'number out of range');
        END IF;
        IF kind = 'int' THEN
            IF n <> trunc(n) THEN
                PERFORM ruvector._healing_config_error(key, v, 'must be a whole number');
            END IF;
            IF abs(n) > 9007199254740992 THEN
                PERFORM ruvector._healing_config_error(key, v, 'number out of range');
            END IF;
        END IF;
    WHEN 'strings' THEN
        IF jsonb_typeof(v) <> 'array' THEN
            PERFORM ruvector._healing_config_error(key, v, 'expected an array of strings, got ' || ruvector._jsonb_kind(v));
        END IF;
        FOR e IN SELECT x FROM jsonb_array_elements(v) x LOOP
            IF jsonb_typeof(e) <> 'string' THEN
                PERFORM ruvector._healing_config_error(format('%s[%s]', key, i), e, 'expected a string, got ' || ruvector._jsonb_kind(e));
            END IF;
            i := i + 1;
        END LOOP;
    WHEN 'object' THEN
        IF jsonb_typeof(v) <> 'object' THEN
            PERFORM ruvector._healing_config_error(key, v, 'expected an object, got ' || ruvector._jsonb_kind(v));
        END IF;
    END CASE;
END
$$;

CREATE FUNCTION ruvector._healing_config_range(key text, v jsonb, lo numeric, hi numeric, reason text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF v::text::numeric < lo OR v::text::numeric > hi THEN
        PERFORM ruvector._healing_config_error(key, v, reason);
    END IF;
END
$$;

-- Merges patch onto the stored configuration (over the defaults) and
-- validates the result the way healconfig.Merge does; raises on the first
-- problem, returns the full configuration otherwise.
CREATE FUNCTION ruvector._healing_config_merge(current jsonb, patch jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    keys text[] := ARRAY['enabled', 'min_healing_interval_seconds', 'max_attempts_per_hour',
        'attempt_window_seconds', 'max_auto_heal_impact', 'require_approval',
        'require_approval_strategies', 'learning_enabled', 'stabilization_seconds', 'maintenance_pause_priority_below',
        'classifier_thresholds'];
    kinds text[] := ARRAY['bool', 'int', 'int', 'int', 'number', 'strings', 'strings', 'bool', 'int', 'int', 'object'];
    tkeys text[] := ARRAY['partition_link_edges', 'centroid_nodes', 'replication_edges', 'dependency_edges',
        'memory_usage_pct', 'fragmentation_pct', 'hot_partition_ratio', 'skewed_centroid_ratio', 'max_memory_consumers'];
    tkinds text[] := ARRAY['int', 'int', 'int', 'int', 'number', 'number', 'number', 'number', 'int'];
    cfg jsonb := ruvector._healing_config_defaults() || coalesce(current, '{}');
    th jsonb;
    k text;
    i integer;
    e jsonb;
    classes text[] := ARRAY['hotspot_congestion', 'centroid_skew', 'replication_lag',
        'maintenance_contention', 'index_fragmentation', 'memory_pressure', 'unknown'];
    seen text[];
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) = 'null' THEN
        RAISE EXCEPTION 'invalid healing configuration: the configuration is null'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass a JSON object; {} changes nothing';
    END IF;
    IF jsonb_typeof(patch) <> 'object' THEN
        RAISE EXCEPTION 'invalid healing configuration: expected a JSON object, got %', ruvector._jsonb_kind(patch)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The value given is %s.', left(patch::text, 80)),
                  HINT = 'pass a JSON object such as {"enabled": true}';
    END IF;
    -- Keys in sorted (byte) order: unknown key, null, wrong type.
    FOR k IN SELECT x FROM jsonb_object_keys(patch) x ORDER BY x COLLATE "C" LOOP
        i := array_position(keys, k);
        IF i IS NULL THEN
            PERFORM ruvector._healing_config_error(k, patch->k, 'unknown key', 'valid: ' || array_to_string(keys, ', '));
        END IF;
        PERFORM ruvector._healing_config_type(k, patch->k, kinds[i]);
        IF k = 'classifier_thresholds' THEN
            th := cfg->'classifier_thresholds';
            FOR k IN SELECT x FROM jsonb_object_keys(patch->'classifier_thresholds') x ORDER BY x COLLATE "C" LOOP
                i := array_position(tkeys, k);
                IF i IS NULL THEN
                    PERFORM ruvector._healing_config_error('classifier_thresholds.' || k, patch->'classifier_thresholds'->k,
                        'unknown key', 'inside classifier_thresholds: valid: ' || array_to_string(tkeys, ', '));
                END IF;
                PERFORM ruvector._healing_config_type('classifier_thresholds.' || k, patch->'classifier_thresholds'->k, tkinds[i]);
                th := th || jsonb_build_object(k, patch->'classifier_thresholds'->k);
            END LOOP;
            cfg := cfg || jsonb_build_object('classifier_thresholds', th);
        ELSE
            cfg := cfg || jsonb_build_object(k, patch->k);
        END IF;
    END LOOP;
    -- Ranges, in document order (healconfig's Validate).
    PERFORM ruvector._healing_config_range('min_healing_interval_seconds', cfg->'min_healing_interval_seconds', 0, 86400, 'must be between 0 and 86400 seconds');
    PERFORM ruvector._healing_config_range('max_attempts_per_hour', cfg->'max_attempts_per_hour', 1, 1000, 'must be between 1 and 1000');
    PERFORM ruvector._healing_config_range('attempt_window_seconds', cfg->'attempt_window_seconds', 60, 604800, 'must be between 60 and 604800 seconds');
    PERFORM ruvector._healing_config_range('max_auto_heal_impact', cfg->'max_auto_heal_impact', 0, 1, 'must be between 0 and 1');
    seen := '{}';
    i := 0;
    FOR e IN SELECT x FROM jsonb_array_elements(cfg->'require_approval') x LOOP
        IF NOT (e #>> '{}') = ANY (classes) THEN
            PERFORM ruvector._healing_config_error(format('require_approval[%s]', i), e, 'is not a problem class');
        END IF;
        IF (e #>> '{}') = ANY (seen) THEN
            PERFORM ruvector._healing_config_error(format('require_approval[%s]', i), e, 'is listed twice');
        END IF;
        seen := seen || (e #>> '{}');
        i := i + 1;
    END LOOP;
    seen := '{}';
    i := 0;
    FOR e IN SELECT x FROM jsonb_array_elements(cfg->'require_approval_strategies') x LOOP
        IF (e #>> '{}') !~ '^[a-z][a-z0-9_]*$' OR octet_length(e #>> '{}') > 63 THEN
            PERFORM ruvector._healing_config_error(format('require_approval_strategies[%s]', i), e,
                'is not a strategy name (lower-case letters, digits and _, starting with a letter, at most 63 characters)');
        END IF;
        IF (e #>> '{}') = ANY (seen) THEN
            PERFORM ruvector._healing_config_error(format('require_approval_strategies[%s]', i), e, 'is listed twice');
        END IF;
        seen := seen || (e #>> '{}');
        i := i + 1;
    END LOOP;
    PERFORM ruvector._healing_config_range('stabilization_seconds', cfg->'stabilization_seconds', 0, 3600, 'must be between 0 and 3600 seconds');
    PERFORM ruvector._healing_config_range('maintenance_pause_priority_below', cfg->'maintenance_pause_priority_below', 0, 1000, 'must be between 0 and 1000');
    th := cfg->'classifier_thresholds';
    FOREACH k IN ARRAY ARRAY['partition_link_edges', 'centroid_nodes', 'replication_edges', 'dependency_edges'] LOOP
        PERFORM ruvector._healing_config_range('classifier_thresholds.' || k, th->k, 0, 100000, 'must be between 0 and 100000');
    END LOOP;
    FOREACH k IN ARRAY ARRAY['memory_usage_pct', 'fragmentation_pct'] LOOP
        PERFORM ruvector._healing_config_range('classifier_thresholds.' || k, th->k, 0, 100, 'must be a percentage between 0 and 100');
    END LOOP;
    FOREACH k IN ARRAY ARRAY['hot_partition_ratio', 'skewed_centroid_ratio'] LOOP
        PERFORM ruvector._healing_config_range('classifier_thresholds.' || k, th->k, 1, 1000, 'must be a ratio between 1 and 1000');
    END LOOP;
    PERFORM ruvector._healing_config_range('classifier_thresholds.max_memory_consumers', th->'max_memory_consumers', 1, 100, 'must be between 1 and 100');
    RETURN cfg;
END
$$;

CREATE FUNCTION ruvector_healing_configure(config jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    merged jsonb;
BEGIN
    PERFORM ruvector._require_admin('configure healing');
    IF config IS NULL THEN
        RAISE EXCEPTION 'config must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a JSON object such as ''{"enabled": false}''; ''{}'' shows the configuration.';
    END IF;
    -- Serialise concurrent patches: each merges onto the other's result.
    LOCK TABLE ruvector.healing_config IN SHARE ROW EXCLUSIVE MODE;
    merged := ruvector._healing_config_merge((SELECT c.config FROM ruvector.healing_config c), config);
    INSERT INTO ruvector.healing_config AS c (singleton, config) VALUES (true, merged)
        ON CONFLICT (singleton) DO UPDATE SET config = EXCLUDED.config, updated_at = now(), updated_by = current_user;
    RETURN merged;
END
$$;

-- ---------------------------------------------------------------------------
-- Acting. Every function checks what SQL can check (the collection, the
-- action's state, the strategy name) so that a mistake is an error now, not
-- a failed request later.
-- ---------------------------------------------------------------------------

CREATE FUNCTION ruvector_healing_trigger(collection text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
BEGIN
    PERFORM ruvector._require_admin('trigger healing');
    id := ruvector._collection_id(collection);
    RETURN ruvector._healing_request('trigger', id, NULL, NULL, '{}');
END
$$;

-- The pending action action_id, or an error saying why it is not one.
CREATE FUNCTION ruvector._healing_action(action_id bigint, want text[])
RETURNS ruvector.healing_outcomes LANGUAGE plpgsql STABLE AS $$
DECLARE
    o ruvector.healing_outcomes;
    decided ruvector.healing_requests;
BEGIN
    IF action_id IS NULL THEN
        RAISE EXCEPTION 'action_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id of a healing action: ruvector_healing_status()->''pending_actions'' and ->''active_remediations'' list them.';
    END IF;
    SELECT * INTO o FROM ruvector.healing_outcomes h WHERE h.id = action_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'healing action % does not exist', action_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'ruvector_healing_status()->''pending_actions'' and ->''active_remediations'' list the actions.';
    END IF;
    SELECT * INTO decided FROM ruvector.healing_requests q
        WHERE q.action_id = o.id AND q.kind IN ('approve', 'abort')
          AND (q.status IN ('running', 'done') OR (q.status = 'pending' AND q.expires_at > clock_timestamp()))
        ORDER BY q.id LIMIT 1;
    IF o.state = 'pending_approval' AND decided.id IS NOT NULL THEN
        RAISE EXCEPTION 'healing action % was already decided: % request % (%)', action_id, decided.kind, decided.id, decided.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'An action is approved or aborted once; ruvector_healing_request_status(' || decided.id || ') shows the decision.';
    END IF;
    IF NOT o.state = ANY (want) THEN
        RAISE EXCEPTION 'healing action % is %, not %', action_id, o.state, array_to_string(want, ' or ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN o.state = 'done' THEN 'It has finished; ruvector_healing_rollback(collection) undoes the last remediation of a collection.'
                              ELSE 'Only actions pending approval can be approved; running ones can be aborted.' END;
    END IF;
    RETURN o;
END
$$;

CREATE FUNCTION ruvector_healing_approve(action_id bigint)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    o ruvector.healing_outcomes;
BEGIN
    PERFORM ruvector._require_admin('approve a healing action');
    o := ruvector._healing_action(action_id, ARRAY['pending_approval']);
    RETURN ruvector._healing_request('approve', o.collection_id, o.id, o.strategy_name, '{}');
END
$$;

-- Abort: a pending action is dropped here and now (nothing was done, no
-- sidecar is needed); a running one is cancelled by the sidecar, which
-- rolls back what was done and records the outcome as failed.
CREATE FUNCTION ruvector_healing_abort(action_id bigint)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    o ruvector.healing_outcomes;
    r ruvector.healing_requests;
BEGIN
    PERFORM ruvector._require_admin('abort a healing action');
    o := ruvector._healing_action(action_id, ARRAY['pending_approval', 'running']);
    IF o.state = 'running' THEN
        RETURN ruvector._healing_request('abort', o.collection_id, o.id, o.strategy_name, '{}');
    END IF;
    INSERT INTO ruvector.healing_requests (kind, collection_id, action_id, strategy, status, expires_at,
            finished_at, result)
        VALUES ('abort', o.collection_id, o.id, o.strategy_name, 'done', clock_timestamp(), clock_timestamp(),
                jsonb_build_object('aborted', true, 'note', 'the action was pending approval: nothing had been done'))
        RETURNING * INTO r;
    RETURN ruvector._healing_request_json(r);
END
$$;

CREATE FUNCTION ruvector_healing_execute(collection text, strategy text, params jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id integer;
    s ruvector.healing_strategies;
    known text[];
    dry boolean := false;
    p jsonb;
    blockers jsonb := '[]';
    holder text;
BEGIN
    PERFORM ruvector._require_admin('execute a healing strategy');
    id := ruvector._collection_id(collection);
    IF strategy IS NULL THEN
        RAISE EXCEPTION 'strategy must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'SELECT name FROM ruvector.healing_strategies lists the strategies.';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'params must be a JSON object, not %', coalesce(params::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass strategy parameters as an object, e.g. ''{"dry_run": true}''; ''{}'' for none.';
    END IF;
    IF params ? 'dry_run' THEN
        IF jsonb_typeof(params->'dry_run') <> 'boolean' THEN
            RAISE EXCEPTION 'params.dry_run must be true or false, not %', params->'dry_run'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use {"dry_run": true} to see the plan without acting.';
        END IF;
        dry := (params->>'dry_run')::boolean;
    END IF;
    p := params - 'dry_run';
    SELECT array_agg(h.name ORDER BY h.name) INTO known FROM ruvector.healing_strategies h;
    SELECT * INTO s FROM ruvector.healing_strategies h WHERE h.name = strategy;
    IF known IS NOT NULL AND s.name IS NULL THEN
        RAISE EXCEPTION 'healing strategy "%" is not registered', strategy
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Registered strategies: ' || array_to_string(known, ', ') || '.';
    END IF;
    IF NOT dry THEN
        RETURN ruvector._healing_request('execute', id, NULL, strategy, p);
    END IF;
    -- A dry run: the static outline below at once, and a 'plan' request
    -- that the sidecar answers with the strategy's own plan, measured on the
    -- live system (ruvector_healing_request_status(request_id)->'result').
    -- Neither takes the lease nor writes a healing outcome.
    SELECT format('held by %s until %s', l.holder, l.expires_at) INTO holder
        FROM ruvector.healing_leases l WHERE l.collection_id = id AND l.expires_at > clock_timestamp();
    IF holder IS NOT NULL THEN
        blockers := blockers || to_jsonb('another remediation is active on the collection (lease ' || holder || ')');
    END IF;
    IF NOT ruvector._healing_sidecar_alive() THEN
        blockers := blockers || to_jsonb('sidecar not running: the request would wait for it'::text);
    END IF;
    IF known IS NULL THEN
        blockers := blockers || to_jsonb('no sidecar has published its strategies yet: the name cannot be checked'::text);
    END IF;
    RETURN jsonb_build_object(
        'dry_run', true,
        'collection', collection, 'collection_id', id,
        'strategy', strategy,
        'params', p,
        'handles', s.handles, 'impact', s.impact, 'reversible', s.reversible,
        'estimated_duration_seconds', s.estimated_duration_ms / 1000.0,
        'timeout_seconds', 2 * s.estimated_duration_ms / 1000.0,
        'steps', jsonb_build_array(
            'take the collection''s healing lease',
            'record the attempt in ruvector.healing_outcomes (state running)',
            format('run %s with params %s, timeout %s s', strategy, p, coalesce((2 * s.estimated_duration_ms / 1000.0)::text, '?')),
            'wait stabilization_seconds, then verify that lambda rose by 10%',
            CASE WHEN s.reversible THEN 'roll back if not verified' ELSE 'not reversible: no rollback' END,
            'seal the signed outcome and update the strategy weights'),
        'manual_execution_note', 'a manual execution skips the automatic gate (cooldown, attempts per hour, max_auto_heal_impact, approval) but not the lease',
        'blockers', blockers,
        'would_run', jsonb_array_length(blockers) = 0,
        'changed', 'nothing: this was a dry run')
        || (SELECT (req - 'params' - 'strategy' - 'collection') || jsonb_build_object('note',
                CASE WHEN (req->>'sidecar_alive')::boolean
                THEN 'the sidecar answers with the strategy''s plan for the collection as it is now: '
                     || 'ruvector_healing_request_status(request_id)->''result'''
                ELSE 'sidecar not running: the strategy''s plan is made when it starts (ruvector_healing_request_status(request_id)->''result''), '
                     || 'or the request expires at expires_at' END)
            FROM ruvector._healing_request('plan', id, NULL, strategy, p) req);
END
$$;

-- Rolls back the collection's last successful remediation that has not been
-- rolled back yet (reversible strategies only).
CREATE FUNCTION ruvector_healing_rollback(collection text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cid integer;
    o ruvector.healing_outcomes;
    s ruvector.healing_strategies;
BEGIN
    PERFORM ruvector._require_admin('roll back a healing action');
    cid := ruvector._collection_id(collection);
    SELECT * INTO o FROM ruvector.healing_outcomes h
        WHERE h.collection_id = cid AND h.state = 'done' AND h.success AND NOT h.rolled_back
          AND coalesce(h.metadata->>'kind', '') <> 'rollback'
          AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes r
                          WHERE r.metadata->>'kind' = 'rollback' AND (r.metadata->>'rollback_of')::bigint = h.id AND r.success)
        ORDER BY h.started_at DESC, h.id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" has no remediation to roll back', collection
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only a successful remediation that was not rolled back yet can be; SELECT * FROM ruvector_healing_history() shows them.';
    END IF;
    SELECT * INTO s FROM ruvector.healing_strategies h WHERE h.name = o.strategy_name;
    IF s.name IS NOT NULL AND NOT s.reversible THEN
        RAISE EXCEPTION 'the last remediation of "%" (action %, %) is not reversible', collection, o.id, o.strategy_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Irreversible strategies cannot be rolled back; a human has to undo their effect.';
    END IF;
    RETURN ruvector._healing_request('rollback', cid, o.id, o.strategy_name, '{}');
END
$$;

REVOKE ALL ON FUNCTION ruvector._healing_request_ttl(), ruvector._healing_request_json(ruvector.healing_requests),
    ruvector._healing_sidecar_alive(), ruvector._healing_request(text, integer, bigint, text, jsonb),
    ruvector_healing_request_status(bigint), ruvector._healing_config_defaults(), ruvector._healing_config_hint(text),
    ruvector._healing_config_error(text, jsonb, text, text), ruvector._jsonb_kind(jsonb),
    ruvector._healing_config_type(text, jsonb, text), ruvector._healing_config_range(text, jsonb, numeric, numeric, text),
    ruvector._healing_config_merge(jsonb, jsonb), ruvector_healing_configure(jsonb), ruvector_healing_trigger(text),
    ruvector._healing_action(bigint, text[]), ruvector_healing_approve(bigint), ruvector_healing_abort(bigint),
    ruvector_healing_execute(text, text, jsonb), ruvector_healing_rollback(text) FROM PUBLIC;
-- Monitors read; the acting functions also check ruvector._require_admin
-- themselves, so that a monitor gets the ruvector_admin hint rather than a
-- bare permission error.
GRANT EXECUTE ON FUNCTION ruvector._healing_request_ttl(), ruvector._healing_request_json(ruvector.healing_requests),
    ruvector._healing_sidecar_alive(), ruvector_healing_request_status(bigint), ruvector._healing_config_defaults()
    TO ruvector_monitor, pg_monitor;
GRANT EXECUTE ON FUNCTION ruvector._healing_request_ttl(), ruvector._healing_request_json(ruvector.healing_requests),
    ruvector._healing_sidecar_alive(), ruvector._healing_request(text, integer, bigint, text, jsonb),
    ruvector_healing_request_status(bigint), ruvector._healing_config_defaults(), ruvector._healing_config_hint(text),
    ruvector._healing_config_error(text, jsonb, text, text), ruvector._jsonb_kind(jsonb),
    ruvector._healing_config_type(text, jsonb, text), ruvector._healing_config_range(text, jsonb, numeric, numeric, text),
    ruvector._healing_config_merge(jsonb, jsonb), ruvector_healing_configure(jsonb), ruvector_healing_trigger(text),
    ruvector._healing_action(bigint, text[]), ruvector_healing_approve(bigint), ruvector_healing_abort(bigint),
    ruvector_healing_execute(text, text, jsonb), ruvector_healing_rollback(text)
    TO ruvector_admin, ruvector_monitor, pg_monitor;
