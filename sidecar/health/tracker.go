package health

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

// Cut is the health graph's minimum cut after one sample.
type Cut struct {
	Collection string    `json:"collection"`
	At         time.Time `json:"at"`
	// LambdaFixed is the exact minimum cut in fixed-point weight;
	// BaselineFixed the minimum cut of the same topology with every capacity
	// 1 (the healthy baseline).
	LambdaFixed   int64 `json:"lambda_fixed"`
	BaselineFixed int64 `json:"baseline_fixed"`
	// Lambda is the raw λ in bundle units (LambdaFixed / BundleWeight): the
	// capacity of the weakest bundle's health edges, each counted as its
	// share of the bundle.
	Lambda float64 `json:"lambda"`
	// LambdaNorm = λ / λ_baseline, in [0, 1]: the value compared with the
	// 0.8 / 0.3 thresholds. With the bundle topology it is the mean capacity
	// of the weakest bundle, independent of the graph's size. NaN when the
	// baseline is 0 (a graph with no bundle, which Build never produces).
	LambdaNorm float64 `json:"lambda_norm"`
	// Side is the smaller side of the minimum cut (the isolated bundle).
	Side []Node `json:"side"`
	// Witness are the edges crossing Side, flow = capacity (a saturated cut
	// edge carries its capacity).
	Witness []classify.WitnessEdge `json:"witness_edges"`
	// Graph is the snapshot for ruvector_contracted_graph.
	Graph *Graph `json:"graph"`
	// UnknownKinds lists the kinds whose collectors failed this sample.
	UnknownKinds []string     `json:"unknown_kinds,omitempty"`
	Stats        TrackerStats `json:"stats"`
}

// TrackerStats counts how the tracker kept the cut.
type TrackerStats struct {
	Samples int `json:"samples"`
	// TopologyChanges counts samples that added or removed nodes.
	TopologyChanges int `json:"topology_changes"`
	// LastChanges is the number of mincut changes of the last sample;
	// EdgeChanges the total of SetEdge changes sent.
	LastChanges int `json:"last_changes"`
	EdgeChanges int `json:"edge_changes"`
	// Rebuilds counts fresh Dynamics (first sample, and compaction after
	// node churn left too many dead ids).
	Rebuilds int `json:"rebuilds"`
	// BaselineRecomputes counts baseline λ computations (topology changes
	// only).
	BaselineRecomputes int `json:"baseline_recomputes"`
	// MinCut is the Dynamic's own accounting since the last rebuild.
	MinCut mincut.Stats `json:"mincut"`
}

// Tracker keeps one collection's health graph and its exact minimum cut
// across samples in a mincut.Dynamic: a sample with the same topology becomes
// a batch of SetEdge changes (only edges whose fixed-point weight changed),
// and added or removed components become AddNode/RemoveNode changes. The
// baseline λ is recomputed only when the topology changes.
//
// A kind marked unknown whose collector returned no items keeps the previous
// sample's items (at the unknown capacity), so a flapping collector does not
// make nodes come and go.
//
// A Tracker is not safe for concurrent use.
type Tracker struct {
	cfg      Config
	dyn      *mincut.Dynamic
	ids      map[NodeKey]int // dynamic id of every live node
	dynID    []int           // dynamic id of each node of prev, by index
	nodeOf   []int           // index in prev of each dynamic id, -1 if dead
	prev     *Graph
	baseline int64
	last     Signals // last items seen per kind, for unknown kinds
	stats    TrackerStats
}

// NewTracker returns a tracker with the given config.
func NewTracker(cfg Config) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("health: new tracker: %w", err)
	}
	return &Tracker{cfg: cfg}, nil
}

// Update folds one sample into the graph and returns the new cut.
func (t *Tracker) Update(s Signals) (Cut, error) { return t.UpdateWithErrors(s, nil) }

// UpdateWithErrors is Update with known per-component error rates.
func (t *Tracker) UpdateWithErrors(s Signals, errs ErrorRates) (Cut, error) {
	s = t.carryForward(s)
	g, err := Build(s, t.cfg, errs)
	if err != nil {
		return Cut{}, fmt.Errorf("health: update: %w", err)
	}
	t.stats.Samples++
	var r mincut.Result
	if t.dyn == nil || t.needsCompaction(g) {
		r = t.rebuild(g)
	} else {
		r = t.apply(g)
	}
	t.prev = g
	t.stats.MinCut = t.dyn.Stats()
	return t.cut(s, g, r), nil
}

// carryForward replaces the items of unknown, empty kinds by the last ones
// seen, and remembers the items of known kinds.
func (t *Tracker) carryForward(s Signals) Signals {
	carry(s.Unknown[KindPartitions], &s.Partitions, &t.last.Partitions)
	carry(s.Unknown[KindCentroids], &s.Centroids, &t.last.Centroids)
	carry(s.Unknown[KindReplicas], &s.Replicas, &t.last.Replicas)
	carry(s.Unknown[KindMaintenance], &s.Maintenance, &t.last.Maintenance)
	carry(s.Unknown[KindIndexes], &s.Indexes, &t.last.Indexes)
	return s
}

// carry fills an unknown, empty kind from last, or remembers a known one.
func carry[T any](unknown bool, cur, last *[]T) {
	switch {
	case !unknown:
		// A copy: the caller may reuse its slices for the next sample.
		*last = slices.Clone(*cur)
	case len(*cur) == 0:
		*cur = *last
	}
}

// needsCompaction reports whether removed ids outnumber live nodes: the
// Dynamic never reuses ids, and job churn would otherwise grow it forever.
func (t *Tracker) needsCompaction(g *Graph) bool {
	return t.dyn.NumNodes() > 2*len(g.Nodes)+64
}

// rebuild starts a fresh Dynamic from g.
func (t *Tracker) rebuild(g *Graph) mincut.Result {
	t.stats.Rebuilds++
	t.ids = make(map[NodeKey]int, len(g.Nodes))
	for i, n := range g.Nodes {
		t.ids[n.Key()] = i
	}
	t.dyn = mincut.NewDynamic(g.MinCutGraph(false))
	t.index(g)
	t.stats.LastChanges = 0
	t.recomputeBaseline(g)
	return t.dyn.Result()
}

func (t *Tracker) recomputeBaseline(g *Graph) {
	t.stats.BaselineRecomputes++
	t.baseline = mincut.MinCut(g.MinCutGraph(true)).Lambda
}

type keyPair struct{ u, v NodeKey }

func edgeKey(g *Graph, e Edge) keyPair { return keyPair{g.Nodes[e.U].Key(), g.Nodes[e.V].Key()} }

// sameTopology reports whether g has the previous graph's nodes and edges
// in the same order (Build is deterministic), so that edges can be compared
// by position instead of through maps keyed by node identity.
func (t *Tracker) sameTopology(g *Graph) bool {
	p := t.prev
	if len(p.Nodes) != len(g.Nodes) || len(p.Edges) != len(g.Edges) {
		return false
	}
	for i := range g.Nodes {
		if p.Nodes[i].Key() != g.Nodes[i].Key() {
			return false
		}
	}
	for i := range g.Edges {
		a, b := &p.Edges[i], &g.Edges[i]
		if a.U != b.U || a.V != b.V || a.Baseline != b.Baseline {
			return false
		}
	}
	return true
}

// apply turns the difference between the previous graph and g into one
// batch of changes.
func (t *Tracker) apply(g *Graph) mincut.Result {
	if t.sameTopology(g) {
		var changes []mincut.Change
		for i := range g.Edges {
			e := &g.Edges[i]
			if t.prev.Edges[i].Weight != e.Weight {
				changes = append(changes, mincut.Change{Kind: mincut.SetEdge, U: t.dynID[e.U], V: t.dynID[e.V], W: e.Weight})
			}
		}
		t.stats.LastChanges = len(changes)
		t.stats.EdgeChanges += len(changes)
		if len(changes) == 0 {
			return t.dyn.Result()
		}
		return t.dyn.Apply(changes)
	}
	defer t.index(g)
	var changes []mincut.Change
	topology := false
	for _, n := range t.prev.Nodes {
		k := n.Key()
		if _, ok := g.index[k]; !ok {
			changes = append(changes, mincut.Change{Kind: mincut.RemoveNode, U: t.ids[k]})
			delete(t.ids, k)
			topology = true
		}
	}
	next := t.dyn.NumNodes()
	for _, n := range g.Nodes {
		k := n.Key()
		if _, ok := t.ids[k]; !ok {
			changes = append(changes, mincut.Change{Kind: mincut.AddNode})
			t.ids[k] = next
			next++
			topology = true
		}
	}
	old := make(map[keyPair]Edge, len(t.prev.Edges))
	for _, e := range t.prev.Edges {
		old[edgeKey(t.prev, e)] = e
	}
	baselineChanged := false
	for _, e := range g.Edges {
		k := edgeKey(g, e)
		o, ok := old[k]
		delete(old, k)
		if ok && o.Weight == e.Weight {
			continue
		}
		if !ok || o.Baseline != e.Baseline {
			baselineChanged = true
		}
		changes = append(changes, mincut.Change{Kind: mincut.SetEdge, U: t.ids[k.u], V: t.ids[k.v], W: e.Weight})
	}
	// Edges that disappeared between surviving nodes (none in today's
	// topology, which only loses edges with their nodes, but a future edge
	// rule must not leave a stale weight behind).
	for k := range old {
		u, uok := t.ids[k.u]
		v, vok := t.ids[k.v]
		if uok && vok {
			changes = append(changes, mincut.Change{Kind: mincut.SetEdge, U: u, V: v, W: 0})
			baselineChanged = true
		}
	}
	t.stats.LastChanges = len(changes)
	for _, c := range changes {
		if c.Kind == mincut.SetEdge {
			t.stats.EdgeChanges++
		}
	}
	if topology {
		t.stats.TopologyChanges++
	}
	if topology || baselineChanged {
		t.recomputeBaseline(g)
	}
	if len(changes) == 0 {
		return t.dyn.Result()
	}
	return t.dyn.Apply(changes)
}

// index records the dynamic id of each node of g and the reverse.
func (t *Tracker) index(g *Graph) {
	t.dynID = t.dynID[:0]
	t.nodeOf = slices.Grow(t.nodeOf[:0], t.dyn.NumNodes())[:t.dyn.NumNodes()]
	for i := range t.nodeOf {
		t.nodeOf[i] = -1
	}
	for i, n := range g.Nodes {
		id := t.ids[n.Key()]
		t.dynID = append(t.dynID, id)
		t.nodeOf[id] = i
	}
}

// cut translates a mincut result (in Dynamic ids) into a Cut.
func (t *Tracker) cut(s Signals, g *Graph, r mincut.Result) Cut {
	byID := t.nodeOf
	c := Cut{
		Collection: s.Collection, At: s.At,
		LambdaFixed: r.Lambda, BaselineFixed: t.baseline,
		Lambda:       float64(r.Lambda) / float64(BundleWeight),
		LambdaNorm:   math.NaN(),
		Graph:        g,
		UnknownKinds: g.UnknownKinds,
		Stats:        t.stats,
	}
	if t.baseline > 0 {
		c.LambdaNorm = float64(r.Lambda) / float64(t.baseline)
	}
	for _, v := range r.Side {
		c.Side = append(c.Side, g.Nodes[byID[v]])
	}
	// The witness is short: look its pairs up in one pass over the edges.
	want := make(map[[2]int]bool, len(r.Witness))
	for _, w := range r.Witness {
		u, v := byID[w.U], byID[w.V]
		want[[2]int{min(u, v), max(u, v)}] = true
	}
	for _, e := range g.Edges {
		if want[[2]int{min(e.U, e.V), max(e.U, e.V)}] {
			c.Witness = append(c.Witness, classify.WitnessEdge{
				Source: e.Source, Target: e.Target, EdgeType: e.EdgeType,
				Capacity: e.Capacity, Flow: e.Capacity,
			})
		}
	}
	if len(c.Witness) != len(r.Witness) {
		panic(fmt.Sprintf("health: internal error: %d witness edges from mincut, %d found in the graph", len(r.Witness), len(c.Witness)))
	}
	sortWitness(c.Witness)
	slices.SortFunc(c.Side, func(a, b Node) int { return compareNodes(a, b) })
	return c
}

func compareNodes(a, b Node) int {
	switch {
	case a.Kind != b.Kind:
		if a.Kind < b.Kind {
			return -1
		}
		return 1
	case a.ID != b.ID:
		if a.ID < b.ID {
			return -1
		}
		return 1
	case a.Hub != b.Hub:
		if !a.Hub {
			return -1
		}
		return 1
	}
	return 0
}
