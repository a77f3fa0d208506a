package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mins(m float64) time.Time { return t0.Add(time.Duration(m * float64(time.Minute))) }

func sample() Timeline {
	final := 0.9
	return Timeline{From: t0, To: mins(30), Panels: []Panel{{
		Collection: `a<b>&"c"`, ThresholdHigh: 0.8, ThresholdLow: 0.3,
		States: []StateChange{{At: mins(-5), State: "stress", EventID: 1}, {At: mins(10), State: "critical", EventID: 2},
			{At: mins(40), State: "normal", EventID: 3}},
		Points: []Point{{At: mins(20), Lambda: 0.2}, {At: mins(5), Lambda: 0.6}, {At: mins(-1), Lambda: 0.5},
			{At: mins(25), Lambda: math.NaN()}, {At: mins(28), Lambda: 1.4}},
		Remediations: []Remediation{
			{ID: 9, Strategy: "s</title><script>", ProblemClass: "hotspot_congestion", Start: mins(22), Result: ResultRunning},
			{ID: 7, Strategy: "throttle_ingestion", Start: mins(12), End: mins(15), Result: ResultFailed,
				FinalLambda: &final, Error: "boom & bust"},
		},
	}}}
}

func render(t *testing.T, tl Timeline) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, tl); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Well-formed whatever the names hold, deterministic, and what lies outside
// the window or is not a number is left out.
func TestRenderEdges(t *testing.T) {
	a, b := render(t, sample()), render(t, sample())
	if !bytes.Equal(a, b) {
		t.Fatal("two renderings differ")
	}
	dec := xml.NewDecoder(bytes.NewReader(a))
	var texts []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, a)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "script" {
			t.Fatal("a strategy name became markup")
		}
		if cd, ok := tok.(xml.CharData); ok {
			texts = append(texts, string(cd))
		}
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{`a<b>&"c"`, "s</title><script>", "error: boom & bust", "#7 throttle_ingestion: failed"} {
		if !strings.Contains(all, want) {
			t.Errorf("text %q missing", want)
		}
	}
	s := string(a)
	// Points: 5 min, 20 min, 28 min (λ 1.4 stretches the scale); -1 min
	// and NaN left out.
	if !strings.Contains(s, `data-points="3"`) {
		t.Errorf("want 3 plotted points:\n%s", s)
	}
	// The scale grows to 1.4 × 1.05 = 1.47: λ 1.4 sits just under the top.
	if !strings.Contains(s, `class="ytick" x="58.0" y="`) || !strings.Contains(s, ">1.47<") {
		t.Errorf("y axis does not reach 1.47")
	}
	// States: stress from the start (the change before the window), then
	// critical; the change after the window is not drawn.
	if strings.Count(s, `class="state state-`) != 2 || !strings.Contains(s, `class="state state-stress" data-from="2026-03-01T12:00:00Z" data-to="2026-03-01T12:10:00Z"`) ||
		!strings.Contains(s, `class="state state-critical" data-from="2026-03-01T12:10:00Z" data-to="2026-03-01T12:30:00Z"`) {
		t.Errorf("state strip wrong:\n%s", s)
	}
	// Remediations sorted by start; the running one has no end.
	i7, i9 := strings.Index(s, `data-outcome-id="7"`), strings.Index(s, `data-outcome-id="9"`)
	if i7 < 0 || i9 < 0 || i7 > i9 {
		t.Errorf("remediations not in time order")
	}
	if g := s[i9:]; strings.Contains(g[:strings.Index(g, "</g>")], `class="end"`) {
		t.Errorf("a running remediation got an end mark")
	}
}

func TestRenderRejects(t *testing.T) {
	for name, tl := range map[string]Timeline{
		"no window":  {},
		"backwards":  {From: t0, To: t0.Add(-time.Minute)},
		"thresholds": {From: t0, To: mins(1), Panels: []Panel{{Collection: "x", ThresholdHigh: 0.2, ThresholdLow: 0.5}}},
	} {
		if err := Render(io.Discard, tl); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := Render(io.Discard, Timeline{From: t0, To: mins(1)}); err != nil {
		t.Errorf("an empty timeline: %v", err)
	}
}

func TestOutcomeResult(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		state    string
		success  bool
		verified *bool
		rolled   bool
		kind     string
		want     Result
	}{
		{"pending_approval", false, nil, false, "", ResultPending},
		{"running", false, nil, false, "", ResultRunning},
		{"done", true, nil, true, "rollback", ResultRollback},
		{"done", true, &no, true, "", ResultRolledBack},
		{"done", false, nil, false, "", ResultFailed},
		{"done", true, &yes, false, "", ResultVerified},
		{"done", true, &no, false, "", ResultUnverified},
	} {
		if got := OutcomeResult(tc.state, tc.success, tc.verified, tc.rolled, tc.kind); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc, got, tc.want)
		}
	}
}

// A month of 10 s samples stays a small picture that still shows the dip.
func TestRenderDecimates(t *testing.T) {
	tl := Timeline{From: t0, To: t0.Add(30 * 24 * time.Hour), Panels: []Panel{{Collection: "big", ThresholdHigh: 0.8, ThresholdLow: 0.3}}}
	n := int(30 * 24 * time.Hour / (10 * time.Second))
	for i := 0; i < n; i++ {
		l := 0.9 + 0.05*math.Sin(float64(i)/500)
		if i == n/3+100 { // inside a pixel column, not at its edge
			l = 0.05 // one sample's dip
		}
		tl.Panels[0].Points = append(tl.Panels[0].Points, Point{At: t0.Add(time.Duration(i) * 10 * time.Second), Lambda: l})
	}
	out := render(t, tl)
	if len(out) > 200_000 {
		t.Errorf("%d bytes for a month", len(out))
	}
	s := string(out)
	if !strings.Contains(s, fmt.Sprintf(`data-samples="%d"`, n)) || strings.Contains(s, `class="sample"`) {
		t.Errorf("want the samples counted and no dots")
	}
	m := regexp.MustCompile(`class="lambda" data-points="(\d+)"[^>]* d="([^"]*)"`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no lambda path")
	}
	if pts, _ := strconv.Atoi(m[1]); pts > 4*912 || pts < 912 {
		t.Errorf("%d path points for %d samples", pts, n)
	}
	// The dip at λ 0.05 is at y = 62 + 160 × 0.95 = 214.
	f := strings.Fields(m[2])
	dip := false
	for i := 2; i < len(f); i += 3 {
		dip = dip || f[i] == "214.0"
	}
	if !dip {
		t.Errorf("the one-sample dip was lost")
	}
}
