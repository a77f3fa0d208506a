-- sql/src/00_foundation.sql. The files of sql/src are concatenated in name order into ruvector_healing--0.1.0.sql at build time.

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
    -- A vector collection's table routes its rows through the extension
    -- (column default, trigger): unregistering alone would leave inserts
    -- failing. ruvector_collection_drop removes those too.
    IF EXISTS (SELECT 1 FROM ruvector.vector_collections v WHERE v.collection_id = id) THEN
        RAISE EXCEPTION 'collection "%" is a vector collection', name
            USING ERRCODE = 'object_in_use',
                  HINT = 'Use ruvector_collection_drop: it also removes the routing default and the trigger (an adopted table is kept).';
    END IF;
    PERFORM ruvector._registry_detach(id);
    DELETE FROM ruvector.collections c WHERE c.collection_id = id;
END
$$;

-- Brings a collection's relations in line with its partition tree:
-- partitions attached or created since registration are gated too, detached
-- ones no longer. For a vector collection the routed shards follow too: the
-- shards 0..N-1 that exist as single-value partitions get rows, and the
-- stored weights (a drain in force) are applied again. Returns how many
-- relations the collection now has.
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
    IF EXISTS (SELECT 1 FROM ruvector.vector_collections v WHERE v.collection_id = id) THEN
        PERFORM ruvector._routing_follow(id, tbl);
    END IF;
    RETURN cardinality(rels);
END
$$;

-- The number of routed shards of a vector collection: the longest run
-- 0, 1, ... of shards that have a partition of their own.
CREATE FUNCTION ruvector._routing_follow(id integer, tbl regclass)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer := 0;
    old integer;
    shards integer[];
BEGIN
    SELECT array_agg((regexp_match(pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES IN \((\d+)\)$'))[1]::integer)
        INTO shards
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = tbl AND pg_get_expr(c.relpartbound, c.oid) ~ '^FOR VALUES IN \(\d+\)$';
    WHILE n < 256 AND n = ANY (shards) LOOP
        n := n + 1;
    END LOOP;
    SELECT v.partitions INTO old FROM ruvector.vector_collections v WHERE v.collection_id = id;
    IF n = 0 OR n = old THEN
        RETURN;
    END IF;
    UPDATE ruvector.vector_collections v SET partitions = n WHERE v.collection_id = id;
    PERFORM ruvector._routing_init(id, n);
    PERFORM ruvector._routing_apply(id, w.shard, w.weight, w.set_by)
        FROM ruvector.routing_weights w WHERE w.collection_id = id AND w.shard < n;
    DELETE FROM ruvector.routing_weights w WHERE w.collection_id = id AND w.shard >= n;
END
$$;
REVOKE ALL ON FUNCTION ruvector._routing_follow(integer, regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._routing_follow(integer, regclass) TO ruvector_admin;

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
    OUT rejected bigint, OUT wait_ms double precision, OUT outcome_id bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ruvector_throttle_status'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ruvector_throttle_status() IS
    'One row per collection and op: throttle, who set it, when it lapses, the gate''s counters (admitted rows, delayed and rejected statements, time spent waiting), and the healing outcome whose remediation set a sidecar throttle (NULL otherwise).';

REVOKE ALL ON FUNCTION ruvector_throttle_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_throttle_status() TO ruvector_monitor, pg_monitor;

