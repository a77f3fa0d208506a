-- ---------------------------------------------------------------------------
-- Vector collections: create, adopt and drop; routing weights; centroid
-- activation; IVF search; the maintenance queue. The tables are in
-- 30_collections.sql; the row trigger, the routing default and the L2
-- distance are C (extension_stub/collections.c).
--
-- Every name that reaches dynamic SQL is either checked to be a plain
-- identifier first or passed through format('%I') / regclass output.
-- ---------------------------------------------------------------------------

-- Internal C functions.
CREATE FUNCTION ruvector._vector_check()
RETURNS trigger AS 'MODULE_PATHNAME', 'ruvector_vector_trigger' LANGUAGE C;
COMMENT ON FUNCTION ruvector._vector_check() IS
    'Row trigger of a collection table, arguments (collection_id, dim, name): checks the embedding (not NULL, flat, dim finite elements) and assigns ivf_list from the active centroid version.';
CREATE FUNCTION ruvector._route_shard(collection_id integer)
RETURNS integer AS 'MODULE_PATHNAME', 'ruvector_route_shard' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ruvector._route_shard(integer) IS
    'Default of a collection''s shard column: a weighted random shard by the routing weights in the shared segment.';
CREATE FUNCTION ruvector._l2(real[], real[])
RETURNS real AS 'MODULE_PATHNAME', 'ruvector_l2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ruvector._l2(real[], real[]) IS 'Euclidean (L2) distance of two vectors of the same dimension.';
CREATE FUNCTION ruvector._routing_init(collection_id integer, shards integer)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_routing_init' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._routing_apply(collection_id integer, shard integer, weight real, set_by text)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_routing_apply' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._routing_read(collection_id integer, OUT shard integer, OUT weight real, OUT set_by text)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ruvector_routing_read' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._centroids_publish(collection_id integer, version integer)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_centroids_publish' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._centroid_version(collection_id integer)
RETURNS integer AS 'MODULE_PATHNAME', 'ruvector_centroid_version' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ruvector._centroid_version(integer) IS
    'The centroid version the shared segment publishes for a collection (0: none); the insert trigger assigns lists from it.';

REVOKE ALL ON FUNCTION ruvector._routing_init(integer, integer),
    ruvector._routing_apply(integer, integer, real, text), ruvector._routing_read(integer),
    ruvector._centroids_publish(integer, integer), ruvector._centroid_version(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._routing_init(integer, integer),
    ruvector._routing_apply(integer, integer, real, text),
    ruvector._centroids_publish(integer, integer) TO ruvector_admin;
GRANT EXECUTE ON FUNCTION ruvector._routing_read(integer), ruvector._centroid_version(integer)
    TO ruvector_monitor, pg_monitor;

-- Exact IVF list sizes kept in the shared segment (extension_stub/listcounts.c):
-- AFTER row triggers count rows in and out of lists, committed deltas reach
-- the segment at commit, and a baseline counts the table once when the
-- counters are stale (server start, new slot, TRUNCATE, partition attach or
-- detach, PREPARE TRANSACTION).
CREATE FUNCTION ruvector._list_count()
RETURNS trigger AS 'MODULE_PATHNAME', 'ruvector_list_count_trigger' LANGUAGE C;
COMMENT ON FUNCTION ruvector._list_count() IS
    'AFTER row trigger of a collection table, argument (collection_id): counts each row in or out of its ivf_list in the shared segment at commit.';
CREATE FUNCTION ruvector._list_counts_publish(collection_id integer, tbl oid, list_ids integer[], counts bigint[])
RETURNS bigint AS 'MODULE_PATHNAME', 'ruvector_list_counts_publish' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._list_counts_read(collection_id integer, OUT valid boolean, OUT epoch bigint,
                                           OUT counts bigint[], OUT unassigned bigint, OUT other bigint,
                                           OUT centroid_version integer, OUT baseline_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'ruvector_list_counts_read' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION ruvector._list_counts_read(integer) IS
    'The shared segment''s list counters of a collection: counts[l+1] rows have ivf_list l (up to the last non-empty list), unassigned have NULL, other an ivf_list beyond ruvector.max_lists or negative; all NULL unless valid.';
REVOKE ALL ON FUNCTION ruvector._list_counts_publish(integer, oid, integer[], bigint[]),
    ruvector._list_counts_read(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._list_counts_read(integer) TO ruvector_monitor, pg_monitor;

-- Raises invalid_name (42602) unless name is a plain identifier that a
-- collection and its partitions can be named after.
CREATE FUNCTION ruvector._check_collection_name(name text, suffix_len integer DEFAULT 0)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'collection name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a name such as ''embeddings''.';
    END IF;
    IF name !~ '^[A-Za-z_][A-Za-z0-9_$]*$' THEN
        RAISE EXCEPTION 'invalid collection name "%"', name
            USING ERRCODE = 'invalid_name',
                  HINT = 'A collection name is a plain identifier: a letter or underscore, then letters, digits, _ or $ (no quotes, spaces or punctuation).';
    END IF;
    IF octet_length(name) + suffix_len >= 64 THEN
        RAISE EXCEPTION 'collection name "%" is too long', name
            USING ERRCODE = 'name_too_long',
                  HINT = format('With its partition suffix a name has at most 63 bytes: here at most %s.', 63 - suffix_len);
    END IF;
END
$$;

-- The vector collection of a registered collection, or undefined_object.
CREATE FUNCTION ruvector._vector_collection(collection text)
RETURNS ruvector.vector_collections LANGUAGE plpgsql STABLE AS $$
DECLARE
    vc ruvector.vector_collections;
    cid integer := ruvector._collection_id(collection);
BEGIN
    SELECT * INTO vc FROM ruvector.vector_collections v WHERE v.collection_id = cid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" is not a vector collection', collection
            USING ERRCODE = 'undefined_object',
                  HINT = 'Make one with ruvector_collection_create or ruvector_collection_adopt; SELECT * FROM ruvector.vector_collections lists them.';
    END IF;
    RETURN vc;
END
$$;

CREATE FUNCTION ruvector._check_sizes(dim integer, partitions integer, lists integer)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF dim IS NULL OR dim < 1 OR dim > 16000 THEN
        RAISE EXCEPTION 'dimension % is out of range', coalesce(dim::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'dim is 1 to 16000.';
    END IF;
    IF partitions IS NULL OR partitions < 1 OR partitions > 256 THEN
        RAISE EXCEPTION '% partitions is out of range', coalesce(partitions::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'partitions is 1 to 256.';
    END IF;
    IF lists IS NULL OR lists < 1 OR lists > 4096 THEN
        RAISE EXCEPTION '% IVF lists is out of range', coalesce(lists::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'lists is 1 to 4096.';
    END IF;
END
$$;

-- The list counting triggers: one for inserts and deletes, one for updates
-- that change ivf_list (the WHEN clause keeps other updates off the after-
-- trigger queue). ENABLE ALWAYS: a row written by logical replication apply
-- or under session_replication_role = replica is still counted.
CREATE FUNCTION ruvector._list_count_install(tbl regclass, cid integer)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER ruvector_list_count AFTER INSERT OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION ruvector._list_count(%L)', tbl, cid);
    EXECUTE format('CREATE TRIGGER ruvector_list_count_update AFTER UPDATE ON %s FOR EACH ROW '
                   'WHEN (OLD.ivf_list IS DISTINCT FROM NEW.ivf_list) '
                   'EXECUTE FUNCTION ruvector._list_count(%L)', tbl, cid);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ruvector_list_count', tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ruvector_list_count_update', tbl);
END
$$;
REVOKE ALL ON FUNCTION ruvector._list_count_install(regclass, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._list_count_install(regclass, integer) TO ruvector_admin;

-- Shared by create and adopt: the routing default, the row trigger, the
-- vector_collections row and the segment's routing. Assumes a registered
-- collection and an admin caller.
CREATE FUNCTION ruvector._collection_install(cid integer, tbl regclass, name text, dim integer,
                                             partitions integer, lists integer, owned boolean)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ALTER COLUMN shard SET DEFAULT ruvector._route_shard(%s)', tbl, cid);
    EXECUTE format('CREATE TRIGGER ruvector_vector_check BEFORE INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION ruvector._vector_check(%L, %L, %L)',
                   tbl, cid, dim, name);
    PERFORM ruvector._list_count_install(tbl, cid);
    INSERT INTO ruvector.vector_collections (collection_id, dim, partitions, lists, owned)
    VALUES (cid, dim, partitions, lists, owned);
    PERFORM ruvector._routing_init(cid, partitions);
END
$$;

REVOKE ALL ON FUNCTION ruvector._collection_install(integer, regclass, text, integer, integer, integer, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._collection_install(integer, regclass, text, integer, integer, integer, boolean)
    TO ruvector_admin;

CREATE FUNCTION ruvector_collection_create(name text, dim integer, partitions integer DEFAULT 16,
                                           lists integer DEFAULT 100)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    sch text;
    tbl regclass;
    cid integer;
BEGIN
    PERFORM ruvector._require_admin('create a collection');
    PERFORM ruvector._check_sizes(dim, partitions, lists);
    PERFORM ruvector._check_collection_name(name, length('_p' || (partitions - 1)::text));
    -- Like CREATE TABLE: the first schema of the search path that exists.
    sch := (current_schemas(false))[1];
    IF sch IS NULL THEN
        RAISE EXCEPTION 'no schema has been selected to create collection "%" in', name
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'SET search_path to a schema you may create tables in.';
    END IF;
    IF EXISTS (SELECT 1 FROM ruvector.collections c WHERE c.name = ruvector_collection_create.name) THEN
        RAISE EXCEPTION 'collection "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it with ruvector_collection_drop, or choose another name.';
    END IF;
    IF to_regclass(format('%I.%I', sch, name)) IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%.%" already exists', sch, name
            USING ERRCODE = 'duplicate_table',
                  HINT = 'Adopt it with ruvector_collection_adopt if it has the collection layout, or choose another name.';
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (id bigserial, embedding real[] NOT NULL, shard integer NOT NULL, '
                   'ivf_list integer, PRIMARY KEY (id, shard)) PARTITION BY LIST (shard)', sch, name);
    tbl := format('%I.%I', sch, name)::regclass;
    FOR i IN 0 .. partitions - 1 LOOP
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES IN (%s)', sch, name || '_p' || i, tbl, i);
    END LOOP;
    EXECUTE format('CREATE INDEX ON %s (ivf_list)', tbl);
    cid := ruvector.ruvector_collection_register(name, tbl);
    PERFORM ruvector._collection_install(cid, tbl, name, dim, partitions, lists, true);
    RETURN cid;
END
$$;
COMMENT ON FUNCTION ruvector_collection_create(text, integer, integer, integer) IS
    'Creates a vector collection: a table partitioned by shard into <name>_p<N>, with routing, embedding checks and IVF list assignment, registered with the write gate.';

-- Takes over an existing partitioned table that follows the layout of
-- ruvector_collection_create (extra columns allowed). drop leaves it.
CREATE FUNCTION ruvector_collection_adopt(name text, tbl regclass, dim integer, lists integer DEFAULT 100)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    col record;
    want record;
    strategy "char";
    keycols int2vector;
    nparts integer;
    bad text;
    cid integer;
BEGIN
    PERFORM ruvector._require_admin('adopt a collection');
    PERFORM ruvector._check_collection_name(name);
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the partitioned table, e.g. ''public.items''::regclass.';
    END IF;
    PERFORM ruvector._check_sizes(dim, 1, lists);
    FOR want IN SELECT * FROM (VALUES ('id', 'bigint'::regtype, true), ('embedding', 'real[]'::regtype, true),
                                      ('shard', 'integer'::regtype, true), ('ivf_list', 'integer'::regtype, false))
                              AS w(attname, atttype, required) LOOP
        SELECT a.atttypid::regtype AS t, a.attnotnull AS nn INTO col
        FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = want.attname AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'table % has no column "%"', tbl, want.attname
                USING ERRCODE = 'invalid_table_definition',
                      HINT = 'A collection table has columns id bigint, embedding real[] NOT NULL, shard integer NOT NULL and ivf_list integer.';
        END IF;
        IF col.t <> want.atttype THEN
            RAISE EXCEPTION 'column "%" of table % is %, expected %', want.attname, tbl, col.t, want.atttype
                USING ERRCODE = 'invalid_table_definition',
                      HINT = 'A collection table has columns id bigint, embedding real[] NOT NULL, shard integer NOT NULL and ivf_list integer.';
        END IF;
        IF want.required AND NOT col.nn THEN
            RAISE EXCEPTION 'column "%" of table % allows NULL', want.attname, tbl
                USING ERRCODE = 'invalid_table_definition',
                      HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, want.attname);
        END IF;
    END LOOP;
    SELECT p.partstrat, p.partattrs INTO strategy, keycols FROM pg_partitioned_table p WHERE p.partrelid = tbl;
    IF NOT FOUND OR strategy <> 'l' OR array_length(keycols::int2[], 1) <> 1
       OR (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = tbl AND a.attnum = keycols[0]) <> 'shard' THEN
        RAISE EXCEPTION 'table % is not partitioned BY LIST (shard)', tbl
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'A collection table is PARTITION BY LIST (shard), one partition per shard value 0, 1, ..., N-1.';
    END IF;
    -- Each partition holds exactly one shard, and the shards are 0 .. N-1.
    SELECT string_agg(format('%s (%s)', c.oid::regclass, pg_get_expr(c.relpartbound, c.oid)), ', ')
    INTO bad
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = tbl AND pg_get_expr(c.relpartbound, c.oid) !~ '^FOR VALUES IN \(\d+\)$';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'partitions of % that do not hold exactly one shard: %', tbl, bad
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Each partition of a collection is FOR VALUES IN (<shard>), with a single non-negative integer.';
    END IF;
    SELECT count(*), string_agg(s::text, ',' ORDER BY s) FILTER (WHERE s <> r - 1)
    INTO nparts, bad
    FROM (SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM '\d+')::integer AS s,
                 row_number() OVER (ORDER BY substring(pg_get_expr(c.relpartbound, c.oid) FROM '\d+')::integer) AS r
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = tbl) x;
    IF nparts = 0 OR nparts > 256 OR bad IS NOT NULL THEN
        RAISE EXCEPTION 'the shards of % are not 0 to N-1 (N from 1 to 256): % partitions%', tbl, nparts,
            CASE WHEN bad IS NULL THEN '' ELSE ', out of sequence: ' || bad END
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Routing picks shards 0 .. N-1: attach one partition for each of them.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'ruvector_vector_check') THEN
        RAISE EXCEPTION 'table % already has a ruvector_vector_check trigger', tbl
            USING ERRCODE = 'duplicate_object',
                  HINT = 'It belongs to a vector collection already; drop that collection first.';
    END IF;
    cid := ruvector.ruvector_collection_register(name, tbl);
    PERFORM ruvector._collection_install(cid, tbl, name, dim, nparts, lists, false);
    RETURN cid;
END
$$;
COMMENT ON FUNCTION ruvector_collection_adopt(text, regclass, integer, integer) IS
    'Makes an existing table with the collection layout a vector collection (routing, checks, IVF lists); ruvector_collection_drop leaves the table.';

CREATE FUNCTION ruvector_collection_drop(name text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
    tbl regclass;
BEGIN
    PERFORM ruvector._require_admin('drop a collection');
    LOCK TABLE ruvector.collections IN SHARE ROW EXCLUSIVE MODE;
    vc := ruvector._vector_collection(name);
    SELECT c.relid INTO tbl FROM ruvector.collections c WHERE c.collection_id = vc.collection_id;
    -- ruvector_collection_unregister refuses vector collections.
    DELETE FROM ruvector.vector_collections v WHERE v.collection_id = vc.collection_id;
    PERFORM ruvector.ruvector_collection_unregister(name);
    IF vc.owned THEN
        EXECUTE format('DROP TABLE %s', tbl);
    ELSE
        EXECUTE format('DROP TRIGGER IF EXISTS ruvector_vector_check ON %s', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS ruvector_list_count ON %s', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS ruvector_list_count_update ON %s', tbl);
        EXECUTE format('ALTER TABLE %s ALTER COLUMN shard DROP DEFAULT', tbl);
    END IF;
END
$$;
COMMENT ON FUNCTION ruvector_collection_drop(text) IS
    'Undoes ruvector_collection_create (drops the table) or ruvector_collection_adopt (leaves the table, removes the default and trigger).';

-- ---------------------------------------------------------------------------
-- Routing weights.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ruvector_routing_set(collection text, shard integer, weight real,
                                     set_by text DEFAULT 'manual', outcome_id bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
BEGIN
    PERFORM ruvector._require_admin('set a routing weight');
    vc := ruvector._vector_collection(collection);
    IF shard IS NULL OR shard < 0 OR shard >= vc.partitions THEN
        RAISE EXCEPTION 'collection "%" has no shard %', collection, coalesce(shard::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Shards of this collection are 0 to %s.', vc.partitions - 1);
    END IF;
    IF weight IS NULL OR weight = 'NaN' OR weight < 0 OR weight > 1000 THEN
        RAISE EXCEPTION 'routing weight % is out of range', coalesce(weight::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range',
                  HINT = 'A weight is 0 (the shard gets no new rows) to 1000; the default is 1.';
    END IF;
    IF set_by IS NULL OR set_by NOT IN ('manual', 'sidecar') THEN
        RAISE EXCEPTION 'invalid set_by "%"', coalesce(set_by, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'set_by is ''manual'' or ''sidecar'' (sidecar weights go back to 1 when the sidecar stops heartbeating).';
    END IF;
    -- One routing change per collection at a time, so that the check below
    -- sees the other shards as they will be.
    PERFORM 1 FROM ruvector.vector_collections v WHERE v.collection_id = vc.collection_id FOR UPDATE;
    IF weight = 0 AND NOT EXISTS (
        SELECT 1 FROM generate_series(0, vc.partitions - 1) s
        LEFT JOIN ruvector.routing_weights w ON w.collection_id = vc.collection_id AND w.shard = s
        WHERE s <> ruvector_routing_set.shard AND coalesce(w.weight, 1) > 0) THEN
        RAISE EXCEPTION 'refusing to give every shard of collection "%" weight 0', collection
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'New rows need a shard: raise another shard''s weight first.';
    END IF;
    INSERT INTO ruvector.routing_weights AS w (collection_id, shard, weight, set_by, outcome_id)
    VALUES (vc.collection_id, shard, weight, set_by, outcome_id)
    ON CONFLICT ON CONSTRAINT routing_weights_pkey DO UPDATE
        SET weight = EXCLUDED.weight, set_by = EXCLUDED.set_by, outcome_id = EXCLUDED.outcome_id, set_at = now();
    PERFORM ruvector._routing_apply(vc.collection_id, shard, weight, set_by);
END
$$;
COMMENT ON FUNCTION ruvector_routing_set(text, integer, real, text, bigint) IS
    'Sets the routing weight of one shard (0: no new rows); durable, and in the shared segment at once (undone if the transaction aborts).';

CREATE FUNCTION ruvector_routing_reset(collection text, shard integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
    s integer;
BEGIN
    PERFORM ruvector._require_admin('reset routing weights');
    vc := ruvector._vector_collection(collection);
    IF shard IS NOT NULL AND (shard < 0 OR shard >= vc.partitions) THEN
        RAISE EXCEPTION 'collection "%" has no shard %', collection, shard
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Shards of this collection are 0 to %s, or NULL for all.', vc.partitions - 1);
    END IF;
    PERFORM 1 FROM ruvector.vector_collections v WHERE v.collection_id = vc.collection_id FOR UPDATE;
    FOR s IN DELETE FROM ruvector.routing_weights w
             WHERE w.collection_id = vc.collection_id AND (ruvector_routing_reset.shard IS NULL OR w.shard = ruvector_routing_reset.shard)
             RETURNING w.shard LOOP
        PERFORM ruvector._routing_apply(vc.collection_id, s, 1, 'none');
    END LOOP;
END
$$;
COMMENT ON FUNCTION ruvector_routing_reset(text, integer) IS
    'Puts one shard''s routing weight (or all) back to the default 1.';

CREATE FUNCTION ruvector_routing_status(collection text)
RETURNS TABLE (shard integer, weight real, set_by text, outcome_id bigint, set_at timestamptz,
               segment_weight real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    vc ruvector.vector_collections := ruvector._vector_collection(collection);
BEGIN
    RETURN QUERY
    SELECT s.shard, coalesce(w.weight, 1::real), coalesce(w.set_by, 'default'), w.outcome_id, w.set_at,
           s.weight
    FROM ruvector._routing_read(vc.collection_id) s
    LEFT JOIN ruvector.routing_weights w ON w.collection_id = vc.collection_id AND w.shard = s.shard
    ORDER BY s.shard;
END
$$;
COMMENT ON FUNCTION ruvector_routing_status(text) IS
    'Per shard: the durable weight (default 1), who set it, and the weight the shared segment routes by.';
REVOKE ALL ON FUNCTION ruvector_routing_status(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_routing_status(text) TO ruvector_monitor, pg_monitor;

-- ---------------------------------------------------------------------------
-- Centroids and search.
-- ---------------------------------------------------------------------------

-- Makes a trained version the active one (the previous active one is
-- retired and kept for rollback). The segment publishes it at commit, so
-- inserts in other sessions assign lists only from centroids they can see.
CREATE FUNCTION ruvector._centroids_activate(collection text, version integer)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
    cv ruvector.centroid_versions;
    n integer;
    bad text;
BEGIN
    PERFORM ruvector._require_admin('activate centroids');
    vc := ruvector._vector_collection(collection);
    PERFORM 1 FROM ruvector.vector_collections v WHERE v.collection_id = vc.collection_id FOR UPDATE;
    SELECT * INTO cv FROM ruvector.centroid_versions c
    WHERE c.collection_id = vc.collection_id AND c.version = _centroids_activate.version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" has no centroid version %', collection, coalesce(version::text, 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT version, state FROM ruvector.centroid_versions lists the versions.';
    END IF;
    SELECT count(*), string_agg(c.list_id::text, ',' ORDER BY c.list_id)
               FILTER (WHERE array_ndims(c.centroid) IS DISTINCT FROM 1 OR cardinality(c.centroid) <> vc.dim
                       OR array_position(c.centroid, NULL) IS NOT NULL
                       OR EXISTS (SELECT 1 FROM unnest(c.centroid) x WHERE x IN ('NaN', 'Infinity', '-Infinity'))
                       OR c.list_id >= cv.lists)
    INTO n, bad
    FROM ruvector.centroids c WHERE c.collection_id = vc.collection_id AND c.version = cv.version;
    IF n <> cv.lists OR bad IS NOT NULL THEN
        RAISE EXCEPTION 'centroid version % of collection "%" is not usable: % of % centroids%', version, collection,
            n, cv.lists, CASE WHEN bad IS NULL THEN '' ELSE ', bad lists: ' || bad END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A version has one centroid per list 0 .. lists-1, each %s finite numbers.', vc.dim);
    END IF;
    UPDATE ruvector.centroid_versions c SET state = 'retired'
    WHERE c.collection_id = vc.collection_id AND c.state = 'active' AND c.version <> cv.version;
    UPDATE ruvector.centroid_versions c SET state = 'active', activated_at = now()
    WHERE c.collection_id = vc.collection_id AND c.version = cv.version;
    PERFORM ruvector._centroids_publish(vc.collection_id, cv.version);
END
$$;

-- The k nearest ids by L2 distance among the rows of the probes lists
-- nearest to the query in the active centroid version, plus rows not yet
-- assigned a list. With no active version: an exact scan.
CREATE FUNCTION ruvector_ivf_search(collection text, query real[], k integer, probes integer DEFAULT 8)
RETURNS TABLE (id bigint, distance real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    vc ruvector.vector_collections := ruvector._vector_collection(collection);
    tbl regclass;
    v integer;
    probe_lists integer[];
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'query vector must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass a real[] of %s finite numbers.', vc.dim);
    END IF;
    IF array_ndims(query) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'query vector has % array dimensions, expected 1', coalesce(array_ndims(query), 0)
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Pass a flat real[] of %s numbers.', vc.dim);
    END IF;
    IF cardinality(query) <> vc.dim THEN
        RAISE EXCEPTION 'query vector has dimension %, collection "%" has dimension %',
            cardinality(query), collection, vc.dim
            USING ERRCODE = 'invalid_parameter_value', HINT = format('Pass a flat real[] of %s numbers.', vc.dim);
    END IF;
    IF array_position(query, NULL) IS NOT NULL
       OR EXISTS (SELECT 1 FROM unnest(query) x WHERE x IN ('NaN', 'Infinity', '-Infinity')) THEN
        RAISE EXCEPTION 'query vector has an element that is NULL or not finite'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Every element must be a finite number.';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'k is how many nearest ids to return.';
    END IF;
    IF probes IS NULL OR probes < 1 THEN
        RAISE EXCEPTION 'probes must be at least 1, not %', coalesce(probes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('probes is how many nearest lists to search; %s (all lists) is an exact search.', vc.lists);
    END IF;
    SELECT c.relid INTO tbl FROM ruvector.collections c WHERE c.collection_id = vc.collection_id;
    SELECT cv.version INTO v FROM ruvector.centroid_versions cv
    WHERE cv.collection_id = vc.collection_id AND cv.state = 'active';
    IF v IS NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT t.id, ruvector._l2(t.embedding, $1) AS d FROM %s t ORDER BY d, t.id LIMIT $2', tbl)
            USING query, k;
        RETURN;
    END IF;
    SELECT array_agg(p.list_id) INTO probe_lists
    FROM (SELECT c.list_id FROM ruvector.centroids c
          WHERE c.collection_id = vc.collection_id AND c.version = v
          ORDER BY ruvector._l2(c.centroid, query), c.list_id LIMIT probes) p;
    RETURN QUERY EXECUTE format(
        'SELECT t.id, ruvector._l2(t.embedding, $1) AS d FROM %s t '
        'WHERE t.ivf_list = ANY ($3) OR t.ivf_list IS NULL ORDER BY d, t.id LIMIT $2', tbl)
        USING query, k, probe_lists;
END
$$;
COMMENT ON FUNCTION ruvector_ivf_search(text, real[], integer, integer) IS
    'k nearest ids by L2 among the probes nearest IVF lists of the active centroid version (and unassigned rows); an exact scan when no version is active.';

-- ---------------------------------------------------------------------------
-- The maintenance queue (the sidecar runs the jobs).
-- ---------------------------------------------------------------------------
CREATE FUNCTION ruvector_maintenance_enqueue(collection text, kind text, priority integer DEFAULT 100,
                                             params jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cid integer;
    jid bigint;
BEGIN
    PERFORM ruvector._require_admin('enqueue a maintenance job');
    cid := ruvector._collection_id(collection);
    IF kind IS NULL OR kind NOT IN ('centroid_rebuild', 'compaction', 'rebalance', 'vacuum', 'analyze', 'autovacuum') THEN
        RAISE EXCEPTION 'invalid maintenance job kind "%"', coalesce(kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'kind is one of centroid_rebuild, compaction, rebalance, vacuum, analyze, autovacuum.';
    END IF;
    IF priority IS NULL OR priority < 0 OR priority > 1000 THEN
        RAISE EXCEPTION 'job priority % is out of range', coalesce(priority::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range', HINT = 'priority is 0 to 1000; higher runs first.';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'job params must be a JSON object, not %', coalesce(jsonb_typeof(params), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass e.g. ''{}''::jsonb.';
    END IF;
    INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, params)
    VALUES (cid, kind, priority, params) RETURNING job_id INTO jid;
    RETURN jid;
END
$$;

CREATE FUNCTION ruvector_maintenance_status()
RETURNS TABLE (job_id bigint, collection text, kind text, priority integer, state text, progress real,
               owner text, params jsonb, paused_by bigint, error text, created_at timestamptz,
               started_at timestamptz, finished_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT j.job_id, c.name, j.kind, j.priority, j.state, j.progress, j.owner, j.params, j.paused_by,
           j.error, j.created_at, j.started_at, j.finished_at, j.updated_at
    FROM ruvector.maintenance_jobs j LEFT JOIN ruvector.collections c USING (collection_id)
    WHERE j.state IN ('queued', 'running', 'paused') OR j.updated_at > now() - interval '24 hours'
    ORDER BY j.state NOT IN ('queued', 'running', 'paused'), j.priority DESC, j.job_id
$$;
COMMENT ON FUNCTION ruvector_maintenance_status() IS
    'Open maintenance jobs (queued, running, paused) by priority, then those that ended in the last 24 hours.';

REVOKE ALL ON FUNCTION ruvector_maintenance_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_maintenance_status() TO ruvector_monitor, pg_monitor;

-- ---------------------------------------------------------------------------
-- List sizes.
-- ---------------------------------------------------------------------------

-- Counts a collection's rows by ivf_list once and publishes the counts as
-- the segment's baseline, from which the triggers keep them exact. SHARE ROW
-- EXCLUSIVE waits for every writing transaction to finish (they apply their
-- deltas before releasing their locks), blocks new writers until this
-- transaction ends, and excludes a concurrent rebaseline; the count's
-- snapshot is taken after the lock. While it waits for the lock, new writers
-- queue behind it: lock_wait bounds that (lock_not_available, 55P03, after
-- it; 0 waits forever). Call it in its own short READ COMMITTED transaction,
-- and only when the counters are not valid (the sidecar does). Returns the
-- new epoch. SECURITY DEFINER: the caller (ruvector_admin) may not own an
-- adopted table; the function's SET clause also confines the lock_timeout
-- it sets to the function.
CREATE FUNCTION ruvector._list_counts_rebaseline(collection text, lock_wait interval DEFAULT '1 s')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vc ruvector.vector_collections;
    tbl regclass;
    ids integer[];
    ns bigint[];
BEGIN
    vc := ruvector._vector_collection(collection);
    SELECT c.relid INTO tbl FROM ruvector.collections c WHERE c.collection_id = vc.collection_id;
    IF lock_wait IS NULL OR lock_wait < interval '0' OR lock_wait > interval '1 hour' THEN
        RAISE EXCEPTION 'lock_wait % is out of range', coalesce(lock_wait::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Writers queue behind the waiting lock: pass a short wait such as ''1 s'' (0 waits forever, at most 1 hour).';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'list counts of "%" can only be rebaselined at READ COMMITTED, not %', collection,
            upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'active_sql_transaction',
                  HINT = 'The count must see every transaction that committed before the table lock; run it in its own READ COMMITTED transaction.';
    END IF;
    IF (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgenabled = 'A'
        AND t.tgname IN ('ruvector_list_count', 'ruvector_list_count_update')) <> 2 THEN
        RAISE EXCEPTION 'table % of collection "%" lacks the list counting triggers (or they are not ENABLE ALWAYS)',
            tbl, collection
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('SELECT ruvector._list_count_install(%L, %s); installs them (drop leftovers first).',
                                tbl::text, vc.collection_id);
    END IF;
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    EXECUTE format('SELECT array_agg(ivf_list), array_agg(n) FROM (SELECT ivf_list, count(*) AS n FROM %s GROUP BY 1) g',
                   tbl) INTO ids, ns;
    RETURN ruvector._list_counts_publish(vc.collection_id, tbl, coalesce(ids, '{}'), coalesce(ns, '{}'));
END
$$;
REVOKE ALL ON FUNCTION ruvector._list_counts_rebaseline(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._list_counts_rebaseline(text, interval) TO ruvector_admin;
COMMENT ON FUNCTION ruvector._list_counts_rebaseline(text, interval) IS
    'Counts a collection''s rows by ivf_list under SHARE ROW EXCLUSIVE (writers wait; lock_wait bounds the wait for the lock) and publishes the counts to the shared segment, where triggers keep them exact; returns the new epoch.';

-- A collection's list sizes from the shared segment: one row per list of
-- the active centroid version (or vector_collections.lists without one),
-- empty lists included, plus a NULL list_id row for unassigned rows. Raises
-- object_not_in_prerequisite_state while the counters are stale.
CREATE FUNCTION ruvector_list_sizes(collection text)
RETURNS TABLE (list_id integer, row_count bigint) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
    r record;
    n integer;
BEGIN
    vc := ruvector._vector_collection(collection);
    SELECT * INTO r FROM ruvector._list_counts_read(vc.collection_id);
    IF NOT r.valid THEN
        RAISE EXCEPTION 'list sizes of collection "%" are not known yet', collection
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('A baseline is taken after a server start and after TRUNCATE or a partition change: SELECT ruvector._list_counts_rebaseline(%L);', collection);
    END IF;
    SELECT coalesce((SELECT v.lists FROM ruvector.centroid_versions v
                     WHERE v.collection_id = vc.collection_id AND v.state = 'active'), vc.lists) INTO n;
    RETURN QUERY SELECT l, coalesce(r.counts[l + 1], 0) FROM generate_series(0, n - 1) l
                 UNION ALL SELECT NULL::integer, r.unassigned;
END
$$;
COMMENT ON FUNCTION ruvector_list_sizes(text) IS
    'Rows per IVF list of a collection (NULL list_id: unassigned), kept exact in the shared segment without a scan.';
REVOKE ALL ON FUNCTION ruvector_list_sizes(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_list_sizes(text) TO ruvector_monitor, pg_monitor;
