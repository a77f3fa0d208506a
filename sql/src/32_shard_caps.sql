
-- ---------------------------------------------------------------------------
-- Shard caps: a write cap, in rows per second, on one shard of a vector
-- collection, enforced per row by the collection's row trigger on INSERT
-- (extension_stub/shardcap.c). A writer that names its shard explicitly
-- makes a hotspot no routing weight can move; a cap on that shard slows it
-- without slowing the other shards. A row waits for its turn (like the
-- write gate's throttles); a statement whose row would wait longer than
-- ruvector.throttle_max_wait fails with SQLSTATE 53000.
--
-- Manual caps are durable (this table, reloaded by the watchdog after a
-- restart). The sidecar's (throttle_ingestion on a hotspot) live only in the
-- shared segment and the watchdog lifts them when the sidecar stops.
-- ---------------------------------------------------------------------------

CREATE TABLE ruvector.shard_caps (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    shard         integer NOT NULL CHECK (shard BETWEEN 0 AND 255),
    rows_per_sec  integer NOT NULL CHECK (rows_per_sec BETWEEN 1 AND 16777215),
    set_at        timestamptz NOT NULL DEFAULT now(),
    set_by        name NOT NULL DEFAULT current_user,
    PRIMARY KEY (collection_id, shard)
);
GRANT SELECT ON ruvector.shard_caps TO ruvector_monitor;
GRANT INSERT, UPDATE, DELETE ON ruvector.shard_caps TO ruvector_admin;

-- Internal: the segment writer and readers (they check privileges and the
-- segment themselves too).
CREATE FUNCTION ruvector._shard_cap_apply(collection_id integer, shard integer, rows_per_sec integer)
RETURNS void AS 'MODULE_PATHNAME', 'ruvector_shard_cap_apply' LANGUAGE C VOLATILE;
CREATE FUNCTION ruvector._shard_caps_read(collection_id integer,
    OUT shard integer, OUT cap_rows_per_sec integer, OUT set_by text, OUT outcome_id bigint)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'ruvector_shard_caps_read' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION ruvector._shard_cap_counters(collection_id integer,
    OUT admitted_rows bigint, OUT delayed_rows bigint, OUT rejected_statements bigint, OUT wait_ms double precision)
RETURNS record AS 'MODULE_PATHNAME', 'ruvector_shard_cap_counters' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION ruvector._shard_cap_apply(integer, integer, integer),
    ruvector._shard_caps_read(integer), ruvector._shard_cap_counters(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._shard_cap_apply(integer, integer, integer) TO ruvector_admin;
GRANT EXECUTE ON FUNCTION ruvector._shard_caps_read(integer), ruvector._shard_cap_counters(integer)
    TO ruvector_monitor, pg_monitor;

CREATE FUNCTION ruvector_shard_cap_set(collection text, shard integer, rows_per_sec integer)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
BEGIN
    PERFORM ruvector._require_admin('set a shard cap');
    vc := ruvector._vector_collection(collection);
    IF shard IS NULL OR shard < 0 OR shard >= vc.partitions THEN
        RAISE EXCEPTION 'collection "%" has no shard %', collection, coalesce(shard::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Shards of this collection are 0 to %s.', vc.partitions - 1);
    END IF;
    IF rows_per_sec IS NULL OR rows_per_sec < 1 OR rows_per_sec > 16777215 THEN
        RAISE EXCEPTION 'shard cap of % rows per second is out of range', coalesce(rows_per_sec::text, 'NULL')
            USING ERRCODE = 'numeric_value_out_of_range',
                  HINT = 'A cap is 1 to 16777215 rows per second; ruvector_shard_cap_clear(collection, shard) lifts one.';
    END IF;
    INSERT INTO ruvector.shard_caps AS c (collection_id, shard, rows_per_sec)
    VALUES (vc.collection_id, shard, rows_per_sec)
    ON CONFLICT ON CONSTRAINT shard_caps_pkey DO UPDATE
        SET rows_per_sec = EXCLUDED.rows_per_sec, set_at = now(), set_by = current_user;
    PERFORM ruvector._shard_cap_apply(vc.collection_id, shard, rows_per_sec);
END
$$;
COMMENT ON FUNCTION ruvector_shard_cap_set(text, integer, integer) IS
    'Caps the rows per second INSERTed into one shard (a manual cap: durable, never overridden by the sidecar; in the shared segment at once, undone if the transaction aborts).';

CREATE FUNCTION ruvector_shard_cap_clear(collection text, shard integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    vc ruvector.vector_collections;
    s integer;
BEGIN
    PERFORM ruvector._require_admin('clear a shard cap');
    vc := ruvector._vector_collection(collection);
    IF shard IS NOT NULL AND (shard < 0 OR shard >= vc.partitions) THEN
        RAISE EXCEPTION 'collection "%" has no shard %', collection, shard
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Shards of this collection are 0 to %s, or NULL for every shard.', vc.partitions - 1);
    END IF;
    DELETE FROM ruvector.shard_caps c
        WHERE c.collection_id = vc.collection_id AND (ruvector_shard_cap_clear.shard IS NULL OR c.shard = ruvector_shard_cap_clear.shard);
    -- Whoever set it: an operator may lift a sidecar cap too.
    FOR s IN SELECT r.shard FROM ruvector._shard_caps_read(vc.collection_id) r
             WHERE ruvector_shard_cap_clear.shard IS NULL OR r.shard = ruvector_shard_cap_clear.shard LOOP
        PERFORM ruvector._shard_cap_apply(vc.collection_id, s, 0);
    END LOOP;
END
$$;
COMMENT ON FUNCTION ruvector_shard_cap_clear(text, integer) IS
    'Lifts the cap of one shard (or of every shard), whoever set it.';

CREATE FUNCTION ruvector_shard_caps(collection text)
RETURNS TABLE (shard integer, cap_rows_per_sec integer, set_by text, outcome_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    vc ruvector.vector_collections := ruvector._vector_collection(collection);
BEGIN
    RETURN QUERY SELECT r.shard, r.cap_rows_per_sec, r.set_by, r.outcome_id
        FROM ruvector._shard_caps_read(vc.collection_id) r ORDER BY r.shard;
END
$$;
COMMENT ON FUNCTION ruvector_shard_caps(text) IS
    'The capped shards of a collection as the row trigger enforces them: cap in rows per second, who set it (manual or sidecar), and the healing outcome whose remediation set a sidecar cap (NULL otherwise).';
REVOKE ALL ON FUNCTION ruvector_shard_caps(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_shard_caps(text) TO ruvector_monitor, pg_monitor;

CREATE FUNCTION ruvector_shard_cap_stats(collection text)
RETURNS TABLE (admitted_rows bigint, delayed_rows bigint, rejected_statements bigint, wait_ms double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    vc ruvector.vector_collections := ruvector._vector_collection(collection);
BEGIN
    RETURN QUERY SELECT c.admitted_rows, c.delayed_rows, c.rejected_statements, c.wait_ms
        FROM ruvector._shard_cap_counters(vc.collection_id) c;
END
$$;
COMMENT ON FUNCTION ruvector_shard_cap_stats(text) IS
    'The row trigger''s shard cap counters of a collection since its caps were first set: rows admitted into capped shards, rows that waited, statements refused, total wait.';
REVOKE ALL ON FUNCTION ruvector_shard_cap_stats(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_shard_cap_stats(text) TO ruvector_monitor, pg_monitor;
