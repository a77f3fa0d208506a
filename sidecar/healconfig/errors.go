package healconfig

import (
	"errors"
	"fmt"
	"strings"
)

// Kinds of configuration error, for errors.Is. Every error returned by this
// package is an *Error wrapping exactly one of them.
var (
	// ErrSyntax: the document is not valid JSON.
	ErrSyntax = errors.New("malformed JSON")
	// ErrNotObject: the document is valid JSON but not an object.
	ErrNotObject = errors.New("not a JSON object")
	// ErrUnknownKey: a key that is not a setting (often a typo).
	ErrUnknownKey = errors.New("unknown key")
	// ErrType: a value of the wrong JSON type.
	ErrType = errors.New("wrong type")
	// ErrNull: a null value. Null is rejected rather than read as "reset" or
	// "empty" because either reading would surprise half of the users.
	ErrNull = errors.New("null value")
	// ErrRange: a value of the right type outside its allowed range or set.
	ErrRange = errors.New("out of range")
)

// Error describes one rejected setting. The SQL layer maps it to an ERROR
// with Reason as the message detail and Hint as the HINT.
type Error struct {
	// Key is the offending key: "max_auto_heal_impact",
	// "classifier_thresholds.memory_usage_pct", "require_approval[2]"; empty
	// when the whole document is at fault.
	Key string
	// Value is the offending value as JSON text (shortened when long).
	Value string
	// Reason says what is wrong, Hint what would be accepted.
	Reason string
	Hint   string
	// Kind is one of the Err* sentinels; Cause the underlying error, if any.
	Kind  error
	Cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("healconfig: ")
	if e.Key != "" {
		fmt.Fprintf(&b, "%s: ", e.Key)
	}
	if e.Value != "" {
		fmt.Fprintf(&b, "value %s: ", e.Value)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap exposes both the kind and the cause to errors.Is / errors.As.
func (e *Error) Unwrap() []error {
	out := []error{e.Kind}
	if e.Cause != nil {
		out = append(out, e.Cause)
	}
	return out
}

const maxValueLen = 80

func shorten(s string) string {
	if len(s) <= maxValueLen {
		return s
	}
	return s[:maxValueLen-3] + "..."
}
