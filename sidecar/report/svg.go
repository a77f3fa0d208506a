package report

import (
	"bufio"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Geometry of the picture, in SVG user units.
const (
	width       = 1000.0
	plotLeft    = 64.0
	plotRight   = width - 24.0
	plotWidth   = plotRight - plotLeft
	headerH     = 56.0
	panelH      = 250.0
	titleH      = 22.0 // the panel's title line
	stripH      = 10.0 // the state strip above the plot
	labelLaneH  = 26.0 // remediation labels, above the strip
	plotTop     = titleH + labelLaneH + stripH + 4
	plotH       = 160.0
	axisLabelDY = 16.0
)

var stateColour = map[string]string{
	"normal":   "#2e7d32",
	"stress":   "#f9a825",
	"critical": "#c62828",
}

var resultColour = map[Result]string{
	ResultVerified:   "#2e7d32",
	ResultRolledBack: "#ef6c00",
	ResultFailed:     "#c62828",
	ResultUnverified: "#6d4c41",
	ResultRunning:    "#1565c0",
	ResultPending:    "#6a1b9a",
	ResultRollback:   "#ef6c00",
}

// Render writes t as a standalone SVG document.
func Render(w io.Writer, t Timeline) error {
	if err := t.Validate(); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	r := renderer{w: bw, t: t}
	r.document()
	if r.err != nil {
		return fmt.Errorf("report: write: %w", r.err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("report: write: %w", err)
	}
	return nil
}

type renderer struct {
	w   *bufio.Writer
	t   Timeline
	err error
}

func (r *renderer) printf(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, format, args...)
	}
}

// esc escapes text for element content and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// num formats a coordinate: fixed precision keeps the output stable.
func num(f float64) string {
	s := strconv.FormatFloat(f, 'f', 1, 64)
	if s == "-0.0" {
		s = "0.0"
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func lam(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }

func (r *renderer) x(at time.Time) float64 {
	span := r.t.To.Sub(r.t.From).Seconds()
	f := at.Sub(r.t.From).Seconds() / span
	return plotLeft + math.Max(0, math.Min(1, f))*plotWidth
}

func (r *renderer) document() {
	height := headerH + float64(max(len(r.t.Panels), 1))*panelH + 10
	r.printf(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	r.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" font-family="sans-serif" font-size="11">`+"\n",
		num(width), num(height), num(width), num(height))
	r.printf(`<title>ruvector-healing timeline %s to %s</title>`+"\n", stamp(r.t.From), stamp(r.t.To))
	r.printf(`<rect x="0" y="0" width="%s" height="%s" fill="#ffffff"/>`+"\n", num(width), num(height))
	r.printf(`<text x="%s" y="20" font-size="15" font-weight="bold">ruvector-healing: λ and remediations</text>`+"\n", num(plotLeft))
	r.printf(`<text x="%s" y="36" fill="#444">%s to %s (UTC)</text>`+"\n", num(plotLeft), stamp(r.t.From), stamp(r.t.To))
	r.legend()
	if len(r.t.Panels) == 0 {
		r.printf(`<text x="%s" y="%s" fill="#444">no collections</text>`+"\n", num(plotLeft), num(headerH+30))
	}
	for i, p := range r.t.Panels {
		r.panel(p, headerH+float64(i)*panelH)
	}
	r.printf("</svg>\n")
}

func (r *renderer) legend() {
	x := plotLeft
	y := 50.0
	items := []struct{ colour, label string }{
		{stateColour["normal"], "normal"}, {stateColour["stress"], "stress"}, {stateColour["critical"], "critical"},
		{resultColour[ResultVerified], "verified"}, {resultColour[ResultRolledBack], "rolled back"},
		{resultColour[ResultFailed], "failed"}, {resultColour[ResultUnverified], "unverified"},
		{resultColour[ResultRunning], "running"}, {resultColour[ResultPending], "pending approval"},
	}
	r.printf(`<g class="legend">`)
	for _, it := range items {
		r.printf(`<rect x="%s" y="%s" width="10" height="8" fill="%s"/><text x="%s" y="%s">%s</text>`,
			num(x), num(y-8), it.colour, num(x+13), num(y), esc(it.label))
		x += 13 + 6.5*float64(len(it.label)) + 14
	}
	r.printf("</g>\n")
}

// yScale maps λ to the plot: 0 at the bottom, at least 1 at the top.
type yScale struct {
	top, height, max float64
}

func (s yScale) y(v float64) float64 {
	v = math.Max(0, math.Min(s.max, v))
	return s.top + s.height*(1-v/s.max)
}

func (r *renderer) panel(p Panel, top float64) {
	r.printf(`<g class="panel" data-collection="%s" transform="translate(0,%s)">`+"\n", esc(p.Collection), num(top))
	r.printf(`<text class="panel-title" x="%s" y="%s" font-size="13" font-weight="bold">%s</text>`+"\n",
		num(plotLeft), num(titleH-6), esc(p.Collection))
	r.printf(`<text x="%s" y="%s" fill="#444" text-anchor="end">thresholds: normal ≥ %s, critical &lt; %s</text>`+"\n",
		num(plotRight), num(titleH-6), lam(p.ThresholdHigh), lam(p.ThresholdLow))

	points := slices.Clone(p.Points)
	slices.SortStableFunc(points, func(a, b Point) int { return a.At.Compare(b.At) })
	ymax := 1.0
	for _, pt := range points {
		if !math.IsNaN(pt.Lambda) && !math.IsInf(pt.Lambda, 0) {
			ymax = math.Max(ymax, pt.Lambda*1.05)
		}
	}
	ys := yScale{top: plotTop, height: plotH, max: ymax}

	// Threshold bands behind everything.
	bands := []struct {
		state  string
		hi, lo float64
	}{{"normal", ymax, p.ThresholdHigh}, {"stress", p.ThresholdHigh, p.ThresholdLow}, {"critical", p.ThresholdLow, 0}}
	for _, b := range bands {
		y1, y2 := ys.y(b.hi), ys.y(b.lo)
		r.printf(`<rect class="band band-%s" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="0.08"/>`+"\n",
			b.state, num(plotLeft), num(y1), num(plotWidth), num(math.Max(0, y2-y1)), stateColour[b.state])
	}
	for _, th := range []float64{p.ThresholdHigh, p.ThresholdLow} {
		r.printf(`<line class="threshold" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#888" stroke-dasharray="4 3"/>`+"\n",
			num(plotLeft), num(ys.y(th)), num(plotRight), num(ys.y(th)))
	}
	r.printf(`<rect x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#bbb"/>`+"\n",
		num(plotLeft), num(plotTop), num(plotWidth), num(plotH))
	r.yAxis(ys, p)
	r.xAxis(plotTop + plotH)
	r.stateStrip(p)
	r.remediations(p, ys)
	r.lambdaPath(points, ys)
	r.printf("</g>\n")
}

func (r *renderer) yAxis(ys yScale, p Panel) {
	ticks := []float64{0, p.ThresholdLow, p.ThresholdHigh, 1}
	if ys.max > 1 {
		ticks = append(ticks, ys.max)
	}
	slices.Sort(ticks)
	ticks = slices.Compact(ticks)
	for _, v := range ticks {
		r.printf(`<text class="ytick" x="%s" y="%s" text-anchor="end" fill="#444">%s</text>`+"\n",
			num(plotLeft-6), num(ys.y(v)+4), strconv.FormatFloat(v, 'f', 2, 64))
	}
	r.printf(`<text x="14" y="%s" transform="rotate(-90 14 %s)" text-anchor="middle" fill="#444">λ (normalised)</text>`+"\n",
		num(plotTop+plotH/2), num(plotTop+plotH/2))
}

// tickSteps are the candidate spacings of time ticks.
var tickSteps = []time.Duration{
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
	15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour,
	12 * time.Hour, 24 * time.Hour, 48 * time.Hour, 7 * 24 * time.Hour,
}

func (r *renderer) xAxis(y float64) {
	span := r.t.To.Sub(r.t.From)
	step := tickSteps[len(tickSteps)-1]
	for _, s := range tickSteps {
		if span/s <= 8 {
			step = s
			break
		}
	}
	layout := "15:04"
	if step < time.Minute {
		layout = "15:04:05"
	}
	if span > 24*time.Hour {
		layout = "01-02 15:04"
	}
	first := r.t.From.UTC().Truncate(step)
	if first.Before(r.t.From) {
		first = first.Add(step)
	}
	for at := first; !at.After(r.t.To); at = at.Add(step) {
		x := r.x(at)
		r.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#ddd"/>`, num(x), num(plotTop), num(x), num(y))
		r.printf(`<text class="xtick" x="%s" y="%s" text-anchor="middle" fill="#444">%s</text>`+"\n",
			num(x), num(y+axisLabelDY), at.UTC().Format(layout))
	}
}

// stateStrip colours the collection's state over time above the plot.
func (r *renderer) stateStrip(p Panel) {
	changes := slices.Clone(p.States)
	slices.SortStableFunc(changes, func(a, b StateChange) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.EventID, b.EventID))
	})
	type span struct {
		state    string
		from, to time.Time
		event    int64
	}
	var spans []span
	cur := span{state: p.InitialState, from: r.t.From}
	for _, c := range changes {
		if c.At.Before(r.t.From) {
			cur.state, cur.event = c.State, c.EventID
			continue
		}
		if c.At.After(r.t.To) {
			break
		}
		cur.to = c.At
		spans = append(spans, cur)
		cur = span{state: c.State, from: c.At, event: c.EventID}
	}
	cur.to = r.t.To
	spans = append(spans, cur)
	y := plotTop - stripH - 2
	for _, s := range spans {
		x1, x2 := r.x(s.from), r.x(s.to)
		if x2 <= x1 {
			continue
		}
		state := s.state
		if state == "" {
			state = "unknown"
		}
		colour, ok := stateColour[state]
		if !ok {
			colour = "#9e9e9e"
		}
		r.printf(`<rect class="state state-%s" data-from="%s" data-to="%s" x="%s" y="%s" width="%s" height="%s" fill="%s">`,
			esc(state), stamp(s.from), stamp(s.to), num(x1), num(y), num(x2-x1), num(stripH), colour)
		r.printf(`<title>%s from %s to %s</title></rect>`+"\n", esc(state), stamp(s.from), stamp(s.to))
	}
}

func (r *renderer) remediations(p Panel, ys yScale) {
	rems := slices.Clone(p.Remediations)
	slices.SortStableFunc(rems, func(a, b Remediation) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.ID, b.ID))
	})
	bottom := plotTop + plotH
	lastLabelEnd := math.Inf(-1)
	lane := 0
	for _, m := range rems {
		end := m.End
		open := end.IsZero()
		if open && m.Result != ResultPending {
			end = r.t.To
		} else if open {
			// A pending record never completes (the approval is a record
			// of its own): mark the request, not a span.
			end = m.Start
		}
		x1, x2 := r.x(m.Start), r.x(end)
		colour := resultColour[m.Result]
		if colour == "" {
			colour = "#616161"
		}
		tip := fmt.Sprintf("outcome %d: %s for %s\nstarted %s", m.ID, m.Strategy, m.ProblemClass, stamp(m.Start))
		if !open {
			tip += fmt.Sprintf("\nended %s (%s)", stamp(m.End), m.End.Sub(m.Start).Round(time.Millisecond))
		}
		tip += fmt.Sprintf("\nresult: %s\nλ before %s", m.Result, lam(m.InitialLambda))
		if m.FinalLambda != nil {
			tip += ", after " + lam(*m.FinalLambda)
		}
		if m.Error != "" {
			tip += "\nerror: " + m.Error
		}
		endAttr := ""
		if !open {
			endAttr = fmt.Sprintf(` data-end="%s"`, stamp(m.End))
		}
		r.printf(`<g class="remediation" data-outcome-id="%d" data-strategy="%s" data-result="%s" data-start="%s"%s>`+"\n",
			m.ID, esc(m.Strategy), m.Result, stamp(m.Start), endAttr)
		r.printf(`<title>%s</title>`+"\n", esc(tip))
		r.printf(`<rect class="span" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="0.12"/>`+"\n",
			num(x1), num(plotTop), num(math.Max(1, x2-x1)), num(plotH), colour)
		r.printf(`<line class="start" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			num(x1), num(plotTop), num(x1), num(bottom), colour)
		if !open {
			r.endMark(m, x2, ys, colour)
		}
		// Labels go in two lanes above the strip so neighbours do not overlap.
		label := fmt.Sprintf("#%d %s: %s", m.ID, m.Strategy, resultWord(m.Result))
		if x1 < lastLabelEnd {
			lane = 1 - lane
		} else {
			lane = 0
		}
		ly := titleH + 10 + float64(lane)*12
		r.printf(`<text class="label" x="%s" y="%s" fill="%s">%s</text>`+"\n", num(x1), num(ly), colour, esc(label))
		lastLabelEnd = max(lastLabelEnd, x1+6*float64(len(label)))
		r.printf("</g>\n")
	}
}

func resultWord(res Result) string {
	return strings.ReplaceAll(string(res), "_", " ")
}

// endMark draws the end of a remediation at its final λ (or the plot's
// foot): a circle when verified, a triangle when rolled back, a cross when
// failed, a square otherwise.
func (r *renderer) endMark(m Remediation, x float64, ys yScale, colour string) {
	y := plotTop + plotH - 6
	if m.FinalLambda != nil {
		y = ys.y(*m.FinalLambda)
	}
	r.printf(`<line class="end" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-dasharray="3 2"/>`+"\n",
		num(x), num(plotTop), num(x), num(plotTop+plotH), colour)
	switch m.Result {
	case ResultVerified:
		r.printf(`<circle class="mark" cx="%s" cy="%s" r="5" fill="%s"/>`+"\n", num(x), num(y), colour)
	case ResultRolledBack, ResultRollback:
		r.printf(`<path class="mark" d="M %s %s L %s %s L %s %s Z" fill="%s"/>`+"\n",
			num(x), num(y-6), num(x-5), num(y+4), num(x+5), num(y+4), colour)
	case ResultFailed:
		r.printf(`<path class="mark" d="M %s %s L %s %s M %s %s L %s %s" stroke="%s" stroke-width="2.5"/>`+"\n",
			num(x-5), num(y-5), num(x+5), num(y+5), num(x-5), num(y+5), num(x+5), num(y-5), colour)
	default:
		r.printf(`<rect class="mark" x="%s" y="%s" width="8" height="8" fill="%s"/>`+"\n", num(x-4), num(y-4), colour)
	}
}

// maxDots is how many samples get a dot (and a tooltip) of their own;
// beyond it the line alone is drawn.
const maxDots = 300

// lambdaPath draws λ through its points; one point gets a dot alone.
func (r *renderer) lambdaPath(points []Point, ys yScale) {
	var valid []Point
	for _, pt := range points {
		if math.IsNaN(pt.Lambda) || math.IsInf(pt.Lambda, 0) || pt.At.Before(r.t.From) || pt.At.After(r.t.To) {
			continue
		}
		valid = append(valid, pt)
	}
	if len(valid) == 0 {
		r.printf(`<text class="no-data" x="%s" y="%s" fill="#888" text-anchor="middle">no λ samples in this window</text>`+"\n",
			num(plotLeft+plotWidth/2), num(plotTop+plotH/2))
		return
	}
	drawn := valid
	if len(valid) > 4*int(plotWidth) {
		drawn = decimate(valid, r.x)
	}
	var d strings.Builder
	for i, pt := range drawn {
		cmd := "L"
		if i == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&d, "%s %s %s ", cmd, num(r.x(pt.At)), num(ys.y(pt.Lambda)))
	}
	r.printf(`<path class="lambda" data-points="%d" data-samples="%d" d="%s" fill="none" stroke="#0d47a1" stroke-width="1.8"/>`+"\n",
		len(drawn), len(valid), strings.TrimSpace(d.String()))
	if len(valid) > maxDots {
		return
	}
	for _, pt := range valid {
		r.printf(`<circle class="sample" cx="%s" cy="%s" r="1.8" fill="#0d47a1"><title>λ %s at %s</title></circle>`+"\n",
			num(r.x(pt.At)), num(ys.y(pt.Lambda)), lam(pt.Lambda), stamp(pt.At))
	}
}

// decimate keeps, per pixel column, the first, lowest, highest and last
// point in time order: a long window stays a small file and no dip or peak
// disappears.
func decimate(points []Point, x func(time.Time) float64) []Point {
	var out []Point
	flush := func(bucket []Point) {
		if len(bucket) == 0 {
			return
		}
		lo, hi := 0, 0
		for i, p := range bucket {
			if p.Lambda < bucket[lo].Lambda {
				lo = i
			}
			if p.Lambda > bucket[hi].Lambda {
				hi = i
			}
		}
		keep := []int{0, lo, hi, len(bucket) - 1}
		slices.Sort(keep)
		for _, i := range slices.Compact(keep) {
			out = append(out, bucket[i])
		}
	}
	start, col := 0, math.Floor(x(points[0].At))
	for i, p := range points {
		if c := math.Floor(x(p.At)); c != col {
			flush(points[start:i])
			start, col = i, c
		}
	}
	flush(points[start:])
	return out
}
