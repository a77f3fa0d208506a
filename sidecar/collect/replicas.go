package collect

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// Replicas measures streaming replicas (pg_stat_replication) and
// replication slots (pg_replication_slots). It is server-wide: every
// collection sees the same replicas, because WAL is shared.
//
// A walsender that serves a slot is reported once, as the slot (its ID a
// stable hash of the slot name, so it survives reconnects), with the
// walsender's lag. Walsenders of base backups (state "backup") are not
// replicas and are left out, and so is the sidecar's own change feed
// (slots named ruvector_healing_feed_*, sidecar/changefeed): it is not a
// replica, and counting it made every sidecar start read as replication
// lag (the feed's slot is inactive until it connects) and act on it.
type Replicas struct {
	// Interval is the cadence (default 5 s).
	Interval time.Duration
}

// NewReplicas returns the replicas collector.
func NewReplicas() *Replicas { return &Replicas{} }

func (r *Replicas) Name() string { return "replicas" }

func (r *Replicas) Cadence() time.Duration { return orDefault(r.Interval, 5*time.Second) }

// The current WAL position: on a standby pg_current_wal_lsn() errors, and
// the position it has replayed is the one its cascaded replicas chase.
const curLSN = `(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)`

const walsendersSQL = `
SELECT w.pid, coalesce(nullif(w.application_name, ''), host(w.client_addr), 'walsender ' || w.pid),
       coalesce(w.state, ''),
       extract(epoch FROM w.write_lag)::float8, extract(epoch FROM w.flush_lag)::float8,
       extract(epoch FROM w.replay_lag)::float8,
       pg_wal_lsn_diff(w.sent_lsn, w.replay_lsn)::bigint,
       sl.slot_name
FROM pg_stat_replication w
LEFT JOIN pg_replication_slots sl ON sl.active_pid = w.pid
WHERE w.state IS DISTINCT FROM 'backup'
  AND (sl.slot_name IS NULL OR sl.slot_name NOT LIKE ` + ownFeedSlots + `)
  AND w.application_name IS DISTINCT FROM 'ruvector_healing_changefeed'
ORDER BY w.pid`

// ownFeedSlots matches the change feed's slot names. Its walsender is also
// known by its application_name (sidecar/changefeed), which is there before
// the walsender has taken the slot (startup), when the join finds no slot.
const ownFeedSlots = `'ruvector\_healing\_feed\_%'`

const slotsSQL = `
SELECT slot_name, slot_type, active, coalesce(wal_status, ''),
       CASE WHEN slot_type = 'logical' THEN pg_wal_lsn_diff(` + curLSN + `, confirmed_flush_lsn)
            ELSE pg_wal_lsn_diff(` + curLSN + `, restart_lsn) END::bigint
FROM pg_replication_slots
WHERE slot_name NOT LIKE ` + ownFeedSlots + `
ORDER BY slot_name`

// Collect reads both views.
//
// Walsenders: LagSeconds is replay_lag; a NULL replay_lag while streaming
// means the standby has caught up and there was nothing to measure (0).
// LagBytes is sent_lsn - replay_lsn, what the standby received but has not
// applied. Any state other than streaming or catchup (startup, stopping)
// is Broken.
//
// Slots: an inactive slot, or one whose WAL is lost, is Broken. LagBytes of
// a logical slot is the WAL after its confirmed_flush_lsn; of a physical
// slot, the WAL it retains (after restart_lsn).
func (r *Replicas) Collect(ctx context.Context, q Querier, _ Target, s *health.Signals) error {
	var out []health.ReplicaSignal
	bySlot := map[string]int{}
	rows, err := q.Query(ctx, walsendersSQL)
	if err != nil {
		return fmt.Errorf("replicas: query pg_stat_replication: %w", err)
	}
	for rows.Next() {
		var (
			pid              int64
			name, state      string
			wlag, flag, rlag *float64
			lagBytes         *int64
			slot             *string
		)
		if err := rows.Scan(&pid, &name, &state, &wlag, &flag, &rlag, &lagBytes, &slot); err != nil {
			rows.Close()
			return fmt.Errorf("replicas: scan pg_stat_replication: %w", err)
		}
		rs := health.ReplicaSignal{ID: pid, Name: name, State: state}
		switch {
		case rlag != nil:
			rs.LagSeconds = *rlag
		case state == "streaming" && wlag == nil && flag == nil:
			rs.LagSeconds = 0 // caught up: no lag sample pending
		default:
			// Replay not measured yet but write/flush are: they bound the
			// replay lag from below.
			for _, l := range []*float64{wlag, flag} {
				if l != nil {
					rs.LagSeconds = max(rs.LagSeconds, *l)
				}
			}
		}
		if lagBytes != nil {
			rs.LagBytes = max(*lagBytes, 0)
		}
		rs.Broken = state != "streaming" && state != "catchup"
		if slot != nil {
			rs.ID = slotID(*slot)
			rs.Name = *slot
			bySlot[*slot] = len(out)
		}
		out = append(out, rs)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replicas: read pg_stat_replication: %w", err)
	}

	rows, err = q.Query(ctx, slotsSQL)
	if err != nil {
		return fmt.Errorf("replicas: query pg_replication_slots: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name, typ, walStatus string
			active               bool
			lag                  *int64
		)
		if err := rows.Scan(&name, &typ, &active, &walStatus, &lag); err != nil {
			return fmt.Errorf("replicas: scan pg_replication_slots: %w", err)
		}
		var lagBytes int64
		if lag != nil {
			lagBytes = max(*lag, 0)
		}
		lost := walStatus == "lost"
		if i, ok := bySlot[name]; ok {
			// The walsender knows the replay lag; the slot knows how much WAL
			// is pinned, which for a logical consumer is the real backlog.
			if typ == "logical" {
				out[i].LagBytes = max(out[i].LagBytes, lagBytes)
			}
			out[i].Broken = out[i].Broken || lost
			continue
		}
		state := "inactive"
		if lost {
			state = "lost"
		} else if active {
			state = "active" // active but not through a walsender we saw
		}
		out = append(out, health.ReplicaSignal{
			ID: slotID(name), Name: name, State: state, LagBytes: lagBytes,
			Broken: !active || lost,
		})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replicas: read pg_replication_slots: %w", err)
	}
	s.Replicas = out
	return nil
}

// slotID is a stable positive ID for a slot name.
func slotID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("slot:" + name))
	return int64(h.Sum64() >> 1)
}
