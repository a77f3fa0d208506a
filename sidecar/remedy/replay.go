package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// DefaultReplayGrace is how long a standby's replay must have stalled
// before resume_replay ends a pause: long enough for a person who paused
// replay on purpose (to look at a standby before a change replays) to be
// seen acting, short enough that the standby is back within the 5 minutes
// the scorecard allows every class.
const DefaultReplayGrace = 2 * time.Minute

// replayCatchUpWait bounds how long Execute watches a resumed standby
// replay the backlog it had received.
const replayCatchUpWait = 30 * time.Second

// ResumeReplay is resume_replay: it resumes WAL replay on a standby whose
// replay is paused (pg_wal_replay_pause), the one stall of replication
// lag that less WAL on the primary cannot help and a call on the standby
// cures. The engine offers it only a stalled replay, once the stall has
// outlasted Grace (strategy.ReplayStallRemedy).
//
// It acts only on standbys named in Standbys: naming one is the operator's
// consent that the healer may end a pause of its replay. Before acting it
// checks, on the standby, that it is in recovery, that it is a standby of
// this primary (the same system identifier), and that no recovery target
// is set: at a reached recovery target, pg_wal_replay_resume ends recovery
// and promotes the server. A stall that is not a pause (a recovery
// conflict waiting on a standby query, a startup process that does not
// progress) is left to a person. Rollback pauses replay again where
// Execute resumed it, unless it is paused again already or was promoted.
type ResumeReplay struct {
	// Standbys maps a replica's name as pg_stat_replication on the
	// primary gives it (its slot name, or else its application_name) to
	// a connection string for that standby. The role needs EXECUTE on
	// pg_wal_replay_resume and pg_wal_replay_pause (or superuser).
	Standbys map[string]string
	// Grace is how long replay must have stalled first (default
	// DefaultReplayGrace).
	Grace time.Duration
	// Dial connects to the primary (its system identifier).
	Dial Dialer

	// One resume at a time: every collection sees the same replicas, and
	// their attempts would otherwise race on one standby.
	mu sync.Mutex
}

// replayAction is the rollback record of one resumed standby. The
// connection string is not recorded (it may carry a password); the
// rollback finds it by name.
type replayAction struct {
	Replica string `json:"replica"`
	// State is pg_get_wal_replay_pause_state() before the resume.
	State string `json:"state"`
	// ReplayLSN is pg_last_wal_replay_lsn() before the resume.
	ReplayLSN string `json:"replay_lsn"`
}

func (*ResumeReplay) Name() string { return "resume_replay" }
func (*ResumeReplay) Handles() []classify.Class {
	return []classify.Class{classify.ClassReplicationLag}
}
func (*ResumeReplay) Impact() float64                  { return 0.05 }
func (*ResumeReplay) EstimatedDuration() time.Duration { return replayCatchUpWait }
func (*ResumeReplay) Reversible() bool                 { return true }

// ReplayStallGrace implements strategy.ReplayStallRemedy.
func (r *ResumeReplay) ReplayStallGrace() time.Duration {
	if r.Grace > 0 {
		return r.Grace
	}
	return DefaultReplayGrace
}

// Available implements strategy.Availability: without a standby to reach
// there is nothing it can do.
func (r *ResumeReplay) Available(context.Context) (bool, string) {
	if len(r.Standbys) == 0 {
		return false, "no standby connection configured (--standby NAME=DSN)"
	}
	return true, ""
}

// standbyTarget is one stalled replica of the problem.
type standbyTarget struct {
	name    string
	dsn     string
	stalled float64 // seconds
}

// targets are the problem's stalled replicas, by name, and why the others
// are left alone.
func (r *ResumeReplay) targets(rc *strategy.Context) ([]standbyTarget, []string) {
	ids := slices.Sorted(maps.Keys(rc.Metrics.ReplicaReplayStalledSeconds))
	if p := rc.Problem.ReplicationLag; p != nil && len(p.ReplicaIDs) > 0 {
		ids = slices.DeleteFunc(ids, func(id int64) bool { return !slices.Contains(p.ReplicaIDs, id) })
	}
	var out []standbyTarget
	var skipped []string
	for _, id := range ids {
		name := rc.Metrics.ReplicaNames[id]
		dsn, ok := r.Standbys[name]
		if name == "" || !ok {
			skipped = append(skipped, fmt.Sprintf("%s: no connection configured for it", orID(name, id)))
			continue
		}
		out = append(out, standbyTarget{name: name, dsn: dsn, stalled: rc.Metrics.ReplicaReplayStalledSeconds[id]})
	}
	return out, skipped
}

func orID(name string, id int64) string {
	if name == "" {
		return fmt.Sprintf("replica %d", id)
	}
	return name
}

// standbyState is what Execute and Plan read on a standby.
type standbyState struct {
	pause     string // pg_get_wal_replay_pause_state()
	replayLSN string
	refuse    string // why it must not be resumed, "" when it may
}

// inspect connects to the standby and reads whether its replay may be
// resumed.
func (r *ResumeReplay) inspect(ctx context.Context, primaryID int64, t standbyTarget) (*pgx.Conn, standbyState, error) {
	conn, err := pgx.Connect(ctx, t.dsn)
	if err != nil {
		return nil, standbyState{}, fmt.Errorf("resume_replay: connect to standby %s: %w", t.name, err)
	}
	var st standbyState
	var inRecovery bool
	var sysID int64
	var targets string
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()),
			CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
			coalesce(pg_last_wal_replay_lsn()::text, ''),
			concat_ws(', ', 'recovery_target = ' || quote_literal(nullif(current_setting('recovery_target'), '')),
				'recovery_target_lsn = ' || quote_literal(nullif(current_setting('recovery_target_lsn'), '')),
				'recovery_target_name = ' || quote_literal(nullif(current_setting('recovery_target_name'), '')),
				'recovery_target_time = ' || quote_literal(nullif(current_setting('recovery_target_time'), '')),
				'recovery_target_xid = ' || quote_literal(nullif(current_setting('recovery_target_xid'), '')))`).
		Scan(&inRecovery, &sysID, &st.pause, &st.replayLSN, &targets)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, standbyState{}, fmt.Errorf("resume_replay: read standby %s: %w", t.name, err)
	}
	switch {
	case !inRecovery:
		st.refuse = "not in recovery (promoted?)"
	case sysID != primaryID:
		st.refuse = fmt.Sprintf("system identifier %d, the primary's is %d: not a standby of this primary", sysID, primaryID)
	case targets != "":
		// At a reached target, a resume ends recovery: a promotion is not
		// the healer's call.
		st.refuse = "a recovery target is set (" + targets + "); resuming could end recovery"
	case st.pause == "not paused":
		st.refuse = "replay is not paused: a recovery conflict with a standby query, or a startup process that does not progress"
	}
	return conn, st, nil
}

func (r *ResumeReplay) primaryID(ctx context.Context) (int64, error) {
	if r.Dial == nil {
		return 0, errors.New("resume_replay: no dialer for the primary")
	}
	conn, err := r.Dial(ctx)
	if err != nil {
		return 0, fmt.Errorf("resume_replay: connect to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var id int64
	if err := conn.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&id); err != nil {
		return 0, fmt.Errorf("resume_replay: primary's system identifier: %w", err)
	}
	return id, nil
}

// Plan reports which standbys Execute would resume.
func (r *ResumeReplay) Plan(ctx context.Context, rc *strategy.Context) (Plan, error) {
	p := Plan{Strategy: r.Name()}
	targets, skipped := r.targets(rc)
	pid, err := r.primaryID(ctx)
	if err != nil {
		return p, err
	}
	for _, t := range targets {
		conn, st, err := r.inspect(ctx, pid, t)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", t.name, err))
			continue
		}
		conn.Close(context.WithoutCancel(ctx))
		if st.refuse != "" {
			skipped = append(skipped, t.name+": "+st.refuse)
			continue
		}
		p.Steps = append(p.Steps, Step{Action: "resume_replay", Target: t.name,
			Detail: map[string]any{"pause_state": st.pause, "replay_lsn": st.replayLSN, "stalled_seconds": t.stalled}})
	}
	if len(p.Steps) == 0 {
		p.Noop = true
		p.Reason = noStandbyReason(skipped)
	}
	return p, nil
}

func noStandbyReason(skipped []string) string {
	if len(skipped) == 0 {
		return "no replica's replay is stalled"
	}
	return "no stalled standby can be resumed: " + strings.Join(skipped, "; ")
}

// Execute resumes replay on each stalled standby it may, and watches
// replay move again.
func (r *ResumeReplay) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	targets, skipped := r.targets(rc)
	if len(targets) == 0 {
		return strategy.NoopResult(noStandbyReason(skipped)), nil
	}
	pid, err := r.primaryID(ctx)
	if err != nil {
		return strategy.Result{}, err
	}
	resumed := map[string]any{}
	moved := 0
	for _, t := range targets {
		conn, st, err := r.inspect(ctx, pid, t)
		if err != nil {
			// One unreachable standby does not keep the others paused.
			skipped = append(skipped, fmt.Sprintf("%s: %v", t.name, err))
			continue
		}
		done, err := func() (map[string]any, error) {
			defer conn.Close(context.WithoutCancel(ctx))
			if st.refuse != "" {
				skipped = append(skipped, t.name+": "+st.refuse)
				return nil, nil
			}
			if err := rc.Record(replayAction{Replica: t.name, State: st.pause, ReplayLSN: st.replayLSN}); err != nil {
				return nil, err
			}
			if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
				return nil, fmt.Errorf("resume_replay: resume replay on %s: %w", t.name, err)
			}
			after, caught, err := waitReplayCatchesUp(ctx, conn)
			if err != nil {
				return nil, fmt.Errorf("resume_replay: watch replay on %s: %w", t.name, err)
			}
			return map[string]any{"pause_state": st.pause, "stalled_seconds": t.stalled,
				"replay_lsn_before": st.replayLSN, "replay_lsn_after": after, "replay_moved": after != st.replayLSN,
				"caught_up": caught}, nil
		}()
		if err != nil {
			return strategy.Result{ActionsTaken: len(resumed), Metadata: map[string]any{"resumed": resumed}}, err
		}
		if done == nil {
			continue
		}
		resumed[t.name] = done
		if done["replay_moved"] == true {
			moved++
		}
	}
	if len(resumed) == 0 {
		return strategy.NoopResult(noStandbyReason(skipped)), nil
	}
	md := map[string]any{"resumed": resumed}
	if len(skipped) > 0 {
		md["skipped"] = skipped
	}
	return strategy.Result{Success: moved == len(resumed), ActionsTaken: len(resumed), Metadata: md}, nil
}

// waitReplayCatchesUp returns the standby's replay position once replay
// has reached the WAL it had received when it was resumed, or where it
// stands after replayCatchUpWait: the verification that follows reads the
// lag, which a replay still working through the backlog keeps high.
func waitReplayCatchesUp(ctx context.Context, conn *pgx.Conn) (string, bool, error) {
	deadline := time.Now().Add(replayCatchUpWait)
	var received string
	if err := conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, '')`).Scan(&received); err != nil {
		return "", false, err
	}
	for {
		var lsn string
		var caught bool
		if err := conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn()::text, ''),
				coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, received).Scan(&lsn, &caught); err != nil {
			return "", false, err
		}
		if caught || received == "" || time.Now().After(deadline) {
			return lsn, caught, nil
		}
		select {
		case <-ctx.Done():
			return lsn, false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Rollback pauses replay again on the standbys Execute resumed, as the
// operator (or whatever paused them) had left them. A standby whose replay
// is paused again already, or that was promoted since, is left alone.
func (r *ResumeReplay) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	var errs []error
	for _, raw := range acts {
		var a replayAction
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("resume_replay: decode rollback record: %w", err)
		}
		dsn, ok := r.Standbys[a.Replica]
		if !ok {
			errs = append(errs, fmt.Errorf("resume_replay: standby %s is no longer configured; its replay stays resumed", a.Replica))
			continue
		}
		if err := repause(ctx, a.Replica, dsn); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func repause(ctx context.Context, name, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("resume_replay: connect to standby %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	var state string
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
			CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END`).Scan(&inRecovery, &state); err != nil {
		return fmt.Errorf("resume_replay: read standby %s: %w", name, err)
	}
	if !inRecovery || state != "not paused" {
		return nil
	}
	if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		return fmt.Errorf("resume_replay: pause replay on %s again: %w", name, err)
	}
	return nil
}
