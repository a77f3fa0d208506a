package monitor

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/audit"
)

// sealBatch bounds the events signed per sample, so a backlog (a sidecar
// that was away while overrides were set) never stalls a sample.
const sealBatch = 200

// sealEvents signs the integrity events that carry no signature yet: the
// loop's own transitions and what SQL functions wrote (policy changes,
// overrides), which cannot sign because the key never leaves the sidecar.
// The bytes signed are the server's canonical encoding of the row
// (ruvector._integrity_event_canonical), so the server can verify them
// (ruvector_integrity_history's is_verified) without trusting this code.
func (m *Monitor) sealEvents(ctx context.Context) error {
	k := m.cfg.AuditKey
	if k == nil {
		return nil
	}
	if !m.keyOnDB {
		if err := audit.RegisterKey(ctx, m.db, k); err != nil {
			return fmt.Errorf("seal events: %w", err)
		}
		m.keyOnDB = true
	}
	rows, err := m.db.Query(ctx, `SELECT e.id, ruvector._integrity_event_canonical(e)
		FROM ruvector.integrity_events e WHERE e.signature IS NULL ORDER BY e.id LIMIT $1`, sealBatch)
	if err != nil {
		return fmt.Errorf("seal events: %w", err)
	}
	type pending struct {
		id  int64
		msg []byte
	}
	todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pending, error) {
		var p pending
		err := r.Scan(&p.id, &p.msg)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("seal events: %w", err)
	}
	for _, p := range todo {
		// signature IS NULL again: a second sidecar may have sealed it
		// meanwhile; the first signature stands.
		if _, err := m.db.Exec(ctx, `UPDATE ruvector.integrity_events SET signature = $2, key_id = $3, is_signed = true
			WHERE id = $1 AND signature IS NULL`, p.id, k.Sign(p.msg), k.ID); err != nil {
			return fmt.Errorf("seal event %d: %w", p.id, err)
		}
	}
	return nil
}
