package healconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// hint says what a top-level key accepts; it becomes the SQL HINT.
func hint(key string) string {
	switch key {
	case KeyEnabled:
		return "enabled takes true or false (default true)"
	case KeyMinHealingInterval:
		return fmt.Sprintf("min_healing_interval_seconds takes a whole number of seconds from 0 to %d (default 300)", MaxHealingIntervalSeconds)
	case KeyMaxAttemptsPerHour:
		return fmt.Sprintf("max_attempts_per_hour takes a whole number from %d to %d, counted per attempt_window_seconds (default 3); to stop healing set enabled to false", MinAttempts, MaxAttempts)
	case KeyAttemptWindow:
		return fmt.Sprintf("attempt_window_seconds takes a whole number of seconds from %d to %d (default 3600)", MinAttemptWindowSeconds, MaxAttemptWindowSeconds)
	case KeyMaxAutoHealImpact:
		return "max_auto_heal_impact takes a number from 0 to 1 (default 0.5)"
	case KeyRequireApproval:
		return "require_approval takes an array of problem classes: " + strings.Join(classNames(), ", ") + " (default [])"
	case KeyRequireApprovalStrategies:
		return `require_approval_strategies takes an array of strategy names (default ["scale_replicas"])`
	case KeyLearningEnabled:
		return "learning_enabled takes true or false (default true)"
	case KeyStabilization:
		return fmt.Sprintf("stabilization_seconds takes a whole number of seconds from 0 to %d (default 10)", MaxStabilizationSeconds)
	case KeyMaintenancePauseBelow:
		return fmt.Sprintf("maintenance_pause_priority_below takes a whole number from 0 to %d: pause_maintenance pauses maintenance jobs with a lower priority (default 50)", MaxPausePriorityBelow)
	case KeyClassifierThresholds:
		return "classifier_thresholds takes an object with any of: " + strings.Join(ThresholdKeys(), ", ")
	}
	return ""
}

func classNames() []string {
	out := []string{}
	for _, c := range classify.Classes() {
		out = append(out, string(c))
	}
	return out
}

// hintFor finds the hint of key, which may be nested ("a.b") or indexed ("a[2]").
func hintFor(key string) string {
	base := key
	if i := strings.IndexByte(base, '['); i >= 0 {
		base = base[:i]
	}
	if h := hint(base); h != "" {
		return h
	}
	if sub, ok := strings.CutPrefix(base, KeyClassifierThresholds+"."); ok {
		d := classify.DefaultThresholds()
		for _, f := range thresholdFields() {
			if f.key != sub {
				continue
			}
			if f.ival != nil {
				return fmt.Sprintf("%s takes a whole number (default %d)", base, *f.ival(&d))
			}
			return fmt.Sprintf("%s takes a number (default %s)", base, fmtFloat(*f.fval(&d)))
		}
	}
	return ""
}

// jsonKind names the JSON type of raw for messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	default:
		return "a number"
	}
}

func typeErr(key string, raw json.RawMessage, want string) *Error {
	return &Error{Key: key, Value: shorten(compact(raw)), Kind: ErrType,
		Reason: fmt.Sprintf("expected %s, got %s", want, jsonKind(raw)), Hint: hintFor(key)}
}

func rangeErr(key, value, reason string) *Error {
	return &Error{Key: key, Value: shorten(value), Reason: reason, Kind: ErrRange, Hint: hintFor(key)}
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// object decodes a JSON object of raw members. key is "" for the document.
func object(key string, data []byte) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, &Error{Key: key, Reason: "empty document", Kind: ErrSyntax,
			Hint: `pass a JSON object such as {"enabled": true}`}
	}
	if !json.Valid(trimmed) {
		var probe any
		cause := json.Unmarshal(trimmed, &probe)
		return nil, &Error{Key: key, Value: shorten(string(trimmed)), Reason: fmt.Sprintf("malformed JSON: %v", cause),
			Kind: ErrSyntax, Cause: cause, Hint: `pass a JSON object such as {"enabled": true}`}
	}
	if key != "" && trimmed[0] != '{' {
		return nil, typeErr(key, trimmed, "an object")
	}
	if trimmed[0] == 'n' {
		return nil, &Error{Value: "null", Reason: "the configuration is null", Kind: ErrNull,
			Hint: `pass a JSON object; {} changes nothing`}
	}
	if trimmed[0] != '{' {
		return nil, &Error{Value: shorten(compact(trimmed)), Reason: "expected a JSON object, got " + jsonKind(trimmed),
			Kind: ErrNotObject, Hint: `pass a JSON object such as {"enabled": true}`}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return nil, &Error{Key: key, Reason: err.Error(), Kind: ErrSyntax, Cause: err}
	}
	return obj, nil
}

func notNull(key string, raw json.RawMessage) error {
	if jsonKind(raw) != "null" {
		return nil
	}
	hint := "omit the key to keep the current value"
	if key == KeyRequireApproval || key == KeyRequireApprovalStrategies {
		hint += "; use [] for an empty list"
	}
	if h := hintFor(key); h != "" {
		hint += "; " + h
	}
	return &Error{Key: key, Value: "null", Reason: "null is not allowed", Kind: ErrNull, Hint: hint}
}

func decodeBool(key string, raw json.RawMessage) (bool, error) {
	var b bool
	if jsonKind(raw) != "a boolean" || json.Unmarshal(raw, &b) != nil {
		return false, typeErr(key, raw, "a boolean")
	}
	return b, nil
}

func decodeNumber(key string, raw json.RawMessage) (float64, error) {
	if jsonKind(raw) != "a number" {
		return 0, typeErr(key, raw, "a number")
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil { // beyond float64: 1e400
		return 0, &Error{Key: key, Value: shorten(compact(raw)), Reason: "number out of range",
			Kind: ErrRange, Cause: err, Hint: hintFor(key)}
	}
	return f, nil
}

// maxExactInt is the largest integer every JSON implementation (and jsonb
// round trips through float64 in clients) represents exactly.
const maxExactInt = 1 << 53

// decodeInt accepts integral numbers, including forms such as 300.0 or 3e2
// that some clients produce for integers.
func decodeInt(key string, raw json.RawMessage) (int, error) {
	f, err := decodeNumber(key, raw)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) && ce.Kind == ErrType {
			return 0, typeErr(key, raw, "a whole number")
		}
		return 0, err
	}
	if f != math.Trunc(f) {
		return 0, &Error{Key: key, Value: shorten(compact(raw)), Reason: "must be a whole number",
			Kind: ErrType, Hint: hintFor(key)}
	}
	if math.Abs(f) > maxExactInt || f > math.MaxInt || f < math.MinInt {
		return 0, rangeErr(key, compact(raw), "number out of range")
	}
	return int(f), nil
}

func decodeSeconds(key string, raw json.RawMessage) (time.Duration, error) {
	n, err := decodeInt(key, raw)
	if err != nil {
		return 0, err
	}
	// Range is checked by Validate; only refuse what cannot be represented.
	if n > math.MaxInt64/int(time.Second) || n < math.MinInt64/int(time.Second) {
		return 0, rangeErr(key, compact(raw), "number out of range")
	}
	return time.Duration(n) * time.Second, nil
}

func decodeStrings(key string, raw json.RawMessage) ([]string, error) {
	if jsonKind(raw) != "an array" {
		return nil, typeErr(key, raw, "an array of strings")
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, typeErr(key, raw, "an array of strings")
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		ekey := fmt.Sprintf("%s[%d]", key, i)
		if jsonKind(e) != "a string" {
			return nil, typeErr(ekey, e, "a string")
		}
		if err := json.Unmarshal(e, &out[i]); err != nil {
			return nil, typeErr(ekey, e, "a string")
		}
	}
	return out, nil
}

func secondsIn(key string, d time.Duration, lo, hi int64) error {
	if d%time.Second != 0 {
		return rangeErr(key, d.String(), "must be a whole number of seconds")
	}
	if s := int64(d / time.Second); s < lo || s > hi {
		return rangeErr(key, strconv.FormatInt(s, 10), fmt.Sprintf("must be between %d and %d seconds", lo, hi))
	}
	return nil
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func unknownKey(key string, raw json.RawMessage, valid []string) *Error {
	return &Error{Key: key, Value: shorten(compact(raw)), Reason: "unknown key", Kind: ErrUnknownKey,
		Hint: hintChoices(key, valid)}
}

// hintChoices suggests the closest valid choice, which is usually what a user
// mistyped, and lists them all.
func hintChoices(got string, valid []string) string {
	// Within 3 edits is a typo; a dropped suffix ("memory_usage" for
	// "memory_usage_pct") is a likely slip too however many characters it is.
	best, bestD := "", math.MaxInt
	for _, v := range valid {
		d := editDistance(got, v)
		if d > 3 && !(len(got) >= 4 && strings.HasPrefix(v, got)) {
			continue
		}
		if d < bestD {
			best, bestD = v, d
		}
	}
	list := "valid: " + strings.Join(valid, ", ")
	if len(valid) == 0 {
		list = "none are registered"
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q? %s", best, list)
	}
	return list
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
