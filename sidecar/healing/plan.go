package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/remedy/plan"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// describer is implemented by strategies without a plan.Planner that can
// still say what they would do now (ThrottleIngestion.Describe).
type describer interface {
	Describe(ctx context.Context, rc *strategy.Context) (map[string]any, error)
}

// Plan answers a dry run (ruvector_healing_execute with {"dry_run": true}):
// what the named strategy would do now on the trigger's collection. It
// builds the strategy.Context a manual Execute would build (the collection's
// current λ, state, metrics and the problem classified from them, the
// parameters) and asks the strategy for its plan.Plan when it implements
// plan.Planner; otherwise the document is the strategy's static
// description and says so.
//
// Nothing is changed: no lease is taken (a plan may be asked while a
// remediation runs, and says so), no healing_outcomes row is written, and
// the strategy gets no Recorder, so a Plan that tried to record an action
// would fail rather than leave a rollback record behind.
func (e *Engine) Plan(ctx context.Context, tr Trigger, name string, params json.RawMessage) (map[string]any, error) {
	s, ok := e.reg.Get(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q (registered: %v)", ErrUnknownStrategy, name, e.reg.Names())
	}
	cfg, err := e.Config(ctx)
	if err != nil {
		return nil, err
	}
	dec := classify.Classify(tr.Witness, tr.Metrics, cfg.Classifier)
	timeout := 2 * s.EstimatedDuration()
	handles := make([]string, 0, len(s.Handles()))
	for _, h := range s.Handles() {
		handles = append(handles, string(h))
	}
	blockers := []string{}
	var holder string
	err = e.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT format('held by %s until %s', holder, expires_at)
			FROM ruvector.healing_leases WHERE collection_id = $1 AND expires_at > clock_timestamp()`,
			tr.CollectionID).Scan(&holder)
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("healing: lease of collection %d: %w", tr.CollectionID, err)
	}
	if holder != "" {
		blockers = append(blockers, "another remediation is active on the collection (lease "+holder+")")
	}
	doc := map[string]any{
		"dry_run":        true,
		"collection":     tr.Collection,
		"strategy":       name,
		"params":         params,
		"state":          tr.State,
		"initial_lambda": tr.Lambda,
		"target_lambda":  tr.Lambda * VerifyImprovement,
		"problem":        dec.Problem,
		"classification": dec.Explain(),
		"description": map[string]any{"handles": handles, "impact": s.Impact(), "reversible": s.Reversible(),
			"estimated_duration_seconds": s.EstimatedDuration().Seconds(), "timeout_seconds": timeout.Seconds()},
		"changed": "nothing: a dry run takes no lease, writes no healing outcome and records no action",
	}
	if a, ok := s.(strategy.Availability); ok {
		if avail, why := a.Available(ctx); !avail {
			blockers = append(blockers, fmt.Sprintf("%s is unavailable: %s", name, why))
		}
	}
	doc["blockers"] = blockers
	rc := &strategy.Context{
		Problem: dec.Problem, Collection: tr.Collection, CollectionID: tr.CollectionID, State: tr.State,
		InitialLambda: tr.Lambda, TargetLambda: tr.Lambda * VerifyImprovement, Metrics: tr.Metrics, Params: params,
		Sample: func(ctx context.Context) (float64, error) {
			return e.sampler.Sample(ctx, tr.Collection, tr.CollectionID)
		},
		Started: time.Now(), Timeout: timeout,
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, ok := s.(plan.Planner)
	if !ok {
		doc["planned_by"] = "description"
		doc["note"] = fmt.Sprintf("%s cannot say what it would do on the live system (it does not implement plan.Planner): "+
			"this is its static description", name)
		// throttle_ingestion says at least which shards it would cap, at
		// what rate, or why it would throttle the whole collection.
		if d, ok := s.(describer); ok {
			var would map[string]any
			if err := safeCall(func() error {
				var err error
				would, err = d.Describe(pctx, rc)
				return err
			}); err != nil {
				// A dry run reports what stands in the way (a manual cap,
				// say) rather than failing.
				doc["blockers"] = append(blockers, fmt.Sprintf("%s cannot act now: %v", name, err))
			} else {
				doc["would_do"] = would
			}
		}
		return doc, nil
	}
	var got plan.Plan
	if err := safeCall(func() error {
		var err error
		got, err = p.Plan(pctx, rc)
		return err
	}); err != nil {
		return doc, fmt.Errorf("healing: plan of %s on %q: %w", name, tr.Collection, err)
	}
	doc["planned_by"] = "strategy"
	doc["plan"] = got
	return doc, nil
}
