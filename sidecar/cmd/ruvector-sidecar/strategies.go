package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
	"github.com/ruvector/ruvector-healing/sidecar/remedy"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// strategyDeps are what the strategies need from the daemon.
type strategyDeps struct {
	Segment     healing.Segment
	DatabaseOID uint32
	// Dial opens a connection a strategy owns from then on.
	Dial func(ctx context.Context) (*pgx.Conn, error)
	// Scale is scale_replicas, built once from the --k8s-* flags (it holds
	// the Kubernetes client); it reports itself unavailable without a
	// cluster or a configured workload.
	Scale *remedy.ScaleReplicas
	// Own records the row moves of rebalance_partitions (sidecar/ownload).
	Own *ownload.Ledger
	// Standbys are resume_replay's standbys (--standby), and
	// StandbyGrace its --standby-resume-after.
	Standbys     map[string]string
	StandbyGrace time.Duration
}

// buildStrategies is the one place the daemon's strategy registry is
// assembled: a new strategy is registered here. The returned cleanup closes
// what the strategies own.
func buildStrategies(ctx context.Context, d strategyDeps) (*strategy.Registry, func(), error) {
	pmConn, err := d.Dial(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("pause_maintenance connection: %w", err)
	}
	cleanup := func() { pmConn.Close(context.Background()) }
	// The remedy strategies open a connection per call (a cancelled
	// REINDEX may leave its connection unusable).
	dial := remedy.Dialer(d.Dial)
	list := []strategy.Strategy{
		healing.ThrottleIngestion{Segment: d.Segment, DatabaseOID: d.DatabaseOID, Dial: d.Dial},
		healing.NewPauseMaintenance(pmConn),
		&remedy.CompactIndexes{Dial: dial},
		&remedy.EvictColdData{Dial: dial},
		&remedy.DrainHotPartition{Dial: dial},
		&remedy.RebalancePartitions{Dial: dial, Own: d.Own},
		&remedy.RebuildCentroids{Dial: dial},
		&remedy.ResumeReplay{Standbys: d.Standbys, Grace: d.StandbyGrace, Dial: dial},
	}
	if d.Scale != nil {
		list = append(list, d.Scale)
	}
	reg, err := strategy.NewRegistry(list...)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return reg, cleanup, nil
}

// scaleFlags are run's scale_replicas flags (also in
// deploy/kubernetes/statefulset.yaml).
type scaleFlags struct {
	namespace   string
	workload    string
	maxReplicas int
}

func (f *scaleFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.namespace, "k8s-namespace", "",
		"namespace of the read-replica workload scale_replicas scales (required with --k8s-replicas)")
	fs.StringVar(&f.workload, "k8s-replicas", "",
		"read-replica workload for scale_replicas, statefulset/NAME or deployment/NAME; empty: scale_replicas is unavailable")
	fs.IntVar(&f.maxReplicas, "max-replicas", 0, "the most replicas scale_replicas scales the workload to (required with --k8s-replicas)")
}

// build validates the flags and makes scale_replicas. Without
// --k8s-replicas, or outside a Kubernetes cluster, the strategy is still
// registered and reports itself unavailable (with the reason) to selection.
func (f *scaleFlags) build() (*remedy.ScaleReplicas, error) {
	cfg := remedy.ScaleConfig{Namespace: f.namespace}
	if f.workload == "" {
		if f.namespace != "" || f.maxReplicas != 0 {
			return nil, fmt.Errorf("--k8s-namespace and --max-replicas configure scale_replicas, which needs --k8s-replicas kind/name too")
		}
		return remedy.NewScaleReplicas(cfg)
	}
	kind, name, err := remedy.ParseWorkload(f.workload)
	if err != nil {
		return nil, fmt.Errorf("--k8s-replicas: %w", err)
	}
	if f.maxReplicas < 1 || f.maxReplicas > 1<<20 {
		return nil, fmt.Errorf("--max-replicas %d: scale_replicas needs a ceiling of at least 1 with --k8s-replicas", f.maxReplicas)
	}
	if f.namespace == "" {
		return nil, fmt.Errorf("--k8s-replicas %s needs --k8s-namespace (in a pod: $(POD_NAMESPACE) from the downward API)", f.workload)
	}
	cfg.Kind, cfg.Name, cfg.MaxReplicas = kind, name, int32(f.maxReplicas)
	s, err := remedy.NewScaleReplicas(cfg)
	if err != nil {
		return nil, fmt.Errorf("--k8s-namespace/--k8s-replicas/--max-replicas: %w", err)
	}
	return s, nil
}

// standbyFlags are run's resume_replay flags.
type standbyFlags struct {
	raw      []string // --standby values, checked by check (the flag package would echo a password)
	standbys map[string]string
	grace    time.Duration
}

func (f *standbyFlags) register(fs *flag.FlagSet) {
	fs.Func("standby", "NAME=DSN (repeatable): a standby resume_replay may resume when its replay stalls paused; "+
		"NAME is the replica as pg_stat_replication on the primary names it (its slot, or its application_name); "+
		"the DSN's role needs EXECUTE on pg_wal_replay_resume and pg_wal_replay_pause. Without one, a paused replay is handed to a person",
		func(v string) error { f.raw = append(f.raw, v); return nil })
	fs.DurationVar(&f.grace, "standby-resume-after", remedy.DefaultReplayGrace,
		"how long a standby's replay must have stalled before resume_replay resumes a pause (a person who paused it on purpose has this long)")
}

// check validates the flags after parsing.
func (f *standbyFlags) check() error {
	if f.grace <= 0 {
		return fmt.Errorf("--standby-resume-after %v must be positive", f.grace)
	}
	f.standbys = map[string]string{}
	for _, v := range f.raw {
		name, dsn, ok := strings.Cut(v, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.TrimSpace(dsn) == "" {
			return fmt.Errorf("--standby %q: want NAME=DSN, for example walreceiver='host=10.0.0.2 user=ruvector_sidecar dbname=postgres'", redactDSN(v))
		}
		if _, dup := f.standbys[name]; dup {
			return fmt.Errorf("--standby %q given twice", name)
		}
		f.standbys[name] = dsn
	}
	return nil
}

// names lists the configured standbys for the log, without their DSNs.
func (f *standbyFlags) names() []string { return slices.Sorted(maps.Keys(f.standbys)) }

// redactDSN keeps a password out of an error message.
func redactDSN(v string) string {
	if strings.Contains(v, "password") || strings.Contains(v, "@") {
		return "(value withheld: it may hold a password)"
	}
	return v
}
