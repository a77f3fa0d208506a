package health

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
	"github.com/ruvector/ruvector-healing/sidecar/mincut"
)

// Topology (see CAPACITIES.md for the capacities).
//
// Components are grouped into bundles. A bundle is either one component
// (gateway, memory, each replica, each index) or all the components of a
// kind (the partitions, the IVF lists, the maintenance jobs). Every
// component has exactly one health edge, to the collection's root. The
// members of a multi-component bundle are also tied to a structural hub by
// membership edges (partitions to their shard node, shard nodes to the first
// shard; lists to the "ivf_lists" index hub; jobs to the "maintenance" hub).
//
// Weights: a bundle at full health weighs BundleWeight in total, split
// evenly over its members (member weight = BundleWeight/n × capacity, the
// first member taking the remainder of the integer division). A
// membership edge weighs 2×BundleWeight. Hence:
//
//   - any cut that splits a bundle crosses a membership edge and costs more
//     than 2×BundleWeight, while isolating a whole bundle costs at most
//     BundleWeight: the minimum cut always isolates exactly one bundle, and
//     its witness edges are that bundle's health edges (never a membership
//     edge);
//   - the isolated bundle is the one with the lowest mean capacity: a single
//     unhealthy component lowers λ only through its own health edge, and a
//     bundle of many components (a hotspot over four partitions, many skewed
//     lists, several contending jobs) shows all of its edges in the witness,
//     which is what the classifier's count rules read (the classifier then
//     singles out the hot partitions / skewed lists by their metrics);
//   - λ(all capacities 1) = BundleWeight whatever the graph's size, and
//     λ_norm = λ / λ_baseline is the mean capacity of the weakest bundle.
//
// The gateway is its own bundle rather than the hub of the partitions:
// otherwise gate congestion would always come with every partition_link in
// the witness and be classified as a hotspot.

// BundleWeight is the fixed-point weight of one bundle at full health. It is
// large so that a member of a 100,000-node bundle still has 10^7 weight
// units (capacity resolution 10^-7), and small enough that 100,000 nodes
// with membership edges stay far below mincut.MaxTotalWeight.
const BundleWeight int64 = 1_000_000_000_000

// membershipWeight makes splitting a bundle dearer than isolating any bundle.
const membershipWeight = 2 * BundleWeight

// EdgeMembership is the type of the structural edges that tie a bundle's
// members to its hub. They never cross a minimum cut (see Topology above),
// so the classifier never sees them; they appear only in the snapshot.
const EdgeMembership classify.EdgeType = "membership"

// Hub ids: hubs are keyed apart from components (NodeKey.Hub), the id only
// shows in the snapshot.
const (
	hubCentroids   int64 = -1
	hubMaintenance int64 = -1
	unshardedShard int64 = -1
)

// Unknown kind names, as collectors write them into Signals.Unknown.
const (
	KindGateway     = "gateway"
	KindPartitions  = "partitions"
	KindCentroids   = "centroids"
	KindReplicas    = "replicas"
	KindMaintenance = "maintenance"
	KindIndexes     = "indexes"
	KindMemory      = "memory"
)

// NodeKey identifies a node across samples.
type NodeKey struct {
	Kind classify.NodeKind
	ID   int64
	// Hub marks structural hubs (and shard nodes), so that a hub never
	// collides with a component of the same kind and id.
	Hub bool
}

// ErrorRates are known error rates (0..1) per component; the component's
// capacity becomes capacity × (1 − rate). Signals carries none today, so
// this is how a collector that measures errors feeds them in.
type ErrorRates map[NodeKey]float64

// Node is a node of the contracted graph.
type Node struct {
	Kind    classify.NodeKind `json:"type"`
	ID      int64             `json:"id"`
	Name    string            `json:"name"`
	Unknown bool              `json:"unknown"`
	Hub     bool              `json:"hub,omitempty"`
}

// Ref returns the node as the classifier's NodeRef.
func (n Node) Ref() classify.NodeRef { return classify.NodeRef{Kind: n.Kind, ID: n.ID, Name: n.Name} }

// Key returns the node's identity across samples.
func (n Node) Key() NodeKey { return NodeKey{Kind: n.Kind, ID: n.ID, Hub: n.Hub} }

// Edge is an edge of the contracted graph. Source is the root or the hub.
type Edge struct {
	Source   classify.NodeRef  `json:"source"`
	Target   classify.NodeRef  `json:"target"`
	EdgeType classify.EdgeType `json:"edge_type"`
	// Capacity is the component's effective health in [floor, 1] (1 for
	// membership edges).
	Capacity float64 `json:"capacity"`
	// Weight is the fixed-point weight given to mincut; Baseline the weight
	// the same edge has at capacity 1.
	Weight   int64 `json:"weight"`
	Baseline int64 `json:"-"`
	// U and V index Graph.Nodes (U = Source).
	U, V int `json:"-"`
}

// Graph is the contracted health graph of one collection, in the JSON shape
// of ruvector_contracted_graph.
type Graph struct {
	Nodes     []Node `json:"nodes"`
	Edges     []Edge `json:"edges"`
	NodeCount int    `json:"node_count"`
	EdgeCount int    `json:"edge_count"`
	// UnknownKinds lists the kinds whose collectors failed (sorted).
	UnknownKinds []string `json:"unknown_kinds,omitempty"`
	// Notes records dropped inputs (duplicate ids).
	Notes []string `json:"notes,omitempty"`

	index map[NodeKey]int
}

// NodeIndex returns the index in Nodes of the node with key k.
func (g *Graph) NodeIndex(k NodeKey) (int, bool) {
	i, ok := g.index[k]
	return i, ok
}

// MinCutGraph returns the graph as a mincut.Graph over node indices, with
// the actual weights, or with the baseline (all capacities 1) weights.
func (g *Graph) MinCutGraph(baseline bool) *mincut.Graph {
	m := mincut.NewGraph(len(g.Nodes))
	for _, e := range g.Edges {
		w := e.Weight
		if baseline {
			w = e.Baseline
		}
		m.AddEdge(e.U, e.V, w)
	}
	return m
}

type builder struct {
	g    *Graph
	cfg  Config
	errs ErrorRates
	unk  map[string]bool
	root int
}

// Build builds the contracted graph of one sample (topology: see the
// comment above BundleWeight). errs may be nil.
func Build(s Signals, cfg Config, errs ErrorRates) (*Graph, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("health: build %q: %w", s.Collection, err)
	}
	// Sizes are known up front; growing slices and the index map was most
	// of the cost of a sample (shards are at most one per partition).
	members := len(s.Partitions) + len(s.Centroids) + len(s.Maintenance)
	nodes := 5 + len(s.Replicas) + len(s.Indexes) + members + len(s.Partitions)
	g := &Graph{
		Nodes: make([]Node, 0, nodes),
		Edges: make([]Edge, 0, 2+len(s.Replicas)+len(s.Indexes)+2*members+len(s.Partitions)),
		index: make(map[NodeKey]int, nodes),
	}
	b := &builder{g: g, cfg: cfg, errs: errs, unk: s.Unknown}
	for k, v := range s.Unknown {
		if v {
			b.g.UnknownKinds = append(b.g.UnknownKinds, k)
		}
	}
	slices.Sort(b.g.UnknownKinds)

	b.root = b.node(Node{Kind: classify.NodeRoot, ID: int64(s.CollectionID), Name: s.Collection})

	gw := Node{Kind: classify.NodeGateway, ID: 0, Name: "gateway"}
	b.single(gw, classify.EdgeRoutingLink, KindGateway, cfg.gatewayCapacity(s.Gateway))

	mem := Node{Kind: classify.NodeMemory, ID: 0, Name: "memory"}
	if s.Memory.Source != "" {
		mem.Name = "memory (" + s.Memory.Source + ")"
	}
	b.single(mem, classify.EdgeDependency, KindMemory, cfg.memoryCapacity(s.Memory))

	replicas := dedupe(b, "replica", s.Replicas, func(r ReplicaSignal) int64 { return r.ID })
	for _, r := range replicas {
		b.single(Node{Kind: classify.NodeReplica, ID: r.ID, Name: r.Name}, classify.EdgeReplication, KindReplicas, cfg.replicaCapacity(r))
	}
	indexes := dedupe(b, "index", s.Indexes, func(ix IndexSignal) int64 { return ix.RelID })
	for _, ix := range indexes {
		b.single(Node{Kind: classify.NodeIndex, ID: ix.RelID, Name: ix.Name}, classify.EdgeRoutingLink, KindIndexes, cfg.indexCapacity(ix))
	}

	b.partitions(dedupe(b, "partition", s.Partitions, func(p PartitionSignal) int64 { return p.RelID }))

	cents := dedupe(b, "centroid", s.Centroids, func(c CentroidSignal) int64 { return c.ID })
	if len(cents) > 0 {
		hub := b.node(Node{Kind: classify.NodeIndex, ID: hubCentroids, Name: "ivf_lists", Hub: true})
		caps := cfg.centroidCapacities(cents)
		members := make([]Node, len(cents))
		for i, c := range cents {
			members[i] = Node{Kind: classify.NodeCentroid, ID: c.ID, Name: "list " + strconv.FormatInt(c.ID, 10)}
		}
		b.bundle(members, caps, func(int) int { return hub }, classify.EdgeRoutingLink, KindCentroids)
	}

	jobs := dedupe(b, "maintenance job", s.Maintenance, func(j JobSignal) int64 { return j.ID })
	if len(jobs) > 0 {
		hub := b.node(Node{Kind: classify.NodeMaintenanceDep, ID: hubMaintenance, Name: "maintenance", Hub: true})
		caps := cfg.jobCapacities(jobs)
		members := make([]Node, len(jobs))
		for i, j := range jobs {
			members[i] = Node{Kind: classify.NodeMaintenanceDep, ID: j.ID, Name: j.Type}
		}
		b.bundle(members, caps, func(int) int { return hub }, classify.EdgeDependency, KindMaintenance)
	}

	b.g.NodeCount, b.g.EdgeCount = len(b.g.Nodes), len(b.g.Edges)
	return b.g, nil
}

// dedupe returns the items sorted by id, keeping the first of duplicate ids
// (a collector bug must not create parallel nodes) and noting the drop.
func dedupe[T any](b *builder, what string, items []T, id func(T) int64) []T {
	out := slices.Clone(items)
	sort.SliceStable(out, func(i, j int) bool { return id(out[i]) < id(out[j]) })
	return slices.CompactFunc(out, func(a, c T) bool {
		if id(a) == id(c) {
			b.g.Notes = append(b.g.Notes, fmt.Sprintf("duplicate %s id %d dropped", what, id(c)))
			return true
		}
		return false
	})
}

func (b *builder) node(n Node) int {
	i := len(b.g.Nodes)
	b.g.Nodes = append(b.g.Nodes, n)
	b.g.index[n.Key()] = i
	return i
}

func (b *builder) edge(u, v int, t classify.EdgeType, capacity float64, w, base int64) {
	b.g.Edges = append(b.g.Edges, Edge{
		Source: b.g.Nodes[u].Ref(), Target: b.g.Nodes[v].Ref(), EdgeType: t,
		Capacity: capacity, Weight: w, Baseline: base, U: u, V: v,
	})
}

// capacity applies the unknown rule and the error rate to a computed
// capacity.
func (b *builder) capacity(n *Node, kind string, c float64) float64 {
	if b.unk[kind] {
		n.Unknown = true
		return b.cfg.UnknownCapacity
	}
	rate := math.NaN()
	if r, ok := b.errs[n.Key()]; ok {
		rate = r
	}
	return b.cfg.effective(c, rate)
}

// single adds a one-component bundle: the node and its health edge to root.
func (b *builder) single(n Node, t classify.EdgeType, kind string, c float64) {
	c = b.capacity(&n, kind, c)
	i := b.node(n)
	b.edge(b.root, i, t, c, weight(BundleWeight, c), BundleWeight)
}

// bundle adds the members of a multi-component bundle: each with its health
// edge to root and a membership edge to its hub. A member's edge weighs
// BundleWeight/n × capacity × (worst/mean), where worst is the mean capacity
// of the bundle's worst ceil(n × BundleWorstFraction) members: the bundle as
// a whole then weighs BundleWeight × worst (so λ_norm reads the bundle's
// worst members, not a mean that one hot partition among many cannot move),
// while each edge stays proportional to its own capacity.
func (b *builder) bundle(members []Node, caps []float64, hub func(i int) int, t classify.EdgeType, kind string) {
	n := int64(len(members))
	eff := make([]float64, len(members))
	for i := range members {
		eff[i] = b.capacity(&members[i], kind, caps[i])
	}
	scale := worstScale(eff, b.cfg.BundleWorstFraction)
	for i, m := range members {
		// The first member takes the remainder, so that every bundle's
		// baseline is exactly BundleWeight and a fully healthy graph has
		// λ_norm exactly 1 (the members differ by < n units in 10^12).
		base := BundleWeight / n
		if i == 0 {
			base += BundleWeight % n
		}
		v := b.node(m)
		b.g.Edges = append(b.g.Edges, Edge{
			Source: b.g.Nodes[b.root].Ref(), Target: b.g.Nodes[v].Ref(), EdgeType: t,
			Capacity: eff[i], Weight: weight(base, eff[i]*scale), Baseline: base, U: b.root, V: v,
		})
		b.edge(hub(i), v, EdgeMembership, 1, membershipWeight, membershipWeight)
	}
}

// worstScale returns worst/mean for the capacities (1 when they are all
// equal): worst is the mean of the ceil(n × fraction) smallest.
func worstScale(caps []float64, fraction float64) float64 {
	if len(caps) == 0 {
		return 1
	}
	k := max(1, int(math.Ceil(float64(len(caps))*fraction)))
	sorted := slices.Clone(caps)
	slices.Sort(sorted)
	var all, worst float64
	for i, c := range sorted {
		all += c
		if i < k {
			worst += c
		}
	}
	mean, w := all/float64(len(caps)), worst/float64(k)
	if mean <= 0 || w >= mean {
		return 1
	}
	return w / mean
}

// partitions adds the partition bundle: one shard node per distinct shard
// value (the unsharded value -1 included), every partition tied to its shard
// and every shard to the first one, so the whole bundle is one piece.
func (b *builder) partitions(ps []PartitionSignal) {
	if len(ps) == 0 {
		return
	}
	var shards []int64
	for _, p := range ps {
		shards = append(shards, p.Shard)
	}
	slices.Sort(shards)
	shards = slices.Compact(shards)
	shardIdx := make(map[int64]int, len(shards))
	for i, v := range shards {
		name := "shard " + strconv.FormatInt(v, 10)
		if v == unshardedShard {
			name = "unsharded"
		}
		shardIdx[v] = b.node(Node{Kind: classify.NodeShard, ID: v, Name: name, Hub: true})
		if i > 0 {
			b.edge(shardIdx[shards[0]], shardIdx[v], EdgeMembership, 1, membershipWeight, membershipWeight)
		}
	}
	members := make([]Node, len(ps))
	for i, p := range ps {
		members[i] = Node{Kind: classify.NodePartition, ID: p.RelID, Name: p.Name}
	}
	b.bundle(members, b.cfg.partitionCapacities(ps), func(i int) int { return shardIdx[ps[i].Shard] }, classify.EdgePartitionLink, KindPartitions)
}

// weight converts a capacity to fixed point; at capacity 1 it is exactly
// base, so a fully healthy graph has λ_norm exactly 1.
func weight(base int64, c float64) int64 {
	if c >= 1 {
		return base
	}
	return max(int64(math.Round(float64(base)*c)), 1)
}

// sortWitness orders witness edges by type, then source and target, so that
// reports are deterministic.
func sortWitness(w []classify.WitnessEdge) {
	slices.SortFunc(w, func(a, b classify.WitnessEdge) int {
		return cmp.Or(cmp.Compare(a.EdgeType, b.EdgeType),
			cmp.Compare(a.Source.Kind, b.Source.Kind), cmp.Compare(a.Source.ID, b.Source.ID),
			cmp.Compare(a.Target.Kind, b.Target.Kind), cmp.Compare(a.Target.ID, b.Target.ID))
	})
}
