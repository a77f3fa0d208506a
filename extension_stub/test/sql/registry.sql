-- Registering and unregistering collections.
SET search_path = public, ruvector;
CREATE TABLE plain (id bigserial, embedding real[]);
CREATE TABLE parted (id bigserial, shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE parted_0 PARTITION OF parted FOR VALUES IN (0);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1) PARTITION BY LIST (id);
CREATE TABLE parted_1a PARTITION OF parted_1 DEFAULT;
CREATE VIEW v AS SELECT * FROM plain;

SELECT ruvector_collection_register('plain_c', 'plain') > 0 AS ok;
SELECT ruvector_collection_register('parted_c', 'parted') > 0 AS ok;
SELECT c.name, r.relid::regclass AS rel
FROM ruvector.collections c JOIN ruvector.collection_relations r USING (collection_id)
ORDER BY c.name, r.relid::regclass::text;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;

-- A write straight into a sub-partition is gated as the collection's.
INSERT INTO parted_1a (shard, id) VALUES (1, 7);
SELECT collection, op, admitted FROM ruvector_throttle_status() WHERE op = 'insert' ORDER BY collection;

-- Partitions created, attached or detached later are followed.
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES IN (2);
CREATE TABLE parted_3 (id bigserial, shard int NOT NULL);
ALTER TABLE parted ATTACH PARTITION parted_3 FOR VALUES IN (3);
ALTER TABLE parted DETACH PARTITION parted_0;
SELECT r.relid::regclass AS rel FROM ruvector.collection_relations r
JOIN ruvector.collections c USING (collection_id) WHERE c.name = 'parted_c' ORDER BY 1::text;
INSERT INTO parted_2 (shard) VALUES (2);
INSERT INTO parted_3 (shard) VALUES (3);
INSERT INTO parted_0 (shard) VALUES (0);
SELECT collection, op, admitted FROM ruvector_throttle_status() WHERE op = 'insert' ORDER BY collection;
BEGIN;
ALTER TABLE parted DETACH PARTITION parted_3;
ROLLBACK;
INSERT INTO parted_3 (shard) VALUES (3);
SELECT collection, op, admitted FROM ruvector_throttle_status() WHERE op = 'insert' ORDER BY collection;
SELECT ruvector_collection_refresh('parted_c');
ALTER TABLE parted ATTACH PARTITION parted_0 FOR VALUES IN (0);

\set VERBOSITY sqlstate
SELECT ruvector_collection_register('plain_c', 'parted_0');
SELECT ruvector_collection_register('again', 'plain');
SELECT ruvector_collection_register('again', 'parted_1a');
SELECT ruvector_collection_register('bad name', 'plain');
SELECT ruvector_collection_register('x"; DROP TABLE plain; --', 'plain');
SELECT ruvector_collection_register(repeat('a', 64), 'plain');
SELECT ruvector_collection_register('view_c', 'v');
SELECT ruvector_collection_register(NULL, 'plain');
SELECT ruvector_collection_register('nulltbl', NULL);
SELECT ruvector_collection_register('missing', 'no_such_table');
SELECT ruvector_collection_unregister('nope');
SELECT ruvector_collection_unregister(NULL);
\set VERBOSITY default
SELECT ruvector_collection_register('bad name', 'plain');
SELECT count(*) AS collections FROM ruvector.collections;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;

-- A registration rolled back leaves no slot behind; an unregistration
-- rolled back keeps the slot and its throttle.
BEGIN;
CREATE TABLE temp_c (id int);
SELECT ruvector_collection_register('temp_c', 'temp_c') > 0 AS ok;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;
ROLLBACK;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;
SELECT ruvector_throttle_set('plain_c', 'insert', 40);
BEGIN;
SELECT ruvector_collection_unregister('plain_c');
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;
ROLLBACK;
SELECT collection, op, pct, set_by FROM ruvector_throttle_status() WHERE collection = 'plain_c' AND op = 'insert';
SELECT ruvector_throttle_clear('plain_c');

SELECT ruvector_collection_unregister('plain_c');
SELECT ruvector_collection_unregister('parted_c');
SELECT count(*) AS collections, (SELECT count(*) FROM ruvector.collection_relations) AS relations FROM ruvector.collections;
SELECT (ruvector._segment_status()->>'slots_in_use')::int AS slots_in_use;
-- Unregistered tables are no longer counted.
INSERT INTO plain (embedding) VALUES ('{1}');
SELECT count(*) FROM ruvector_throttle_status();
DROP VIEW v;
DROP TABLE plain, parted;
