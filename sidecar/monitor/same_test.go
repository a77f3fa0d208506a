package monitor

import (
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
)

func TestSameSignals(t *testing.T) {
	base := func() health.Signals {
		return health.Signals{
			Collection: "c", CollectionID: 1, At: time.Unix(1, 0),
			Partitions: []health.PartitionSignal{{RelID: 1, WriteRowsPerSec: 5}},
			Memory:     health.MemorySignal{UsedBytes: 10, Consumers: []health.MemoryConsumer{{Name: "x", Bytes: 1}}},
			Unknown:    map[string]bool{"indexes": true},
		}
	}
	a, b := base(), base()
	b.At = time.Unix(2, 0)
	if !sameSignals(a, b) {
		t.Fatal("samples differing only in time must count as the same")
	}
	for name, change := range map[string]func(s *health.Signals){
		"partition rate": func(s *health.Signals) { s.Partitions[0].WriteRowsPerSec = 6 },
		"new partition":  func(s *health.Signals) { s.Partitions = append(s.Partitions, health.PartitionSignal{RelID: 2}) },
		"gateway":        func(s *health.Signals) { s.Gateway.RejectedPerSec = 1 },
		"memory":         func(s *health.Signals) { s.Memory.Consumers[0].Bytes = 2 },
		"unknown kinds":  func(s *health.Signals) { delete(s.Unknown, "indexes") },
		"replica":        func(s *health.Signals) { s.Replicas = []health.ReplicaSignal{{ID: 1}} },
	} {
		c := base()
		change(&c)
		if sameSignals(a, c) {
			t.Errorf("%s: a changed sample counted as the same", name)
		}
	}
}
