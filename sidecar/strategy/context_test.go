package strategy

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestContextClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	rc := &Context{Started: start, Timeout: time.Minute, Now: func() time.Time { return now }}
	tests := []struct {
		at        time.Duration
		elapsed   time.Duration
		remaining time.Duration
	}{
		{0, 0, time.Minute},
		{20 * time.Second, 20 * time.Second, 40 * time.Second},
		{time.Minute, time.Minute, 0},
		{2 * time.Minute, 2 * time.Minute, 0},
	}
	for _, tc := range tests {
		now = start.Add(tc.at)
		if rc.Elapsed() != tc.elapsed || rc.Remaining() != tc.remaining {
			t.Errorf("at %v: elapsed %v remaining %v", tc.at, rc.Elapsed(), rc.Remaining())
		}
	}
	rc.Timeout = 0
	if rc.Remaining() != 0 {
		t.Errorf("no timeout: remaining %v", rc.Remaining())
	}
	real := &Context{Started: time.Now().Add(-time.Second)}
	if real.Elapsed() < time.Second {
		t.Errorf("default clock: elapsed %v", real.Elapsed())
	}
}

func TestContextSample(t *testing.T) {
	rc := &Context{Collection: "embeddings"}
	if _, err := rc.SampleIntegrity(context.Background()); !errors.Is(err, ErrNoSampler) {
		t.Fatalf("no sampler: %v", err)
	}
	boom := errors.New("monitor down")
	rc.Sample = func(context.Context) (float64, error) { return 0, boom }
	if _, err := rc.SampleIntegrity(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("sampler error not wrapped: %v", err)
	}
	rc.Sample = func(ctx context.Context) (float64, error) { return 0.72, ctx.Err() }
	if v, err := rc.SampleIntegrity(context.Background()); v != 0.72 || err != nil {
		t.Fatalf("sample %v %v", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := rc.SampleIntegrity(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ctx not passed through: %v", err)
	}
}

func TestContextImprovement(t *testing.T) {
	tests := []struct{ initial, now, want float64 }{
		{0.4, 0.5, 0.25},
		{0.5, 0.4, -0.2},
		{0.5, 0.5, 0},
		{0, 0.5, 0},
		{-1, 0.5, 0},
	}
	for _, tc := range tests {
		rc := &Context{InitialLambda: tc.initial}
		if got := rc.Improvement(tc.now); got < tc.want-1e-12 || got > tc.want+1e-12 {
			t.Errorf("Improvement(%v→%v) = %v, want %v", tc.initial, tc.now, got, tc.want)
		}
	}
}

type failingRecorder struct{ err error }

func (f failingRecorder) Record(any) error                    { return f.err }
func (f failingRecorder) Actions() ([]json.RawMessage, error) { return nil, f.err }

func TestContextRecorder(t *testing.T) {
	rc := &Context{}
	if err := rc.Record(1); !errors.Is(err, ErrNoRecorder) {
		t.Errorf("record without recorder: %v", err)
	}
	if _, err := rc.Actions(); !errors.Is(err, ErrNoRecorder) {
		t.Errorf("actions without recorder: %v", err)
	}
	disk := errors.New("disk full")
	rc.Recorder = failingRecorder{disk}
	if err := rc.Record(1); !errors.Is(err, disk) {
		t.Errorf("recorder error not wrapped: %v", err)
	}
	if _, err := rc.Actions(); !errors.Is(err, disk) {
		t.Errorf("recorder error not wrapped: %v", err)
	}

	mr := &MemoryRecorder{}
	rc.Recorder = mr
	type move struct {
		From, To int64
	}
	for _, m := range []move{{1, 2}, {3, 4}} {
		if err := rc.Record(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Record(make(chan int)); err == nil {
		t.Error("unmarshalable action accepted")
	}
	acts, err := rc.Actions()
	if err != nil || len(acts) != 2 {
		t.Fatalf("actions %v %v", acts, err)
	}
	var second move
	if err := json.Unmarshal(acts[1], &second); err != nil || second != (move{3, 4}) {
		t.Errorf("decoded %+v %v", second, err)
	}
	acts[0] = json.RawMessage(`"tampered"`)
	again, _ := mr.Actions()
	if string(again[0]) != `{"From":1,"To":2}` {
		t.Errorf("Actions exposes internal storage: %s", again[0])
	}
}

func TestResultHelpers(t *testing.T) {
	r := NoopResult("already at max replicas")
	if !r.Noop || r.Success || r.ActionsTaken != 0 || r.Metadata["noop_reason"] != "already at max replicas" {
		t.Errorf("noop %+v", r)
	}
	data, _ := json.Marshal(Result{Success: true, ActionsTaken: 2, Improvement: 0.25})
	if string(data) != `{"success":true,"actions_taken":2,"improvement":0.25,"noop":false}` {
		t.Errorf("json %s", data)
	}
	for _, st := range []IntegrityState{StateNormal, StateStress, StateCritical} {
		if !st.Valid() {
			t.Errorf("%s invalid", st)
		}
	}
	if IntegrityState("degraded").Valid() {
		t.Error("unknown state valid")
	}
}
