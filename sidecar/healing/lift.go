package healing

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// LiftTemporary rolls back the verified or held remediations of temporary
// strategies (strategy.Temporary: throttles and shard caps, paused
// maintenance, drained shards) that are still in force on a collection
// that has been normal for at least after since they ran. Each lift is a
// rollback record of its own (metadata kind "rollback", decision "lifted")
// in the chain. A collection busy with another remediation is left for the
// next call. It returns the outcome ids lifted.
func (e *Engine) LiftTemporary(ctx context.Context, after time.Duration) ([]int64, error) {
	var names []string
	for _, s := range e.reg.Strategies() {
		if strategy.IsTemporary(s) && s.Reversible() {
			names = append(names, s.Name())
		}
	}
	if len(names) == 0 || after <= 0 {
		return nil, nil
	}
	type held struct {
		id, collectionID int64
		collection       string
		normalSince      time.Time
	}
	var due []held
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `
SELECT o.id, o.collection_id, c.name, t.created_at
FROM ruvector.healing_outcomes o
JOIN ruvector.collections c ON c.collection_id = o.collection_id
CROSS JOIN LATERAL (
    SELECT ev.new_state, ev.created_at FROM ruvector.integrity_events ev
    WHERE ev.collection_id = o.collection_id AND ev.event_type = 'state_transition'
    ORDER BY ev.created_at DESC, ev.id DESC LIMIT 1) t
WHERE o.state = 'done' AND (o.verified OR o.metadata ? 'held') AND NOT coalesce(o.rolled_back, false)
  AND coalesce(o.metadata->>'kind', '') <> 'rollback'
  AND o.strategy_name = ANY($1)
  -- Normal for the lift's time since the later of the last transition
  -- and the remediation's end: one that ran while the collection was
  -- normal already (a manual execution, or a trigger that waited) is
  -- lifted too, not left until the collection next recovers.
  AND t.new_state = 'normal'
  AND greatest(t.created_at, coalesce(o.completed_at, o.started_at)) < clock_timestamp() - make_interval(secs => $2)
  AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes r
      WHERE r.metadata->>'kind' = 'rollback' AND r.metadata->>'rollback_of' = o.id::text AND r.success)
-- Newest first: measures stack (a later throttle recorded the earlier
-- one as the value to restore), and are undone in the reverse order.
ORDER BY o.id DESC`, names, after.Seconds())
		if err != nil {
			return err
		}
		var h held
		_, err = pgx.ForEachRow(rows, []any{&h.id, &h.collectionID, &h.collection, &h.normalSince}, func() error {
			due = append(due, h)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healing: temporary remediations to lift: %w", err)
	}
	lifts := make([]lift, 0, len(due))
	for _, h := range due {
		lifts = append(lifts, lift{id: h.id, collectionID: h.collectionID, collection: h.collection,
			why: fmt.Sprintf("lifted: collection %q has been normal since %s (%s), at least %s after the remediation (--lift-temporary-after)",
				h.collection, h.normalSince.UTC().Format(time.RFC3339), time.Since(h.normalSince).Round(time.Second), after)})
	}
	return e.lift(ctx, lifts, "temporary remediation lifted after the collection stayed normal", "lift temporary remediations")
}

// lift is one outcome to roll back as a lift, and why.
type lift struct {
	id, collectionID int64
	collection, why  string
}

// lift rolls back each outcome as a rollback record of its own (decision
// "lifted": why) and returns the ids lifted; one failing does not stop the
// others.
func (e *Engine) lift(ctx context.Context, lifts []lift, reason, what string) ([]int64, error) {
	var lifted []int64
	var errs []error
	for _, l := range lifts {
		if _, err := e.rollbackOutcome(ctx, l.collection, l.collectionID, l.id, map[string]any{"lifted": l.why}, reason); err != nil {
			errs = append(errs, fmt.Errorf("outcome %d: %w", l.id, err))
			continue
		}
		lifted = append(lifted, l.id)
	}
	if len(errs) > 0 {
		return lifted, fmt.Errorf("healing: %s: %v", what, errs)
	}
	return lifted, nil
}

// LiftHeld rolls back the measures held in force (Outcome.Held) for longer
// than limit while their collection never got back to normal: a hold is for
// the next remedy of the episode to act under, and if none cured the
// problem in that time, a cap must not stay on a person's collection
// indefinitely. Like a lift, each is a rollback record of its own (decision
// "lifted"). It returns the outcome ids lifted.
func (e *Engine) LiftHeld(ctx context.Context, limit time.Duration) ([]int64, error) {
	if limit <= 0 {
		return nil, nil
	}
	type held struct {
		id, collectionID int64
		strategy         string
		started          time.Time
	}
	var due []held
	var names map[int64]string
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, heldSQL+` AND o.started_at < clock_timestamp() - make_interval(secs => $1) ORDER BY o.id DESC`, limit.Seconds())
		if err != nil {
			return err
		}
		var h held
		if _, err := pgx.ForEachRow(rows, []any{&h.id, &h.collectionID, &h.strategy, &h.started}, func() error {
			due = append(due, h)
			return nil
		}); err != nil {
			return err
		}
		names = map[int64]string{}
		for _, h := range due {
			if _, ok := names[h.collectionID]; ok {
				continue
			}
			var n string
			if err := c.QueryRow(ctx, `SELECT name FROM ruvector.collections WHERE collection_id = $1`, h.collectionID).Scan(&n); err != nil {
				return err
			}
			names[h.collectionID] = n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("healing: held measures to lift: %w", err)
	}
	lifts := make([]lift, 0, len(due))
	for _, h := range due {
		lifts = append(lifts, lift{id: h.id, collectionID: h.collectionID, collection: names[h.collectionID],
			why: fmt.Sprintf("lifted: %s held since %s (%s) without collection %q getting back to normal (--held-max %s)",
				h.strategy, h.started.UTC().Format(time.RFC3339), time.Since(h.started).Round(time.Second), names[h.collectionID], limit)})
	}
	return e.lift(ctx, lifts, "held measure lifted: no remedy cured the problem under it in time", "lift held measures")
}
