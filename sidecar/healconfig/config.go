// Package healconfig is the healing configuration of the self-healing design:
// its settings and defaults, strict parsing of the JSON accepted by
// ruvector_healing_configure, merging a partial patch onto the current
// configuration, and the JSON the configuration is stored and shown as.
//
// Parsing is strict because a typo in a safety limit must not be silently
// ignored: unknown keys, wrong types, null and out-of-range values are all
// rejected with an *Error naming the key.
package healconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// Config is the healing configuration of one collection.
type Config struct {
	// Enabled turns automatic healing on.
	Enabled bool
	// MinHealingInterval is the cooldown between healing attempts.
	MinHealingInterval time.Duration
	// MaxAttemptsPerHour caps attempts per AttemptWindow. The key says "per
	// hour" because that is the design's SQL name and the default window; the
	// count applies to whatever window is configured.
	MaxAttemptsPerHour int
	// AttemptWindow is the window attempts are counted over.
	AttemptWindow time.Duration
	// MaxAutoHealImpact: strategies with a higher impact are never run
	// automatically.
	MaxAutoHealImpact float64
	// RequireApproval lists problem classes whose remediation needs a human.
	RequireApproval []classify.Class
	// RequireApprovalStrategies lists strategies that need a human.
	RequireApprovalStrategies []string
	// LearningEnabled: when false, strategy weights are frozen.
	LearningEnabled bool
	// Stabilization is how long verification waits before sampling λ. The
	// daemon raises it, per problem class, to the time the class's
	// measurements need to reflect a change (healing.Options.SignalRefresh):
	// λ sampled earlier still describes the system before the remediation.
	Stabilization time.Duration
	// MaintenancePausePriorityBelow is pause_maintenance's bar: queued or
	// running maintenance jobs with a lower priority are paused (the
	// queue's default priority is 100, so by default only jobs an operator
	// marked low yield). A manual execution's priority_below overrides it.
	MaintenancePausePriorityBelow int
	// Classifier holds the classifier's rule thresholds.
	Classifier classify.Thresholds
}

// Keys of the JSON form.
const (
	KeyEnabled                   = "enabled"
	KeyMinHealingInterval        = "min_healing_interval_seconds"
	KeyMaxAttemptsPerHour        = "max_attempts_per_hour"
	KeyAttemptWindow             = "attempt_window_seconds"
	KeyMaxAutoHealImpact         = "max_auto_heal_impact"
	KeyRequireApproval           = "require_approval"
	KeyRequireApprovalStrategies = "require_approval_strategies"
	KeyLearningEnabled           = "learning_enabled"
	KeyStabilization             = "stabilization_seconds"
	KeyMaintenancePauseBelow     = "maintenance_pause_priority_below"
	KeyClassifierThresholds      = "classifier_thresholds"
)

// Bounds. They are deliberately generous: they exist to catch mistakes (a
// window in milliseconds, an impact in percent), not to second-guess policy.
const (
	MaxHealingIntervalSeconds = 86400  // a day
	MinAttempts               = 1      // 0 would mean "disabled": use enabled=false
	MaxAttempts               = 1000   //
	MinAttemptWindowSeconds   = 60     //
	MaxAttemptWindowSeconds   = 604800 // a week
	MaxStabilizationSeconds   = 3600   //
	MaxStrategyNameLen        = 63     // a PostgreSQL identifier
	MaxPausePriorityBelow     = 1000   // ruvector.maintenance_jobs.priority is 0..1000
)

// Default returns the design's defaults.
func Default() Config {
	return Config{
		Enabled:                       true,
		MinHealingInterval:            300 * time.Second,
		MaxAttemptsPerHour:            3,
		AttemptWindow:                 3600 * time.Second,
		MaxAutoHealImpact:             0.5,
		RequireApproval:               []classify.Class{},
		RequireApprovalStrategies:     []string{"scale_replicas"},
		LearningEnabled:               true,
		Stabilization:                 10 * time.Second,
		MaintenancePausePriorityBelow: 50,
		Classifier:                    classify.DefaultThresholds(),
	}
}

// Keys returns the top-level keys in document order.
func Keys() []string {
	return []string{KeyEnabled, KeyMinHealingInterval, KeyMaxAttemptsPerHour, KeyAttemptWindow,
		KeyMaxAutoHealImpact, KeyRequireApproval, KeyRequireApprovalStrategies, KeyLearningEnabled,
		KeyStabilization, KeyMaintenancePauseBelow, KeyClassifierThresholds}
}

// wire is the JSON form; its field order is the document order.
type wire struct {
	Enabled                   bool                `json:"enabled"`
	MinHealingInterval        int64               `json:"min_healing_interval_seconds"`
	MaxAttemptsPerHour        int                 `json:"max_attempts_per_hour"`
	AttemptWindow             int64               `json:"attempt_window_seconds"`
	MaxAutoHealImpact         float64             `json:"max_auto_heal_impact"`
	RequireApproval           []classify.Class    `json:"require_approval"`
	RequireApprovalStrategies []string            `json:"require_approval_strategies"`
	LearningEnabled           bool                `json:"learning_enabled"`
	Stabilization             int64               `json:"stabilization_seconds"`
	MaintenancePauseBelow     int                 `json:"maintenance_pause_priority_below"`
	ClassifierThresholds      classify.Thresholds `json:"classifier_thresholds"`
}

// MarshalJSON renders the full configuration, every key present, durations in
// whole seconds. An invalid configuration is refused so that what is stored
// can always be read back.
func (c Config) MarshalJSON() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := wire{
		Enabled:                   c.Enabled,
		MinHealingInterval:        int64(c.MinHealingInterval / time.Second),
		MaxAttemptsPerHour:        c.MaxAttemptsPerHour,
		AttemptWindow:             int64(c.AttemptWindow / time.Second),
		MaxAutoHealImpact:         c.MaxAutoHealImpact,
		RequireApproval:           nonNil(c.RequireApproval),
		RequireApprovalStrategies: nonNil(c.RequireApprovalStrategies),
		LearningEnabled:           c.LearningEnabled,
		Stabilization:             int64(c.Stabilization / time.Second),
		MaintenancePauseBelow:     c.MaintenancePausePriorityBelow,
		ClassifierThresholds:      c.Classifier,
	}
	return json.Marshal(w)
}

// UnmarshalJSON merges the document onto the current value, like
// encoding/json does for structs: decode into Default() to get defaults for
// missing keys. It is Merge, so it is as strict.
func (c *Config) UnmarshalJSON(data []byte) error {
	merged, err := Merge(*c, data)
	if err != nil {
		return err
	}
	*c = merged
	return nil
}

// Parse reads a configuration document; missing keys take their defaults.
func Parse(data []byte) (Config, error) { return Merge(Default(), data) }

// Merge applies patch, a JSON object holding any subset of the keys, to
// current and validates the result. classifier_thresholds merges key by key
// too. current is never modified.
//
// When several things are wrong, the error reports the first in this order:
// the document itself, then keys in sorted order (unknown key, null or wrong
// type), then range checks in document order.
func Merge(current Config, patch []byte) (Config, error) {
	obj, err := object("", patch)
	if err != nil {
		return Config{}, err
	}
	next := current.clone()
	for _, key := range sortedKeys(obj) {
		raw := obj[key]
		if !slices.Contains(Keys(), key) {
			return Config{}, unknownKey(key, raw, Keys())
		}
		if err := notNull(key, raw); err != nil {
			return Config{}, err
		}
		if err := apply(&next, key, raw); err != nil {
			return Config{}, err
		}
	}
	if err := next.Validate(); err != nil {
		return Config{}, err
	}
	return next, nil
}

func (c Config) clone() Config {
	c.RequireApproval = slices.Clone(c.RequireApproval)
	c.RequireApprovalStrategies = slices.Clone(c.RequireApprovalStrategies)
	return c
}

// apply sets key from raw.
func apply(c *Config, key string, raw json.RawMessage) (err error) {
	switch key {
	case KeyEnabled:
		c.Enabled, err = decodeBool(key, raw)
	case KeyMinHealingInterval:
		c.MinHealingInterval, err = decodeSeconds(key, raw)
	case KeyMaxAttemptsPerHour:
		c.MaxAttemptsPerHour, err = decodeInt(key, raw)
	case KeyAttemptWindow:
		c.AttemptWindow, err = decodeSeconds(key, raw)
	case KeyMaxAutoHealImpact:
		c.MaxAutoHealImpact, err = decodeNumber(key, raw)
	case KeyRequireApproval:
		var ss []string
		if ss, err = decodeStrings(key, raw); err == nil {
			c.RequireApproval = make([]classify.Class, len(ss))
			for i, s := range ss {
				c.RequireApproval[i] = classify.Class(s)
			}
		}
	case KeyRequireApprovalStrategies:
		c.RequireApprovalStrategies, err = decodeStrings(key, raw)
	case KeyLearningEnabled:
		c.LearningEnabled, err = decodeBool(key, raw)
	case KeyStabilization:
		c.Stabilization, err = decodeSeconds(key, raw)
	case KeyMaintenancePauseBelow:
		c.MaintenancePausePriorityBelow, err = decodeInt(key, raw)
	case KeyClassifierThresholds:
		err = mergeThresholds(&c.Classifier, key, raw)
	default:
		return unknownKey(key, raw, Keys())
	}
	return err
}

// thresholdField maps a classifier_thresholds key (a JSON name of
// classify.Thresholds) to its field; exactly one of ival and fval is set.
type thresholdField struct {
	key  string
	ival func(*classify.Thresholds) *int
	fval func(*classify.Thresholds) *float64
}

func thresholdFields() []thresholdField {
	return []thresholdField{
		{key: "partition_link_edges", ival: func(t *classify.Thresholds) *int { return &t.PartitionLinkEdges }},
		{key: "centroid_nodes", ival: func(t *classify.Thresholds) *int { return &t.CentroidNodes }},
		{key: "replication_edges", ival: func(t *classify.Thresholds) *int { return &t.ReplicationEdges }},
		{key: "dependency_edges", ival: func(t *classify.Thresholds) *int { return &t.DependencyEdges }},
		{key: "memory_usage_pct", fval: func(t *classify.Thresholds) *float64 { return &t.MemoryUsagePct }},
		{key: "fragmentation_pct", fval: func(t *classify.Thresholds) *float64 { return &t.FragmentationPct }},
		{key: "hot_partition_ratio", fval: func(t *classify.Thresholds) *float64 { return &t.HotPartitionRatio }},
		{key: "skewed_centroid_ratio", fval: func(t *classify.Thresholds) *float64 { return &t.SkewedCentroidRatio }},
		{key: "max_memory_consumers", ival: func(t *classify.Thresholds) *int { return &t.MaxMemoryConsumers }},
	}
}

// ThresholdKeys returns the keys accepted inside classifier_thresholds.
func ThresholdKeys() []string {
	fields := thresholdFields()
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.key
	}
	return out
}

func mergeThresholds(th *classify.Thresholds, parent string, raw json.RawMessage) error {
	obj, err := object(parent, raw)
	if err != nil {
		return err
	}
	fields := thresholdFields()
	for _, k := range sortedKeys(obj) {
		key := parent + "." + k
		i := slices.IndexFunc(fields, func(f thresholdField) bool { return f.key == k })
		if i < 0 {
			e := unknownKey(key, obj[k], nil)
			e.Hint = "inside " + parent + ": " + hintChoices(k, ThresholdKeys())
			return e
		}
		if err := notNull(key, obj[k]); err != nil {
			return err
		}
		if f := fields[i]; f.ival != nil {
			if *f.ival(th), err = decodeInt(key, obj[k]); err != nil {
				return err
			}
		} else if *f.fval(th), err = decodeNumber(key, obj[k]); err != nil {
			return err
		}
	}
	return nil
}

// validStrategyName: lower-case letters, digits and _, starting with a letter,
// so names are safe as identifiers and labels.
func validStrategyName(s string) bool {
	if s == "" || len(s) > MaxStrategyNameLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Validate checks every setting and returns the first violation, in document
// order, as an *Error wrapping ErrRange.
func (c Config) Validate() error {
	if err := secondsIn(KeyMinHealingInterval, c.MinHealingInterval, 0, MaxHealingIntervalSeconds); err != nil {
		return err
	}
	if c.MaxAttemptsPerHour < MinAttempts || c.MaxAttemptsPerHour > MaxAttempts {
		return rangeErr(KeyMaxAttemptsPerHour, strconv.Itoa(c.MaxAttemptsPerHour),
			fmt.Sprintf("must be between %d and %d", MinAttempts, MaxAttempts))
	}
	if err := secondsIn(KeyAttemptWindow, c.AttemptWindow, MinAttemptWindowSeconds, MaxAttemptWindowSeconds); err != nil {
		return err
	}
	if v := c.MaxAutoHealImpact; math.IsNaN(v) || v < 0 || v > 1 {
		return rangeErr(KeyMaxAutoHealImpact, fmtFloat(v), "must be between 0 and 1")
	}
	for i, cl := range c.RequireApproval {
		key := fmt.Sprintf("%s[%d]", KeyRequireApproval, i)
		if !cl.Valid() {
			return rangeErr(key, strconv.Quote(string(cl)), "is not a problem class")
		}
		if slices.Index(c.RequireApproval, cl) < i {
			return rangeErr(key, strconv.Quote(string(cl)), "is listed twice")
		}
	}
	for i, s := range c.RequireApprovalStrategies {
		key := fmt.Sprintf("%s[%d]", KeyRequireApprovalStrategies, i)
		if !validStrategyName(s) {
			return rangeErr(key, strconv.Quote(s), fmt.Sprintf(
				"is not a strategy name (lower-case letters, digits and _, starting with a letter, at most %d characters)", MaxStrategyNameLen))
		}
		if slices.Index(c.RequireApprovalStrategies, s) < i {
			return rangeErr(key, strconv.Quote(s), "is listed twice")
		}
	}
	if err := secondsIn(KeyStabilization, c.Stabilization, 0, MaxStabilizationSeconds); err != nil {
		return err
	}
	if v := c.MaintenancePausePriorityBelow; v < 0 || v > MaxPausePriorityBelow {
		return rangeErr(KeyMaintenancePauseBelow, strconv.Itoa(v), fmt.Sprintf("must be between 0 and %d", MaxPausePriorityBelow))
	}
	if err := c.Classifier.Validate(); err != nil {
		var te *classify.ThresholdError
		if errors.As(err, &te) {
			return rangeErr(KeyClassifierThresholds+"."+te.Field, fmtFloat(te.Value), te.Reason)
		}
		return &Error{Key: KeyClassifierThresholds, Reason: err.Error(), Kind: ErrRange, Cause: err}
	}
	return nil
}

// CheckStrategies reports a require_approval_strategies entry that names no
// known strategy. It is separate from Validate because only the engine knows
// which strategies are registered (some are added at run time).
func (c Config) CheckStrategies(known []string) error {
	for i, s := range c.RequireApprovalStrategies {
		if !slices.Contains(known, s) {
			key := fmt.Sprintf("%s[%d]", KeyRequireApprovalStrategies, i)
			e := rangeErr(key, strconv.Quote(s), "is not a registered strategy")
			e.Hint = hintChoices(s, known)
			return e
		}
	}
	return nil
}

// SelectionLimits turns the configuration into strategy selection limits with
// the given learned weights. When learning is disabled the caller still
// passes the frozen weights: disabling learning stops updates, not their use.
func (c Config) SelectionLimits(weights map[string]float64) strategy.Limits {
	return strategy.Limits{
		MaxImpact:          c.MaxAutoHealImpact,
		Weights:            weights,
		ApprovalClasses:    slices.Clone(c.RequireApproval),
		ApprovalStrategies: slices.Clone(c.RequireApprovalStrategies),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
