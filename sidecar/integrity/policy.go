// Package integrity turns a collection's normalised minimum cut (λ_norm,
// from package health) into its integrity state — normal, stress, critical
// or unknown — with the hysteresis of the integrity-monitor design, so that
// a noisy λ does not make the write gate flap.
package integrity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ruvector/ruvector-healing/shmproto"
)

// State is a collection's integrity state. It is shmproto.State so that the
// value written to the shared segment and the ruvector_integrity_state
// metric is the very same number.
type State = shmproto.State

// The states, with shmproto's numbering.
const (
	Normal   = shmproto.StateNormal
	Stress   = shmproto.StateStress
	Critical = shmproto.StateCritical
	Unknown  = shmproto.StateUnknown
)

// StateName returns the SQL spelling of s ("normal", ...), or "invalid(n)".
func StateName(s State) string {
	if s < shmproto.NumStates {
		return shmproto.StateNames[s]
	}
	return fmt.Sprintf("invalid(%d)", uint32(s))
}

// ParseState reads a state's SQL spelling (case-insensitive), e.g. the
// new_state of ruvector_integrity_override.
func ParseState(name string) (State, error) {
	i := slices.Index(shmproto.StateNames[:], strings.ToLower(strings.TrimSpace(name)))
	if i < 0 {
		return Unknown, fmt.Errorf("integrity: state %q: %w (want one of %s)", name, ErrRange, strings.Join(shmproto.StateNames[:], ", "))
	}
	return State(i), nil
}

// Hysteresis is the spec's hysteresis policy.
type Hysteresis struct {
	// DegradeSamples consecutive samples below threshold_high move normal
	// to stress.
	DegradeSamples int `json:"degrade_samples"`
	// CriticalSamples consecutive samples at or below threshold_low move
	// stress to critical.
	CriticalSamples int `json:"critical_samples"`
	// RestoreThresholdOffset: recovery needs λ strictly above the
	// threshold plus this offset ...
	RestoreThresholdOffset float64 `json:"restore_threshold_offset"`
	// RestoreHoldSeconds: ... continuously for at least this long.
	RestoreHoldSeconds float64 `json:"restore_hold_seconds"`
	// CooldownAfterTransitionSeconds: no transition sooner than this after
	// the previous one.
	CooldownAfterTransitionSeconds float64 `json:"cooldown_after_transition_seconds"`
}

// Policy is a collection's integrity policy (ruvector_integrity_policy_set).
type Policy struct {
	// ThresholdHigh: λ ≥ high is normal evidence, below it stress evidence.
	ThresholdHigh float64 `json:"threshold_high"`
	// ThresholdLow: λ ≤ low is critical evidence.
	ThresholdLow float64    `json:"threshold_low"`
	Hysteresis   Hysteresis `json:"hysteresis"`
}

// DefaultPolicy returns the design's defaults.
func DefaultPolicy() Policy {
	return Policy{
		ThresholdHigh: 0.8,
		ThresholdLow:  0.3,
		Hysteresis: Hysteresis{
			DegradeSamples:                 3,
			CriticalSamples:                2,
			RestoreThresholdOffset:         0.1,
			RestoreHoldSeconds:             300,
			CooldownAfterTransitionSeconds: 60,
		},
	}
}

// Kinds of policy error, for errors.Is.
var (
	ErrSyntax     = errors.New("malformed JSON")
	ErrUnknownKey = errors.New("unknown key")
	ErrType       = errors.New("wrong type")
	ErrRange      = errors.New("out of range")
)

// PolicyError is one rejected policy setting.
type PolicyError struct {
	// Key is the JSON key, "hysteresis.degrade_samples" for nested ones;
	// empty when the whole document is at fault.
	Key string
	// Value is the offending value as JSON text.
	Value  string
	Reason string
	// Kind is one of the Err* sentinels.
	Kind error
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	b.WriteString("integrity: policy: ")
	if e.Key != "" {
		fmt.Fprintf(&b, "%s: ", e.Key)
	}
	if e.Value != "" {
		fmt.Fprintf(&b, "value %s: ", e.Value)
	}
	fmt.Fprintf(&b, "%s: %s", e.Kind, e.Reason)
	return b.String()
}

func (e *PolicyError) Unwrap() error { return e.Kind }

// Validate checks ranges and returns the first violation as a
// *PolicyError: thresholds in (0, 1] with low < high, offset in [0, 1)
// (high + offset may exceed 1: recovery to normal is then impossible, which
// an operator may want), samples >= 1, seconds >= 0.
func (p Policy) Validate() error {
	num := func(key string, v float64, ok bool, why string) error {
		if ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return nil
		}
		return &PolicyError{Key: key, Value: fmt.Sprint(v), Reason: why, Kind: ErrRange}
	}
	h := p.Hysteresis
	for _, err := range []error{
		num("threshold_high", p.ThresholdHigh, p.ThresholdHigh > 0 && p.ThresholdHigh <= 1, "must be in (0, 1]"),
		num("threshold_low", p.ThresholdLow, p.ThresholdLow > 0 && p.ThresholdLow <= 1, "must be in (0, 1]"),
		num("threshold_low", p.ThresholdLow, p.ThresholdLow < p.ThresholdHigh, fmt.Sprintf("must be below threshold_high (%v)", p.ThresholdHigh)),
		num("hysteresis.degrade_samples", float64(h.DegradeSamples), h.DegradeSamples >= 1, "must be at least 1"),
		num("hysteresis.critical_samples", float64(h.CriticalSamples), h.CriticalSamples >= 1, "must be at least 1"),
		num("hysteresis.restore_threshold_offset", h.RestoreThresholdOffset, h.RestoreThresholdOffset >= 0 && h.RestoreThresholdOffset < 1, "must be in [0, 1)"),
		num("hysteresis.restore_hold_seconds", h.RestoreHoldSeconds, h.RestoreHoldSeconds >= 0, "must be >= 0"),
		num("hysteresis.cooldown_after_transition_seconds", h.CooldownAfterTransitionSeconds, h.CooldownAfterTransitionSeconds >= 0, "must be >= 0"),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// ParsePolicy reads a policy document strictly: unknown keys, nulls, wrong
// types and out-of-range values are rejected with a *PolicyError naming the
// key. Keys left out keep their DefaultPolicy value, so {"threshold_high":
// 0.9} is a complete policy.
func ParsePolicy(data []byte) (Policy, error) {
	p := DefaultPolicy()
	top, err := object("", data)
	if err != nil {
		return p, err
	}
	for _, k := range sortedKeys(top) {
		raw := top[k]
		switch k {
		case "threshold_high":
			err = number(k, raw, &p.ThresholdHigh)
		case "threshold_low":
			err = number(k, raw, &p.ThresholdLow)
		case "hysteresis":
			err = p.Hysteresis.parse(raw)
		default:
			err = &PolicyError{Key: k, Reason: "not a policy setting (threshold_high, threshold_low, hysteresis)", Kind: ErrUnknownKey}
		}
		if err != nil {
			return DefaultPolicy(), err
		}
	}
	if err := p.Validate(); err != nil {
		return DefaultPolicy(), err
	}
	return p, nil
}

func (h *Hysteresis) parse(data []byte) error {
	obj, err := object("hysteresis", data)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(obj) {
		key, raw := "hysteresis."+k, obj[k]
		switch k {
		case "degrade_samples":
			err = integer(key, raw, &h.DegradeSamples)
		case "critical_samples":
			err = integer(key, raw, &h.CriticalSamples)
		case "restore_threshold_offset":
			err = number(key, raw, &h.RestoreThresholdOffset)
		case "restore_hold_seconds":
			err = number(key, raw, &h.RestoreHoldSeconds)
		case "cooldown_after_transition_seconds":
			err = number(key, raw, &h.CooldownAfterTransitionSeconds)
		default:
			err = &PolicyError{Key: key, Reason: "not a hysteresis setting", Kind: ErrUnknownKey}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// object decodes a JSON object into its raw members, rejecting duplicate
// keys (the last one would silently win otherwise).
func object(key string, data []byte) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		kind, why := ErrType, "must be a JSON object"
		if !json.Valid(trimmed) {
			kind, why = ErrSyntax, "not valid JSON"
		}
		return nil, &PolicyError{Key: key, Value: shorten(trimmed), Reason: why, Kind: kind}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	out := map[string]json.RawMessage{}
	if _, err := dec.Token(); err != nil {
		return nil, &PolicyError{Key: key, Reason: err.Error(), Kind: ErrSyntax}
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &PolicyError{Key: key, Reason: err.Error(), Kind: ErrSyntax}
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, &PolicyError{Key: join(key, name), Reason: err.Error(), Kind: ErrSyntax}
		}
		if _, dup := out[name]; dup {
			return nil, &PolicyError{Key: join(key, name), Reason: "duplicate key", Kind: ErrSyntax}
		}
		out[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, &PolicyError{Key: key, Reason: err.Error(), Kind: ErrSyntax}
	}
	if dec.More() {
		return nil, &PolicyError{Key: key, Reason: "trailing data after the object", Kind: ErrSyntax}
	}
	return out, nil
}

func join(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func number(key string, raw json.RawMessage, dst *float64) error {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || !(t[0] == '-' || (t[0] >= '0' && t[0] <= '9')) {
		return &PolicyError{Key: key, Value: shorten(t), Reason: "must be a number", Kind: ErrType}
	}
	var v float64
	if err := json.Unmarshal(t, &v); err != nil {
		return &PolicyError{Key: key, Value: shorten(t), Reason: err.Error(), Kind: ErrRange}
	}
	*dst = v
	return nil
}

func integer(key string, raw json.RawMessage, dst *int) error {
	var v float64
	if err := number(key, raw, &v); err != nil {
		return err
	}
	if v != math.Trunc(v) || math.Abs(v) > 1<<31 {
		return &PolicyError{Key: key, Value: shorten(bytes.TrimSpace(raw)), Reason: "must be a whole number", Kind: ErrType}
	}
	*dst = int(v)
	return nil
}

func shorten(b []byte) string {
	if len(b) > 40 {
		return string(b[:37]) + "..."
	}
	return string(b)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
