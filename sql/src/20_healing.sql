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
-- The sidecar looks up an outcome's rollback records on every leader tick
-- (lifting temporary and held measures) and explain does too.
CREATE INDEX idx_healing_outcomes_rollback_of
    ON ruvector.healing_outcomes((metadata->>'rollback_of')) WHERE metadata->>'kind' = 'rollback';

-- Public keys of the sidecars' audit signing keys. Only admins read them:
-- monitors verify signatures through SECURITY DEFINER helpers
-- (ruvector._healing_outcome_signature, ruvector._integrity_event_verified)
-- and do not need the key inventory itself.
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

-- Whether a sealed record's signature verifies: 'unsigned', 'unknown_key'
-- (key_id names no row of ruvector.healing_audit_keys), 'bad_signature' or
-- 'verified'. The signature covers the canonical bytes themselves (not
-- record_hash): sidecar/audit.Seal signs Record.Canonical(). SECURITY
-- DEFINER so that monitors can verify the chain without reading the key
-- inventory, as ruvector._integrity_event_verified does for events.
CREATE FUNCTION ruvector._healing_outcome_signature(o ruvector.healing_outcomes)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN o.signature IS NULL THEN 'unsigned'
        WHEN k.public_key IS NULL THEN 'unknown_key'
        WHEN ruvector._ed25519_verify(k.public_key, ruvector._healing_canonical(o), o.signature) THEN 'verified'
        ELSE 'bad_signature'
    END
    FROM (SELECT 1) AS one LEFT JOIN ruvector.healing_audit_keys k ON k.key_id = o.key_id
$$;

-- The healing configuration as stored (defaults are healconfig's; the two
-- this file needs are repeated here).
CREATE FUNCTION ruvector._healing_config()
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT '{"enabled": true, "min_healing_interval_seconds": 300}'::jsonb
        || coalesce((SELECT c.config FROM ruvector.healing_config c), '{}'::jsonb)
$$;

-- Rollback records (metadata->>'kind' = 'rollback', written when an
-- operator rolls a remediation back from SQL) are outcomes of their own, so
-- that sealed records never change; they are not healing attempts and are
-- left out of counts, the gate and learning.
CREATE FUNCTION ruvector._healing_is_attempt(o ruvector.healing_outcomes)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(o.metadata->>'kind', '') <> 'rollback'
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
    pending jsonb;
    cooldown timestamptz;
    leader jsonb;
    open_requests integer;
    seg jsonb := ruvector._segment_status();
BEGIN
    SELECT max(o.started_at) INTO last_start
        FROM ruvector.healing_outcomes o WHERE o.state IN ('running', 'done') AND ruvector._healing_is_attempt(o);
    SELECT count(*), count(*) FILTER (WHERE o.state = 'done'),
           count(*) FILTER (WHERE o.state = 'done' AND o.success AND coalesce(o.verified, false))
        INTO total, finished, succeeded
        FROM ruvector.healing_outcomes o
        WHERE o.state IN ('running', 'done') AND o.started_at >= now() - interval '24 hours'
          AND ruvector._healing_is_attempt(o);
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', o.id, 'collection_id', o.collection_id, 'collection', c.name,
               'strategy', o.strategy_name, 'problem_class', o.problem_class,
               'started_at', o.started_at,
               'lease_holder', (SELECT l.holder FROM ruvector.healing_leases l WHERE l.collection_id = o.collection_id),
               'actions', coalesce(jsonb_array_length(o.metadata->'actions'), 0)) ORDER BY o.started_at), '[]'::jsonb)
        INTO active
        FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
        WHERE o.state = 'running';
    -- Actions waiting for a human: pending_approval records nobody has
    -- approved or aborted yet (the decision is a request row: sealed
    -- records never change).
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', o.id, 'collection', c.name, 'strategy', o.strategy_name,
               'problem_class', o.problem_class, 'since', o.started_at) ORDER BY o.id), '[]'::jsonb)
        INTO pending
        FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
        WHERE o.state = 'pending_approval'
          AND NOT EXISTS (SELECT 1 FROM ruvector.healing_requests q
                          WHERE q.action_id = o.id AND q.kind IN ('approve', 'abort')
                            AND (q.status IN ('running', 'done')
                                 OR (q.status = 'pending' AND q.expires_at > clock_timestamp())));
    -- The cooldown is per collection; the status reports the latest one
    -- still in force.
    SELECT max(o.started_at) + make_interval(secs => (cfg->>'min_healing_interval_seconds')::float8)
        INTO cooldown
        FROM ruvector.healing_outcomes o WHERE o.state IN ('running', 'done') AND ruvector._healing_is_attempt(o);
    IF cooldown <= now() THEN
        cooldown := NULL;
    END IF;
    SELECT jsonb_build_object('holder', l.holder, 'since', l.acquired_at, 'expires_at', l.expires_at,
                              'live', l.expires_at > clock_timestamp())
        INTO leader FROM ruvector.healing_leader l;
    SELECT count(*) INTO open_requests FROM ruvector.healing_requests q
        WHERE q.status = 'running' OR (q.status = 'pending' AND q.expires_at > clock_timestamp());
    RETURN jsonb_build_object(
        'enabled', (cfg->>'enabled')::boolean,
        'last_healing', last_start,
        'total_healings_24h', total,
        'success_rate', CASE WHEN finished = 0 THEN NULL
                             ELSE round(succeeded::numeric / finished, 4) END,
        'active_remediations', active,
        'cooldown_until', cooldown,
        'sidecar_alive', seg->'sidecar_alive',
        'sidecar_heartbeat_age_ms', seg->'sidecar_heartbeat_age_ms',
        'leader', leader,
        'pending_actions', pending,
        'open_requests', open_requests);
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
-- successful and verified, or held in force (metadata.held: a measure whose
-- hold was checked, kept for the next remedy), avg_improvement = sum of measured improvements /
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
               (count(*) FILTER (WHERE h.success AND coalesce(h.verified, false)
                                    OR h.metadata ? 'held' AND NOT coalesce(h.rolled_back, false)))::integer AS successes,
               coalesce(sum(h.improvement_pct), 0)::float8 AS improvement_sum,
               (count(*) FILTER (WHERE h.rolled_back))::integer AS rolled_back,
               max(h.started_at) AS last_attempt
        FROM ruvector.healing_outcomes h
        WHERE h.state = 'done' AND h.started_at >= now() - interval '30 days' AND ruvector._healing_is_attempt(h)
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
-- A record altered, deleted or moved breaks one of these. Each sealed
-- record's Ed25519 signature is verified against the public key its key_id
-- names in ruvector.healing_audit_keys: a record re-signed by another key
-- (unknown here), or with a signature that does not verify, is a problem,
-- and so is a sealed record with no signature. sidecar/audit.Verify checks
-- the same things from Go.
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
    FOR r IN SELECT o.id, o.chain_seq, o.prev_hash, o.record_hash, o.key_id,
                    sha256(ruvector._healing_canonical(o)) AS computed,
                    ruvector._healing_outcome_signature(o) AS sig
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
        IF r.sig = 'unsigned' THEN
            unsigned := unsigned + 1;
        ELSIF r.sig = 'unknown_key' THEN
            nproblems := nproblems + 1;
            problems := problems || jsonb_build_object('chain_seq', r.chain_seq, 'id', r.id,
                'problem', format('signed by key %s, which is not in ruvector.healing_audit_keys',
                                  coalesce(r.key_id, '(none)')));
        ELSIF r.sig = 'bad_signature' THEN
            nproblems := nproblems + 1;
            problems := problems || jsonb_build_object('chain_seq', r.chain_seq, 'id', r.id,
                'problem', format('signature does not verify with key %s', r.key_id));
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
        'problems', problems);
END
$$;

REVOKE ALL ON FUNCTION ruvector._canon(bytea), ruvector._canon(text), ruvector._canon(jsonb),
    ruvector._canon(bigint), ruvector._canon(boolean), ruvector._canon(real),
    ruvector._canon(timestamptz), ruvector._healing_canonical(ruvector.healing_outcomes),
    ruvector._healing_config(), ruvector._healing_is_attempt(ruvector.healing_outcomes), ruvector_healing_status(),
    ruvector_healing_history(timestamptz, integer), ruvector_healing_effectiveness(),
    ruvector_healing_verify_audit(), ruvector._healing_outcome_signature(ruvector.healing_outcomes) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._canon(bytea), ruvector._canon(text), ruvector._canon(jsonb),
    ruvector._canon(bigint), ruvector._canon(boolean), ruvector._canon(real),
    ruvector._canon(timestamptz), ruvector._healing_canonical(ruvector.healing_outcomes),
    ruvector._healing_config(), ruvector._healing_is_attempt(ruvector.healing_outcomes), ruvector_healing_status(),
    ruvector_healing_history(timestamptz, integer), ruvector_healing_effectiveness(),
    ruvector_healing_verify_audit(), ruvector._healing_outcome_signature(ruvector.healing_outcomes)
    TO ruvector_monitor, pg_monitor;

