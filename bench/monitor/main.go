// Command monitor is benchmark 3 of "The sensor": the integrity loop's
// cost (CPU, memory) with 64 collections × 64 partitions on a real server
// and the real sidecar binary, the same loop in process with 256 IVF lists
// per collection (synthetic signals), and the latency from a signal change
// to the new state in the shared segment. See run.sh.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

func main() {
	mode := flag.String("mode", "live", "synth | live")
	nCol := flag.Int("collections", 64, "collections")
	nPart := flag.Int("partitions", 64, "partitions per collection")
	nLists := flag.Int("lists", 256, "IVF lists per collection (synth)")
	simSec := flag.Int("sim-seconds", 120, "simulated seconds (synth)")
	sidecar := flag.String("sidecar", "bin/ruvector-sidecar", "sidecar binary (live)")
	warmup := flag.Duration("warmup", 30*time.Second, "warm-up before measuring (live)")
	measure := flag.Duration("measure", 60*time.Second, "measurement window (live)")
	reps := flag.Int("reps", 12, "latency repetitions (live)")
	out := flag.String("out", "", "write the JSON result here")
	cpuprof := flag.String("cpuprofile", "", "write a CPU profile of this process here (synth)")
	flag.Parse()
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	var res any
	switch *mode {
	case "synth":
		var rs []synthResult
		for _, m := range []struct {
			mode string
			frac float64
		}{{"sparse", 0.02}, {"noisy", 0}} {
			r := runSynth(*nCol, *nPart, *nLists, *simSec, m.mode, m.frac)
			fmt.Printf("synth %s | %s: CPU %v per simulated second = %.3f%% of a core; heap alloc %.1f MB, inuse %.1f MB (peak %.1f), Sys %.1f MB; %d GCs; setedges/sample %.1f, recomputed/batch %.2f\n",
				r.Name, r.ChangedPerSample, r.CPUPerSimSecond, r.PctOfCore, r.HeapAllocMB, r.HeapInuseMB, r.PeakHeapInuseMB, r.SysMB, r.NumGC, r.SetEdgesPerSample, r.RecomputedPerBatch)
			rs = append(rs, r)
		}
		// The same with no lists: the shape the live run has.
		r := runSynth(*nCol, *nPart, 0, *simSec, "noisy", 0)
		fmt.Printf("synth %s | %s: CPU %v per simulated second = %.3f%% of a core; heap inuse %.1f MB\n",
			r.Name, r.ChangedPerSample, r.CPUPerSimSecond, r.PctOfCore, r.HeapInuseMB)
		rs = append(rs, r)
		res = rs
	case "live":
		r, err := runLive(*nCol, *nPart, *sidecar, *warmup, *measure, *reps)
		if err != nil {
			fmt.Fprintln(os.Stderr, "live:", err)
			if r == nil {
				os.Exit(1)
			}
		}
		res = r
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", *mode)
		os.Exit(2)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

type liveResult struct {
	Collections, Partitions  int
	SetupSeconds             float64
	NormalAfterWarmup        int
	StatesAfterWarmup        map[string]int
	MeasureSeconds           float64
	SidecarCPUPct            float64
	SidecarUserPct, SysPct   float64
	RSSMeanMB, RSSMaxMB      float64
	VmHWMMB                  float64
	Threads                  int
	BackendCPUPct            float64 // the sidecar's own server backends
	BackendPIDs              []int
	GCCount                  int
	GCLastLine               string
	GCHeapMB                 []float64 // live heap after each GC in the window
	LoadAvgStart, LoadAvgEnd string
	WriterRowsPerSec         float64
	SidecarWarnings          int
	SidecarWarningSample     []string
	LatencyMs                []float64
	LatencyP50, LatencyMax   float64
	LatencyMin               float64
	SampleToVisibleMs        []float64 // segment Updated (sample time) → seen by the poller
	FirstRejectToSampleMs    []float64
	StateSeen                []string
	LambdaSeen               []float64
	RecoverMs                []float64
	LatencyErrors            []string
	TopStatements            []string
}

// topStatements lists the statements the server spent most time on in the
// window (pg_stat_statements, diagnostic runs only).
func topStatements(ctx context.Context, conn *pgx.Conn, el float64) []string {
	rows, err := conn.Query(ctx, `SELECT calls, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		return []string{err.Error()}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var calls int64
		var total float64
		var q string
		if err := rows.Scan(&calls, &total, &q); err != nil {
			return append(out, err.Error())
		}
		l := fmt.Sprintf("%6.2f%% of a core  %6d calls  %7.2f ms/call  %s", total/10/el, calls, total/float64(max(calls, 1)), q)
		fmt.Println("pgss:", l)
		out = append(out, l)
	}
	return out
}

func pgConn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, "") // PG* environment
}

func runLive(nCol, nPart int, sidecarBin string, warmup, measure time.Duration, reps int) (*liveResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	res := &liveResult{Collections: nCol, Partitions: nPart}
	conn, err := pgConn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())

	t0 := time.Now()
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS ruvector_healing; CREATE EXTENSION IF NOT EXISTS pgstattuple;
		ALTER DATABASE postgres SET search_path = "$user", public, ruvector`); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	for i := 1; i <= nCol; i++ {
		sql := fmt.Sprintf(`SET search_path = public, ruvector;
CREATE TABLE c%[1]d (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
DO $$ BEGIN FOR s IN 0..%[2]d LOOP
  EXECUTE format('CREATE TABLE c%[1]d_%%s PARTITION OF c%[1]d FOR VALUES IN (%%s)', s, s);
END LOOP; END $$;
SELECT ruvector_collection_register('c%[1]d', 'c%[1]d');`, i, nPart-1)
		if _, err := conn.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("setup c%d: %w", i, err)
		}
	}
	// Collection c1 is the latency probe: one sample below 0.8 degrades,
	// no cooldown, a 1 s restore hold.
	if _, err := conn.Exec(ctx, `SET search_path = public, ruvector;
		SELECT ruvector_integrity_policy_set('c1', 'bench',
		'{"degrade_samples": 1, "cooldown_after_transition_seconds": 0, "restore_hold_seconds": 1}')`); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	res.SetupSeconds = time.Since(t0).Seconds()
	fmt.Printf("setup: %d collections × %d partitions in %.1f s\n", nCol, nPart, res.SetupSeconds)

	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		return nil, err
	}
	seg, err := shmproto.Open(shmproto.Path(srv.DataDir), shmproto.Options{OwnerUID: -1})
	if err != nil {
		return nil, err
	}
	defer seg.Close()
	slots := make([]int, nCol+1)
	for i := 1; i <= nCol; i++ {
		c, err := seg.Find(fmt.Sprintf("c%d", i), srv.DatabaseOID)
		if err != nil {
			return nil, fmt.Errorf("segment slot of c%d: %w", i, err)
		}
		slots[i] = c.Slot
	}

	// Light steady write load: ~10 single-row INSERTs per second into
	// random collections (never c1, the latency probe) and partitions.
	var writerRows atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loadWG sync.WaitGroup
	defer func() { stopLoad(); loadWG.Wait() }()
	wconn, err := pgConn(ctx)
	if err != nil {
		return nil, err
	}
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		defer wconn.Close(context.Background())
		rng := rand.New(rand.NewPCG(3, 4))
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tk.C:
			}
			c := 2 + rng.IntN(max(nCol-1, 1))
			if nCol == 1 {
				continue
			}
			if _, err := wconn.Exec(loadCtx, fmt.Sprintf(`INSERT INTO c%d (embedding, shard) VALUES ('{1,2,3}', %d)`, c, rng.IntN(nPart))); err == nil {
				writerRows.Add(1)
			}
		}
	}()

	// The real daemon.
	cmd := exec.CommandContext(ctx, sidecarBin, "run", "--sample-interval", "1s", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
	}()
	var (
		logMu    sync.Mutex
		gcLines  []gcLine
		warnings []string
	)
	gcRe := regexp.MustCompile(`^gc (\d+) @([0-9.]+)s (\d+)%: .* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal`)
	logf, _ := os.Create(os.Getenv("BENCH_SIDECAR_LOG"))
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if logf != nil {
				fmt.Fprintln(logf, line)
			}
			logMu.Lock()
			if m := gcRe.FindStringSubmatch(line); m != nil {
				live, _ := strconv.ParseFloat(m[6], 64)
				gcLines = append(gcLines, gcLine{at: time.Now(), line: line, liveMB: live})
			} else if strings.Contains(line, `"level"`) {
				warnings = append(warnings, line)
			}
			logMu.Unlock()
		}
	}()

	fmt.Printf("sidecar pid %d started; warming up %v\n", pid, warmup)
	time.Sleep(warmup)
	res.StatesAfterWarmup = map[string]int{}
	for i := 1; i <= nCol; i++ {
		in, err := seg.ReadIntegrity(slots[i])
		st := "error"
		if err == nil {
			st = shmproto.StateNames[in.State]
			if in.Updated.IsZero() || time.Since(in.Updated) > 5*time.Second {
				st += "(stale)"
			}
		}
		res.StatesAfterWarmup[st]++
	}
	res.NormalAfterWarmup = res.StatesAfterWarmup["normal"]
	fmt.Printf("after warm-up: segment states %v\n", res.StatesAfterWarmup)

	// Backends of the sidecar (application_name ruvector-sidecar).
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'ruvector-sidecar%'`)
	if err == nil {
		res.BackendPIDs, _ = pgx.CollectRows(rows, pgx.RowTo[int])
	}

	// Measurement window.
	pgss := os.Getenv("BENCH_PGSS") != ""
	if pgss {
		if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()`); err != nil {
			fmt.Println("pg_stat_statements:", err)
			pgss = false
		}
	}
	res.LoadAvgStart = loadavg()
	w0 := writerRows.Load()
	u0, s0 := procCPU(pid)
	var b0 int64
	for _, p := range res.BackendPIDs {
		u, s := procCPU(p)
		b0 += u + s
	}
	m0 := time.Now()
	var rssSum, rssMax float64
	var rssN int
	for time.Since(m0) < measure {
		time.Sleep(time.Second)
		rss, _, thr := procStatus(pid)
		rssSum += rss
		rssMax = max(rssMax, rss)
		rssN++
		res.Threads = thr
	}
	el := time.Since(m0).Seconds()
	u1, s1 := procCPU(pid)
	var b1 int64
	for _, p := range res.BackendPIDs {
		u, s := procCPU(p)
		b1 += u + s
	}
	res.LoadAvgEnd = loadavg()
	hz := 100.0 // USER_HZ
	res.MeasureSeconds = el
	res.SidecarUserPct = 100 * float64(u1-u0) / hz / el
	res.SysPct = 100 * float64(s1-s0) / hz / el
	res.SidecarCPUPct = res.SidecarUserPct + res.SysPct
	res.BackendCPUPct = 100 * float64(b1-b0) / hz / el
	res.RSSMeanMB, res.RSSMaxMB = rssSum/float64(max(rssN, 1)), rssMax
	_, res.VmHWMMB, _ = procStatus(pid)
	res.WriterRowsPerSec = float64(writerRows.Load()-w0) / el
	logMu.Lock()
	for _, g := range gcLines {
		if g.at.After(m0) {
			res.GCCount++
			res.GCHeapMB = append(res.GCHeapMB, g.liveMB)
			res.GCLastLine = g.line
		}
	}
	logMu.Unlock()
	fmt.Printf("sidecar over %.1f s: CPU %.2f%% of a core (user %.2f, sys %.2f); RSS mean %.1f MB max %.1f MB, VmHWM %.1f MB; %d threads; its %d backends %.2f%% of a core; %d GCs, last: %s; load %s -> %s; writer %.1f rows/s\n",
		el, res.SidecarCPUPct, res.SidecarUserPct, res.SysPct, res.RSSMeanMB, res.RSSMaxMB, res.VmHWMMB, res.Threads,
		len(res.BackendPIDs), res.BackendCPUPct, res.GCCount, res.GCLastLine, res.LoadAvgStart, res.LoadAvgEnd, res.WriterRowsPerSec)

	if pgss {
		res.TopStatements = topStatements(ctx, conn, el)
	}
	// Latency: a stream of rejected INSERTs into c1 (throttle 100%).
	if err := latency(ctx, conn, seg, slots[1], reps, res); err != nil {
		res.LatencyErrors = append(res.LatencyErrors, err.Error())
	}
	logMu.Lock()
	res.SidecarWarnings = len(warnings)
	for i, w := range warnings {
		if i >= 8 {
			break
		}
		res.SidecarWarningSample = append(res.SidecarWarningSample, w)
	}
	logMu.Unlock()
	if cmd.ProcessState != nil {
		return res, fmt.Errorf("sidecar exited: %v", cmd.ProcessState)
	}
	return res, nil
}

type gcLine struct {
	at     time.Time
	line   string
	liveMB float64
}

func latency(ctx context.Context, conn *pgx.Conn, seg *shmproto.Segment, slot, reps int, res *liveResult) error {
	rconn, err := pgConn(ctx)
	if err != nil {
		return err
	}
	defer rconn.Close(context.Background())
	rng := rand.New(rand.NewPCG(5, 6))
	waitState := func(want func(shmproto.State) bool, within time.Duration) (shmproto.Integrity, time.Time, error) {
		dl := time.Now().Add(within)
		for time.Now().Before(dl) {
			in, err := seg.ReadIntegrity(slot)
			if err == nil && want(in.State) {
				return in, time.Now(), nil
			}
			time.Sleep(time.Millisecond)
		}
		in, _ := seg.ReadIntegrity(slot)
		return in, time.Now(), fmt.Errorf("state %s after %v", shmproto.StateNames[in.State], within)
	}
	isNormal := func(s shmproto.State) bool { return s == shmproto.StateNormal }
	if _, _, err := waitState(isNormal, 30*time.Second); err != nil {
		return fmt.Errorf("c1 never normal before the latency test: %w", err)
	}
	for r := 0; r < reps && ctx.Err() == nil; r++ {
		// De-phase from the 1 s cadences.
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
		if _, err := conn.Exec(ctx, `SELECT ruvector.ruvector_throttle_set('c1', 'insert', 100)`); err != nil {
			return fmt.Errorf("throttle: %w", err)
		}
		stop := make(chan struct{})
		first := make(chan time.Time, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := rconn.Exec(ctx, `INSERT INTO c1 (embedding, shard) VALUES ('{1}', 0)`)
				if err != nil && n == 0 {
					first <- time.Now()
				}
				if err != nil {
					n++
				}
				time.Sleep(20 * time.Millisecond) // ~50 rejected statements/s
			}
		}()
		var tFirst time.Time
		select {
		case tFirst = <-first:
		case <-time.After(5 * time.Second):
			close(stop)
			wg.Wait()
			return errors.New("no rejected INSERT within 5 s")
		}
		in, seen, err := waitState(func(s shmproto.State) bool { return s != shmproto.StateNormal }, 20*time.Second)
		close(stop)
		wg.Wait()
		if err != nil {
			res.LatencyErrors = append(res.LatencyErrors, fmt.Sprintf("rep %d: %v", r, err))
		} else {
			lat := seen.Sub(tFirst)
			res.LatencyMs = append(res.LatencyMs, ms(lat))
			res.SampleToVisibleMs = append(res.SampleToVisibleMs, ms(seen.Sub(in.Updated)))
			res.FirstRejectToSampleMs = append(res.FirstRejectToSampleMs, ms(in.Updated.Sub(tFirst)))
			res.StateSeen = append(res.StateSeen, shmproto.StateNames[in.State])
			res.LambdaSeen = append(res.LambdaSeen, in.Lambda)
			fmt.Printf("rep %2d: first reject -> %s in segment: %7.1f ms (sample at +%.1f ms, λ %.3f)\n",
				r, shmproto.StateNames[in.State], ms(lat), ms(in.Updated.Sub(tFirst)), in.Lambda)
		}
		if _, err := conn.Exec(ctx, `SELECT ruvector.ruvector_throttle_clear('c1', 'insert')`); err != nil {
			return fmt.Errorf("throttle clear: %w", err)
		}
		cl := time.Now()
		if _, at, err := waitState(isNormal, 30*time.Second); err != nil {
			return fmt.Errorf("rep %d: c1 did not recover: %w", r, err)
		} else {
			res.RecoverMs = append(res.RecoverMs, ms(at.Sub(cl)))
		}
	}
	if len(res.LatencyMs) > 0 {
		s := append([]float64(nil), res.LatencyMs...)
		sort.Float64s(s)
		res.LatencyMin, res.LatencyMax = s[0], s[len(s)-1]
		res.LatencyP50 = s[len(s)/2]
		if len(s)%2 == 0 {
			res.LatencyP50 = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
		fmt.Printf("latency over %d reps: min %.0f ms, p50 %.0f ms, max %.0f ms\n", len(s), res.LatencyMin, res.LatencyP50, res.LatencyMax)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// procCPU returns utime and stime in clock ticks.
func procCPU(pid int) (int64, int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	// fields after ")": state(0) ... utime is field 14 overall → index 11 here.
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u, st
}

// procStatus returns VmRSS and VmHWM in MB and the thread count.
func procStatus(pid int) (rss, hwm float64, threads int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = v / 1024
		case "VmHWM:":
			hwm = v / 1024
		case "Threads:":
			threads = int(v)
		}
	}
	return
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
