package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/healconfig"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Errors of the operator-driven paths, for callers that branch.
var (
	// ErrUnknownStrategy: the named strategy is not registered here.
	ErrUnknownStrategy = errors.New("healing: strategy not registered")
	// ErrNotPending: the action is not (or no longer) pending approval.
	ErrNotPending = errors.New("healing: action is not pending approval")
	// ErrNothingToRollBack: the outcome has no recorded action or is not
	// reversible.
	ErrNothingToRollBack = errors.New("healing: nothing to roll back")
)

// Execute runs the named strategy on the trigger's collection at an
// operator's request (ruvector_healing_execute). It skips the automatic
// gate (cooldown, attempts per window, ineffectiveness, max_auto_heal_impact
// and approval: the operator is the approval) but not the lease: two
// remediations never overlap on one collection.
func (e *Engine) Execute(ctx context.Context, tr Trigger, name string, params json.RawMessage) (Outcome, error) {
	s, ok := e.reg.Get(name)
	if !ok {
		return Outcome{}, fmt.Errorf("%w: %q (registered: %v)", ErrUnknownStrategy, name, e.reg.Names())
	}
	cfg, err := e.Config(ctx)
	if err != nil {
		return Outcome{}, err
	}
	dec := classify.Classify(tr.Witness, tr.Metrics, cfg.Classifier)
	out := Outcome{Decision: dec, InitialLambda: tr.Lambda, Strategy: name}
	stab := e.stabilization(cfg, dec.Problem.Class)
	l, holder, err := e.acquire(ctx, tr.CollectionID)
	if err != nil {
		return Outcome{}, err
	}
	if l == nil {
		out.Status = StatusBusy
		out.Reason = fmt.Sprintf("another remediation is active on collection %q (%s)", tr.Collection, holder)
		return out, nil
	}
	defer e.release(ctx, l)
	decision, _ := json.Marshal(map[string]any{"classification": dec, "explanation": dec.Explain(),
		"manual": "executed by an operator (ruvector_healing_execute)"})
	row := outcomeRow{collectionID: tr.CollectionID, tenant: tr.TenantID, problem: dec.Problem, strategy: name,
		initial: tr.Lambda, witness: tr.Witness, metrics: tr.Metrics, decision: decision, params: params,
		metadata: map[string]any{"kind": "manual"}}
	return e.attempt(ctx, tr, s, row, l, cfg, stab, out)
}

// Approve runs pending action id (approved by an operator) with the
// collection's current state in tr.
func (e *Engine) Approve(ctx context.Context, tr Trigger, id int64) (Outcome, error) {
	var (
		state, name string
		collID      int64
		problem     []byte
	)
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT state, strategy_name, collection_id, problem_details::text
			FROM ruvector.healing_outcomes WHERE id = $1`, id).Scan(&state, &name, &collID, &problem)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Outcome{}, fmt.Errorf("%w: action %d does not exist", ErrNotPending, id)
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("healing: read action %d: %w", id, err)
	}
	if state != "pending_approval" {
		return Outcome{}, fmt.Errorf("%w: action %d is %s", ErrNotPending, id, state)
	}
	if collID != tr.CollectionID {
		return Outcome{}, fmt.Errorf("healing: action %d belongs to collection %d, not %d", id, collID, tr.CollectionID)
	}
	s, ok := e.reg.Get(name)
	if !ok {
		return Outcome{}, fmt.Errorf("%w: %q", ErrUnknownStrategy, name)
	}
	var p classify.Problem
	if err := json.Unmarshal(problem, &p); err != nil {
		return Outcome{}, fmt.Errorf("healing: problem of action %d: %w", id, err)
	}
	cfg, err := e.Config(ctx)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{InitialLambda: tr.Lambda, Strategy: name}
	out.Decision.Problem = p
	stab := e.stabilization(cfg, p.Class)
	l, holder, err := e.acquire(ctx, tr.CollectionID)
	if err != nil {
		return Outcome{}, err
	}
	if l == nil {
		out.Status = StatusBusy
		out.Reason = fmt.Sprintf("another remediation is active on collection %q (%s)", tr.Collection, holder)
		return out, nil
	}
	defer e.release(ctx, l)
	decision, _ := json.Marshal(map[string]any{"approved_action": id})
	row := outcomeRow{collectionID: tr.CollectionID, tenant: tr.TenantID, problem: p, strategy: name,
		initial: tr.Lambda, witness: tr.Witness, metrics: tr.Metrics, decision: decision,
		metadata: map[string]any{"kind": "approved", "approved_action": id}}
	return e.attempt(ctx, tr, s, row, l, cfg, stab, out)
}

// stabilization is the wait before verification: Options.Stabilization
// when set, else the configured stabilization_seconds, raised either way to
// the time the class's measurements need to reflect a change
// (Options.SignalRefresh): verifying before the signal can have moved
// judges the remediation on the fault's own numbers (an override of 5 s
// verified compact_indexes against a 30 s index sample, and always failed).
func (e *Engine) stabilization(cfg healconfig.Config, class classify.Class) time.Duration {
	stab := cfg.Stabilization
	if e.opts.Stabilization > 0 {
		stab = e.opts.Stabilization
	}
	if e.opts.SignalRefresh != nil {
		stab = max(stab, e.opts.SignalRefresh(class))
	}
	return stab
}

// recordedActions is the Recorder of a finished attempt: its actions, read
// only.
type recordedActions struct{ acts []json.RawMessage }

func (r recordedActions) Record(any) error                    { return ErrAttemptOver }
func (r recordedActions) Actions() ([]json.RawMessage, error) { return r.acts, nil }

// undo rolls back the actions recorded in outcome id with its strategy.
func (e *Engine) undo(ctx context.Context, collection string, collectionID, id int64, name string) (int, error) {
	s, ok := e.reg.Get(name)
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownStrategy, name)
	}
	if !s.Reversible() {
		return 0, fmt.Errorf("%w: %s is not reversible", ErrNothingToRollBack, name)
	}
	var doc []byte
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT coalesce(metadata->'actions', '[]')::text FROM ruvector.healing_outcomes WHERE id = $1`,
			id).Scan(&doc)
	})
	if err != nil {
		return 0, fmt.Errorf("healing: actions of %d: %w", id, err)
	}
	var acts []json.RawMessage
	if err := json.Unmarshal(doc, &acts); err != nil {
		return 0, fmt.Errorf("healing: actions of %d: %w", id, err)
	}
	if len(acts) == 0 {
		return 0, nil
	}
	rc := &strategy.Context{Collection: collection, CollectionID: collectionID, Recorder: recordedActions{acts},
		OutcomeID: id, Started: time.Now(), Timeout: 2 * s.EstimatedDuration()}
	rctx, cancel := context.WithTimeout(ctx, 2*s.EstimatedDuration())
	defer cancel()
	return len(acts), safeCall(func() error { return s.Rollback(rctx, rc) })
}

// RollbackOutcome undoes finished outcome id at an operator's request
// (ruvector_healing_rollback). The outcome's sealed record is left as it
// is; the rollback is a record of its own (metadata kind "rollback",
// rollback_of id) in the chain.
func (e *Engine) RollbackOutcome(ctx context.Context, collection string, collectionID, id int64) (int64, error) {
	return e.rollbackOutcome(ctx, collection, collectionID, id,
		map[string]any{"manual": "rolled back by an operator (ruvector_healing_rollback)"}, "remediation rolled back by an operator")
}

// rollbackOutcome undoes finished outcome id and records the rollback with
// decision (why it was rolled back) in the chain.
func (e *Engine) rollbackOutcome(ctx context.Context, collection string, collectionID, id int64, decision map[string]any, logMsg string) (int64, error) {
	var name, state string
	var rolled bool
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT strategy_name, state, rolled_back FROM ruvector.healing_outcomes
			WHERE id = $1 AND collection_id = $2`, id, collectionID).Scan(&name, &state, &rolled)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: outcome %d of collection %d does not exist", ErrNothingToRollBack, id, collectionID)
	}
	if err != nil {
		return 0, fmt.Errorf("healing: read outcome %d: %w", id, err)
	}
	if state != "done" || rolled {
		return 0, fmt.Errorf("%w: outcome %d is %s (rolled back: %v)", ErrNothingToRollBack, id, state, rolled)
	}
	l, holder, err := e.acquire(ctx, collectionID)
	if err != nil {
		return 0, err
	}
	if l == nil {
		return 0, fmt.Errorf("healing: another remediation is active on collection %q (%s)", collection, holder)
	}
	defer e.release(ctx, l)
	started := time.Now()
	n, rbErr := e.undo(ctx, collection, collectionID, id, name)
	var errMsg *string
	if rbErr != nil {
		m := rbErr.Error()
		errMsg = &m
	}
	var rid int64
	meta, _ := json.Marshal(map[string]any{"kind": "rollback", "rollback_of": id, "actions_undone": n})
	dec, _ := json.Marshal(decision)
	err = e.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if err := checkLease(ctx, tx, l); err != nil {
				return err
			}
			err := tx.QueryRow(ctx, `INSERT INTO ruvector.healing_outcomes (collection_id, tenant_id, problem_class,
					problem_details, strategy_name, started_at, completed_at, duration_ms, success, actions_taken,
					error_message, initial_lambda, state, rolled_back, metadata, decision)
				SELECT collection_id, tenant_id, problem_class, problem_details, strategy_name,
					date_trunc('milliseconds', $2::timestamptz), date_trunc('milliseconds', clock_timestamp()), $3, $4, $5,
					$6, initial_lambda, 'done', $4, $7::jsonb, $8::jsonb
				FROM ruvector.healing_outcomes WHERE id = $1 RETURNING id`,
				id, started, int32(time.Since(started).Milliseconds()), rbErr == nil, int32(n), errMsg, string(meta), string(dec)).Scan(&rid)
			if err != nil {
				return err
			}
			_, err = audit.Seal(ctx, tx, e.key, rid)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("healing: record rollback of %d: %w", id, err)
	}
	e.opts.Log.Info().Int64("outcome_id", rid).Int64("rollback_of", id).Str("collection", collection).
		Str("strategy", name).AnErr("error", rbErr).Msg(logMsg)
	if rbErr != nil {
		return rid, fmt.Errorf("healing: roll back outcome %d: %w", id, rbErr)
	}
	return rid, nil
}

// RecoveryError is the error recorded on an outcome a dead sidecar left
// running.
const RecoveryError = "sidecar died mid-remediation; rolled back"

// Recover finishes the outcomes left running by a sidecar that died: those
// whose collection lease expired or is gone (a live lease means its holder
// is still at work: it renews it). The active sidecar runs it on every
// leader tick, so an orphan lives at most about a lease TTL plus a tick. What they recorded is rolled back when the strategy is
// reversible, and each is sealed as failed. It returns the ids recovered.
func (e *Engine) Recover(ctx context.Context) ([]int64, error) {
	type orphan struct {
		id, collID int64
		name, coll string
	}
	var orphans []orphan
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT o.id, o.collection_id, o.strategy_name, coalesce(c.name, '')
			FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
			WHERE o.state = 'running' AND NOT EXISTS (SELECT 1 FROM ruvector.healing_leases l
				WHERE l.collection_id = o.collection_id AND l.expires_at > clock_timestamp())
			ORDER BY o.id`)
		if err != nil {
			return err
		}
		orphans, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
			var o orphan
			return o, r.Scan(&o.id, &o.collID, &o.name, &o.coll)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healing: find orphaned remediations: %w", err)
	}
	var done []int64
	for _, o := range orphans {
		l, _, err := e.acquire(ctx, o.collID)
		if err != nil {
			return done, err
		}
		if l == nil {
			continue // another sidecar is on it
		}
		n, rbErr := e.undo(ctx, o.coll, o.collID, o.id, o.name)
		msg := RecoveryError
		rolled := rbErr == nil && n > 0
		switch {
		case rbErr != nil:
			msg = "sidecar died mid-remediation; rollback failed: " + rbErr.Error()
		case n == 0:
			msg = "sidecar died mid-remediation; no action had been recorded, nothing to roll back"
		}
		err = e.withConn(ctx, func(c *pgx.Conn) error {
			return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				if err := checkLease(ctx, tx, l); err != nil {
					return err
				}
				tag, err := tx.Exec(ctx, `UPDATE ruvector.healing_outcomes SET state = 'done',
					completed_at = date_trunc('milliseconds', clock_timestamp()),
					duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::int,
					success = false, error_message = $2, rolled_back = $3, actions_taken = $4,
					metadata = metadata || jsonb_build_object('status', 'failed', 'recovered_by', $5::text)
					WHERE id = $1 AND state = 'running'`, o.id, msg, rolled, int32(n), e.opts.Holder)
				if err != nil || tag.RowsAffected() != 1 {
					return err
				}
				_, err = audit.Seal(ctx, tx, e.key, o.id)
				return err
			})
		})
		e.release(ctx, l)
		if err != nil {
			return done, fmt.Errorf("healing: recover outcome %d: %w", o.id, err)
		}
		e.opts.Log.Warn().Int64("outcome_id", o.id).Str("collection", o.coll).Str("strategy", o.name).
			Bool("rolled_back", rolled).Str("error", msg).Msg("remediation finished (orphan recovered)")
		done = append(done, o.id)
	}
	return done, nil
}
