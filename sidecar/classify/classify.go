package classify

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// RuleCheck is one rule as the classifier evaluated it.
type RuleCheck struct {
	// Rule names the rule by the class it yields.
	Rule Class `json:"rule"`
	// Measure describes what Observed counts or measures.
	Measure string `json:"measure"`
	// Observed is the counted or measured value; Threshold the configured
	// bound. The rule matches when Observed > Threshold.
	Observed  float64 `json:"observed"`
	Threshold float64 `json:"threshold"`
	Matched   bool    `json:"matched"`
	// Evaluated is false for rules after the one that fired: in the design's
	// order they were never consulted, but their values are still computed so
	// the explanation can say what else was wrong.
	Evaluated bool `json:"evaluated"`
	// Reason is a one-line human reading of the comparison.
	Reason string `json:"reason"`
}

// Decision is the result of Classify: the problem and why.
type Decision struct {
	Problem Problem `json:"problem"`
	// Rule is the rule that fired, or ClassUnknown when none did.
	Rule Class `json:"rule"`
	// Checks lists every rule in evaluation order.
	Checks []RuleCheck `json:"checks"`
	// EdgeCounts counts witness edges by type.
	EdgeCounts map[EdgeType]int `json:"edge_counts"`
	// NodeCounts counts distinct witness nodes (both endpoints) by kind.
	NodeCounts map[NodeKind]int `json:"node_counts"`
	// Thresholds are the thresholds the decision was made with.
	Thresholds Thresholds `json:"thresholds"`
	// Notes records data problems and fallbacks that shaped the details.
	Notes []string `json:"notes,omitempty"`
}

// Fired returns the check of the rule that fired, or nil when the problem is
// unknown.
func (d Decision) Fired() *RuleCheck {
	for i := range d.Checks {
		if d.Checks[i].Evaluated && d.Checks[i].Matched {
			return &d.Checks[i]
		}
	}
	return nil
}

// Explain renders the decision for humans: the rule that fired, the rules
// checked before it and why they did not fire, rules that would also have
// matched, and notes.
func (d Decision) Explain() string {
	var b strings.Builder
	fired := d.Fired()
	if fired != nil {
		fmt.Fprintf(&b, "classified as %s: %s\n", d.Problem.Class, fired.Reason)
	} else {
		fmt.Fprintf(&b, "classified as %s: no rule matched\n", d.Problem.Class)
	}
	var before, shadowed []RuleCheck
	for _, c := range d.Checks {
		switch {
		case c.Evaluated && !c.Matched:
			before = append(before, c)
		case !c.Evaluated && c.Matched:
			shadowed = append(shadowed, c)
		}
	}
	if len(before) > 0 {
		b.WriteString("checked first, did not fire:\n")
		for _, c := range before {
			fmt.Fprintf(&b, "  - %s: %s\n", c.Rule, c.Reason)
		}
	}
	if len(shadowed) > 0 {
		b.WriteString("also matching, lower precedence:\n")
		for _, c := range shadowed {
			fmt.Fprintf(&b, "  - %s: %s\n", c.Rule, c.Reason)
		}
	}
	if len(d.Notes) > 0 {
		b.WriteString("notes:\n")
		for _, n := range d.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	return b.String()
}

// Classify applies the design's rules, in order, to the witness edges and
// metrics. It never fails: bad inputs are ignored and noted in the Decision,
// and with nothing to go on the problem is unknown.
func Classify(witness []WitnessEdge, m Metrics, th Thresholds) Decision {
	c := classifier{witness: witness, m: m, th: th}
	return c.run()
}

type classifier struct {
	witness []WitnessEdge
	m       Metrics
	th      Thresholds
	notes   []string
}

func (c *classifier) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

func (c *classifier) run() Decision {
	if err := c.th.Validate(); err != nil {
		c.note("thresholds out of range, used as given: %v", err)
	}
	edgeCounts, nodeCounts := countWitness(c.witness)
	for _, t := range sortedKeys(edgeCounts) {
		if !t.Valid() {
			c.note("witness edge type %q is not known to the classifier", t)
		}
	}

	mem := c.m.MemoryUsagePct
	if !finite(mem) || mem < 0 {
		c.note("memory usage %v ignored (not a percentage)", mem)
		mem = 0
	}
	frag := c.validFragmentation()
	worstFrag := 0.0
	for _, f := range frag {
		worstFrag = max(worstFrag, f)
	}

	checks := []RuleCheck{
		countCheck(ClassHotspotCongestion, "partition_link witness edges", edgeCounts[EdgePartitionLink], c.th.PartitionLinkEdges),
		countCheck(ClassCentroidSkew, "distinct centroid nodes on witness edges", nodeCounts[NodeCentroid], c.th.CentroidNodes),
		countCheck(ClassReplicationLag, "replication witness edges", edgeCounts[EdgeReplication], c.th.ReplicationEdges),
		countCheck(ClassMaintenanceContention, "dependency witness edges", edgeCounts[EdgeDependency], c.th.DependencyEdges),
		pctCheck(ClassMemoryPressure, "memory usage", mem, c.th.MemoryUsagePct),
		pctCheck(ClassIndexFragmentation, "highest index fragmentation", worstFrag, c.th.FragmentationPct),
	}

	d := Decision{
		Checks:     checks,
		EdgeCounts: edgeCounts,
		NodeCounts: nodeCounts,
		Thresholds: c.th,
		Rule:       ClassUnknown,
	}
	firedAt := -1
	for i := range d.Checks {
		d.Checks[i].Evaluated = firedAt < 0
		if firedAt < 0 && d.Checks[i].Matched {
			firedAt = i
			d.Rule = d.Checks[i].Rule
		}
	}

	switch d.Rule {
	case ClassHotspotCongestion:
		d.Problem = Problem{Class: d.Rule, HotspotCongestion: c.hotspot()}
	case ClassCentroidSkew:
		d.Problem = Problem{Class: d.Rule, CentroidSkew: c.centroidSkew()}
	case ClassReplicationLag:
		d.Problem = Problem{Class: d.Rule, ReplicationLag: c.replicationLag()}
	case ClassMaintenanceContention:
		d.Problem = Problem{Class: d.Rule, MaintenanceContention: c.maintenance()}
	case ClassMemoryPressure:
		d.Problem = Problem{Class: d.Rule, MemoryPressure: c.memory(mem)}
	case ClassIndexFragmentation:
		d.Problem = Problem{Class: d.Rule, IndexFragmentation: c.fragmentation(frag)}
	default:
		d.Problem = Problem{Class: ClassUnknown, Unknown: &Unknown{
			WitnessSummary: summarizeWitness(c.witness, edgeCounts, nodeCounts)}}
	}
	d.Notes = c.notes
	return d
}

func countCheck(rule Class, measure string, observed, threshold int) RuleCheck {
	ok := observed > threshold
	return RuleCheck{
		Rule: rule, Measure: measure,
		Observed: float64(observed), Threshold: float64(threshold), Matched: ok,
		Reason: fmt.Sprintf("%d %s %s %d", observed, measure, cmpWord(ok), threshold),
	}
}

func pctCheck(rule Class, measure string, observed, threshold float64) RuleCheck {
	ok := observed > threshold
	return RuleCheck{
		Rule: rule, Measure: measure,
		Observed: observed, Threshold: threshold, Matched: ok,
		Reason: fmt.Sprintf("%s %s%% %s %s%%", measure, fmtNum(observed), cmpWord(ok), fmtNum(threshold)),
	}
}

func cmpWord(matched bool) string {
	if matched {
		return ">"
	}
	return "<="
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

type nodeKey struct {
	kind NodeKind
	id   int64
}

// countWitness counts edges by type and distinct nodes by kind over both
// endpoints (witness edges are undirected).
func countWitness(witness []WitnessEdge) (map[EdgeType]int, map[NodeKind]int) {
	edges := map[EdgeType]int{}
	nodes := map[NodeKind]int{}
	seen := map[nodeKey]bool{}
	for _, e := range witness {
		edges[e.EdgeType]++
		for _, n := range [2]NodeRef{e.Source, e.Target} {
			k := nodeKey{n.Kind, n.ID}
			if !seen[k] {
				seen[k] = true
				nodes[n.Kind]++
			}
		}
	}
	return edges, nodes
}

// witnessNodes returns the distinct ids of kind found on edges of edgeType
// ("" = any type), in ascending order.
func witnessNodes(witness []WitnessEdge, edgeType EdgeType, kind NodeKind) []int64 {
	seen := map[int64]bool{}
	var ids []int64
	for _, e := range witness {
		if edgeType != "" && e.EdgeType != edgeType {
			continue
		}
		for _, n := range [2]NodeRef{e.Source, e.Target} {
			if n.Kind == kind && !seen[n.ID] {
				seen[n.ID] = true
				ids = append(ids, n.ID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// ranked is an id with a score; known is false when metrics lack the id.
type ranked struct {
	id    int64
	score float64
	known bool
}

// rankDesc orders by score descending, unknown scores last, then id ascending.
func rankDesc(rs []ranked) {
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.known != b.known {
			if a.known {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
}

// relative scores the witness ids against the mean of all valid values and
// keeps those at or above ratio; if none qualifies, it keeps them all, since
// the witness already implicates them. It returns the ids (best first) and the
// highest score among them.
func (c *classifier) relative(what string, ids []int64, values map[int64]float64, ratio float64) ([]int64, float64) {
	sum, n := 0.0, 0
	for _, id := range sortedKeys(values) {
		v := values[id]
		if !finite(v) || v < 0 {
			c.note("%s %d: value %v ignored", what, id, v)
			continue
		}
		sum += v
		n++
	}
	mean := 0.0
	if n > 0 {
		mean = sum / float64(n)
	}
	rs := make([]ranked, 0, len(ids))
	var missing []string
	for _, id := range ids {
		v, ok := values[id]
		if !ok || !finite(v) || v < 0 || mean == 0 {
			rs = append(rs, ranked{id: id})
			if !ok {
				missing = append(missing, strconv.FormatInt(id, 10))
			}
			continue
		}
		rs = append(rs, ranked{id: id, score: v / mean, known: true})
	}
	if len(missing) > 0 {
		c.note("no %s metric for witness %s %s", what, what, strings.Join(missing, ", "))
	}
	if len(ids) == 0 {
		c.note("no %s nodes on the witness edges", what)
	}
	rankDesc(rs)
	hot := make([]int64, 0, len(rs))
	best := 0.0
	for _, r := range rs {
		if r.known && r.score >= ratio {
			hot = append(hot, r.id)
			best = max(best, r.score)
		}
	}
	if len(hot) == 0 && len(rs) > 0 {
		c.note("no witness %s reaches ratio %s of the mean: reporting every witness %s", what, fmtNum(ratio), what)
		for _, r := range rs {
			hot = append(hot, r.id)
			if r.known {
				best = max(best, r.score)
			}
		}
	}
	return hot, best
}

func (c *classifier) hotspot() *HotspotCongestion {
	ids := witnessNodes(c.witness, EdgePartitionLink, NodePartition)
	hot, ratio := c.relative("partition", ids, c.m.PartitionLoad, c.th.HotPartitionRatio)
	return &HotspotCongestion{PartitionIDs: hot, LoadRatio: ratio}
}

func (c *classifier) centroidSkew() *CentroidSkew {
	ids := witnessNodes(c.witness, "", NodeCentroid)
	sizes := make(map[int64]float64, len(c.m.CentroidListSizes))
	for id, s := range c.m.CentroidListSizes {
		sizes[id] = float64(s)
	}
	skewed, factor := c.relative("centroid", ids, sizes, c.th.SkewedCentroidRatio)
	return &CentroidSkew{CentroidIDs: skewed, SkewFactor: factor}
}

func (c *classifier) replicationLag() *ReplicationLag {
	ids := witnessNodes(c.witness, EdgeReplication, NodeReplica)
	if len(ids) == 0 {
		c.note("no replica nodes on the replication witness edges")
	}
	rs := make([]ranked, 0, len(ids))
	var missing []string
	for _, id := range ids {
		lag, ok := c.m.ReplicaLagSeconds[id]
		if !ok || !finite(lag) || lag < 0 {
			if ok {
				c.note("replica %d: lag %v ignored", id, lag)
			} else {
				missing = append(missing, strconv.FormatInt(id, 10))
			}
			rs = append(rs, ranked{id: id})
			continue
		}
		rs = append(rs, ranked{id: id, score: lag, known: true})
	}
	if len(missing) > 0 {
		c.note("no lag metric for witness replica %s", strings.Join(missing, ", "))
	}
	rankDesc(rs)
	out := &ReplicationLag{ReplicaIDs: make([]int64, 0, len(rs))}
	for _, r := range rs {
		out.ReplicaIDs = append(out.ReplicaIDs, r.id)
		if r.known {
			out.LagSeconds = max(out.LagSeconds, r.score)
		}
	}
	return out
}

func (c *classifier) maintenance() *MaintenanceContention {
	jobs := map[int64]MaintenanceJob{}
	for _, j := range c.m.MaintenanceJobs {
		jobs[j.NodeID] = j
	}
	// Distinct nodes first: a job reached by several witness edges is still
	// one job, and its load must be counted once.
	nodes := map[int64]NodeRef{}
	for _, e := range c.witness {
		if e.EdgeType != EdgeDependency {
			continue
		}
		for _, n := range [2]NodeRef{e.Source, e.Target} {
			if n.Kind == NodeMaintenanceDep {
				nodes[n.ID] = n
			}
		}
	}
	busy := map[string]int{}
	for _, id := range sortedKeys(nodes) {
		n := nodes[id]
		typ, load := n.Name, 0
		if j, ok := jobs[id]; ok && j.Type != "" {
			typ, load = j.Type, max(j.Queued, 0)+max(j.Running, 0)
		}
		if typ == "" {
			typ = fmt.Sprintf("maintenance_dep:%d", id)
		}
		busy[typ] += load
	}
	types := sortedKeys(busy)
	slices.SortStableFunc(types, func(a, b string) int { return cmp.Compare(busy[b], busy[a]) })
	if len(types) == 0 {
		c.note("no maintenance_dep nodes on the dependency witness edges")
	}
	depth := c.m.MaintenanceQueueDepth
	if depth < 0 {
		c.note("maintenance queue depth %d ignored", depth)
		depth = 0
	}
	return &MaintenanceContention{JobTypes: types, QueueDepth: depth}
}

func (c *classifier) memory(usage float64) *MemoryPressure {
	cons := make([]MemoryConsumer, 0, len(c.m.MemoryConsumers))
	for _, mc := range c.m.MemoryConsumers {
		if mc.Bytes < 0 {
			c.note("memory consumer %q: %d bytes ignored", mc.Name, mc.Bytes)
			continue
		}
		cons = append(cons, mc)
	}
	slices.SortFunc(cons, func(a, b MemoryConsumer) int {
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if n := c.th.MaxMemoryConsumers; n > 0 && len(cons) > n {
		cons = cons[:n]
	}
	return &MemoryPressure{CurrentUsagePct: usage, LargestConsumers: cons}
}

func (c *classifier) validFragmentation() map[int64]float64 {
	out := make(map[int64]float64, len(c.m.IndexFragmentationPct))
	for _, id := range sortedKeys(c.m.IndexFragmentationPct) {
		f := c.m.IndexFragmentationPct[id]
		if !finite(f) || f < 0 {
			c.note("index %d: fragmentation %v ignored", id, f)
			continue
		}
		out[id] = f
	}
	return out
}

func (c *classifier) fragmentation(frag map[int64]float64) *IndexFragmentation {
	rs := make([]ranked, 0, len(frag))
	for id, f := range frag {
		if f > c.th.FragmentationPct {
			rs = append(rs, ranked{id: id, score: f, known: true})
		}
	}
	rankDesc(rs)
	out := &IndexFragmentation{IndexIDs: make([]int64, 0, len(rs))}
	for _, r := range rs {
		out.IndexIDs = append(out.IndexIDs, r.id)
		out.FragmentationPct = max(out.FragmentationPct, r.score)
	}
	return out
}

// summarizeWitness describes the witness for a human who has to investigate:
// counts by type and kind, and the weakest edge.
func summarizeWitness(witness []WitnessEdge, edges map[EdgeType]int, nodes map[NodeKind]int) string {
	if len(witness) == 0 {
		return "no witness edges"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d witness edges (", len(witness))
	b.WriteString(joinCounts(edges, EdgeTypes()))
	b.WriteString("); nodes (")
	b.WriteString(joinCounts(nodes, NodeKinds()))
	b.WriteString(")")
	weakest := witness[0]
	for _, e := range witness[1:] {
		if e.Capacity < weakest.Capacity {
			weakest = e
		}
	}
	fmt.Fprintf(&b, "; weakest %s %s–%s capacity %s", weakest.EdgeType, weakest.Source, weakest.Target, fmtNum(weakest.Capacity))
	return b.String()
}

// joinCounts lists known keys in their canonical order, then unknown ones
// sorted, so the summary is deterministic.
func joinCounts[K ~string](counts map[K]int, order []K) string {
	var parts []string
	done := map[K]bool{}
	for _, k := range order {
		if n := counts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, n))
		}
		done[k] = true
	}
	var rest []K
	for k := range counts {
		if !done[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range rest {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
