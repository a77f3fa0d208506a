package healing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Segment is the part of the shared segment the segment-based strategies
// and the sampler use (*shmproto.Segment).
type Segment interface {
	Find(name string, dbOID uint32) (shmproto.Collection, error)
	ReadThrottle(i int, op shmproto.Op) (shmproto.Throttle, error)
	SetSidecarThrottleFor(i int, op shmproto.Op, pct uint32, now time.Time, outcomeID int64) error
	ReadIntegrity(i int) (shmproto.Integrity, error)
}

// SegmentSampler reads λ from the segment, where the integrity monitor
// publishes it every sample.
type SegmentSampler struct {
	Segment     Segment
	DatabaseOID uint32
}

// Sample implements Sampler.
func (s SegmentSampler) Sample(_ context.Context, collection string, collectionID int64) (float64, error) {
	c, err := findSlot(s.Segment, collection, collectionID, s.DatabaseOID)
	if err != nil {
		return 0, err
	}
	in, err := s.Segment.ReadIntegrity(c.Slot)
	if err != nil {
		return 0, fmt.Errorf("healing: read λ of %q: %w", collection, err)
	}
	if in.Updated.IsZero() {
		return 0, fmt.Errorf("healing: λ of %q was never published", collection)
	}
	return in.Lambda, nil
}

func findSlot(seg Segment, name string, id int64, dbOID uint32) (shmproto.Collection, error) {
	c, err := seg.Find(name, dbOID)
	if err != nil {
		return shmproto.Collection{}, fmt.Errorf("healing: collection %q in the segment: %w", name, err)
	}
	if int64(c.CollectionID) != id {
		return shmproto.Collection{}, fmt.Errorf("healing: segment slot of %q belongs to collection %d, not %d (re-registered?)",
			name, c.CollectionID, id)
	}
	return c, nil
}

// ThrottleIngestion is the design's throttle_ingestion: insert throttle 50%
// in stress, 90% in critical, bulk_insert 10 points more (capped at 100),
// through the segment, naming the attempt's outcome id so that the write
// gate's errors for refused writes point at it. It never overrides a manual
// throttle.
//
// It also handles replication_lag (the design names no strategy for it):
// ingestion is what produces the WAL a lagging replica has to replay, so
// slowing it is the direct, reversible lever; pause_maintenance is the
// other one.
type ThrottleIngestion struct {
	Segment     Segment
	DatabaseOID uint32
}

// throttleAction is the rollback record: the op's setting before the change.
type throttleAction struct {
	CollectionID int64  `json:"collection_id"`
	Op           string `json:"op"`
	PreviousPct  uint32 `json:"previous_pct"`
	// PreviousBy is who set the previous value; only a sidecar value is
	// restored, since a manual one is the watchdog's and the table's to keep.
	PreviousBy string `json:"previous_by"`
	// PreviousOutcome is the outcome that set a previous sidecar value,
	// restored with it.
	PreviousOutcome int64  `json:"previous_outcome_id,omitempty"`
	NewPct          uint32 `json:"new_pct"`
}

func (ThrottleIngestion) Name() string { return "throttle_ingestion" }
func (ThrottleIngestion) Handles() []classify.Class {
	return []classify.Class{classify.ClassHotspotCongestion, classify.ClassMemoryPressure, classify.ClassReplicationLag}
}
func (ThrottleIngestion) Impact() float64                  { return 0.4 }
func (ThrottleIngestion) EstimatedDuration() time.Duration { return 5 * time.Second }
func (ThrottleIngestion) Reversible() bool                 { return true }

// Execute applies the throttle.
func (t ThrottleIngestion) Execute(ctx context.Context, rc *strategy.Context) (strategy.Result, error) {
	var pct uint32
	switch rc.State {
	case strategy.StateStress:
		pct = 50
	case strategy.StateCritical:
		pct = 90
	default:
		return strategy.NoopResult(fmt.Sprintf("state %q needs no throttle", rc.State)), nil
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return strategy.Result{}, err
	}
	targets := []struct {
		op  shmproto.Op
		pct uint32
	}{{shmproto.OpInsert, pct}, {shmproto.OpBulkInsert, min(pct+10, 100)}}
	now := time.Now()
	// Check both ops before touching either: a manual throttle on one op
	// means a human is steering this collection's writes.
	prev := make([]shmproto.Throttle, len(targets))
	for i, tg := range targets {
		th, err := t.Segment.ReadThrottle(c.Slot, tg.op)
		if err != nil {
			return strategy.Result{}, fmt.Errorf("read %s throttle: %w", shmproto.OpNames[tg.op], err)
		}
		if th.SetBy == shmproto.SetByManual && (th.Expires.IsZero() || th.Expires.After(now)) {
			return strategy.Result{}, fmt.Errorf("a manual %s throttle of %d%% is in force on %q; not overriding it: %w",
				shmproto.OpNames[tg.op], th.Pct, rc.Collection, shmproto.ErrManualPinned)
		}
		prev[i] = th
	}
	done := 0
	for i, tg := range targets {
		if err := ctx.Err(); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := rc.Record(throttleAction{CollectionID: rc.CollectionID, Op: shmproto.OpNames[tg.op],
			PreviousPct: prev[i].Pct, PreviousBy: shmproto.SetByNames[prev[i].SetBy], PreviousOutcome: prev[i].OutcomeID,
			NewPct: tg.pct}); err != nil {
			return strategy.Result{ActionsTaken: done}, err
		}
		if err := t.Segment.SetSidecarThrottleFor(c.Slot, tg.op, tg.pct, time.Now(), rc.OutcomeID); err != nil {
			return strategy.Result{ActionsTaken: done}, fmt.Errorf("set %s throttle: %w", shmproto.OpNames[tg.op], err)
		}
		done++
	}
	return strategy.Result{Success: true, ActionsTaken: done,
		Metadata: map[string]any{"throttle_pct": pct, "bulk_insert_pct": targets[1].pct}}, nil
}

// Rollback restores each op's previous sidecar value (0 releases it), last
// change first. A manual throttle set since then wins and is left alone.
func (t ThrottleIngestion) Rollback(ctx context.Context, rc *strategy.Context) error {
	acts, err := rc.Actions()
	if err != nil {
		return err
	}
	c, err := findSlot(t.Segment, rc.Collection, rc.CollectionID, t.DatabaseOID)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(acts) - 1; i >= 0; i-- {
		var a throttleAction
		if err := json.Unmarshal(acts[i], &a); err != nil {
			errs = append(errs, fmt.Errorf("action %d: %w", i, err))
			continue
		}
		op, ok := opByName(a.Op)
		if !ok {
			errs = append(errs, fmt.Errorf("action %d: unknown op %q", i, a.Op))
			continue
		}
		restore, outcome := uint32(0), int64(0)
		if a.PreviousBy == shmproto.SetByNames[shmproto.SetBySidecar] {
			restore, outcome = a.PreviousPct, a.PreviousOutcome
		}
		err := t.Segment.SetSidecarThrottleFor(c.Slot, op, restore, time.Now(), outcome)
		if err != nil && !errors.Is(err, shmproto.ErrManualPinned) {
			errs = append(errs, fmt.Errorf("restore %s throttle to %d%%: %w", a.Op, restore, err))
		}
	}
	return errors.Join(errs...)
}

func opByName(name string) (shmproto.Op, bool) {
	for i, n := range shmproto.OpNames {
		if n == name {
			return shmproto.Op(i), true
		}
	}
	return 0, false
}
