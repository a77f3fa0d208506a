package healing

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// triedThisEpisode counts, by strategy, the finished attempts for class on
// the collection since it was last normal (its latest state_transition into
// normal) and within the attempt window, rollbacks left out. Selection
// halves a strategy's ranking weight per attempt (strategy.Limits.Tried), so
// a remedy that left the problem in place yields to the next one instead of
// being repeated while it stays "verified" by a small gain.
func (e *Engine) triedThisEpisode(ctx context.Context, collectionID int64, class classify.Class, windowSeconds float64) (map[string]int, error) {
	tried := map[string]int{}
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT o.strategy_name, count(*)::int
			FROM ruvector.healing_outcomes o
			WHERE o.collection_id = $1 AND o.problem_class = $2 AND o.state = 'done'
			  AND coalesce(o.metadata->>'kind', '') <> 'rollback'
			  AND o.started_at > clock_timestamp() - make_interval(secs => $3)
			  AND o.started_at > coalesce((SELECT max(ev.created_at) FROM ruvector.integrity_events ev
			        WHERE ev.collection_id = $1 AND ev.event_type = 'state_transition' AND ev.new_state = 'normal'),
			      '-infinity')
			GROUP BY o.strategy_name`, collectionID, string(class), windowSeconds)
		if err != nil {
			return err
		}
		var name string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
			tried[name] = n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healing: attempts this episode on collection %d: %w", collectionID, err)
	}
	return tried, nil
}

// heldSQL selects the measures held in force (Outcome.Held): done, kept
// unverified, and neither rolled back by the attempt nor lifted since.
const heldSQL = `
SELECT o.id, o.collection_id, o.strategy_name, o.started_at
FROM ruvector.healing_outcomes o
WHERE o.state = 'done' AND o.metadata ? 'held' AND NOT coalesce(o.rolled_back, false)
  AND coalesce(o.metadata->>'kind', '') <> 'rollback'
  AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes r
      WHERE r.metadata->>'kind' = 'rollback' AND r.metadata->>'rollback_of' = o.id::text AND r.success)`

// heldInForce maps each strategy whose measure is held in force on the
// collection to the newest outcome holding it (strategy.Limits.Held).
func (e *Engine) heldInForce(ctx context.Context, collectionID int64) (map[string]int64, error) {
	held := map[string]int64{}
	err := e.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, heldSQL+` AND o.collection_id = $1 ORDER BY o.id`, collectionID)
		if err != nil {
			return err
		}
		var id, coll int64
		var name string
		var started time.Time
		_, err = pgx.ForEachRow(rows, []any{&id, &coll, &name, &started}, func() error {
			held[name] = id
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healing: measures held on collection %d: %w", collectionID, err)
	}
	return held, nil
}
