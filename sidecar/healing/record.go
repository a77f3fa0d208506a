package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/audit"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

type outcomeRow struct {
	collectionID int64
	tenant       string
	problem      classify.Problem
	strategy     string
	initial      float64
	witness      []classify.WitnessEdge
	metrics      classify.Metrics
	decision     []byte
	// params are the strategy parameters of a manual execution.
	params json.RawMessage
	// metadata is merged into the row's metadata at insertion.
	metadata map[string]any
}

func (r outcomeRow) args() []any {
	var tenant *string
	if r.tenant != "" {
		tenant = &r.tenant
	}
	problem, _ := json.Marshal(r.problem)
	witness, _ := json.Marshal(r.witness)
	metrics, _ := json.Marshal(r.metrics)
	var params *string
	if len(r.params) > 0 {
		p := string(r.params)
		params = &p
	}
	meta := []byte("{}")
	if len(r.metadata) > 0 {
		meta, _ = json.Marshal(r.metadata)
	}
	decision := r.decision
	if len(decision) == 0 {
		decision = []byte("{}")
	}
	return []any{r.collectionID, tenant, string(r.problem.Class), string(problem), r.strategy,
		float32(finite(r.initial)), string(witness), string(metrics), string(decision), params, string(meta)}
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

const insertOutcome = `INSERT INTO ruvector.healing_outcomes (collection_id, tenant_id, problem_class,
	problem_details, strategy_name, started_at, success, initial_lambda, witness_edges, system_metrics,
	decision, strategy_params, metadata, state)
	VALUES ($1, $2, $3, $4::jsonb, $5, date_trunc('milliseconds', clock_timestamp()), false, $6, $7::jsonb, $8::jsonb, $9::jsonb,
		$10::jsonb, $11::jsonb, $12)
	RETURNING id, started_at`

// insertPending writes and seals an action waiting for approval.
func (e *Engine) insertPending(ctx context.Context, r outcomeRow) (int64, error) {
	var id int64
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var started time.Time
			a := r.args()
			if err := tx.QueryRow(ctx, insertOutcome, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
				"pending_approval").Scan(&id, &started); err != nil {
				return err
			}
			_, err := audit.Seal(ctx, tx, e.key, id)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("healing: record pending action: %w", err)
	}
	return id, nil
}

// insertRunning writes the attempt's row before anything is done, fenced on
// the lease, so that the actions recorded into it survive a crash.
func (e *Engine) insertRunning(ctx context.Context, r outcomeRow, l *lease) (int64, time.Time, error) {
	var id int64
	var started time.Time
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if err := checkLease(ctx, tx, l); err != nil {
				return err
			}
			a := r.args()
			return tx.QueryRow(ctx, insertOutcome, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
				"running").Scan(&id, &started)
		})
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("healing: record attempt: %w", err)
	}
	return id, started, nil
}

func checkLease(ctx context.Context, q pgx.Tx, l *lease) error {
	// FOR UPDATE: a takeover of an expired lease waits for this transaction,
	// so the write it guards cannot interleave with a new holder's.
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM ruvector.healing_leases
		WHERE collection_id = $1 AND token = $2 AND expires_at > clock_timestamp() FOR UPDATE`,
		l.collectionID, l.token).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w on collection %d", ErrLeaseLost, l.collectionID)
	}
	return err
}

// finish writes the result and seals the record.
func (e *Engine) finish(ctx context.Context, id int64, out Outcome, verified *bool, final *float64, rc *strategy.Context) error {
	var improvement, finalL *float32
	if final != nil {
		f := float32(finite(*final))
		finalL = &f
		i := float32(finite(rc.Improvement(*final)))
		improvement = &i
	}
	var errMsg *string
	if out.Error != "" {
		errMsg = &out.Error
	}
	doc := map[string]any{"status": out.Status, "result": out.Result,
		"verification": map[string]any{"target_lambda": finite(rc.TargetLambda), "improvement_factor": VerifyImprovement,
			"verify_above_lambda": finite(rc.InitialLambda * VerifyImprovement),
			"sampled":             final != nil, "stabilization_seconds": out.Stabilization.Seconds(),
			"waited_seconds": out.Waited.Seconds()}}
	if !out.Result.LastChange.IsZero() {
		// The stabilization counted from the strategy's own last change.
		doc["verification"].(map[string]any)["since_last_change"] = out.Result.LastChange.UTC().Format(time.RFC3339Nano)
	}
	if out.SignalRefresh > 0 {
		v := doc["verification"].(map[string]any)
		v["signal_refresh_seconds"] = out.SignalRefresh.Seconds()
		// false: λ was sampled before the measurements could show the
		// change (an explicit, shorter stabilization override).
		v["signals_refreshed"] = out.Stabilization >= out.SignalRefresh
	}
	if out.Signal != nil {
		doc["signal"] = out.Signal
	}
	if out.Held != "" {
		doc["held"] = out.Held
	}
	if out.HoldCheck != "" {
		doc["hold_check"] = out.HoldCheck
	}
	meta, _ := json.Marshal(doc)
	// The record must land even if the caller's context was cancelled
	// mid-attempt: an abort is an outcome too.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := e.withConn(fctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(fctx, c, func(tx pgx.Tx) error {
			_, err := tx.Exec(fctx, `UPDATE ruvector.healing_outcomes SET state = 'done',
				completed_at = date_trunc('milliseconds', clock_timestamp()),
				duration_ms = $2, success = $3, verified = $4, actions_taken = $5, improvement_pct = $6,
				error_message = $7, final_lambda = $8, rolled_back = $9,
				metadata = metadata || $10::jsonb
				WHERE id = $1`, id, int32(out.Duration.Milliseconds()), out.Result.Success && out.Error == "",
				verified, int32(out.Result.ActionsTaken), improvement, errMsg, finalL, out.RolledBack, string(meta))
			if err != nil {
				return err
			}
			_, err = audit.Seal(fctx, tx, e.key, id)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("healing: record outcome %d: %w", id, err)
	}
	return nil
}

// dbRecorder is the strategy.Recorder of one attempt: rollback records go
// into the outcome row's metadata->'actions', each write fenced on the lease.
type dbRecorder struct {
	e     *Engine
	id    int64
	lease *lease

	mu     sync.Mutex
	ctx    context.Context
	closed bool
}

// OutcomeID is the outcome row the actions go into (pause_maintenance
// marks the jobs it pauses with it).
func (r *dbRecorder) OutcomeID() int64 { return r.id }

func (r *dbRecorder) setContext(ctx context.Context) {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
}

func (r *dbRecorder) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// Record persists one action before the strategy takes it.
func (r *dbRecorder) Record(action any) error {
	r.mu.Lock()
	ctx, closed := r.ctx, r.closed
	r.mu.Unlock()
	if closed {
		return ErrAttemptOver
	}
	if ctx == nil {
		ctx = context.Background()
	}
	b, err := json.Marshal(action)
	if err != nil {
		return fmt.Errorf("healing: record action: %w", err)
	}
	err = r.e.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if err := checkLease(ctx, tx, r.lease); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE ruvector.healing_outcomes
				SET metadata = jsonb_set(metadata, '{actions}', coalesce(metadata->'actions', '[]') || jsonb_build_array($2::jsonb))
				WHERE id = $1 AND state = 'running'`, r.id, string(b))
			if err == nil && tag.RowsAffected() != 1 {
				err = fmt.Errorf("%w: outcome %d is no longer running", ErrAttemptOver, r.id)
			}
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("healing: record action: %w", err)
	}
	return nil
}

// Actions returns the recorded actions; it is used by rollback, after the
// attempt's own context may have ended.
func (r *dbRecorder) Actions() ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var doc []byte
	err := r.e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT coalesce(metadata->'actions', '[]')::text FROM ruvector.healing_outcomes WHERE id = $1`,
			r.id).Scan(&doc)
	})
	if err != nil {
		return nil, fmt.Errorf("healing: read actions: %w", err)
	}
	var acts []json.RawMessage
	if err := json.Unmarshal(doc, &acts); err != nil {
		return nil, fmt.Errorf("healing: read actions: %w", err)
	}
	return acts, nil
}

var _ strategy.Recorder = (*dbRecorder)(nil)
