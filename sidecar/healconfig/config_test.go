package healconfig

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

func TestMergeKeys(t *testing.T) {
	long := strings.Repeat("a", MaxStrategyNameLen)
	tests := []struct {
		name  string
		patch string
		kind  error  // nil: accepted
		key   string // expected Error.Key when rejected
		check func(Config) bool
	}{
		// enabled
		{"enabled false", `{"enabled": false}`, nil, "", func(c Config) bool { return !c.Enabled }},
		{"enabled string", `{"enabled": "yes"}`, ErrType, "enabled", nil},
		{"enabled number", `{"enabled": 1}`, ErrType, "enabled", nil},
		{"enabled null", `{"enabled": null}`, ErrNull, "enabled", nil},

		// min_healing_interval_seconds
		{"interval 0", `{"min_healing_interval_seconds": 0}`, nil, "", func(c Config) bool { return c.MinHealingInterval == 0 }},
		{"interval max", `{"min_healing_interval_seconds": 86400}`, nil, "", func(c Config) bool { return c.MinHealingInterval == 24*time.Hour }},
		{"interval integral float", `{"min_healing_interval_seconds": 600.0}`, nil, "", func(c Config) bool { return c.MinHealingInterval == 10*time.Minute }},
		{"interval exponent", `{"min_healing_interval_seconds": 6e2}`, nil, "", func(c Config) bool { return c.MinHealingInterval == 10*time.Minute }},
		{"interval one above", `{"min_healing_interval_seconds": 86401}`, ErrRange, "min_healing_interval_seconds", nil},
		{"interval negative", `{"min_healing_interval_seconds": -1}`, ErrRange, "min_healing_interval_seconds", nil},
		{"interval fractional", `{"min_healing_interval_seconds": 1.5}`, ErrType, "min_healing_interval_seconds", nil},
		{"interval string", `{"min_healing_interval_seconds": "300"}`, ErrType, "min_healing_interval_seconds", nil},
		{"interval huge", `{"min_healing_interval_seconds": 1e300}`, ErrRange, "min_healing_interval_seconds", nil},
		{"interval null", `{"min_healing_interval_seconds": null}`, ErrNull, "min_healing_interval_seconds", nil},

		// max_attempts_per_hour
		{"attempts min", `{"max_attempts_per_hour": 1}`, nil, "", func(c Config) bool { return c.MaxAttemptsPerHour == 1 }},
		{"attempts max", `{"max_attempts_per_hour": 1000}`, nil, "", func(c Config) bool { return c.MaxAttemptsPerHour == 1000 }},
		{"attempts zero", `{"max_attempts_per_hour": 0}`, ErrRange, "max_attempts_per_hour", nil},
		{"attempts one above", `{"max_attempts_per_hour": 1001}`, ErrRange, "max_attempts_per_hour", nil},
		{"attempts fractional", `{"max_attempts_per_hour": 2.5}`, ErrType, "max_attempts_per_hour", nil},
		{"attempts bool", `{"max_attempts_per_hour": true}`, ErrType, "max_attempts_per_hour", nil},
		{"attempts null", `{"max_attempts_per_hour": null}`, ErrNull, "max_attempts_per_hour", nil},

		// attempt_window_seconds
		{"window min", `{"attempt_window_seconds": 60}`, nil, "", func(c Config) bool { return c.AttemptWindow == time.Minute }},
		{"window max", `{"attempt_window_seconds": 604800}`, nil, "", func(c Config) bool { return c.AttemptWindow == 7*24*time.Hour }},
		{"window one below", `{"attempt_window_seconds": 59}`, ErrRange, "attempt_window_seconds", nil},
		{"window one above", `{"attempt_window_seconds": 604801}`, ErrRange, "attempt_window_seconds", nil},
		{"window array", `{"attempt_window_seconds": [3600]}`, ErrType, "attempt_window_seconds", nil},
		{"window null", `{"attempt_window_seconds": null}`, ErrNull, "attempt_window_seconds", nil},

		// max_auto_heal_impact
		{"impact 0", `{"max_auto_heal_impact": 0}`, nil, "", func(c Config) bool { return c.MaxAutoHealImpact == 0 }},
		{"impact 1", `{"max_auto_heal_impact": 1}`, nil, "", func(c Config) bool { return c.MaxAutoHealImpact == 1 }},
		{"impact 0.25", `{"max_auto_heal_impact": 0.25}`, nil, "", func(c Config) bool { return c.MaxAutoHealImpact == 0.25 }},
		{"impact above 1", `{"max_auto_heal_impact": 1.01}`, ErrRange, "max_auto_heal_impact", nil},
		{"impact in percent", `{"max_auto_heal_impact": 50}`, ErrRange, "max_auto_heal_impact", nil},
		{"impact negative", `{"max_auto_heal_impact": -0.01}`, ErrRange, "max_auto_heal_impact", nil},
		{"impact beyond float64", `{"max_auto_heal_impact": 1e400}`, ErrRange, "max_auto_heal_impact", nil},
		{"impact string", `{"max_auto_heal_impact": "0.5"}`, ErrType, "max_auto_heal_impact", nil},
		{"impact null", `{"max_auto_heal_impact": null}`, ErrNull, "max_auto_heal_impact", nil},

		// require_approval
		{"approval empty", `{"require_approval": []}`, nil, "", func(c Config) bool { return c.RequireApproval != nil && len(c.RequireApproval) == 0 }},
		{"approval classes", `{"require_approval": ["memory_pressure", "unknown"]}`, nil, "", func(c Config) bool {
			return reflect.DeepEqual(c.RequireApproval, []classify.Class{classify.ClassMemoryPressure, classify.ClassUnknown})
		}},
		{"approval unknown class", `{"require_approval": ["memory_pressure", "gremlins"]}`, ErrRange, "require_approval[1]", nil},
		{"approval duplicate", `{"require_approval": ["centroid_skew", "centroid_skew"]}`, ErrRange, "require_approval[1]", nil},
		{"approval element number", `{"require_approval": [1]}`, ErrType, "require_approval[0]", nil},
		{"approval element null", `{"require_approval": ["memory_pressure", null]}`, ErrType, "require_approval[1]", nil},
		{"approval string", `{"require_approval": "memory_pressure"}`, ErrType, "require_approval", nil},
		{"approval null", `{"require_approval": null}`, ErrNull, "require_approval", nil},

		// require_approval_strategies
		{"approval strategies empty", `{"require_approval_strategies": []}`, nil, "", func(c Config) bool { return len(c.RequireApprovalStrategies) == 0 }},
		{"approval strategies names", `{"require_approval_strategies": ["compact_indexes", "scale_replicas"]}`, nil, "", func(c Config) bool {
			return reflect.DeepEqual(c.RequireApprovalStrategies, []string{"compact_indexes", "scale_replicas"})
		}},
		{"approval strategy longest name", `{"require_approval_strategies": ["` + long + `"]}`, nil, "", func(c Config) bool { return c.RequireApprovalStrategies[0] == long }},
		{"approval strategy name too long", `{"require_approval_strategies": ["` + long + `b"]}`, ErrRange, "require_approval_strategies[0]", nil},
		{"approval strategy upper case", `{"require_approval_strategies": ["Scale_Replicas"]}`, ErrRange, "require_approval_strategies[0]", nil},
		{"approval strategy empty name", `{"require_approval_strategies": ["ok", ""]}`, ErrRange, "require_approval_strategies[1]", nil},
		{"approval strategy duplicate", `{"require_approval_strategies": ["a", "b", "a"]}`, ErrRange, "require_approval_strategies[2]", nil},
		{"approval strategy element object", `{"require_approval_strategies": [{}]}`, ErrType, "require_approval_strategies[0]", nil},
		{"approval strategies object", `{"require_approval_strategies": {}}`, ErrType, "require_approval_strategies", nil},
		{"approval strategies null", `{"require_approval_strategies": null}`, ErrNull, "require_approval_strategies", nil},

		// learning_enabled
		{"learning off", `{"learning_enabled": false}`, nil, "", func(c Config) bool { return !c.LearningEnabled }},
		{"learning string", `{"learning_enabled": "false"}`, ErrType, "learning_enabled", nil},
		{"learning null", `{"learning_enabled": null}`, ErrNull, "learning_enabled", nil},

		// stabilization_seconds
		{"stabilization 0", `{"stabilization_seconds": 0}`, nil, "", func(c Config) bool { return c.Stabilization == 0 }},
		{"stabilization max", `{"stabilization_seconds": 3600}`, nil, "", func(c Config) bool { return c.Stabilization == time.Hour }},
		{"stabilization one above", `{"stabilization_seconds": 3601}`, ErrRange, "stabilization_seconds", nil},
		{"stabilization negative", `{"stabilization_seconds": -5}`, ErrRange, "stabilization_seconds", nil},
		{"stabilization fractional", `{"stabilization_seconds": 10.5}`, ErrType, "stabilization_seconds", nil},
		{"stabilization null", `{"stabilization_seconds": null}`, ErrNull, "stabilization_seconds", nil},
		// maintenance_pause_priority_below
		{"pause bar default", `{}`, nil, "", func(c Config) bool { return c.MaintenancePausePriorityBelow == 50 }},
		{"pause bar 0", `{"maintenance_pause_priority_below": 0}`, nil, "", func(c Config) bool { return c.MaintenancePausePriorityBelow == 0 }},
		{"pause bar max", `{"maintenance_pause_priority_below": 1000}`, nil, "", func(c Config) bool { return c.MaintenancePausePriorityBelow == 1000 }},
		{"pause bar one above", `{"maintenance_pause_priority_below": 1001}`, ErrRange, "maintenance_pause_priority_below", nil},
		{"pause bar negative", `{"maintenance_pause_priority_below": -1}`, ErrRange, "maintenance_pause_priority_below", nil},
		{"pause bar fractional", `{"maintenance_pause_priority_below": 49.5}`, ErrType, "maintenance_pause_priority_below", nil},
		{"pause bar string", `{"maintenance_pause_priority_below": "50"}`, ErrType, "maintenance_pause_priority_below", nil},
		{"pause bar null", `{"maintenance_pause_priority_below": null}`, ErrNull, "maintenance_pause_priority_below", nil},

		// classifier_thresholds
		{"thresholds empty object", `{"classifier_thresholds": {}}`, nil, "", func(c Config) bool { return c.Classifier == classify.DefaultThresholds() }},
		{"thresholds partial", `{"classifier_thresholds": {"memory_usage_pct": 90, "partition_link_edges": 4}}`, nil, "", func(c Config) bool {
			want := classify.DefaultThresholds()
			want.MemoryUsagePct, want.PartitionLinkEdges = 90, 4
			return c.Classifier == want
		}},
		{"thresholds every key", `{"classifier_thresholds": {"partition_link_edges": 1, "centroid_nodes": 2, "replication_edges": 3, "dependency_edges": 4,
			"memory_usage_pct": 50.5, "fragmentation_pct": 20, "hot_partition_ratio": 2, "skewed_centroid_ratio": 3, "max_memory_consumers": 7}}`, nil, "",
			func(c Config) bool {
				return c.Classifier == classify.Thresholds{PartitionLinkEdges: 1, CentroidNodes: 2, ReplicationEdges: 3, DependencyEdges: 4,
					MemoryUsagePct: 50.5, FragmentationPct: 20, HotPartitionRatio: 2, SkewedCentroidRatio: 3, MaxMemoryConsumers: 7}
			}},
		{"threshold pct above 100", `{"classifier_thresholds": {"memory_usage_pct": 101}}`, ErrRange, "classifier_thresholds.memory_usage_pct", nil},
		{"threshold count negative", `{"classifier_thresholds": {"dependency_edges": -1}}`, ErrRange, "classifier_thresholds.dependency_edges", nil},
		{"threshold ratio below 1", `{"classifier_thresholds": {"hot_partition_ratio": 0.5}}`, ErrRange, "classifier_thresholds.hot_partition_ratio", nil},
		{"threshold consumers zero", `{"classifier_thresholds": {"max_memory_consumers": 0}}`, ErrRange, "classifier_thresholds.max_memory_consumers", nil},
		{"threshold count fractional", `{"classifier_thresholds": {"partition_link_edges": 3.5}}`, ErrType, "classifier_thresholds.partition_link_edges", nil},
		{"threshold string", `{"classifier_thresholds": {"centroid_nodes": "6"}}`, ErrType, "classifier_thresholds.centroid_nodes", nil},
		{"threshold pct bool", `{"classifier_thresholds": {"fragmentation_pct": true}}`, ErrType, "classifier_thresholds.fragmentation_pct", nil},
		{"threshold unknown key", `{"classifier_thresholds": {"memory_pct": 90}}`, ErrUnknownKey, "classifier_thresholds.memory_pct", nil},
		{"threshold null", `{"classifier_thresholds": {"memory_usage_pct": null}}`, ErrNull, "classifier_thresholds.memory_usage_pct", nil},
		{"thresholds array", `{"classifier_thresholds": []}`, ErrType, "classifier_thresholds", nil},
		{"thresholds number", `{"classifier_thresholds": 5}`, ErrType, "classifier_thresholds", nil},
		{"thresholds null", `{"classifier_thresholds": null}`, ErrNull, "classifier_thresholds", nil},

		// unknown keys
		{"unknown key", `{"max_attempts_per_window": 3}`, ErrUnknownKey, "max_attempts_per_window", nil},
		{"keys are case-sensitive", `{"Enabled": true}`, ErrUnknownKey, "Enabled", nil},
		{"unknown key with null value", `{"nope": null}`, ErrUnknownKey, "nope", nil},

		// the document
		{"empty object changes nothing", `{}`, nil, "", func(c Config) bool { return reflect.DeepEqual(c, Default()) }},
		{"whitespace around object", " \n{ }\t", nil, "", func(c Config) bool { return reflect.DeepEqual(c, Default()) }},
		{"empty document", ``, ErrSyntax, "", nil},
		{"truncated", `{"enabled": true`, ErrSyntax, "", nil},
		{"trailing comma", `{"enabled": true,}`, ErrSyntax, "", nil},
		{"single quotes", `{'enabled': true}`, ErrSyntax, "", nil},
		{"two documents", `{} {}`, ErrSyntax, "", nil},
		{"null document", `null`, ErrNull, "", nil},
		{"array document", `[{"enabled": true}]`, ErrNotObject, "", nil},
		{"number document", `42`, ErrNotObject, "", nil},
		{"string document", `"enabled"`, ErrNotObject, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Merge(Default(), []byte(tc.patch))
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if !tc.check(got) {
					t.Fatalf("accepted but not applied: %+v", got)
				}
				if _, err := json.Marshal(got); err != nil {
					t.Fatalf("accepted config does not marshal: %v", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v (%T), want *Error", err, err)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("kind %v, want %v (%v)", ce.Kind, tc.kind, err)
			}
			if ce.Key != tc.key {
				t.Errorf("key %q, want %q (%v)", ce.Key, tc.key, err)
			}
			if ce.Reason == "" || ce.Hint == "" {
				t.Errorf("reason %q hint %q: both are needed by the SQL layer", ce.Reason, ce.Hint)
			}
			if tc.key != "" && !strings.Contains(err.Error(), tc.key) {
				t.Errorf("message %q does not name the key", err)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Errorf("a rejected patch returned a config: %+v", got)
			}
		})
	}
}

func TestErrorDetails(t *testing.T) {
	_, err := Parse([]byte(`{"max_auto_heal_impact": 1.5}`))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	if err.Error() != "healconfig: max_auto_heal_impact: value 1.5: must be between 0 and 1" {
		t.Errorf("message %q", err)
	}
	if ce.Value != "1.5" || !strings.Contains(ce.Hint, "from 0 to 1 (default 0.5)") {
		t.Errorf("value %q hint %q", ce.Value, ce.Hint)
	}

	_, err = Parse([]byte(`{"max_attempt_per_hour": 3}`))
	if !errors.As(err, &ce) || !strings.HasPrefix(ce.Hint, `did you mean "max_attempts_per_hour"?`) || !strings.Contains(ce.Hint, "stabilization_seconds") {
		t.Errorf("typo hint %q", ce.Hint)
	}
	_, err = Parse([]byte(`{"completely_different": 3}`))
	if !errors.As(err, &ce) || strings.Contains(ce.Hint, "did you mean") || !strings.HasPrefix(ce.Hint, "valid: enabled, ") {
		t.Errorf("no-suggestion hint %q", ce.Hint)
	}
	_, err = Parse([]byte(`{"classifier_thresholds": {"memory_usage": 90}}`))
	if !errors.As(err, &ce) || ce.Key != "classifier_thresholds.memory_usage" ||
		!strings.HasPrefix(ce.Hint, `inside classifier_thresholds: did you mean "memory_usage_pct"? valid: partition_link_edges, `) {
		t.Errorf("nested typo hint %q", ce.Hint)
	}

	_, err = Parse([]byte(`{"require_approval_strategies": null}`))
	if !errors.As(err, &ce) || !strings.Contains(ce.Hint, "use [] for an empty list") {
		t.Errorf("null hint %q", ce.Hint)
	}

	_, err = Parse([]byte(`{"enabled": tru}`))
	var se *json.SyntaxError
	if !errors.Is(err, ErrSyntax) || !errors.As(err, &se) {
		t.Errorf("syntax error does not expose the json cause: %v", err)
	}

	// A long value is shortened in the message.
	_, err = Parse([]byte(`{"enabled": "` + strings.Repeat("x", 500) + `"}`))
	if !errors.As(err, &ce) || len(ce.Value) > maxValueLen || !strings.HasSuffix(ce.Value, "...") {
		t.Errorf("value not shortened: %d chars", len(ce.Value))
	}
}

func TestFirstErrorIsDeterministic(t *testing.T) {
	// Keys are checked in sorted order, then ranges in document order.
	tests := []struct{ patch, key string }{
		{`{"zzz": 1, "enabled": "x"}`, "enabled"},
		{`{"stabilization_seconds": "x", "max_auto_heal_impact": 7}`, "stabilization_seconds"},
		{`{"stabilization_seconds": 99999, "max_auto_heal_impact": 7}`, "max_auto_heal_impact"},
		{`{"learning_enabled": 1, "classifier_thresholds": {"zz": 1}}`, "classifier_thresholds.zz"},
	}
	for _, tc := range tests {
		for i := 0; i < 10; i++ {
			_, err := Parse([]byte(tc.patch))
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tc.key {
				t.Fatalf("%s: err %v, want key %s", tc.patch, err, tc.key)
			}
		}
	}
}

func TestMergeKeepsCurrent(t *testing.T) {
	cur := Default()
	cur.Enabled = false
	cur.MaxAttemptsPerHour = 7
	cur.RequireApproval = []classify.Class{classify.ClassCentroidSkew}
	cur.Classifier.FragmentationPct = 40
	before := cur.clone()

	got, err := Merge(cur, []byte(`{"max_auto_heal_impact": 0.3, "classifier_thresholds": {"memory_usage_pct": 80}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := before.clone()
	want.MaxAutoHealImpact = 0.3
	want.Classifier.MemoryUsagePct = 80
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merged\n got %+v\nwant %+v", got, want)
	}
	got.RequireApproval[0] = classify.ClassUnknown
	if !reflect.DeepEqual(cur, before) {
		t.Errorf("merge result aliases the current config: %+v", cur)
	}

	// A rejected patch applies nothing, even keys that were valid.
	if _, err := Merge(cur, []byte(`{"enabled": true, "max_attempts_per_hour": 0}`)); err == nil {
		t.Fatal("accepted")
	}
	if !reflect.DeepEqual(cur, before) {
		t.Errorf("rejected merge changed current: %+v", cur)
	}

	// Patching a list replaces it rather than appending.
	got, err = Merge(cur, []byte(`{"require_approval": ["memory_pressure"]}`))
	if err != nil || !reflect.DeepEqual(got.RequireApproval, []classify.Class{classify.ClassMemoryPressure}) {
		t.Errorf("list patch %v %v", got.RequireApproval, err)
	}
}

func TestMergeOntoInvalidCurrent(t *testing.T) {
	bad := Default()
	bad.MaxAutoHealImpact = 3
	if _, err := Merge(bad, []byte(`{"enabled": false}`)); !errors.Is(err, ErrRange) {
		t.Errorf("invalid current accepted: %v", err)
	}
	got, err := Merge(bad, []byte(`{"max_auto_heal_impact": 0.4}`))
	if err != nil || got.MaxAutoHealImpact != 0.4 {
		t.Errorf("fixing patch rejected: %v", err)
	}
}

func TestDefaultAndMarshal(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"enabled":true,"min_healing_interval_seconds":300,"max_attempts_per_hour":3,"attempt_window_seconds":3600,` +
		`"max_auto_heal_impact":0.5,"require_approval":[],"require_approval_strategies":["scale_replicas"],"learning_enabled":true,` +
		`"stabilization_seconds":10,"maintenance_pause_priority_below":50,"classifier_thresholds":{"partition_link_edges":3,"centroid_nodes":5,"replication_edges":0,` +
		`"dependency_edges":2,"memory_usage_pct":85,"fragmentation_pct":30,"hot_partition_ratio":1.5,"skewed_centroid_ratio":1.5,"max_memory_consumers":5}}`
	if string(data) != want {
		t.Errorf("default json\n got %s\nwant %s", data, want)
	}
	// The design's example call is accepted as is.
	example := `{"enabled": true, "min_healing_interval_seconds": 300, "max_attempts_per_hour": 3,
		"max_auto_heal_impact": 0.5, "require_approval_strategies": ["scale_replicas"], "learning_enabled": true}`
	if got, err := Parse([]byte(example)); err != nil || !reflect.DeepEqual(got, d) {
		t.Errorf("design example: %v\n%+v", err, got)
	}

	nilLists := d
	nilLists.RequireApproval, nilLists.RequireApprovalStrategies = nil, nil
	data, _ = json.Marshal(nilLists)
	if !strings.Contains(string(data), `"require_approval":[],"require_approval_strategies":[]`) {
		t.Errorf("nil lists must marshal as []: %s", data)
	}
}

func TestRoundTrip(t *testing.T) {
	c := Config{
		Enabled: false, MinHealingInterval: 0, MaxAttemptsPerHour: 12, AttemptWindow: 2 * time.Hour,
		MaxAutoHealImpact: 0.35, RequireApproval: []classify.Class{classify.ClassIndexFragmentation, classify.ClassReplicationLag},
		RequireApprovalStrategies: []string{}, LearningEnabled: false, Stabilization: 30 * time.Second,
		Classifier: classify.Thresholds{PartitionLinkEdges: 10, CentroidNodes: 0, ReplicationEdges: 1, DependencyEdges: 5,
			MemoryUsagePct: 92.5, FragmentationPct: 0, HotPartitionRatio: 1, SkewedCentroidRatio: 2.25, MaxMemoryConsumers: 1},
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("Parse round trip %v\n got %+v\nwant %+v", err, back, c)
	}
	// Full documents decode even into a zero Config.
	var zero Config
	if err := json.Unmarshal(data, &zero); err != nil || !reflect.DeepEqual(zero, c) {
		t.Fatalf("Unmarshal into zero %v\n%+v", err, zero)
	}
	// Nested in another document, UnmarshalJSON merges onto what is there.
	holder := struct {
		Healing Config `json:"healing"`
	}{Healing: Default()}
	if err := json.Unmarshal([]byte(`{"healing": {"max_attempts_per_hour": 9}}`), &holder); err != nil || holder.Healing.MaxAttemptsPerHour != 9 || !holder.Healing.Enabled {
		t.Fatalf("nested unmarshal %v %+v", err, holder.Healing)
	}
	// A partial document into a zero Config cannot produce a valid config.
	var partial Config
	if err := json.Unmarshal([]byte(`{"enabled": true}`), &partial); !errors.Is(err, ErrRange) {
		t.Fatalf("partial into zero: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"enabled": 3}`), &partial); !errors.Is(err, ErrType) {
		t.Fatalf("strictness lost through json.Unmarshal: %v", err)
	}
}

func TestValidateGoBuiltConfig(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Config)
		key  string
	}{
		{"sub-second interval", func(c *Config) { c.MinHealingInterval = 1500 * time.Millisecond }, "min_healing_interval_seconds"},
		{"sub-second stabilization", func(c *Config) { c.Stabilization = time.Millisecond }, "stabilization_seconds"},
		{"NaN impact", func(c *Config) { c.MaxAutoHealImpact = math.NaN() }, "max_auto_heal_impact"},
		{"bad class", func(c *Config) { c.RequireApproval = []classify.Class{"x"} }, "require_approval[0]"},
		{"bad threshold", func(c *Config) { c.Classifier.SkewedCentroidRatio = 0 }, "classifier_thresholds.skewed_centroid_ratio"},
		{"zero config", func(c *Config) { *c = Config{} }, "max_attempts_per_hour"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mut(&c)
			var ce *Error
			if err := c.Validate(); !errors.As(err, &ce) || ce.Key != tc.key || !errors.Is(err, ErrRange) {
				t.Fatalf("err %v, want range error on %s", err, tc.key)
			}
			if _, err := json.Marshal(c); err == nil {
				t.Error("invalid config marshalled")
			}
		})
	}
}

func TestThresholdKeysMatchClassify(t *testing.T) {
	data, _ := json.Marshal(classify.DefaultThresholds())
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	keys := ThresholdKeys()
	if len(keys) != len(m) {
		t.Fatalf("%d keys here, %d in classify.Thresholds", len(keys), len(m))
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s is not a classify.Thresholds JSON name", k)
		}
	}
	// Every field is settable to a distinct valid value and reads back.
	for _, k := range keys {
		got, err := Parse([]byte(`{"classifier_thresholds": {"` + k + `": 7}}`))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		data, _ := json.Marshal(got.Classifier)
		var back map[string]float64
		_ = json.Unmarshal(data, &back)
		if back[k] != 7 {
			t.Errorf("%s: set 7, read %v", k, back[k])
		}
	}
}

func TestCheckStrategies(t *testing.T) {
	known := []string{"rebalance_partitions", "scale_replicas", "throttle_ingestion"}
	if err := Default().CheckStrategies(known); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := Default()
	c.RequireApprovalStrategies = []string{"scale_replicas", "scale_replica"}
	err := c.CheckStrategies(known)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "require_approval_strategies[1]" || !strings.HasPrefix(ce.Hint, `did you mean "scale_replicas"?`) {
		t.Fatalf("err %v hint %q", err, ce.Hint)
	}
	if err := Default().CheckStrategies(nil); !errors.As(err, &ce) || !strings.Contains(ce.Hint, "none are registered") {
		t.Errorf("no strategies: %v", err)
	}
}

func TestSelectionLimits(t *testing.T) {
	c := Default()
	c.MaxAutoHealImpact = 0.3
	c.RequireApproval = []classify.Class{classify.ClassMemoryPressure}
	w := map[string]float64{"a": 0.5}
	l := c.SelectionLimits(w)
	if l.MaxImpact != 0.3 || !reflect.DeepEqual(l.ApprovalClasses, c.RequireApproval) ||
		!reflect.DeepEqual(l.ApprovalStrategies, []string{"scale_replicas"}) || l.Weights["a"] != 0.5 {
		t.Fatalf("limits %+v", l)
	}
	l.ApprovalStrategies[0] = "changed"
	if c.RequireApprovalStrategies[0] != "scale_replicas" {
		t.Error("limits alias the config")
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"max_attempt_per_hour", "max_attempts_per_hour", 1}, {"same", "same", 0}}
	for _, tc := range tests {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}
