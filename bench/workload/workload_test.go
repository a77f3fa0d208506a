package workload_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/bench/workload/workloadtest"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/collect"
	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/ivf"
)

func collectWith(t *testing.T, env *workloadtest.Env, c collect.Collector) (health.Signals, error) {
	t.Helper()
	ctx := context.Background()
	tg, err := collect.LoadTarget(ctx, env.Conn, env.W.Name)
	if err != nil {
		t.Fatal(err)
	}
	var s health.Signals
	err = c.Collect(ctx, env.Conn, tg, &s)
	return s, err
}

// Steady inserts (routed and COPY) and searches; the ledger matches the
// server per shard.
func TestSteadyAndLedger(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "st", Dim: 8, Partitions: 4, Lists: 4, Seed: 1})
	st, err := env.W.Steady(ctx, workload.SteadyOptions{Rate: 200, CopyFraction: 0.5, SearchRate: 10, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st.Routed < 100 || st.Copied < 100 || st.Searches < 10 {
		t.Fatalf("steady: %+v", st)
	}
	chk, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil {
		t.Fatal(err)
	}
	if !chk.TotalOK() || !chk.ShardsOK() || chk.LedgerTotal.Count != int64(st.Routed+st.Copied) {
		t.Fatalf("ledger mismatch: %s (%+v)", chk, st)
	}
	// A row changed behind the tool's back shows as a mismatch.
	if _, err := env.Conn.Exec(ctx, `UPDATE st SET embedding[1] = embedding[1] + 1 WHERE id = (SELECT min(id) FROM st)`); err != nil {
		t.Fatal(err)
	}
	chk, _ = env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if chk.TotalOK() {
		t.Fatal("ledger did not notice an altered row")
	}
}

func TestHotPartitionRaisesItsWriteRate(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hp", Dim: 4, Partitions: 4, Lists: 4, Seed: 1})
	if err := env.W.CopyInsert(ctx, 400, nil); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 20*time.Second, "the initial rows in pg_stat_user_tables", func() (bool, error) {
		var ins int64
		err := env.Conn.QueryRow(ctx, `SELECT sum(n_tup_ins) FROM pg_stat_user_tables WHERE relname LIKE 'hp_p%'`).Scan(&ins)
		return ins >= 400, err
	})
	p := collect.NewPartitions()
	if _, err := collectWith(t, env, p); !errors.Is(err, collect.ErrFirstSample) {
		t.Fatalf("first sample: %v", err)
	}
	n, err := env.W.HotPartition(ctx, 2, 400, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n < 500 {
		t.Fatalf("hot partition inserted %d rows in 2 s at 400/s", n)
	}
	// Backends flush their table counters to pg_stat up to 10 s late.
	pgtest.WaitFor(t, 20*time.Second, "the inserts in pg_stat_user_tables", func() (bool, error) {
		var ins int64
		err := env.Conn.QueryRow(ctx, `SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'hp_p2'`).Scan(&ins)
		return ins >= int64(n), err
	})
	s, err := collectWith(t, env, p)
	if err != nil {
		t.Fatal(err)
	}
	var hot float64
	for _, ps := range s.Partitions {
		if ps.Shard == 2 {
			hot = ps.WriteRowsPerSec
		}
	}
	for _, ps := range s.Partitions {
		if ps.Shard != 2 && ps.WriteRowsPerSec*10 > hot {
			t.Fatalf("shard %d writes %.1f/s, hot shard 2 %.1f/s: not a hot partition", ps.Shard, ps.WriteRowsPerSec, hot)
		}
	}
	if hot < 20 {
		t.Fatalf("hot shard writes %.1f rows/s", hot)
	}
}

func TestDriftRaisesSkew(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "dr", Dim: 8, Partitions: 2, Lists: 8, Seed: 1})
	if err := env.W.CopyInsert(ctx, 2000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ivf.Rebuild(ctx, env.Conn, "dr", ivf.TrainOptions{Seed: 1}, 1000, nil); err != nil {
		t.Fatal(err)
	}
	s0, err := ivf.Skew(ctx, env.Conn, "dr")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.W.Drift(ctx, 3000, nil, 0); err != nil {
		t.Fatal(err)
	}
	s1, err := ivf.Skew(ctx, env.Conn, "dr")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Factor < 3*s0.Factor {
		t.Fatalf("skew %.2f after drift, %.2f before: want 3x", s1.Factor, s0.Factor)
	}
}

func TestHeavyMaintenanceShowsJobs(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "hm", Dim: 16, Partitions: 2, Lists: 4, Seed: 1})
	if err := env.W.CopyInsert(ctx, 20000, nil); err != nil {
		t.Fatal(err)
	}
	m := collect.NewMaintenance()
	if s, err := collectWith(t, env, m); err != nil || len(s.Maintenance) != 0 {
		t.Fatalf("before: %v %v", s.Maintenance, err)
	}
	var wg sync.WaitGroup
	var rep workload.MaintenanceReport
	var herr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		rep, herr = env.W.HeavyMaintenance(ctx, workload.MaintenanceOptions{Duration: 5 * time.Second})
	}()
	var seen []health.JobSignal
	pgtest.WaitFor(t, 30*time.Second, "a maintenance job on the collection", func() (bool, error) {
		s, err := collectWith(t, env, m)
		seen = s.Maintenance
		return len(s.Maintenance) > 0, err
	})
	wg.Wait()
	if herr != nil {
		t.Fatal(herr)
	}
	var queued int
	_ = env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.maintenance_jobs WHERE state = 'queued' AND priority = 10`).Scan(&queued)
	if queued != 20 || len(rep.JobIDs) != 20 || rep.Vacuums == 0 || rep.Churned == 0 {
		t.Fatalf("queued %d, report %+v", queued, rep)
	}
	if !strings.Contains(strings.ToLower(fmt.Sprint(seen)), "vacuum") {
		t.Fatalf("jobs seen %+v, want a vacuum", seen)
	}
}

func TestIndexBloatLowersLeafDensity(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "ib", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	if err := env.W.CopyInsert(ctx, 30000, nil); err != nil {
		t.Fatal(err)
	}
	x := collect.NewIndexes()
	density := func() (pk, frag float64, names []string) {
		s, err := collectWith(t, env, x)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, is := range s.Indexes {
			names = append(names, is.Name)
			if strings.Contains(is.Name, "pkey") {
				pk += is.AvgLeafDensity
				n++
			}
			frag = max(frag, is.FragmentationPct)
		}
		if n == 0 {
			t.Fatalf("no primary key indexes among %v", names)
		}
		return pk / float64(n), frag, names
	}
	pk0, frag0, _ := density()
	rep, err := env.W.IndexBloat(ctx, workload.BloatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pk1, frag1, names := density()
	if pk1 > pk0*0.6 || frag1 <= frag0 {
		t.Fatalf("primary key leaf density %.1f → %.1f, max fragmentation %.1f → %.1f (%+v): want density down 40%% and fragmentation up", pk0, pk1, frag0, frag1, rep)
	}
	if !strings.Contains(strings.Join(names, ","), "bloat_key") {
		t.Fatalf("bloat index not measured: %v", names)
	}
	chk, err := env.W.Ledger.Verify(ctx, env.Pool, env.W.Table)
	if err != nil || !chk.ShardsOK() {
		t.Fatalf("ledger after deletes: %s %v", chk, err)
	}
}

func TestMemoryPressureShowsAConsumer(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "mp", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	h, err := env.W.MemoryPressure(ctx, env.Cluster.DSN("postgres"), 300)
	if err != nil {
		t.Fatal(err)
	}
	s, err := collectWith(t, env, collect.NewMemory())
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("(pid %d)", h.PID)
	var held int64
	for _, c := range s.Memory.Consumers {
		if strings.HasSuffix(c.Name, want) {
			held = c.Bytes
		}
	}
	if held < 200<<20 {
		t.Fatalf("backend %d holds %d MiB per the memory signal (%+v), want >= 200", h.PID, held>>20, s.Memory.Consumers)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the memory released", func() (bool, error) {
		s, err := collectWith(t, env, collect.NewMemory())
		for _, c := range s.Memory.Consumers {
			if strings.HasSuffix(c.Name, want) {
				return false, err
			}
		}
		return true, err
	})
}

func TestLaggingReplica(t *testing.T) {
	ctx := context.Background()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "lr", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	sb, err := workload.StartStandby(ctx, workload.StandbySpec{
		PrimaryHost: env.Cluster.SocketDir(), PrimaryPort: env.Cluster.Port,
		Dir: env.Cluster.Dir + "/standby", Name: "lr_standby"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	r := collect.NewReplicas()
	replica := func() health.ReplicaSignal {
		s, err := collectWith(t, env, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range s.Replicas {
			if rs.Name == "lr_standby" {
				return rs
			}
		}
		return health.ReplicaSignal{}
	}
	pgtest.WaitFor(t, 20*time.Second, "the standby streaming", func() (bool, error) {
		return replica().State == "streaming", nil
	})
	resume, err := workload.LaggingReplica(ctx, sb.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var rs health.ReplicaSignal
	pgtest.WaitFor(t, 20*time.Second, "replay lag of more than 1 MB and 2 s", func() (bool, error) {
		if err := env.W.CopyInsert(ctx, 2000, nil); err != nil {
			return false, err
		}
		rs = replica()
		return rs.LagBytes > 1<<20 && rs.LagSeconds > 2, nil
	})
	if err := resume(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 20*time.Second, "the standby catching up", func() (bool, error) {
		return replica().LagBytes == 0, nil
	})
}

// A row moved to another partition while the injection's UPDATE waits for
// it (what the healer's rebalance does) fails that statement with SQLSTATE
// 40001; the injection runs it again instead of failing the fault.
func TestIndexBloatRetriesARowMovedUnderIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := workloadtest.Start(t, workloadtest.Spec{Name: "ibm", Dim: 4, Partitions: 2, Lists: 4, Seed: 1})
	if err := env.W.CopyInsert(ctx, 2000, func(int) int { return 0 }); err != nil {
		t.Fatal(err)
	}
	// The bloat column first, so that the injection's first statement is
	// the UPDATE that meets the moved row.
	if _, err := env.W.IndexBloat(ctx, workload.BloatOptions{Rounds: 1, DeleteFraction: 1e-9}); err != nil {
		t.Fatal(err)
	}
	mover, err := env.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer mover.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	var id int64
	if err := mover.QueryRow(ctx, `UPDATE `+env.W.Table+` SET shard = 1
		WHERE id = (SELECT min(id) FROM `+env.W.Table+`) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var rep workload.BloatReport
	go func() {
		var err error
		rep, err = env.W.IndexBloat(ctx, workload.BloatOptions{Rounds: 1, DeleteFraction: 1e-9})
		done <- err
	}()
	pgtest.WaitFor(t, 30*time.Second, "the injection's UPDATE waiting for the moved row", func() (bool, error) {
		var n int
		err := env.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE %bloat%'`).Scan(&n)
		return n > 0, err
	})
	if err := mover.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("injection beside a row move: %v", err)
	}
	if rep.Updated != 2000 {
		t.Fatalf("updated %d rows, want all 2000 (the statement ran again after 40001)", rep.Updated)
	}
}
