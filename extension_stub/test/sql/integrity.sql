-- The sensor's SQL surface, with no sidecar running: everything reads unknown.
SET search_path = public, ruvector;
CREATE TABLE vec (id bigserial, embedding real[]);
SELECT ruvector_collection_register('vec', 'vec') > 0 AS ok;

SELECT s->>'state' AS state, s->'lambda_cut' AS lambda, s->'sidecar_alive' AS alive,
       s->'threshold_high' AS high, s->'threshold_low' AS low,
       s->'current_policy'->>'name' AS policy, s->'allowed_operations'->>'high' AS high_risk,
       s->'witness_edges' AS witness
FROM ruvector_integrity_status('vec') s;
SELECT ruvector_contracted_graph('vec') - 'updated_at' AS graph;

-- Policies: validated key by key, merged onto the defaults, recorded as events.
SELECT ruvector_integrity_policy_set('vec', 'strict', '{"threshold_high": 0.9, "degrade_samples": 2}');
SELECT s->'current_policy' FROM ruvector_integrity_status('vec') s;
\set VERBOSITY sqlstate
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_hgh": 0.9}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_high": "high"}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_high": 1.5}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"degrade_samples": 0}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"degrade_samples": 2.5}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"restore_hold_seconds": -1}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_low": 0.95}');
SELECT ruvector_integrity_policy_set('vec', 'p', '[1, 2]');
SELECT ruvector_integrity_policy_set('vec', 'p', NULL);
SELECT ruvector_integrity_policy_set('vec', 'bad name!', '{}');
SELECT ruvector_integrity_policy_set('nope', 'p', '{}');
\set VERBOSITY default
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_hgh": 0.9}');
SELECT ruvector_integrity_policy_set('vec', 'p', '{"threshold_low": 0.95}');
SELECT policy_name, config FROM ruvector.integrity_policies;

-- Overrides need a reason and a sane duration; 'auto' removes them.
SELECT ruvector_integrity_override('vec', 'critical', 'maintenance window', 600) - 'expires_at';
SELECT s->'override'->>'state' AS override_state, s->'override'->>'reason' AS reason
FROM ruvector_integrity_status('vec') s;
\set VERBOSITY sqlstate
SELECT ruvector_integrity_override('vec', 'panic', 'x');
SELECT ruvector_integrity_override('vec', 'normal', '');
SELECT ruvector_integrity_override('vec', 'normal', 'x', 0);
SELECT ruvector_integrity_override('vec', NULL, 'x');
\set VERBOSITY default
SELECT ruvector_integrity_override('vec', 'auto', NULL);
SELECT s->'override' AS override FROM ruvector_integrity_status('vec') s;

SELECT event_type, new_state, metadata->>'reason' AS reason
FROM ruvector_integrity_history('vec') ORDER BY id;
SELECT count(*) FROM ruvector_integrity_history('vec', 'override');
\set VERBOSITY sqlstate
SELECT * FROM ruvector_integrity_history('vec', NULL, now(), 0);
SELECT * FROM ruvector_integrity_history('nope');
\set VERBOSITY default

-- The gate matrix for one operation: unknown state defers high risk; the
-- write gate's live throttle counts for the writes it enforces.
SELECT g->>'allowed' AS allowed, g->>'throttle_pct' AS pct, g->>'risk' AS risk,
       g->>'retry_after_seconds' AS retry, g->'actions' AS actions, g->>'reason' AS reason
FROM unnest(ARRAY['search', 'bulk_insert', 'reindex', 'HIGH']) op, ruvector_integrity_gate('vec', op) g;
SELECT ruvector_throttle_set('vec', 'bulk_insert', 70);
SELECT g->>'allowed' AS allowed, g->>'throttle_pct' AS pct, g->'actions' AS actions
FROM ruvector_integrity_gate('vec', 'bulk_insert') g;
SELECT ruvector_throttle_set('vec', 'bulk_insert', 100);
SELECT g->>'allowed' AS allowed, g->>'throttle_pct' AS pct FROM ruvector_integrity_gate('vec', 'bulk_insert') g;
SELECT ruvector_throttle_clear('vec');
\set SHOW_CONTEXT never
SELECT ruvector_integrity_gate('vec', 'explode');
\echo :LAST_ERROR_SQLSTATE
SELECT ruvector_integrity_gate('vec', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT ruvector_integrity_gate('nope', 'search');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors

SELECT ruvector_collection_unregister('vec');
SELECT count(*) FROM ruvector.integrity_events;
DROP TABLE vec;
