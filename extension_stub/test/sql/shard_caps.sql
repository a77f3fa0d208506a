-- Shard caps: manual set/read/clear, enforcement per row on INSERT and
-- COPY, refusal past ruvector.throttle_max_wait, undo on abort, bad input.
SET search_path = public, ruvector;
\set SHOW_CONTEXT never

CREATE FUNCTION cap_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
        hint = PG_EXCEPTION_HINT;
    -- How long a refused row would have waited depends on the clock.
    RETURN st || ': ' || msg || ' | DETAIL: ' || regexp_replace(coalesce(det, '-'), 'wait \d+ ms', 'wait N ms')
        || ' | HINT: ' || coalesce(hint, '-');
END
$$;

SELECT ruvector_collection_create('capped', 2, 4, 2) > 0 AS created;
SELECT * FROM ruvector_shard_caps('capped');

-- A cap: durable and in the segment.
SELECT ruvector_shard_cap_set('capped', 1, 20);
SELECT * FROM ruvector_shard_caps('capped');
SELECT shard, rows_per_sec FROM ruvector.shard_caps;

-- 20 rows at 20 rows/s into shard 1 take about a second (less the 100 ms
-- burst); the same rows into uncapped shard 0 take no time.
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;
INSERT INTO capped (embedding, shard) SELECT ARRAY[g, g]::real[], 1 FROM generate_series(1, 20) g;
SELECT clock_timestamp() - t >= interval '800 ms' AS capped_waited FROM t0;
UPDATE t0 SET t = clock_timestamp();
INSERT INTO capped (embedding, shard) SELECT ARRAY[g, g]::real[], 0 FROM generate_series(1, 20) g;
SELECT clock_timestamp() - t < interval '500 ms' AS uncapped_fast FROM t0;
-- Routed rows (the shard column's default) go around a capped shard, and
-- take no time doing so.
UPDATE t0 SET t = clock_timestamp();
CREATE TEMP TABLE routed AS SELECT max(id) AS last FROM capped;
INSERT INTO capped (embedding) SELECT ARRAY[g, g]::real[] FROM generate_series(1, 200) g;
SELECT clock_timestamp() - t < interval '500 ms' AS routed_fast FROM t0;
SELECT count(*) FILTER (WHERE shard = 1) AS routed_into_capped, count(*) AS routed
FROM capped WHERE id > (SELECT last FROM routed);
DELETE FROM capped WHERE id > (SELECT last FROM routed);
-- COPY naming the shard is capped the same way.
UPDATE t0 SET t = clock_timestamp();
COPY capped (embedding, shard) FROM STDIN;
{1,1}	1
{2,2}	1
{3,3}	1
{4,4}	1
{5,5}	1
{6,6}	1
{7,7}	1
{8,8}	1
{9,9}	1
{10,10}	1
\.
SELECT clock_timestamp() - t >= interval '350 ms' AS copy_waited FROM t0;
SELECT admitted_rows >= 30 AS admitted, delayed_rows > 0 AS delayed, rejected_statements, wait_ms > 0 AS waited
FROM ruvector_shard_cap_stats('capped');
SELECT shard, count(*) FROM capped GROUP BY shard ORDER BY shard;

-- A row that would wait longer than ruvector.throttle_max_wait fails the
-- statement (53000), naming collection, shard, cap and who set it.
SELECT ruvector_shard_cap_set('capped', 1, 1);
SET ruvector.throttle_max_wait = 0;
SET ruvector.throttle_burst = 0;
SELECT cap_try($$INSERT INTO capped (embedding, shard) SELECT ARRAY[g, g]::real[], 1 FROM generate_series(1, 3) g$$);
SELECT rejected_statements FROM ruvector_shard_cap_stats('capped');
-- An UPDATE that keeps the shard is not capped.
SELECT cap_try($$UPDATE capped SET embedding = ARRAY[0, 0]::real[] WHERE shard = 1$$);
RESET ruvector.throttle_max_wait;
RESET ruvector.throttle_burst;

-- Undo: an aborted transaction's cap changes never happened.
BEGIN;
SELECT ruvector_shard_cap_set('capped', 0, 5);
SELECT ruvector_shard_cap_clear('capped', 1);
SELECT * FROM ruvector_shard_caps('capped');
ROLLBACK;
SELECT * FROM ruvector_shard_caps('capped');
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, 5), 1/0$$);
SELECT * FROM ruvector_shard_caps('capped');

-- Bad input: a clear error with a hint, nothing changed.
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 4, 10)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', -1, 10)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', NULL, 10)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, 0)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, -5)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, 16777216)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, NULL)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_set('nope', 0, 10)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_clear('capped', 7)$$);
SELECT cap_try($$SELECT ruvector._shard_cap_apply(NULL, 0, 1)$$);
SELECT cap_try($$SELECT ruvector._shard_cap_apply((SELECT collection_id FROM ruvector.collections WHERE name = 'capped'), 256, 1)$$);
SELECT * FROM ruvector_shard_caps('capped');
SELECT shard, rows_per_sec FROM ruvector.shard_caps;

-- Privileges: only admins set caps; monitors read them.
CREATE ROLE cap_monitor IN ROLE ruvector_monitor;
SET ROLE cap_monitor;
SELECT cap_try($$SELECT ruvector_shard_cap_set('capped', 0, 10)$$);
SELECT cap_try($$SELECT ruvector_shard_cap_clear('capped')$$);
SELECT count(*) FROM ruvector_shard_caps('capped');
RESET ROLE;
DROP ROLE cap_monitor;

-- Clear: one shard, then all.
SELECT ruvector_shard_cap_set('capped', 0, 1000);
SELECT ruvector_shard_cap_clear('capped', 1);
SELECT * FROM ruvector_shard_caps('capped');
SELECT ruvector_shard_cap_clear('capped');
SELECT * FROM ruvector_shard_caps('capped');
SELECT count(*) FROM ruvector.shard_caps;

-- Dropping the collection drops its durable caps.
SELECT ruvector_shard_cap_set('capped', 0, 50);
SELECT ruvector_collection_drop('capped');
SELECT count(*) FROM ruvector.shard_caps;
DROP FUNCTION cap_try(text);
