package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/integrity"
)

// healthySignals mirrors health's test helper: nPart equally loaded
// partitions, nLists equal IVF lists, replicas in sync, jobs on distinct
// relations, unfragmented indexes, memory at half.
func healthySignals(id, nPart, nLists, nReplicas, nJobs, nIndexes int) health.Signals {
	name := fmt.Sprintf("c%d", id)
	s := health.Signals{Collection: name, CollectionID: id, At: time.Now(),
		Gateway: health.GatewaySignal{WriteRowsPerSec: 5000},
		Memory: health.MemorySignal{UsedBytes: 8 << 30, LimitBytes: 16 << 30, UsagePct: 50, Source: "cgroup v2",
			Consumers: []health.MemoryConsumer{{Name: "shared_buffers", Bytes: 4 << 30}}},
	}
	for i := range nPart {
		s.Partitions = append(s.Partitions, health.PartitionSignal{RelID: int64(16000 + id*100 + i),
			Name: fmt.Sprintf("%s_%d", name, i), Shard: int64(i), WriteRowsPerSec: 300, ReadRowsPerSec: 700, ScansPerSec: 20, LiveRows: 1e6})
	}
	for i := range nLists {
		s.Centroids = append(s.Centroids, health.CentroidSignal{ID: int64(i), ListSize: 4000, InsertsPerSec: 2})
	}
	for i := range nReplicas {
		s.Replicas = append(s.Replicas, health.ReplicaSignal{ID: int64(900 + i), Name: fmt.Sprintf("standby%d", i), State: "streaming"})
	}
	for i := range nJobs {
		s.Maintenance = append(s.Maintenance, health.JobSignal{ID: int64(5000 + i), Type: "autovacuum",
			Relation: fmt.Sprintf("%s_%d", name, i), Running: true, Progress: 0.3})
	}
	for i := range nIndexes {
		s.Indexes = append(s.Indexes, health.IndexSignal{RelID: int64(17000 + i), Name: fmt.Sprintf("%s_idx%d", name, i),
			FragmentationPct: 5, AvgLeafDensity: 90})
	}
	return s
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type synthResult struct {
	Name                     string
	Collections, Seconds     int
	ChangedPerSample         string
	CPUPerSimSecond          time.Duration
	PctOfCore                float64
	HeapAllocMB, HeapInuseMB float64
	SysMB, PeakHeapInuseMB   float64
	NumGC                    uint32
	SetEdgesPerSample        float64
	RecomputedPerBatch       float64
}

// runSynth feeds nCol trackers one sample per simulated second, back to
// back, and reports the CPU per simulated second (all collections) and the
// heap. mode "sparse": ~frac of the values change per sample; "noisy":
// every partition rate and list size jitters each sample (real pg_stat
// rates are never identical twice).
func runSynth(nCol, nPart, nLists, seconds int, mode string, frac float64) synthResult {
	runtime.GC()
	rng := rand.New(rand.NewPCG(1, 2))
	trs := make([]*health.Tracker, nCol)
	ms := make([]*integrity.Machine, nCol)
	sigs := make([]health.Signals, nCol)
	for i := range nCol {
		tr, err := health.NewTracker(health.DefaultConfig())
		if err != nil {
			panic(err)
		}
		trs[i], ms[i] = tr, integrity.NewMachine(integrity.DefaultPolicy())
		sigs[i] = healthySignals(i+1, nPart, nLists, 3, 8, 4)
		if _, err := tr.Update(sigs[i]); err != nil {
			panic(err)
		}
	}
	var peak uint64
	var last health.Cut
	sample := func(now time.Time) {
		for i := range nCol {
			s := &sigs[i]
			switch mode {
			case "sparse":
				for j := range s.Partitions {
					if rng.Float64() < frac {
						s.Partitions[j].WriteRowsPerSec = 200 + float64(rng.IntN(200))
					}
				}
				for j := range s.Centroids {
					if rng.Float64() < frac {
						s.Centroids[j].ListSize = 3000 + int64(rng.IntN(2000))
					}
				}
				if rng.Float64() < frac*10 {
					s.Replicas[rng.IntN(len(s.Replicas))].LagSeconds = float64(rng.IntN(5))
				}
				if rng.Float64() < frac*10 {
					s.Maintenance[rng.IntN(len(s.Maintenance))].Progress = rng.Float64()
				}
			case "noisy":
				for j := range s.Partitions {
					s.Partitions[j].WriteRowsPerSec = 300 * (0.9 + 0.2*rng.Float64())
					s.Partitions[j].ReadRowsPerSec = 700 * (0.9 + 0.2*rng.Float64())
				}
				for j := range s.Centroids {
					s.Centroids[j].ListSize = 4000 + int64(rng.IntN(400)) - 200
				}
				s.Memory.UsagePct = 50 + rng.Float64()
			}
			s.At = now
			// The monitor takes a copy of the runner's signals each sample.
			cp := *s
			cp.Partitions = append([]health.PartitionSignal(nil), s.Partitions...)
			cp.Centroids = append([]health.CentroidSignal(nil), s.Centroids...)
			cut, err := trs[i].Update(cp)
			if err != nil {
				panic(err)
			}
			ms[i].Observe(cut.LambdaNorm, now)
			// The contracted graph goes to the catalog every 10 s per collection.
			if (int(now.Unix())+i)%10 == 0 {
				if _, err := json.Marshal(cut.Graph); err != nil {
					panic(err)
				}
				if _, err := json.Marshal(cut.Witness); err != nil {
					panic(err)
				}
			}
			last = cut
		}
	}
	base := time.Unix(1_700_000_000, 0)
	for k := range 5 { // warm up
		sample(base.Add(time.Duration(k) * time.Second))
	}
	var msStat runtime.MemStats
	c0 := cpuNow()
	for k := range seconds {
		sample(base.Add(time.Duration(5+k) * time.Second))
		if k%10 == 0 {
			runtime.ReadMemStats(&msStat)
			peak = max(peak, msStat.HeapInuse)
		}
	}
	cpu := cpuNow() - c0
	runtime.ReadMemStats(&msStat)
	peak = max(peak, msStat.HeapInuse)
	gcBefore := msStat.NumGC
	runtime.GC()
	runtime.ReadMemStats(&msStat)
	runtime.KeepAlive(trs)
	runtime.KeepAlive(ms)
	runtime.KeepAlive(sigs)
	per := cpu / time.Duration(seconds)
	desc := mode
	if mode == "sparse" {
		desc = fmt.Sprintf("sparse: %.0f%% of partitions and lists", frac*100)
	} else {
		desc = "noisy: every partition rate and list size"
	}
	return synthResult{
		Name:        fmt.Sprintf("%d×(%d partitions + %d lists + 3 replicas + 8 jobs + 4 indexes)", nCol, nPart, nLists),
		Collections: nCol, Seconds: seconds, ChangedPerSample: desc,
		CPUPerSimSecond: per, PctOfCore: 100 * per.Seconds(),
		HeapAllocMB: mb(msStat.HeapAlloc), HeapInuseMB: mb(msStat.HeapInuse), SysMB: mb(msStat.Sys),
		PeakHeapInuseMB: mb(peak), NumGC: gcBefore,
		SetEdgesPerSample:  float64(last.Stats.EdgeChanges) / float64(max(last.Stats.Samples, 1)),
		RecomputedPerBatch: float64(last.Stats.MinCut.Recomputed) / float64(max(last.Stats.MinCut.Batches, 1)),
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
