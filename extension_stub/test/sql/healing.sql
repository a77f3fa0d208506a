-- The self-healing SQL surface with no sidecar running and no outcome yet.
SET search_path = public, ruvector;

-- Status on empty tables: enabled by default, nothing happened, no sidecar.
SELECT ruvector_healing_status();
SELECT count(*) FROM ruvector_healing_history();
SELECT * FROM ruvector_healing_effectiveness();
SELECT ruvector_healing_verify_audit();

-- The configuration row drives enabled and the cooldown.
INSERT INTO ruvector.healing_config (config) VALUES ('{"enabled": false, "min_healing_interval_seconds": 600}');
SELECT s->'enabled' AS enabled, s->'cooldown_until' AS cooldown FROM ruvector_healing_status() s;
\set VERBOSITY sqlstate
INSERT INTO ruvector.healing_config (singleton, config) VALUES (false, '{}');
INSERT INTO ruvector.healing_config (config) VALUES ('{}');
INSERT INTO ruvector.healing_config (singleton, config) VALUES (true, '[]') ON CONFLICT (singleton) DO UPDATE SET config = EXCLUDED.config;
\set VERBOSITY default

-- Outcomes, as the engine would write them (unsealed: no chain yet).
CREATE TABLE hvec (id bigserial, embedding real[]);
SELECT ruvector_collection_register('hvec', 'hvec') > 0 AS ok;
INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name,
    started_at, completed_at, duration_ms, success, verified, improvement_pct, initial_lambda, final_lambda, state)
SELECT c.collection_id, 'memory_pressure', '{"class": "memory_pressure"}', v.strategy,
       now() - v.ago, now() - v.ago + interval '1 second', 1000, v.success, v.verified, v.improvement, 0.4, 0.5, 'done'
FROM ruvector.collections c,
     (VALUES ('throttle_ingestion', interval '2 hours', true, true, 0.25::real),
             ('throttle_ingestion', interval '3 hours', true, false, 0.01::real),
             ('pause_maintenance', interval '40 days', true, true, 0.5::real)) AS v(strategy, ago, success, verified, improvement)
WHERE c.name = 'hvec';
INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name,
    started_at, success, initial_lambda, state)
SELECT c.collection_id, 'hotspot_congestion', '{}', 'throttle_ingestion', now(), false, 0.4, 'running'
FROM ruvector.collections c WHERE c.name = 'hvec';
SELECT s->'enabled' AS enabled, s->'total_healings_24h' AS total, s->'success_rate' AS rate,
       jsonb_array_length(s->'active_remediations') AS active,
       s->'active_remediations'->0->>'collection' AS active_collection,
       s->'cooldown_until' IS NOT NULL AS cooling_down, s->'last_healing' IS NOT NULL AS has_last
FROM ruvector_healing_status() s;
SELECT collection, strategy_name, state, success, verified FROM ruvector_healing_history();
SELECT count(*) FROM ruvector_healing_history(now() - interval '100 days', 100);
SELECT count(*) FROM ruvector_healing_history(limit_ => 1);
INSERT INTO ruvector.healing_strategy_weights (strategy_name, weight) VALUES ('throttle_ingestion', 0.5625);
SELECT strategy_name, weight, attempts, successes, success_rate, avg_improvement FROM ruvector_healing_effectiveness();
-- A measure held in force for the next remedy (unverified by λ, its hold
-- checked) is a success; rolled back, it is not.
INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name,
    started_at, completed_at, duration_ms, success, verified, initial_lambda, final_lambda, state, rolled_back, metadata)
SELECT c.collection_id, 'hotspot_congestion', '{}', 'held_measure', now() - v.ago, now() - v.ago + interval '1 second', 1000,
       true, false, 0.4, 0.45, 'done', v.rolled_back, '{"held": "cap holds the hot writer back"}'
FROM ruvector.collections c, (VALUES (interval '1 hour', false), (interval '50 minutes', true)) AS v(ago, rolled_back)
WHERE c.name = 'hvec';
SELECT strategy_name, attempts, successes, rolled_back FROM ruvector_healing_effectiveness() WHERE strategy_name = 'held_measure';
\set VERBOSITY sqlstate
UPDATE ruvector.healing_outcomes SET state = 'bogus' WHERE id = 1;
\set VERBOSITY default

-- Bad inputs.
\set VERBOSITY sqlstate
SELECT * FROM ruvector_healing_history(NULL);
SELECT * FROM ruvector_healing_history(now(), 0);
SELECT * FROM ruvector_healing_history(now(), NULL);
\set VERBOSITY default
SELECT * FROM ruvector_healing_history(NULL);
SELECT * FROM ruvector_healing_history(now(), 0);

-- The hash chain, checked in SQL: seal two records by hand the way the
-- engine does (without a signature, which SQL cannot make), then tamper.
-- Signatures: by key 'k', unknown at first; once 'k' is registered (RFC 8032
-- test key 1) a signature that is not that key's over the record is bad.
-- (The Go service tests check that real signatures verify.)
UPDATE ruvector.healing_outcomes o SET chain_seq = 1, key_id = 'k' WHERE o.id = 1;
UPDATE ruvector.healing_outcomes o SET record_hash = sha256(ruvector._healing_canonical(o)) WHERE o.id = 1;
UPDATE ruvector.healing_outcomes o SET chain_seq = 2, key_id = 'k',
    prev_hash = (SELECT record_hash FROM ruvector.healing_outcomes WHERE id = 1) WHERE o.id = 2;
UPDATE ruvector.healing_outcomes o SET record_hash = sha256(ruvector._healing_canonical(o)) WHERE o.id = 2;
SELECT v->'ok' AS ok, v->'records' AS records, v->'unsealed' AS unsealed, v->'problems' AS problems
FROM ruvector_healing_verify_audit() v;
UPDATE ruvector.healing_outcomes SET signature = '\x00' WHERE chain_seq IS NOT NULL;
SELECT v->'ok' AS ok, v->'problems' AS problems FROM ruvector_healing_verify_audit() v;
INSERT INTO ruvector.healing_audit_keys (key_id, public_key)
VALUES ('k', '\xd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
UPDATE ruvector.healing_outcomes SET signature = decode(repeat('ab', 64), 'hex') WHERE id = 2;
SELECT v->'ok' AS ok, v->'problems' AS problems FROM ruvector_healing_verify_audit() v;
DELETE FROM ruvector.healing_audit_keys WHERE key_id = 'k';
UPDATE ruvector.healing_outcomes SET improvement_pct = 0.9 WHERE id = 1;
SELECT v->'ok' AS ok, v->'problems' AS problems FROM ruvector_healing_verify_audit() v;
DELETE FROM ruvector.healing_outcomes WHERE id = 1;
SELECT v->'ok' AS ok, v->'problems' AS problems FROM ruvector_healing_verify_audit() v;
-- The canonical encoding of NULLs and values (sidecar/audit's tests check Go agrees).
SELECT ruvector._canon(NULL::text), ruvector._canon('é'::text), ruvector._canon(true),
       ruvector._canon(0.5::real), ruvector._canon('1970-01-01 00:00:01+00'::timestamptz);


-- The acting functions: configure validates like sidecar/healconfig and
-- names the key; requests wait for a sidecar and say it is not running.
-- {} changes nothing and shows every key: the stored values over the defaults.
SELECT ruvector_healing_configure('{}') - 'enabled' - 'min_healing_interval_seconds'
     = ruvector._healing_config_defaults() - 'enabled' - 'min_healing_interval_seconds' AS defaults;
SELECT c->'enabled' AS enabled, c->'max_attempts_per_hour' AS attempts,
       c->'classifier_thresholds'->'memory_usage_pct' AS mem
FROM ruvector_healing_configure('{"enabled": false, "classifier_thresholds": {"memory_usage_pct": 90}}') c;
SELECT config->'max_attempts_per_hour' AS stored_attempts FROM ruvector.healing_config;
SELECT ruvector_healing_configure('{"max_attempts_per_hour": 0}');
SELECT ruvector_healing_configure('{"enabeld": true}');
SELECT ruvector_healing_configure('{"classifier_thresholds": {"memory_usage_pct": "high"}}');
SELECT ruvector_healing_configure('{"require_approval": ["centroid"]}');
SELECT ruvector_healing_configure('{"maintenance_pause_priority_below": 1001}');
SELECT ruvector_healing_configure('[]');
\set VERBOSITY sqlstate
SELECT ruvector_healing_configure(NULL);
SELECT ruvector_healing_configure('{"max_auto_heal_impact": 2}');
\set VERBOSITY default
SELECT config->'enabled' AS unchanged FROM ruvector.healing_config;
CREATE TABLE hreq (id bigserial, embedding real[]);
SELECT ruvector_collection_register('hreq', 'hreq') > 0 AS ok;
SELECT r->>'kind' AS kind, r->>'status' AS status, r->'sidecar_alive' AS alive, r->>'note' AS note
FROM ruvector_healing_trigger('hreq') r;
SELECT r->>'status' AS status FROM ruvector_healing_execute('hreq', 'throttle_ingestion', '{"priority": 1}') r;
SELECT kind, status, params FROM ruvector.healing_requests ORDER BY id;
SELECT r->'dry_run' AS dry, r->'would_run' AS would_run, r->'blockers' AS blockers
FROM ruvector_healing_execute('hreq', 'throttle_ingestion', '{"dry_run": true}') r;
SELECT count(*) AS requests_after_dry_run FROM ruvector.healing_requests;
UPDATE ruvector.healing_requests SET expires_at = now() - interval '1 second';
SELECT r->>'status' AS status FROM ruvector_healing_request_status((SELECT min(id) FROM ruvector.healing_requests)) r;
SELECT ruvector_healing_trigger('nope');
SELECT ruvector_healing_execute('hreq', 'throttle_ingestion', '{"dry_run": "yes"}');
SELECT ruvector_healing_execute('hreq', 'throttle_ingestion', '[]');
SELECT ruvector_healing_approve(424242);
SELECT ruvector_healing_abort(NULL);
SELECT ruvector_healing_rollback('hreq');
SELECT ruvector_healing_request_status(424242);
INSERT INTO ruvector.healing_strategies (name, handles, impact, estimated_duration_ms, reversible, published_by)
VALUES ('throttle_ingestion', '{hotspot_congestion}', 0.4, 5000, true, 'test');
SELECT ruvector_healing_execute('hreq', 'throttel_ingestion');
-- A pending action: aborted at once in SQL (nothing had been done), and
-- then neither approvable nor abortable again.
INSERT INTO ruvector.healing_outcomes (collection_id, problem_class, problem_details, strategy_name,
    started_at, success, initial_lambda, state)
SELECT c.collection_id, 'centroid_skew', '{}', 'throttle_ingestion', now(), false, 0.4, 'pending_approval'
FROM ruvector.collections c WHERE c.name = 'hreq';
SELECT jsonb_array_length(ruvector_healing_status()->'pending_actions') AS pending;
SELECT r->>'status' AS status, r->'result'->'aborted' AS aborted
FROM ruvector_healing_abort((SELECT max(id) FROM ruvector.healing_outcomes)) r;
SELECT jsonb_array_length(ruvector_healing_status()->'pending_actions') AS pending;
\set VERBOSITY sqlstate
SELECT ruvector_healing_approve((SELECT max(id) FROM ruvector.healing_outcomes));
\set VERBOSITY default

-- Privileges: monitors read, plain roles do not, keys are for admins only.
CREATE ROLE ruv_heal_plain;
CREATE ROLE ruv_heal_watch IN ROLE ruvector_monitor;
CREATE ROLE ruv_heal_ops IN ROLE ruvector_admin;
GRANT USAGE ON SCHEMA ruvector TO ruv_heal_plain;
SET ROLE ruv_heal_plain;
\set VERBOSITY sqlstate
SELECT ruvector_healing_status();
SELECT ruvector_healing_configure('{}');
SELECT ruvector_healing_trigger('hreq');
SELECT count(*) FROM ruvector_healing_history();
SELECT ruvector_healing_verify_audit();
\set VERBOSITY default
RESET ROLE;
SET ROLE ruv_heal_watch;
SELECT s->'total_healings_24h' AS total FROM ruvector_healing_status() s;
SELECT ruvector_healing_configure('{}');
SELECT ruvector_healing_trigger('hreq');
SELECT ruvector_healing_execute('hreq', 'throttle_ingestion', '{"dry_run": true}');
SELECT ruvector_healing_rollback('hreq');
SELECT ruvector_healing_approve(1);
SELECT ruvector_healing_abort(1);
SELECT r->>'kind' AS kind FROM ruvector_healing_request_status((SELECT min(id) FROM ruvector.healing_requests)) r;
SELECT count(*) FROM ruvector_healing_history();
SELECT count(*) FROM ruvector_healing_effectiveness();
SELECT v->'records' AS records FROM ruvector_healing_verify_audit() v;
\set VERBOSITY sqlstate
SELECT count(*) FROM ruvector.healing_audit_keys;
DELETE FROM ruvector.healing_outcomes;
\set VERBOSITY default
RESET ROLE;
SET ROLE ruv_heal_ops;
SELECT count(*) FROM ruvector.healing_audit_keys;
SELECT c->'stabilization_seconds' AS stab FROM ruvector_healing_configure('{"stabilization_seconds": 5}') c;
SELECT r->>'status' AS status FROM ruvector_healing_trigger('hreq') r;
RESET ROLE;

DELETE FROM ruvector.healing_outcomes;
DELETE FROM ruvector.healing_strategy_weights;
DELETE FROM ruvector.healing_config;
DELETE FROM ruvector.healing_requests;
DELETE FROM ruvector.healing_strategies;
SELECT ruvector_collection_unregister('hvec');
SELECT ruvector_collection_unregister('hreq');
DROP TABLE hreq;
DROP TABLE hvec;
REVOKE USAGE ON SCHEMA ruvector FROM ruv_heal_plain;
DROP ROLE ruv_heal_plain;
DROP ROLE ruv_heal_watch;
DROP ROLE ruv_heal_ops;
