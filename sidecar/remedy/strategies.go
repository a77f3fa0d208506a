package remedy

import (
	"errors"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// New returns the package's seven strategies, for a registry.
// Each database strategy dials its own connection per call, so nothing
// here needs closing. An invalid Kubernetes configuration is an error; no
// cluster (or no workload configured) is not: scale_replicas is then
// registered but reports itself unavailable, as resume_replay does
// without standbys.
func New(dial Dialer, scale ScaleConfig) ([]strategy.Strategy, error) {
	if dial == nil {
		return nil, errors.New("remedy: no dialer")
	}
	sr, err := NewScaleReplicas(scale)
	if err != nil {
		return nil, err
	}
	return []strategy.Strategy{
		&CompactIndexes{Dial: dial},
		&EvictColdData{Dial: dial},
		sr,
		&DrainHotPartition{Dial: dial},
		&RebalancePartitions{Dial: dial},
		&RebuildCentroids{Dial: dial},
		&ResumeReplay{Dial: dial}, // no standbys: unavailable
	}, nil
}
