-- ---------------------------------------------------------------------------
-- Explaining the loop: λ over time for the timeline report, and why each
-- remediation happened (ruvector_healing_explain).
-- ---------------------------------------------------------------------------

-- λ between state transitions. integrity_events keeps only transitions, and
-- contracted_graph only the latest sample; the monitor rewrites the latter
-- every GraphEvery (10 s by default) and at every transition, so a trigger
-- on it keeps the history without the monitor knowing about this table.
CREATE TABLE ruvector.integrity_samples (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    sampled_at    timestamptz NOT NULL,
    lambda_cut    double precision NOT NULL,
    PRIMARY KEY (collection_id, sampled_at)
);
COMMENT ON TABLE ruvector.integrity_samples IS
    'λ of each collection every time the sidecar writes its contracted graph (about every 10 s and at each transition); kept 7 days.';

-- SECURITY DEFINER: whoever may write the graph (the sidecar's role) need
-- not be granted the history table.
CREATE FUNCTION ruvector._integrity_sample_record()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ruvector.integrity_samples (collection_id, sampled_at, lambda_cut)
    VALUES (NEW.collection_id, NEW.updated_at, NEW.lambda_cut)
    ON CONFLICT (collection_id, sampled_at) DO UPDATE SET lambda_cut = EXCLUDED.lambda_cut;
    -- Retention on the write path: one index range per sample, usually empty.
    DELETE FROM ruvector.integrity_samples s
        WHERE s.collection_id = NEW.collection_id AND s.sampled_at < NEW.updated_at - interval '7 days';
    RETURN NULL;
END
$$;
CREATE TRIGGER ruvector_integrity_sample
    AFTER INSERT OR UPDATE OF lambda_cut, updated_at ON ruvector.contracted_graph
    FOR EACH ROW EXECUTE FUNCTION ruvector._integrity_sample_record();

GRANT SELECT ON ruvector.integrity_samples TO ruvector_monitor, pg_monitor;

-- The signal a problem class is about, as named in problem_details.
CREATE FUNCTION ruvector._healing_signal_key(problem_class text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE problem_class
        WHEN 'hotspot_congestion' THEN 'load_ratio'
        WHEN 'centroid_skew' THEN 'skew_factor'
        WHEN 'replication_lag' THEN 'lag_seconds'
        WHEN 'maintenance_contention' THEN 'queue_depth'
        WHEN 'index_fragmentation' THEN 'fragmentation_pct'
        WHEN 'memory_pressure' THEN 'current_usage_pct'
    END
$$;

-- Why outcome_id happened, from what the engine recorded: the trigger (λ,
-- witness edges, the state), the classifier's rule and its values, every
-- strategy considered and its verdict, the execution, before/after values,
-- the verification and any rollback. "not_recorded" names what the record
-- lacks, so a reader can tell "absent" from "zero".
CREATE FUNCTION ruvector_healing_explain(outcome_id bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    o ruvector.healing_outcomes;
    cname text;
    ev record;
    dec jsonb;
    cls jsonb;
    sel jsonb;
    fired jsonb;
    cands jsonb;
    kind text;
    sig_key text;
    sig_after jsonb;
    later jsonb;
    missing text[] := ARRAY[]::text[];
    verif jsonb;
    source_id bigint;
    source_dec jsonb;
BEGIN
    IF outcome_id IS NULL THEN
        RAISE EXCEPTION 'outcome_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id of a healing outcome; SELECT id FROM ruvector_healing_history() lists them.';
    END IF;
    SELECT * INTO o FROM ruvector.healing_outcomes h WHERE h.id = outcome_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'healing outcome % does not exist', outcome_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, collection, strategy_name, started_at FROM ruvector_healing_history(now() - interval ''30 days'', 100) lists recent outcomes.';
    END IF;
    SELECT c.name INTO cname FROM ruvector.collections c WHERE c.collection_id = o.collection_id;
    dec := coalesce(o.decision, '{}'::jsonb);
    -- An approved action records only which pending action it carries out;
    -- the why is in that pending record (sealed, so it cannot have changed).
    IF dec->'classification' IS NULL AND jsonb_typeof(dec->'approved_action') = 'number' THEN
        SELECT p.id, p.decision INTO source_id, source_dec FROM ruvector.healing_outcomes p
            WHERE p.id = (dec->>'approved_action')::bigint AND p.state = 'pending_approval'
              AND p.collection_id = o.collection_id;
        IF source_dec IS NOT NULL THEN
            dec := source_dec || jsonb_build_object('approved_action', source_id);
        ELSE
            source_id := NULL;
        END IF;
    END IF;
    cls := dec->'classification';
    sel := dec->'selection';
    kind := coalesce(o.metadata->>'kind', 'automatic');

    -- The state the collection was in when the engine acted: the last
    -- transition at or before the start.
    SELECT e.id, e.previous_state, e.new_state, e.lambda_cut, e.created_at, e.metadata->>'reason' AS reason
        INTO ev
        FROM ruvector.integrity_events e
        WHERE e.collection_id = o.collection_id AND e.new_state IS NOT NULL AND e.created_at <= o.started_at
        ORDER BY e.created_at DESC, e.id DESC LIMIT 1;

    IF cls IS NULL THEN
        missing := missing || 'decision.classification'::text;
    ELSE
        SELECT c INTO fired FROM jsonb_array_elements(cls->'checks') c
            WHERE (c->>'evaluated')::boolean AND (c->>'matched')::boolean LIMIT 1;
    END IF;
    IF sel IS NULL THEN
        missing := missing || 'decision.selection'::text;
    ELSE
        SELECT coalesce(jsonb_agg(c || jsonb_build_object(
                   'chosen', c->>'verdict' = 'chosen',
                   'class_handled', c->>'verdict' <> 'class_not_handled',
                   -- not_applicable: the class is handled, not the
                   -- problem's cause (a stalled replay).
                   'fits_cause', CASE WHEN c->>'verdict' = 'class_not_handled' THEN NULL
                                      ELSE c->>'verdict' <> 'not_applicable' END,
                   'within_impact_limit', CASE WHEN c->>'verdict' IN ('class_not_handled', 'not_applicable') THEN NULL
                                               ELSE c->>'verdict' <> 'impact_exceeds_limit' END,
                   -- Availability is only asked of strategies that passed
                   -- the class, cause and impact filters.
                   'available', CASE WHEN c->>'verdict' IN ('class_not_handled', 'not_applicable', 'impact_exceeds_limit') THEN NULL
                                     ELSE c->>'verdict' <> 'unavailable' END)
                   ORDER BY n), '[]'::jsonb)
            INTO cands FROM jsonb_array_elements(sel->'candidates') WITH ORDINALITY AS x(c, n);
    END IF;
    IF dec->'limits' IS NULL AND sel IS NOT NULL THEN
        missing := missing || 'decision.limits'::text;
    END IF;

    sig_key := ruvector._healing_signal_key(o.problem_class);
    sig_after := o.metadata->'signal'->'after';
    IF sig_key IS NOT NULL AND sig_after IS NULL AND o.state = 'done' AND kind <> 'rollback' THEN
        missing := missing || 'metadata.signal.after'::text;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'at', r.started_at, 'success', r.success,
                                                 'error', r.error_message) ORDER BY r.id), '[]'::jsonb)
        INTO later
        FROM ruvector.healing_outcomes r
        WHERE r.metadata->>'kind' = 'rollback' AND r.metadata->>'rollback_of' = o.id::text;

    -- The design's bar (sidecar/healing.VerifyImprovement): λ must rise
    -- above 1.1 × the initial λ after stabilisation.
    verif := jsonb_build_object(
        'verified', o.verified,
        'criterion', 'final lambda > 1.1 x initial lambda after stabilisation',
        'target_lambda', coalesce(o.metadata->'verification'->'target_lambda', to_jsonb(round((o.initial_lambda * 1.1)::numeric, 6))),
        'final_lambda', o.final_lambda,
        'passed', CASE WHEN o.final_lambda IS NULL THEN NULL ELSE o.final_lambda > o.initial_lambda * 1.1 END);

    RETURN jsonb_build_object(
        'outcome_id', o.id,
        'collection', cname,
        'collection_id', o.collection_id,
        'kind', kind,
        'state', o.state,
        'status', o.metadata->>'status',
        'strategy', o.strategy_name,
        'problem', jsonb_build_object('class', o.problem_class, 'details', o.problem_details),
        'trigger', jsonb_build_object(
            'lambda', o.initial_lambda,
            'witness_edges', coalesce(o.witness_edges, '[]'::jsonb),
            'witness_edge_count', coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(o.witness_edges) = 'array'
                                                                   THEN o.witness_edges END), 0),
            'system_metrics', o.system_metrics,
            'state', ev.new_state,
            'state_event', CASE WHEN ev.id IS NULL THEN NULL ELSE jsonb_build_object(
                'id', ev.id, 'at', ev.created_at, 'from', ev.previous_state, 'to', ev.new_state,
                'lambda', ev.lambda_cut, 'reason', ev.reason) END),
        'classification', CASE WHEN cls IS NULL THEN NULL ELSE jsonb_build_object(
            'rule', cls->>'rule',
            'fired', fired,
            'checks', cls->'checks',
            'edge_counts', cls->'edge_counts',
            'node_counts', cls->'node_counts',
            'thresholds', cls->'thresholds',
            'notes', cls->'notes',
            'explanation', dec->>'explanation') END,
        'selection', CASE WHEN sel IS NULL THEN NULL ELSE jsonb_build_object(
            'chosen', sel->>'chosen',
            'requires_approval', sel->'requires_approval',
            'limits', dec->'limits',
            'candidates', cands,
            'explanation', dec->>'selection_explanation') END,
        'manual', dec->>'manual',
        'approved_action', dec->'approved_action',
        -- Where classification and selection come from: this record, or
        -- the pending action it carried out.
        'decision_source', coalesce(source_id, o.id),
        'execution', jsonb_build_object(
            'started_at', o.started_at, 'completed_at', o.completed_at, 'duration_ms', o.duration_ms,
            'success', o.success, 'actions_taken', o.actions_taken, 'params', o.strategy_params,
            'actions', o.metadata->'actions', 'result', o.metadata->'result', 'error', o.error_message),
        'lambda', jsonb_build_object('before', o.initial_lambda, 'after', o.final_lambda,
                                     'improvement_pct', o.improvement_pct),
        'signal', CASE WHEN sig_key IS NULL THEN NULL ELSE jsonb_build_object(
            'name', sig_key,
            'before', coalesce(o.metadata->'signal'->'before', o.problem_details->o.problem_class->sig_key),
            'after', sig_after) END,
        'verification', verif,
        'rollback', jsonb_build_object(
            'rolled_back', o.rolled_back,
            'by', CASE WHEN kind = 'rollback' THEN 'operator'
                       WHEN o.rolled_back THEN 'engine' END,
            'rollback_of', CASE WHEN kind = 'rollback' THEN o.metadata->'rollback_of' END,
            -- Kept in force unverified for the episode's next remedy, and
            -- what the engine measured to decide (strategy.Holder).
            'held', o.metadata->'held', 'hold_check', o.metadata->'hold_check',
            'later_rollbacks', later),
        'audit', jsonb_build_object('sealed', o.chain_seq IS NOT NULL, 'chain_seq', o.chain_seq,
                                    'signed', o.signature IS NOT NULL, 'key_id', o.key_id),
        'not_recorded', to_jsonb(missing));
END
$$;
COMMENT ON FUNCTION ruvector_healing_explain(bigint) IS
    'Why a remediation happened: trigger, classifier rule and values, strategies considered, before/after, verification, rollback.';

REVOKE ALL ON FUNCTION ruvector._integrity_sample_record(), ruvector._healing_signal_key(text),
    ruvector_healing_explain(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._healing_signal_key(text), ruvector_healing_explain(bigint)
    TO ruvector_monitor, pg_monitor;
