package collect

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
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
	// StallAfter is how long a standby's replay_lsn must stay put while
	// WAL it has received waits to be applied before the replica reads as
	// ReplayStalled (default: two cadences, at least 10 s, so at least
	// three samples agree and one slow apply of a large record is not a
	// stall).
	StallAfter time.Duration

	// now is the clock (tests step it); nil means time.Now.
	now func() time.Time

	mu     sync.Mutex
	replay map[int64]replayTrack // by ReplicaSignal.ID
}

// replayTrack follows one replica's replay position across samples. The
// collector is server-wide but called once per collection per period, so
// it keys on time, not on a count of calls.
type replayTrack struct {
	lsn int64 // replay_lsn as bytes from 0/0
	// pendingSince is when replay_lsn was first seen at lsn with received
	// WAL waiting behind it (zero: nothing pending at this lsn).
	pendingSince time.Time
	// rateLSN and rateAt are the base of ReplayBytesPerSec; rate is the
	// last one computed (kept when calls come back to back).
	rateLSN int64
	rateAt  time.Time
	rate    float64
}

// NewReplicas returns the replicas collector.
func NewReplicas() *Replicas { return &Replicas{} }

func (r *Replicas) Name() string { return "replicas" }

func (r *Replicas) Cadence() time.Duration { return orDefault(r.Interval, 5*time.Second) }

func (r *Replicas) stallAfter() time.Duration {
	if r.StallAfter > 0 {
		return r.StallAfter
	}
	return max(2*r.Cadence(), 10*time.Second)
}

func (r *Replicas) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// The current WAL position: on a standby pg_current_wal_lsn() errors, and
// the position it has replayed is the one its cascaded replicas chase.
const curLSN = `(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)`

const walsendersSQL = `
SELECT w.pid, coalesce(nullif(w.application_name, ''), host(w.client_addr), 'walsender ' || w.pid),
       coalesce(w.state, ''),
       extract(epoch FROM w.write_lag)::float8, extract(epoch FROM w.flush_lag)::float8,
       extract(epoch FROM w.replay_lag)::float8,
       pg_wal_lsn_diff(w.sent_lsn, w.replay_lsn)::bigint,
       sl.slot_name,
       pg_wal_lsn_diff(w.replay_lsn, '0/0')::bigint, pg_wal_lsn_diff(w.flush_lsn, '0/0')::bigint
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
	var positions []replayPos // parallel to the walsenders in out
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
			replay, flush    *int64
		)
		if err := rows.Scan(&pid, &name, &state, &wlag, &flag, &rlag, &lagBytes, &slot, &replay, &flush); err != nil {
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
		positions = append(positions, replayPos{replay: replay, flush: flush})
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
	r.trackReplay(out[:len(positions)], positions, r.clock())
	s.Replicas = out
	return nil
}

// replayPos is a walsender's replay_lsn and flush_lsn as bytes from 0/0
// (nil while the standby has not reported them).
type replayPos struct{ replay, flush *int64 }

// trackReplay sets the replay fields of the walsenders in ws (pos[i] is
// ws[i]'s) from how their replay_lsn moved since earlier samples, and
// forgets replicas that are gone.
//
// A replica is ReplayStalled when its walsender streams, its flush_lsn is
// ahead of its replay_lsn (received WAL is waiting), and replay_lsn has
// stayed where it is, with WAL waiting, for at least StallAfter. The clock
// starts when WAL is first seen waiting at that replay_lsn, not when
// replay_lsn last moved: an idle standby that is caught up has a still
// replay_lsn too, and must not read as stalled the moment new WAL arrives.
func (r *Replicas) trackReplay(ws []health.ReplicaSignal, pos []replayPos, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.replay
	r.replay = make(map[int64]replayTrack, len(ws))
	for i := range ws {
		p := pos[i]
		if p.replay == nil {
			continue
		}
		rs := &ws[i]
		tr, seen := prev[rs.ID]
		moved := !seen || tr.lsn != *p.replay
		waiting := p.flush != nil && *p.flush > *p.replay
		switch {
		case !waiting:
			tr.pendingSince = time.Time{}
		case moved || tr.pendingSince.IsZero():
			tr.pendingSince = now
		}
		tr.lsn = *p.replay
		// The rate needs a base at least half a period old: the collector
		// runs once per collection each period, so calls can come back to
		// back, and a delta over milliseconds says nothing.
		switch {
		case !seen || *p.replay < tr.rateLSN:
			tr.rateLSN, tr.rateAt, tr.rate = *p.replay, now, 0
		case now.Sub(tr.rateAt) >= r.Cadence()/2:
			tr.rate = float64(*p.replay-tr.rateLSN) / now.Sub(tr.rateAt).Seconds()
			tr.rateLSN, tr.rateAt = *p.replay, now
		}
		rs.ReplayBytesPerSec = tr.rate
		if waiting && !tr.pendingSince.IsZero() {
			rs.ReplayStalledSeconds = now.Sub(tr.pendingSince).Seconds()
			rs.ReplayStalled = rs.State == "streaming" && now.Sub(tr.pendingSince) >= r.stallAfter()
		}
		r.replay[rs.ID] = tr
	}
}

// slotID is a stable positive ID for a slot name.
func slotID(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("slot:" + name))
	return int64(h.Sum64() >> 1)
}
