-- Exact IVF list counters in the shared segment: every kind of row change,
-- aborts and subtransactions, stale after TRUNCATE and partition changes,
-- the baseline, and bad input.
SET search_path = public, ruvector;
\set SHOW_CONTEXT never

-- lc_try(sql) runs sql in a subtransaction and shows its error as SQLSTATE,
-- message and hint, collection ids masked.
CREATE FUNCTION lc_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || regexp_replace(msg || ' | HINT: ' || coalesce(nullif(hint, ''), '-'),
                                        '(collection |, )\d+', '\1N', 'g');
END
$$;

-- The counters against an exact count: 'exact', 'stale', or the lists
-- that differ as list=counter/exact.
CREATE FUNCTION lc_check() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    bad text;
BEGIN
    SELECT * INTO r FROM ruvector._list_counts_read(
        (SELECT collection_id FROM ruvector.collections WHERE name = 'lc'));
    IF NOT r.valid THEN
        RETURN 'stale';
    END IF;
    WITH exact AS (SELECT ivf_list AS l, count(*) AS n FROM lc GROUP BY 1),
    kept AS (SELECT i - 1 AS l, r.counts[i] AS n FROM generate_subscripts(r.counts, 1) i
             UNION ALL SELECT -2, r.unassigned
             UNION ALL SELECT -1, r.other),
    want AS (SELECT CASE WHEN l IS NULL THEN -2 WHEN l < 0 OR l >= 4096 THEN -1 ELSE l END AS l, sum(n) AS n
             FROM exact GROUP BY 1)
    SELECT string_agg(format('%s=%s/%s', coalesce(k.l, e.l), coalesce(k.n, 0), coalesce(e.n, 0)), ' '
                      ORDER BY coalesce(k.l, e.l))
    INTO bad
    FROM kept k FULL JOIN want e ON k.l = e.l
    WHERE coalesce(k.n, 0) <> coalesce(e.n, 0);
    RETURN coalesce('differs: ' || bad, 'exact');
END
$$;

SELECT (ruvector._segment_status()->>'lists_per_slot')::int AS lists_per_slot;
SELECT ruvector_collection_create('lc', 2, 2, 3) > 0 AS created;
SELECT tgrelid::regclass AS rel, tgname, tgenabled FROM pg_trigger
WHERE tgname LIKE 'ruvector_list_count%' ORDER BY 1::text, 2;

-- A new slot has no baseline.
SELECT valid, epoch, counts, unassigned FROM ruvector._list_counts_read(
    (SELECT collection_id FROM ruvector.collections WHERE name = 'lc'));
SELECT lc_check();
SELECT lc_try($$SELECT * FROM ruvector_list_sizes('lc')$$);

-- Rows before any centroids are unassigned; the baseline counts them.
INSERT INTO lc (embedding, shard) SELECT ARRAY[i, -i]::real[], i % 2 FROM generate_series(1, 10) i;
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();
SELECT * FROM ruvector_list_sizes('lc');

-- Centroids: inserts are assigned and counted at commit.
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
SELECT collection_id, 1, 'training', 3 FROM ruvector.collections WHERE name = 'lc';
INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
SELECT c.collection_id, 1, l.id, l.v FROM ruvector.collections c,
    (VALUES (0, '{10,0}'::real[]), (1, '{0,10}'), (2, '{-10,-10}')) l(id, v)
WHERE c.name = 'lc';
SELECT ruvector._centroids_activate('lc', 1);
INSERT INTO lc (embedding, shard) SELECT ARRAY[9 + i % 2, 0]::real[], i % 2 FROM generate_series(1, 7) i;
INSERT INTO lc (embedding, shard) SELECT ARRAY[0, 11]::real[], i % 2 FROM generate_series(1, 5) i;
COPY lc (embedding, shard) FROM STDIN;
{-9,-9}	0
{-11,-10}	1
{10,1}	1
\.
SELECT lc_check();
SELECT * FROM ruvector_list_sizes('lc');

-- Reassignment (the unassigned rows get lists), list changes by hand, an
-- embedding change, ivf_list beyond the counters and negative.
UPDATE lc SET ivf_list = NULL WHERE ivf_list IS NULL;
SELECT lc_check();
UPDATE lc SET ivf_list = 2 WHERE id IN (SELECT id FROM lc WHERE ivf_list = 0 ORDER BY id LIMIT 2);
UPDATE lc SET embedding = '{0,9}' WHERE id = (SELECT min(id) FROM lc WHERE ivf_list = 2);
UPDATE lc SET ivf_list = 5000 WHERE id = (SELECT max(id) FROM lc WHERE ivf_list = 1);
UPDATE lc SET ivf_list = -3 WHERE id = (SELECT min(id) FROM lc WHERE ivf_list = 1);
UPDATE lc SET ivf_list = 7 WHERE id = (SELECT min(id) FROM lc WHERE ivf_list = 0);
SELECT lc_check();
SELECT count(*) FILTER (WHERE l = 7) AS list7, count(*) FILTER (WHERE l = -1) AS other
FROM (SELECT CASE WHEN ivf_list < 0 OR ivf_list >= 4096 THEN -1 ELSE ivf_list END AS l FROM lc) x;

-- Deletes, and moves between partitions (DELETE + INSERT in the executor),
-- with and without a list change.
DELETE FROM lc WHERE id IN (SELECT id FROM lc WHERE ivf_list = 1 ORDER BY id LIMIT 2);
UPDATE lc SET shard = 1 - shard WHERE id % 3 = 0;
UPDATE lc SET shard = 1 - shard, embedding = '{-10,-10}' WHERE id % 4 = 1;
SELECT lc_check();

-- An aborted transaction leaves the counters as they were.
BEGIN;
INSERT INTO lc (embedding, shard) SELECT '{10,0}', 0 FROM generate_series(1, 50);
DELETE FROM lc WHERE ivf_list = 2;
UPDATE lc SET ivf_list = 1;
ROLLBACK;
SELECT lc_check();

-- Subtransactions: a rolled-back savepoint, a failed statement caught in an
-- exception block after it inserted rows, a released savepoint.
BEGIN;
INSERT INTO lc (embedding, shard) VALUES ('{10,0}', 1);
SAVEPOINT a;
INSERT INTO lc (embedding, shard) SELECT '{0,10}', 0 FROM generate_series(1, 20);
DELETE FROM lc WHERE ivf_list = 0;
ROLLBACK TO a;
SELECT lc_try($$INSERT INTO lc (embedding, shard) SELECT CASE WHEN i < 5 THEN '{0,10}' ELSE '{1}' END::real[], 0
                FROM generate_series(1, 6) i$$) LIKE '22023%' AS failed;
SAVEPOINT b;
INSERT INTO lc (embedding, shard) SELECT '{-10,-10}', 1 FROM generate_series(1, 3);
SAVEPOINT c;
DELETE FROM lc WHERE id = (SELECT min(id) FROM lc);
RELEASE c;
RELEASE b;
COMMIT;
SELECT lc_check();

-- ON CONFLICT DO NOTHING counts only the rows it inserts; a row written
-- under session_replication_role = replica is counted (ENABLE ALWAYS).
INSERT INTO lc (id, shard, embedding) SELECT id, shard, '{10,0}' FROM lc ORDER BY id LIMIT 3 ON CONFLICT DO NOTHING;
INSERT INTO lc (id, shard, embedding) SELECT id, shard, '{10,0}' FROM lc ORDER BY id DESC LIMIT 3
ON CONFLICT (id, shard) DO UPDATE SET ivf_list = 2;
SET session_replication_role = replica;
INSERT INTO lc (embedding, shard, ivf_list) VALUES ('{10,0}', 0, 0);
RESET session_replication_role;
SELECT lc_check();

-- TRUNCATE of a partition, detach and attach make them stale (rows come
-- and go without row triggers), unless the statement rolls back.
BEGIN;
TRUNCATE lc_p1;
ROLLBACK;
SELECT lc_check();
TRUNCATE lc_p1;
SELECT lc_check();
SELECT lc_try($$SELECT * FROM ruvector_list_sizes('lc')$$);
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();
INSERT INTO lc (embedding, shard) SELECT '{0,10}', 1 FROM generate_series(1, 4);
ALTER TABLE lc DETACH PARTITION lc_p1;
SELECT lc_check();
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();
ALTER TABLE lc ATTACH PARTITION lc_p1 FOR VALUES IN (1);
SELECT lc_check();
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();
SELECT * FROM ruvector_list_sizes('lc');

-- Bad input and misuse change nothing.
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('nope')$$);
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc', '-1 s')$$);
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc', NULL)$$);
BEGIN;
INSERT INTO lc (embedding, shard) VALUES ('{10,0}', 0);
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc')$$);
ROLLBACK;
SELECT lc_check();
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc')$$);
ROLLBACK;
SELECT lc_try(format($$SELECT ruvector._list_counts_publish(%s, 'lc'::regclass, '{0}', '{99}')$$,
                     (SELECT collection_id FROM ruvector.collections WHERE name = 'lc')));
BEGIN;
LOCK TABLE lc IN SHARE ROW EXCLUSIVE MODE;
SELECT lc_try(format($$SELECT ruvector._list_counts_publish(%s, 'lc'::regclass, '{0,1}', '{99}')$$,
                     (SELECT collection_id FROM ruvector.collections WHERE name = 'lc')));
ROLLBACK;
CREATE ROLE lc_monitor IN ROLE ruvector_monitor;
SET ROLE lc_monitor;
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc')$$);
SELECT count(*) AS lists FROM ruvector_list_sizes('lc');
RESET ROLE;
DROP ROLE lc_monitor;
-- lc_check sees wrong counters (published by hand under the lock).
BEGIN;
LOCK TABLE lc IN SHARE ROW EXCLUSIVE MODE;
SELECT ruvector._list_counts_publish(collection_id, 'lc'::regclass, '{0,NULL}', '{99,1}') AS epoch
FROM ruvector.collections WHERE name = 'lc';
COMMIT;
SELECT lc_check();
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();

-- Switching a trigger off or dropping one makes them stale, and the
-- rebaseline refuses while the counting triggers are not ENABLE ALWAYS.
ALTER TABLE lc DISABLE TRIGGER ruvector_list_count;
SELECT lc_check();
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc')$$);
ALTER TABLE lc ENABLE ALWAYS TRIGGER ruvector_list_count;
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();
DROP TRIGGER ruvector_list_count_update ON lc;
SELECT lc_check();
SELECT lc_try($$SELECT ruvector._list_counts_rebaseline('lc')$$);
DROP TRIGGER ruvector_list_count ON lc;
SELECT ruvector._list_count_install('lc', collection_id) FROM ruvector.collections WHERE name = 'lc';
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();

-- Dropping a partition removes its rows without row triggers.
DROP TABLE lc_p1;
SELECT lc_check();
SELECT ruvector._list_counts_rebaseline('lc') AS epoch;
SELECT lc_check();

SELECT ruvector_collection_drop('lc');
