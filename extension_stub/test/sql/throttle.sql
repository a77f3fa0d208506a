-- The write gate and throttle control from psql.
SET search_path = public, ruvector;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE emb_0 PARTITION OF emb FOR VALUES IN (0);
CREATE TABLE emb_1 PARTITION OF emb FOR VALUES IN (1);
CREATE TABLE other (id bigserial, v int);
SELECT ruvector_collection_register('emb', 'emb') > 0 AS registered;

-- Every write path is counted: parent, partition, multi-row, COPY,
-- INSERT ... SELECT over the bulk threshold. Other tables are not.
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0), ('{3,4}', 1);
INSERT INTO emb_1 (embedding, shard) VALUES ('{5,6}', 1);
COPY emb (embedding, shard) FROM STDIN;
{5,6}	0
{7,8}	1
\.
INSERT INTO emb (embedding, shard) SELECT ARRAY[g, g]::real[], g % 2 FROM generate_series(1, 500) g;
INSERT INTO other (v) SELECT g FROM generate_series(1, 10) g;
WITH w AS (INSERT INTO emb (embedding, shard) VALUES ('{9,9}', 0) RETURNING id) SELECT count(*) FROM w;
MERGE INTO emb_0 t USING (SELECT -1 AS id) s ON t.id = s.id
    WHEN NOT MATCHED THEN INSERT (embedding, shard) VALUES ('{8,8}', 0);
SELECT collection, op, pct, set_by, expires_at, admitted, delayed, rejected FROM ruvector_throttle_status() ORDER BY op;

-- 100 refuses writes of that op only, with SQLSTATE 53000 and a hint.
SELECT ruvector_throttle_set('emb', 'insert', 100);
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
\set VERBOSITY sqlstate
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
\set VERBOSITY default
COPY emb (embedding, shard) FROM STDIN;
{5,6}	0
\.
INSERT INTO other (v) VALUES (1);
SELECT ruvector_throttle_set('emb', 'bulk_insert', 100, '1 hour');
-- (FROM PROGRAM: psql would read refused STDIN data as SQL.)
\set VERBOSITY terse
COPY emb (embedding, shard) FROM PROGRAM 'echo "{5,6}	0"';
\set VERBOSITY default
SELECT op, pct, set_by, expires_at > now() AS expires_later, rejected FROM ruvector_throttle_status() ORDER BY op;
SELECT op, pct, expires_at IS NOT NULL AS has_ttl FROM ruvector.throttles ORDER BY op;
SELECT ruvector_throttle_clear('emb', 'bulk_insert');
SELECT op, pct, set_by FROM ruvector_throttle_status() ORDER BY op;
SELECT ruvector_throttle_clear('emb');
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
SELECT count(*) FROM ruvector.throttles;

-- The refusal says who set the throttle: manually, and until when (the
-- time in the detail is the throttle's expires_at); no remediation outcome.
SELECT ruvector_throttle_set('emb', 'insert', 100, '1 hour');
\set SHOW_CONTEXT never
\set VERBOSITY terse
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
\set SHOW_CONTEXT errors
CREATE FUNCTION pg_temp.gate_error(stmt text, OUT code text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    code := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END $$;
SELECT e.code, regexp_replace(e.detail, 'until .*\.$', 'until <expires_at>.') AS detail, e.hint,
       substring(e.detail FROM 'until (.*)\.$')::timestamptz = t.expires_at AS until_is_expires_at
FROM pg_temp.gate_error($$INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0)$$) e,
     ruvector_throttle_status() t WHERE t.op = 'insert';
SELECT op, pct, set_by, outcome_id FROM ruvector_throttle_status() ORDER BY op;
SELECT ruvector_throttle_clear('emb');

-- A statement that would wait longer than the cap fails instead of waiting.
SET ruvector.throttle_max_wait = 0;
SELECT ruvector_throttle_set('emb', 'insert', 99);
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
\set VERBOSITY terse
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT e.code, regexp_replace(e.detail, '\d+ ms', 'N ms') AS detail, e.hint
FROM pg_temp.gate_error($$INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0)$$) e;
RESET ruvector.throttle_max_wait;
SELECT ruvector_throttle_clear('emb');

-- With no unthrottled baseline a throttle of 50 admits 50 rows/s: 30
-- single-row statements must wait (burst 100 ms covers only the first few).
SELECT ruvector_throttle_set('emb', 'insert', 50);
DO $$ BEGIN FOR i IN 1..30 LOOP INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0); END LOOP; END $$;
SELECT delayed > 0 AS delayed, wait_ms > 0 AS waited FROM ruvector_throttle_status() WHERE op = 'insert';
SELECT ruvector_throttle_clear('emb');

-- Changes are transactional: undone with the (sub)transaction.
BEGIN;
SELECT ruvector_throttle_set('emb', 'insert', 100);
ROLLBACK;
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
BEGIN;
SAVEPOINT s1;
SELECT ruvector_throttle_set('emb', 'insert', 100);
ROLLBACK TO SAVEPOINT s1;
INSERT INTO emb (embedding, shard) VALUES ('{1,2}', 0);
SELECT ruvector_throttle_set('emb', 'insert', 30);
COMMIT;
SELECT op, pct, set_by FROM ruvector_throttle_status() ORDER BY op;
SELECT ruvector_throttle_clear('emb');

-- Bad input: a clear error with a proper SQLSTATE, and nothing changes.
\set VERBOSITY sqlstate
SELECT ruvector_throttle_set('emb', 'insrt', 10);
SELECT ruvector_throttle_set('emb', 'insert', 101);
SELECT ruvector_throttle_set('emb', 'insert', -1);
SELECT ruvector_throttle_set('emb', NULL, 10);
SELECT ruvector_throttle_set('emb', 'insert', NULL);
SELECT ruvector_throttle_set(NULL, 'insert', 10);
SELECT ruvector_throttle_set('nope', 'insert', 10);
SELECT ruvector_throttle_set('emb''; DROP TABLE emb; --', 'insert', 10);
SELECT ruvector_throttle_set('emb', 'insert', 10, '-5 minutes');
SELECT ruvector_throttle_set('emb', 'insert', 10, '0 seconds');
SELECT ruvector_throttle_clear('emb', 'upsert');
SELECT ruvector_throttle_clear('nope');
\set VERBOSITY default
SELECT ruvector_throttle_set('emb', 'insrt', 10);
SELECT ruvector_throttle_set('emb', 'insert', 101);
SELECT op, pct, set_by FROM ruvector_throttle_status() ORDER BY op;
SELECT count(*) FROM ruvector.throttles;
SELECT count(*) > 0 AS table_intact FROM emb;

-- Privileges: ruvector_admin acts, ruvector_monitor reads, others neither.
CREATE ROLE ruv_plain;
CREATE ROLE ruv_watch IN ROLE ruvector_monitor;
CREATE ROLE ruv_ops IN ROLE ruvector_admin;
GRANT USAGE ON SCHEMA ruvector TO ruv_plain;
SET ROLE ruv_plain;
SELECT ruvector_throttle_set('emb', 'insert', 10);
SELECT count(*) FROM ruvector_throttle_status();
SELECT ruvector._throttle_apply(1, 'insert', 10, NULL);
RESET ROLE;
SET ROLE ruv_watch;
SELECT count(*) FROM ruvector_throttle_status();
SELECT ruvector_throttle_clear('emb');
RESET ROLE;
SET ROLE ruv_ops;
SELECT ruvector_throttle_set('emb', 'insert', 10);
SELECT op, pct, set_by FROM ruvector_throttle_status() WHERE op = 'insert';
SELECT ruvector_throttle_clear('emb');
RESET ROLE;

DROP OWNED BY ruv_plain;
DROP ROLE ruv_plain;
DROP ROLE ruv_watch;
DROP ROLE ruv_ops;
SELECT ruvector_collection_unregister('emb');
DROP TABLE emb, other;
