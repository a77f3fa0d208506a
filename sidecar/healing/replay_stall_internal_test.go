package healing

import (
	"strings"
	"testing"

	"github.com/ruvector/ruvector-healing/sidecar/classify"
)

// The hand-over rule on its own: only replication_lag, only when every
// lagging replica is stalled; one replica still replaying (slow) means the
// WAL-reducing strategies can help it, so the engine acts as usual.
func TestReplayStalledRule(t *testing.T) {
	edge := func(id int64, name string) classify.WitnessEdge {
		return classify.WitnessEdge{Source: classify.NodeRef{Kind: classify.NodeRoot, ID: 1, Name: "emb"},
			Target: classify.NodeRef{Kind: classify.NodeReplica, ID: id, Name: name}, EdgeType: classify.EdgeReplication}
	}
	lag := func(ids ...int64) classify.Problem {
		return classify.Problem{Class: classify.ClassReplicationLag, ReplicationLag: &classify.ReplicationLag{ReplicaIDs: ids}}
	}
	both := Trigger{Witness: []classify.WitnessEdge{edge(1, "a"), edge(2, "b")}, Metrics: classify.Metrics{
		ReplicaLagSeconds:           map[int64]float64{1: 40, 2: 50},
		ReplicaReplayStalledSeconds: map[int64]float64{1: 12, 2: 30.4},
	}}
	if got := replayStalled(lag(2, 1), both); got.reason != "replay stalled on b: replay_lsn has not moved for 30s while WAL is received; "+
		"a: replay_lsn has not moved for 12s while WAL is received; reducing WAL on the primary cannot help" ||
		got.waiting || got.seconds != 12 {
		t.Fatalf("both stalled: %+v, want the shortest stall (12 s)", got)
	}
	// The names of the metrics serve when the witness has none.
	named := Trigger{Metrics: both.Metrics}
	named.Metrics.ReplicaNames = map[int64]string{1: "a", 2: "b"}
	if got := replayStalled(lag(1), named); !strings.HasPrefix(got.reason, "replay stalled on a: replay_lsn has not moved for 12s") {
		t.Fatalf("named by the metrics: %+v", got)
	}
	// Standing still, not yet judged: waiting.
	waiting := both
	waiting.Metrics.ReplicaReplayStalledSeconds = map[int64]float64{2: 30}
	waiting.Metrics.ReplicaReplayWaitingSeconds = map[int64]float64{1: 3}
	if got := replayStalled(lag(2, 1), waiting); !got.waiting || !strings.HasPrefix(got.reason, "replay not moving on b: ") {
		t.Fatalf("one stalled, one standing still: %+v, want waiting", got)
	}
	oneSlow := both
	oneSlow.Metrics.ReplicaReplayStalledSeconds = map[int64]float64{1: 12}
	if got := replayStalled(lag(2, 1), oneSlow); got.reason != "" {
		t.Fatalf("one replica replays (slow), yet handed over: %+v", got)
	}
	// Another class with a stalled replica around: not this rule's business.
	if got := replayStalled(classify.Problem{Class: classify.ClassMemoryPressure}, both); got.reason != "" {
		t.Fatalf("memory pressure handed over for a stalled replica: %+v", got)
	}
	// No witness replicas: every replica with a lag counts; no name known.
	noWitness := Trigger{Metrics: classify.Metrics{ReplicaLagSeconds: map[int64]float64{7: 20, 8: 0},
		ReplicaReplayStalledSeconds: map[int64]float64{7: 11}}}
	if got := replayStalled(lag(), noWitness); !strings.HasPrefix(got.reason, "replay stalled on replica 7: replay_lsn has not moved for 11s") {
		t.Fatalf("no witness replicas: %+v", got)
	}
	noWitness.Metrics.ReplicaLagSeconds[8] = 5 // replica 8 lags and replays
	if got := replayStalled(lag(), noWitness); got.reason != "" {
		t.Fatalf("replica 8 replays, yet handed over: %+v", got)
	}
}
