-- Vector collections: create/drop/adopt, routing, IVF lists and search,
-- the maintenance queue, and bad input.
SET search_path = public, ruvector;
\set SHOW_CONTEXT never

-- try(sql) runs sql and shows its error as SQLSTATE, message and hint.
-- It runs in a subtransaction, so a failure also exercises the undo of
-- shared-memory changes.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || ' | HINT: ' || coalesce(hint, '-');
END
$$;

-- Create: a table partitioned by shard, a routing default, the trigger.
SELECT ruvector_collection_create('items', 3, 4, 4) > 0 AS created;
SELECT c.name, v.dim, v.partitions, v.lists, v.owned
FROM ruvector.vector_collections v JOIN ruvector.collections c USING (collection_id);
SELECT relid::regclass AS rel, level FROM pg_partition_tree('items') ORDER BY level, relid::regclass::text;
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       regexp_replace(pg_get_expr(d.adbin, d.adrelid), '\d+', 'N', 'g') AS default
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = 'items'::regclass AND a.attnum > 0 ORDER BY a.attnum;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'items'::regclass;
SELECT indexdef ~ '\(ivf_list\)' AS ivf_index FROM pg_indexes WHERE tablename = 'items' AND indexdef ~ 'ivf_list';
SELECT tgrelid::regclass AS rel, tgname FROM pg_trigger WHERE tgname = 'ruvector_vector_check' ORDER BY 1::text;
SELECT * FROM ruvector_routing_status('items');

-- Routing: rows without a shard spread over all shards by weight...
INSERT INTO items (embedding) SELECT ARRAY[sin(g), cos(g), (g % 7) / 7.0]::real[] FROM generate_series(1, 1000) g;
SELECT shard, count(*) > 150 AS plenty FROM items GROUP BY shard ORDER BY shard;
-- ...and a shard of weight 0 gets no new rows.
SELECT ruvector_routing_set('items', 2, 0);
SELECT ruvector_routing_set('items', 3, 3, 'manual', 42);
SELECT shard, weight, set_by, outcome_id, set_at IS NOT NULL AS has_set_at, segment_weight
FROM ruvector_routing_status('items');
CREATE TABLE before_counts AS SELECT shard, count(*) AS n FROM items GROUP BY shard;
INSERT INTO items (embedding) SELECT ARRAY[sin(g), cos(g), (g % 7) / 7.0]::real[] FROM generate_series(1001, 2000) g;
SELECT i.shard, count(*) - b.n > 0 AS got_new_rows
FROM items i JOIN before_counts b USING (shard) GROUP BY i.shard, b.n ORDER BY i.shard;
-- Shard 3 (weight 3) gets more than shards 0 and 1 (weight 1) together.
SELECT (SELECT count(*) - (SELECT n FROM before_counts WHERE shard = 3) FROM items WHERE shard = 3) >
       (SELECT count(*) - (SELECT sum(n) FROM before_counts WHERE shard IN (0, 1)) FROM items WHERE shard IN (0, 1))
       AS weighted;

-- Routing changes are transactional: an abort restores the segment.
BEGIN;
SELECT ruvector_routing_set('items', 0, 0);
SELECT shard, segment_weight FROM ruvector_routing_status('items') WHERE shard = 0;
ROLLBACK;
SELECT shard, weight, set_by, segment_weight FROM ruvector_routing_status('items') ORDER BY shard;

-- A rolled-back savepoint takes back only its own change.
BEGIN;
SELECT ruvector_routing_set('items', 1, 5);
SAVEPOINT s;
SELECT ruvector_routing_set('items', 0, 9);
SELECT ruvector_routing_set('items', 1, 6);
ROLLBACK TO SAVEPOINT s;
SELECT shard, weight, segment_weight FROM ruvector_routing_status('items') WHERE shard IN (0, 1) ORDER BY shard;
COMMIT;
SELECT shard, weight, segment_weight FROM ruvector_routing_status('items') WHERE shard IN (0, 1) ORDER BY shard;

-- Every shard at 0 is refused, and changes nothing.
SELECT ruvector_routing_set('items', 0, 0);
SELECT ruvector_routing_set('items', 1, 0);
SELECT try($$SELECT ruvector_routing_set('items', 3, 0)$$);
SELECT shard, weight, segment_weight FROM ruvector_routing_status('items') ORDER BY shard;
SELECT ruvector_routing_reset('items', 0);
SELECT ruvector_routing_reset('items');
SELECT shard, weight, set_by, segment_weight FROM ruvector_routing_status('items') ORDER BY shard;
SELECT count(*) FROM ruvector.routing_weights;

-- IVF lists: no active version, no lists.
SELECT count(*) FILTER (WHERE ivf_list IS NULL) AS unassigned, count(*) AS total FROM items;
SELECT ruvector._centroid_version(collection_id) FROM ruvector.collections WHERE name = 'items';
-- Without a version, search is an exact scan.
SELECT array_agg(id ORDER BY distance, id) =
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY ruvector._l2(embedding, '{0.5,0.5,0.5}'), id LIMIT 10) e)
       AS exact_without_version
FROM ruvector_ivf_search('items', '{0.5,0.5,0.5}', 10);

-- Centroids by hand: four corners, activated.
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
SELECT collection_id, 1, 'training', 4 FROM ruvector.collections WHERE name = 'items';
INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
SELECT c.collection_id, 1, l.id, l.v FROM ruvector.collections c,
    (VALUES (0, '{1,0,0}'::real[]), (1, '{0,1,0}'), (2, '{-1,0,0.5}'), (3, '{0,-1,1}')) l(id, v)
WHERE c.name = 'items';
SELECT ruvector._centroids_activate('items', 1);
SELECT version, state, activated_at IS NOT NULL AS activated FROM ruvector.centroid_versions ORDER BY version;
SELECT ruvector._centroid_version(collection_id) FROM ruvector.collections WHERE name = 'items';

-- New rows get their nearest list at insert; old ones stay NULL.
INSERT INTO items (embedding) SELECT ARRAY[sin(g), cos(g), (g % 7) / 7.0]::real[] FROM generate_series(2001, 2500) g;
SELECT count(*) FILTER (WHERE ivf_list IS NULL) AS unassigned, count(*) AS total FROM items;
CREATE FUNCTION nearest(v real[]) RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT c.list_id FROM ruvector.centroids c JOIN ruvector.collections USING (collection_id)
    WHERE name = 'items' AND version = 1 ORDER BY ruvector._l2(c.centroid, v), c.list_id LIMIT 1 $$;
SELECT count(*) AS wrong_list FROM items WHERE ivf_list IS NOT NULL AND ivf_list <> nearest(embedding);
SELECT ivf_list, count(*) > 0 AS used FROM items WHERE ivf_list IS NOT NULL GROUP BY ivf_list ORDER BY 1;
-- Search is correct before assignment catches up (NULL lists included)...
SELECT array_agg(id ORDER BY distance, id) =
       (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY ruvector._l2(embedding, '{0.2,-0.9,0.4}'), id LIMIT 10) e)
       AS exact_with_unassigned
FROM ruvector_ivf_search('items', '{0.2,-0.9,0.4}', 10, 4);
-- ...and after: an UPDATE to NULL reassigns, a changed vector moves list.
UPDATE items SET ivf_list = NULL WHERE ivf_list IS NULL;
SELECT count(*) FILTER (WHERE ivf_list IS NULL) AS unassigned,
       count(*) FILTER (WHERE ivf_list <> nearest(embedding)) AS wrong_list FROM items;
UPDATE items SET embedding = '{0,-1,1}' WHERE id = 1;
UPDATE items SET embedding = '{1,0,0}', shard = 0 WHERE id = 2;
SELECT id, shard = 0 OR id = 1 AS moved, ivf_list FROM items WHERE id IN (1, 2) ORDER BY id;
-- probes = lists is an exact search; fewer probes search fewer lists.
SELECT q, (SELECT array_agg(id ORDER BY distance, id) FROM ruvector_ivf_search('items', q, 10, 4)) =
          (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY ruvector._l2(embedding, q), id LIMIT 10) e)
          AS exact
FROM (VALUES ('{0.5,0.5,0.5}'::real[]), ('{-0.7,0.1,0.9}'), ('{0.9,-0.2,0.1}')) x(q);
SELECT count(*) AS k, bool_and(i.ivf_list = nearest('{1,0,0}')) AS one_list
FROM ruvector_ivf_search('items', '{1,0,0}', 25, 1) s JOIN items i USING (id);

-- Bad input: a clear error with SQLSTATE and hint, and nothing changed.
SELECT count(*) AS rows_before FROM items;
SELECT try($$INSERT INTO items (embedding) VALUES ('{1,2}')$$);
SELECT try($$INSERT INTO items (embedding) VALUES ('{1,2,3,4}')$$);
SELECT try($$INSERT INTO items (embedding) VALUES (NULL)$$);
SELECT try($$INSERT INTO items (embedding) VALUES ('{1,NaN,3}')$$);
SELECT try($$INSERT INTO items (embedding) VALUES ('{1,2,-Infinity}')$$);
SELECT try($$INSERT INTO items (embedding) VALUES ('{1,NULL,3}')$$);
SELECT try($$INSERT INTO items (embedding) VALUES ('{{1,2,3}}')$$);
SELECT try($$UPDATE items SET embedding = '{1,2}' WHERE id = 3$$);
SELECT try($$INSERT INTO items_p0 (embedding, shard) VALUES ('{1,2}', 0)$$);
SELECT count(*) AS rows_after FROM items;
SELECT try($$SELECT * FROM ruvector_ivf_search('nope', '{1,2,3}', 5)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', '{1,2}', 5)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', NULL, 5)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', '{{1,2,3}}', 5)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', '{1,NaN,3}', 5)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', '{1,2,3}', 0)$$);
SELECT try($$SELECT * FROM ruvector_ivf_search('items', '{1,2,3}', 5, 0)$$);
SELECT try($$SELECT ruvector._l2('{1,2}', '{1,2,3}')$$);
SELECT try($$SELECT ruvector_routing_set('nope', 0, 1)$$);
SELECT try($$SELECT ruvector_routing_set('items', 4, 1)$$);
SELECT try($$SELECT ruvector_routing_set('items', 0, -1)$$);
SELECT try($$SELECT ruvector_routing_set('items', 0, 'NaN')$$);
SELECT try($$SELECT ruvector_routing_set('items', 0, 1, 'robot')$$);
SELECT try($$SELECT ruvector._centroids_activate('items', 9)$$);
SELECT count(*) AS tables_before FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace;
SELECT try($$SELECT ruvector_collection_create('bad name', 3)$$);
SELECT try($$SELECT ruvector_collection_create('x"y', 3)$$);
SELECT try($$SELECT ruvector_collection_create('x; DROP TABLE items', 3)$$);
SELECT try($$SELECT ruvector_collection_create('items"; DROP TABLE items; --', 3)$$);
SELECT try($$SELECT ruvector_collection_create('1abc', 3)$$);
SELECT try($$SELECT ruvector_collection_create(NULL, 3)$$);
SELECT try($$SELECT ruvector_collection_create(repeat('a', 61), 3)$$);
SELECT try($$SELECT ruvector_collection_create('items', 3)$$);
SELECT try($$SELECT ruvector_collection_create('before_counts', 3)$$);
SELECT try($$SELECT ruvector_collection_create('ok_name', 0)$$);
SELECT try($$SELECT ruvector_collection_create('ok_name', 3, 257)$$);
SELECT try($$SELECT ruvector_collection_create('ok_name', 3, 4, 0)$$);
SELECT try($$SELECT ruvector_collection_drop('nope')$$);
SELECT try($$SELECT ruvector_collection_drop('x; DROP TABLE items')$$);
SELECT count(*) AS tables_after FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace;
SELECT count(*) AS rows_after FROM items;
SELECT name FROM ruvector.collections ORDER BY name;

-- A role that is not an admin may not change routing.
CREATE ROLE coll_user;
GRANT USAGE ON SCHEMA ruvector TO coll_user;
GRANT INSERT, SELECT ON items TO coll_user;
GRANT USAGE ON SEQUENCE items_id_seq TO coll_user;
SET ROLE coll_user;
SELECT try($$SELECT ruvector_routing_set('items', 0, 5)$$);
-- It may insert, and its rows get lists from centroids it cannot read.
INSERT INTO items (embedding) VALUES ('{0.9,0.1,0}');
-- It may not read routing status or the queue; a monitor may.
SELECT try($$SELECT * FROM ruvector_routing_status('items')$$);
RESET ROLE;
SELECT ivf_list FROM items WHERE id = (SELECT max(id) FROM items);
CREATE ROLE coll_monitor IN ROLE ruvector_monitor;
SET ROLE coll_monitor;
SELECT count(*) AS shards FROM ruvector_routing_status('items');
SELECT count(*) >= 0 AS can_read_jobs FROM ruvector_maintenance_status();
SELECT try($$SELECT ruvector_routing_reset('items')$$);
SELECT try($$SELECT ruvector_maintenance_enqueue('items', 'vacuum')$$);
SELECT try($$SELECT ruvector._centroids_activate('items', 1)$$);
RESET ROLE;
DROP ROLE coll_monitor;

-- A second version replaces the first; the first is retired and kept.
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
SELECT collection_id, 2, 'training', 4 FROM ruvector.collections WHERE name = 'items';
INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
SELECT c.collection_id, 2, l.id, l.v FROM ruvector.collections c,
    (VALUES (0, '{-1,0,0}'::real[]), (1, '{0,-1,0}'), (2, '{1,0,0.5}'), (3, '{0,1,1}')) l(id, v)
WHERE c.name = 'items';
BEGIN;
SELECT ruvector._centroids_activate('items', 2);
-- The activating transaction already uses it; others see it at commit.
INSERT INTO items (embedding) VALUES ('{0.9,0.1,0}') RETURNING ivf_list;
ROLLBACK;
SELECT version, state FROM ruvector.centroid_versions ORDER BY version;
SELECT ruvector._centroid_version(collection_id) FROM ruvector.collections WHERE name = 'items';
SELECT ruvector._centroids_activate('items', 2);
SELECT version, state FROM ruvector.centroid_versions ORDER BY version;
INSERT INTO items (embedding) VALUES ('{0.9,0.1,0}') RETURNING ivf_list;
-- A bad version is refused with the lists that are wrong.
INSERT INTO ruvector.centroid_versions (collection_id, version, state, lists)
SELECT collection_id, 3, 'training', 2 FROM ruvector.collections WHERE name = 'items';
INSERT INTO ruvector.centroids (collection_id, version, list_id, centroid)
SELECT c.collection_id, 3, l.id, l.v FROM ruvector.collections c,
    (VALUES (0, '{-1,0}'::real[]), (1, '{0,-1,0}')) l(id, v) WHERE c.name = 'items';
SELECT try($$SELECT ruvector._centroids_activate('items', 3)$$);
SELECT version, state FROM ruvector.centroid_versions ORDER BY version;

-- The maintenance queue.
SELECT ruvector_maintenance_enqueue('items', 'vacuum') > 0 AS queued;
SELECT ruvector_maintenance_enqueue('items', 'centroid_rebuild', 500, '{"lists": 8}') > 0 AS queued;
SELECT collection, kind, priority, state, progress, params FROM ruvector_maintenance_status();
SELECT try($$SELECT ruvector_maintenance_enqueue('items', 'defrag')$$);
SELECT try($$SELECT ruvector_maintenance_enqueue('items', 'vacuum', 2000)$$);
SELECT try($$SELECT ruvector_maintenance_enqueue('items', 'vacuum', 1, '[1]')$$);
SELECT try($$SELECT ruvector_maintenance_enqueue('nope', 'vacuum')$$);
SELECT count(*) AS jobs FROM ruvector.maintenance_jobs;

-- Adopt: an existing table with the layout (and a column of its own).
CREATE TABLE mine (id bigint GENERATED ALWAYS AS IDENTITY, embedding real[] NOT NULL,
                   shard integer NOT NULL, ivf_list integer, note text,
                   PRIMARY KEY (id, shard)) PARTITION BY LIST (shard);
CREATE TABLE mine_a PARTITION OF mine FOR VALUES IN (0);
CREATE TABLE mine_b PARTITION OF mine FOR VALUES IN (1);
SELECT ruvector_collection_adopt('mine_c', 'mine', 2, 10) > 0 AS adopted;
SELECT v.dim, v.partitions, v.lists, v.owned FROM ruvector.vector_collections v
JOIN ruvector.collections c USING (collection_id) WHERE c.name = 'mine_c';
INSERT INTO mine (embedding, note) SELECT ARRAY[g, -g]::real[], 'n' || g FROM generate_series(1, 200) g;
SELECT shard, count(*) > 50 AS plenty FROM mine GROUP BY shard ORDER BY shard;
SELECT try($$INSERT INTO mine (embedding) VALUES ('{1,2,3}')$$);
-- Tables that do not follow the layout are refused, naming what differs.
CREATE TABLE flat (id bigint NOT NULL, embedding real[] NOT NULL, shard integer NOT NULL, ivf_list integer);
CREATE TABLE wrongtype (id bigint NOT NULL, embedding float8[] NOT NULL, shard integer NOT NULL, ivf_list integer)
    PARTITION BY LIST (shard);
CREATE TABLE noivf (id bigint NOT NULL, embedding real[] NOT NULL, shard integer NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE gap (id bigint NOT NULL, embedding real[] NOT NULL, shard integer NOT NULL, ivf_list integer)
    PARTITION BY LIST (shard);
CREATE TABLE gap_0 PARTITION OF gap FOR VALUES IN (0);
CREATE TABLE gap_2 PARTITION OF gap FOR VALUES IN (2);
CREATE TABLE multi (id bigint NOT NULL, embedding real[] NOT NULL, shard integer NOT NULL, ivf_list integer)
    PARTITION BY LIST (shard);
CREATE TABLE multi_01 PARTITION OF multi FOR VALUES IN (0, 1);
CREATE TABLE byid (id bigint NOT NULL, embedding real[] NOT NULL, shard integer NOT NULL, ivf_list integer)
    PARTITION BY LIST (id);
CREATE TABLE nullable (id bigint NOT NULL, embedding real[], shard integer NOT NULL, ivf_list integer)
    PARTITION BY LIST (shard);
SELECT try($$SELECT ruvector_collection_adopt('flat_c', 'flat', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('nullable_c', 'nullable', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('wrongtype_c', 'wrongtype', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('noivf_c', 'noivf', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('gap_c', 'gap', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('multi_c', 'multi', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('byid_c', 'byid', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('mine_again', 'mine', 2)$$);
SELECT try($$SELECT ruvector_collection_adopt('x"; DROP TABLE mine; --', 'mine', 2)$$);
SELECT name FROM ruvector.collections ORDER BY name;

-- Drop: an adopted table stays (without default and trigger); a created
-- one goes with its partitions.
SELECT ruvector_collection_drop('mine_c');
SELECT count(*) AS mine_rows FROM mine;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'mine'::regclass AND tgname = 'ruvector_vector_check';
SELECT pg_get_expr(d.adbin, d.adrelid) AS shard_default FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = 'mine'::regclass AND a.attname = 'shard';
SELECT ruvector_collection_drop('items');
SELECT to_regclass('items') AS items, to_regclass('items_p0') AS items_p0;
SELECT count(*) AS collections FROM ruvector.collections;
SELECT count(*) AS vector_collections FROM ruvector.vector_collections;
SELECT count(*) AS centroid_versions FROM ruvector.centroid_versions;
SELECT count(*) AS jobs FROM ruvector.maintenance_jobs;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;
-- The name can be used again, in the first schema of the search path.
CREATE SCHEMA vec;
SET search_path = vec, public, ruvector;
SELECT ruvector_collection_create('items', 2, 2, 2) > 0 AS created;
-- A valid name that needs quoting is quoted, not refused.
SELECT ruvector_collection_create('Odd$Name', 2, 2, 2) > 0 AS created;
SELECT c.relnamespace::regnamespace AS schema, c.relname FROM pg_class c
WHERE c.relname IN ('items', 'items_p0', 'items_p1', 'Odd$Name', 'Odd$Name_p0', 'Odd$Name_p1') ORDER BY 2 COLLATE "C";
INSERT INTO "Odd$Name" (embedding) VALUES ('{1,2}');
SELECT count(*) FROM "Odd$Name";
SELECT ruvector_collection_drop('items');
SELECT ruvector_collection_drop('Odd$Name');
SELECT count(*) AS vec_tables FROM pg_class WHERE relnamespace = 'vec'::regnamespace;
REVOKE USAGE ON SCHEMA ruvector FROM coll_user;
DROP ROLE coll_user;

-- Unregistering a vector collection alone would leave its inserts failing:
-- refused, with ruvector_collection_drop as the hint.
SELECT ruvector_collection_create('follow', 2, 2, 4);
SELECT ruvector_collection_unregister('follow');
\echo :LAST_ERROR_SQLSTATE
-- A partition added later is routed to, and a drain in force stays.
SELECT ruvector_routing_set('follow', 1, 0);
CREATE TABLE follow_p2 PARTITION OF follow FOR VALUES IN (2);
SELECT partitions FROM ruvector.vector_collections v JOIN ruvector.collections c USING (collection_id) WHERE c.name = 'follow';
INSERT INTO follow (embedding) SELECT ARRAY[g, g]::real[] FROM generate_series(1, 600) g;
SELECT shard, count(*) > 0 AS got_rows FROM follow GROUP BY shard ORDER BY shard;
SELECT shard, weight, set_by FROM ruvector_routing_status('follow') ORDER BY shard;
SELECT ruvector_collection_drop('follow');
SELECT to_regclass('follow') IS NULL AS dropped;
