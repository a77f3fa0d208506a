// Command gate benchmarks the ruvector_healing write gate (issue
// "Foundation"): how fast a sidecar throttle reaches a backend (through the
// shared segment versus through SQL), what the gate costs an unthrottled
// INSERT, and how closely a throttle holds the admitted rate to its target.
//
// It expects a running private cluster with the extension preloaded (see
// run.sh), reached through the usual PG* environment variables, and maps the
// cluster's segment file directly, as the sidecar does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/ruvector/ruvector-healing/shmproto"
)

var (
	dataDir     = flag.String("data", os.Getenv("PGDATA"), "cluster data directory (for the segment file)")
	pgbenchPath = flag.String("pgbench", "/usr/lib/postgresql/15/bin/pgbench", "pgbench binary")
	workDir     = flag.String("work", os.TempDir(), "directory for pgbench scripts")
	only        = flag.String("only", "prop,overhead,accuracy", "benchmarks to run (comma-separated)")

	propReps = flag.Int("prop-reps", 200, "propagation repetitions per path")

	ovhReps    = flag.Int("ovh-reps", 4, "gate overhead runs per table")
	ovhSecs    = flag.Int("ovh-secs", 10, "seconds per gate overhead pgbench run")
	ovhClients = flag.Int("ovh-clients", 4, "pgbench clients for gate overhead")
	ovhPart    = flag.Bool("ovh-partitioned", true, "also measure a hash-partitioned table")

	accClients = flag.Int("acc-clients", 8, "pgbench clients for throttle accuracy")
	accSettle  = flag.Duration("acc-settle", 2*time.Second, "settle time after each throttle change")
	accWindow  = flag.Duration("acc-window", 10*time.Second, "measurement window per throttle level")
	accReps    = flag.Int("acc-reps", 2, "accuracy sequences (baseline, 50, 90)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gatebench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

const setupSQL = `
CREATE EXTENSION IF NOT EXISTS ruvector_healing;
SET search_path = public, ruvector;
DROP TABLE IF EXISTS prop_t, bench_flag, ovh_reg, ovh_unreg, ovhp_reg, ovhp_unreg, acc_t CASCADE;
CREATE TABLE prop_t (k int, v text);
CREATE TABLE bench_flag (pct int NOT NULL);
INSERT INTO bench_flag VALUES (0);
CREATE TABLE ovh_reg (k int, v text);
CREATE TABLE ovh_unreg (k int, v text);
CREATE TABLE ovhp_reg (k int, v text) PARTITION BY HASH (k);
CREATE TABLE ovhp_unreg (k int, v text) PARTITION BY HASH (k);
CREATE TABLE ovhp_reg_0 PARTITION OF ovhp_reg FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE ovhp_reg_1 PARTITION OF ovhp_reg FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE ovhp_reg_2 PARTITION OF ovhp_reg FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE ovhp_reg_3 PARTITION OF ovhp_reg FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE TABLE ovhp_unreg_0 PARTITION OF ovhp_unreg FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE ovhp_unreg_1 PARTITION OF ovhp_unreg FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE ovhp_unreg_2 PARTITION OF ovhp_unreg FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE ovhp_unreg_3 PARTITION OF ovhp_unreg FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE TABLE acc_t (k int, v text);
SELECT ruvector_collection_register('b_prop', 'prop_t'::regclass);
SELECT ruvector_collection_register('b_ovh', 'ovh_reg'::regclass);
SELECT ruvector_collection_register('b_ovhp', 'ovhp_reg'::regclass);
SELECT ruvector_collection_register('b_acc', 'acc_t'::regclass);

-- Backend-side detectors: spin in the server until the value changes, then
-- return the server clock. started tells whether the loop was already
-- running when the Go side sent the change; iters gives the poll period.
CREATE OR REPLACE FUNCTION bench_wait_seg(c text, old int, timeout_s float8,
    OUT seen timestamptz, OUT started timestamptz, OUT iters bigint)
LANGUAGE plpgsql VOLATILE SET search_path = public, ruvector AS $$
DECLARE
    p int;
    deadline timestamptz;
BEGIN
    started := clock_timestamp();
    deadline := started + make_interval(secs => timeout_s);
    iters := 0;
    LOOP
        SELECT s.pct INTO p FROM ruvector_throttle_status() s WHERE s.collection = c AND s.op = 'insert';
        iters := iters + 1;
        IF p IS DISTINCT FROM old THEN
            seen := clock_timestamp();
            RETURN;
        END IF;
        IF iters % 256 = 0 AND clock_timestamp() > deadline THEN
            RETURN;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION bench_wait_sql(old int, timeout_s float8,
    OUT seen timestamptz, OUT started timestamptz, OUT iters bigint)
LANGUAGE plpgsql VOLATILE SET search_path = public, ruvector AS $$
DECLARE
    p int;
    deadline timestamptz;
BEGIN
    started := clock_timestamp();
    deadline := started + make_interval(secs => timeout_s);
    iters := 0;
    LOOP
        SELECT f.pct INTO p FROM bench_flag f;
        iters := iters + 1;
        IF p IS DISTINCT FROM old THEN
            seen := clock_timestamp();
            RETURN;
        END IF;
        IF iters % 256 = 0 AND clock_timestamp() > deadline THEN
            RETURN;
        END IF;
    END LOOP;
END
$$;
`

type bench struct {
	ctx  context.Context
	conn *pgx.Conn
	seg  *shmproto.Segment
	out  strings.Builder
}

func run() error {
	ctx := context.Background()
	if *dataDir == "" {
		return errors.New("no data directory: pass -data or set PGDATA")
	}
	conn, err := pgx.Connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, setupSQL); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET search_path = public, ruvector"); err != nil {
		return err
	}
	seg, err := shmproto.Open(shmproto.Path(*dataDir), shmproto.Options{SystemIdentifier: 0, OwnerUID: -1})
	if err != nil {
		return err
	}
	defer seg.Close()

	// The watchdog releases sidecar throttles once the heartbeat is older
	// than ruvector.sidecar_timeout: beat like a live sidecar.
	hbCtx, hbStop := context.WithCancel(ctx)
	var hbWG sync.WaitGroup
	hbWG.Add(1)
	go func() {
		defer hbWG.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if err := seg.Heartbeat(os.Getpid(), time.Now()); err != nil {
				logf("heartbeat: %v", err)
			}
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		hbStop()
		hbWG.Wait()
		_, _ = seg.Detach(time.Now())
	}()

	b := &bench{ctx: ctx, conn: conn, seg: seg}
	var pgbenchVersion string
	if out, err := exec.Command(*pgbenchPath, "--version").Output(); err == nil {
		pgbenchVersion = strings.TrimSpace(string(out))
	}
	var serverVersion string
	_ = conn.QueryRow(ctx, "SELECT version()").Scan(&serverVersion)
	fmt.Fprintf(&b.out, "Server: %s; %s.\n\n", serverVersion, pgbenchVersion)

	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		want[strings.TrimSpace(s)] = true
	}
	fmt.Fprintf(&b.out, "Load average (1/5/15 min) at start: %s. The machine is shared with other work; see the load at the end of each benchmark.\n\n", loadavg())
	if want["prop"] {
		if err := b.propagation(); err != nil {
			return fmt.Errorf("propagation: %w", err)
		}
		fmt.Fprintf(&b.out, "Load average after propagation: %s.\n\n", loadavg())
	}
	if want["overhead"] {
		if err := b.overhead(); err != nil {
			return fmt.Errorf("overhead: %w", err)
		}
		fmt.Fprintf(&b.out, "Load average after overhead: %s.\n\n", loadavg())
	}
	if want["accuracy"] {
		if err := b.accuracy(); err != nil {
			return fmt.Errorf("accuracy: %w", err)
		}
		fmt.Fprintf(&b.out, "Load average after accuracy: %s.\n\n", loadavg())
	}
	fmt.Print(b.out.String())
	return nil
}

// ---------------------------------------------------------------- stats

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func stdev(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m := mean(xs)
	s := 0.0
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)-1))
}

// quantile by nearest rank on a sorted copy.
func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// ---------------------------------------------------------------- 1. propagation

type propSample struct {
	latUs   float64 // server detection time - Go send time
	pollUs  float64 // loop time per poll
	invalid bool    // loop had not started before the send
	timeout bool
}

// propRun takes the samples of both paths. pinned puts the polling backend
// on CPU 1 and the Go sending thread on CPU 0, so the spinning poller and
// the sender never share a core.
func (b *bench) propRun(pinned bool) (seg, sql []propSample, err error) {
	ctx := b.ctx
	col, err := b.seg.Find("b_prop", 0)
	if err != nil {
		return nil, nil, err
	}
	// The poller runs on its own connection; the SQL writer on another.
	poller, err := pgx.Connect(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	defer poller.Close(ctx)
	writer, err := pgx.Connect(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	defer writer.Close(ctx)
	if pinned {
		var pid int
		if err := poller.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return nil, nil, err
		}
		var one, zero unix.CPUSet
		one.Set(1)
		zero.Set(0)
		if err := unix.SchedSetaffinity(pid, &one); err != nil {
			return nil, nil, fmt.Errorf("pin poller backend %d: %w", pid, err)
		}
		runtime.LockOSThread()
		if err := unix.SchedSetaffinity(0, &zero); err != nil {
			runtime.UnlockOSThread()
			return nil, nil, fmt.Errorf("pin sender thread: %w", err)
		}
		defer func() {
			var all unix.CPUSet
			for c := 0; c < runtime.NumCPU(); c++ {
				all.Set(c)
			}
			_ = unix.SchedSetaffinity(0, &all)
			runtime.UnlockOSThread()
		}()
	}
	// Warm both detectors and the writer's prepared statement.
	if _, err := writer.Exec(ctx, "UPDATE bench_flag SET pct = $1", 0); err != nil {
		return nil, nil, err
	}
	curSeg, curSQL := uint32(0), uint32(0)
	if err := b.seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 0, time.Now()); err != nil {
		return nil, nil, err
	}
	logf("propagation (pinned %v): %d repetitions per path, alternating", pinned, *propReps)
	for i := 0; i < 2**propReps; i++ {
		viaSeg := i%2 == 0
		cur := &curSQL
		if viaSeg {
			cur = &curSeg
		}
		// New value: alternate 1 and 2 (for the segment, a sidecar throttle
		// nobody writes against; the watchdog keeps it because we heartbeat).
		next := uint32(1)
		if *cur == 1 {
			next = 2
		}
		type res struct {
			seen, started time.Time
			iters         int64
			null          bool
			err           error
		}
		ch := make(chan res, 1)
		go func(old int) {
			var seen, started *time.Time
			var iters int64
			var err error
			if viaSeg {
				err = poller.QueryRow(ctx, "SELECT seen, started, iters FROM bench_wait_seg('b_prop', $1, 5)", old).Scan(&seen, &started, &iters)
			} else {
				err = poller.QueryRow(ctx, "SELECT seen, started, iters FROM bench_wait_sql($1, 5)", old).Scan(&seen, &started, &iters)
			}
			r := res{iters: iters, err: err, null: seen == nil}
			if seen != nil {
				r.seen = *seen
			}
			if started != nil {
				r.started = *started
			}
			ch <- r
		}(int(*cur))
		// Let the loop start, with jitter so the send lands at a random
		// phase of the poll.
		time.Sleep(20*time.Millisecond + time.Duration(rand.IntN(10000))*time.Microsecond)
		t0 := time.Now()
		if viaSeg {
			err = b.seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, next, t0)
		} else {
			_, err = writer.Exec(ctx, "UPDATE bench_flag SET pct = $1", int(next))
		}
		if err != nil {
			return nil, nil, err
		}
		r := <-ch
		if r.err != nil {
			return nil, nil, r.err
		}
		*cur = next
		s := propSample{invalid: !r.started.Before(t0), timeout: r.null}
		if !r.null {
			s.latUs = float64(r.seen.Sub(t0).Nanoseconds()) / 1000
			s.pollUs = float64(r.seen.Sub(r.started).Nanoseconds()) / 1000 / float64(r.iters)
		}
		if viaSeg {
			seg = append(seg, s)
		} else {
			sql = append(sql, s)
		}
	}
	if err := b.seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 0, time.Now()); err != nil {
		return nil, nil, err
	}
	return seg, sql, nil
}

func (b *bench) propagation() error {
	summ := func(xs []propSample) (lat, poll []float64, bad, to int) {
		for _, s := range xs {
			switch {
			case s.timeout:
				to++
			case s.invalid:
				bad++
			default:
				lat = append(lat, s.latUs)
				poll = append(poll, s.pollUs)
			}
		}
		return
	}
	w := &b.out
	fmt.Fprintf(w, "### 1. Propagation: sidecar writes a throttle → a backend sees it\n\n")
	fmt.Fprintf(w, "%d repetitions per path and mode, alternating segment/SQL; latency = backend `clock_timestamp()` at detection − Go `time.Now()` right before the write (same host clock). Samples whose poll loop had not started before the send are discarded; timeouts are 5 s. ", *propReps)
	fmt.Fprintf(w, "Mode *shared* leaves scheduling to the kernel; mode *pinned* puts the polling backend on CPU 1 and the Go sending thread on CPU 0.\n\n")
	fmt.Fprintf(w, "| mode | path | n (discarded, timeouts) | p50 µs | p90 µs | p99 µs | max µs | mean µs | poll period µs (p50) |\n|---|---|---|---|---|---|---|---|---|\n")
	var ratios []string
	modes := []bool{false}
	if runtime.NumCPU() >= 2 {
		modes = append(modes, true)
	}
	for _, pinned := range modes {
		seg, sql, err := b.propRun(pinned)
		if err != nil {
			return err
		}
		mode := "shared"
		if pinned {
			mode = "pinned"
		}
		sl, sp, sbad, sto := summ(seg)
		ql, qp, qbad, qto := summ(sql)
		if len(sl) == 0 || len(ql) == 0 {
			return fmt.Errorf("no valid samples (segment %d bad %d timeouts, SQL %d bad %d timeouts)", sbad, sto, qbad, qto)
		}
		row := func(name string, lat, poll []float64, bad, to int) {
			fmt.Fprintf(w, "| %s | %s | %d (%d, %d) | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", mode, name, len(lat), bad, to,
				quantile(lat, .5), quantile(lat, .9), quantile(lat, .99), quantile(lat, 1), mean(lat), quantile(poll, .5))
		}
		row("segment (`SetSidecarThrottle` → `ruvector_throttle_status()`)", sl, sp, sbad, sto)
		row("SQL (`UPDATE bench_flag` autocommit → `SELECT pct FROM bench_flag`)", ql, qp, qbad, qto)
		ratios = append(ratios, fmt.Sprintf("%s: p50 %.1f×, p99 %.1f×", mode, quantile(ql, .5)/quantile(sl, .5), quantile(ql, .99)/quantile(sl, .99)))
	}
	fmt.Fprintf(w, "\nRatio SQL/segment — %s.\n\n", strings.Join(ratios, "; "))
	return nil
}

// ---------------------------------------------------------------- pgbench

type pgbenchResult struct {
	tps    float64
	xacts  int64
	failed int64
	out    string
}

var (
	reTPS    = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	reXacts  = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
	reFailed = regexp.MustCompile(`number of failed transactions: ([0-9]+)`)
)

func writeScript(name, table string) (string, error) {
	p := filepath.Join(*workDir, name)
	body := fmt.Sprintf("\\set k random(1, 1000000)\nINSERT INTO %s (k, v) VALUES (:k, 'x');\n", table)
	return p, os.WriteFile(p, []byte(body), 0o644)
}

func pgbenchCmd(ctx context.Context, script string, clients, threads, secs int, extraEnv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, *pgbenchPath, "-n", "-M", "prepared", "-f", script,
		"-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(secs))
	cmd.Env = append(os.Environ(), extraEnv...)
	return cmd
}

func parsePgbench(out string) (pgbenchResult, error) {
	r := pgbenchResult{out: out}
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench output has no tps:\n%s", out)
	}
	r.tps, _ = strconv.ParseFloat(m[1], 64)
	if m := reXacts.FindStringSubmatch(out); m != nil {
		r.xacts, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// ---------------------------------------------------------------- 2. overhead

type ovhPair struct{ name, reg, unreg, coll string }

func (b *bench) overhead() error {
	pairs := []ovhPair{{"plain", "ovh_reg", "ovh_unreg", "b_ovh"}}
	if *ovhPart {
		pairs = append(pairs, ovhPair{"hash-partitioned (4 parts)", "ovhp_reg", "ovhp_unreg", "b_ovhp"})
	}
	w := &b.out
	fmt.Fprintf(w, "### 2. Gate overhead: unthrottled single-row INSERT throughput, registered (throttle 0) vs unregistered\n\n")
	fmt.Fprintf(w, "`pgbench -n -M prepared -c %d -j %d -T %d`, script `\\set k random(1, 1000000)` + `INSERT INTO <t> (k, v) VALUES (:k, 'x')`; ", *ovhClients, min(2, *ovhClients), *ovhSecs)
	fmt.Fprintf(w, "%d runs per table in ABBA order (TRUNCATE + CHECKPOINT before each run). Overhead = (unregistered − registered) / unregistered; the pairwise figure averages each adjacent registered/unregistered pair.\n\n", *ovhReps)
	fmt.Fprintf(w, "| table | registered tps (mean ± sd) | unregistered tps (mean ± sd) | overhead (of means) | overhead (pairwise mean ± sd) | gate-admitted rows = pgbench xacts | failed |\n|---|---|---|---|---|---|---|\n")
	var runs []string
	for _, p := range pairs {
		regScript, err := writeScript(p.reg+".sql", p.reg)
		if err != nil {
			return err
		}
		unregScript, err := writeScript(p.unreg+".sql", p.unreg)
		if err != nil {
			return err
		}
		col, err := b.seg.Find(p.coll, 0)
		if err != nil {
			return err
		}
		var reg, unreg, pairOvh []float64
		countsMatch := true
		var failed int64
		for i := 0; i < *ovhReps; i++ {
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			var rr, ur float64
			for _, isReg := range order {
				table, script := p.unreg, unregScript
				if isReg {
					table, script = p.reg, regScript
				}
				if _, err := b.conn.Exec(b.ctx, "TRUNCATE "+table+"; CHECKPOINT"); err != nil {
					return err
				}
				before, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
				if err != nil {
					return err
				}
				out, err := pgbenchCmd(b.ctx, script, *ovhClients, min(2, *ovhClients), *ovhSecs).CombinedOutput()
				if err != nil {
					return fmt.Errorf("pgbench %s: %w\n%s", table, err, out)
				}
				res, err := parsePgbench(string(out))
				if err != nil {
					return err
				}
				after, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
				if err != nil {
					return err
				}
				failed += res.failed
				admitted := int64(after.AdmittedRows - before.AdmittedRows)
				if isReg {
					reg = append(reg, res.tps)
					rr = res.tps
					if admitted != res.xacts {
						countsMatch = false
						logf("overhead %s: gate admitted %d rows, pgbench processed %d", table, admitted, res.xacts)
					}
				} else {
					unreg = append(unreg, res.tps)
					ur = res.tps
					if admitted != 0 {
						countsMatch = false
						logf("overhead %s: gate admitted %d rows during an unregistered run", table, admitted)
					}
				}
				logf("overhead %s run %d: %.0f tps (%d xacts, %d failed, gate admitted %d)", table, i+1, res.tps, res.xacts, res.failed, admitted)
			}
			pairOvh = append(pairOvh, (ur-rr)/ur*100)
		}
		ovh := (mean(unreg) - mean(reg)) / mean(unreg) * 100
		match := "yes"
		if !countsMatch {
			match = "NO (see log)"
		}
		fmt.Fprintf(w, "| %s | %.0f ± %.0f | %.0f ± %.0f | %+.2f%% | %+.2f%% ± %.2f | %s | %d |\n", p.name,
			mean(reg), stdev(reg), mean(unreg), stdev(unreg), ovh, mean(pairOvh), stdev(pairOvh), match, failed)
		runs = append(runs, fmt.Sprintf("%s — registered: %s; unregistered: %s", p.name, fmtList(reg), fmtList(unreg)))
	}
	fmt.Fprintf(w, "\nIndividual runs (tps, in run order per table):\n\n")
	for _, r := range runs {
		fmt.Fprintf(w, "- %s\n", r)
	}
	fmt.Fprintln(w)
	return b.overheadInterleaved(pairs)
}

// overheadInterleaved runs both tables in the same pgbench run: each
// transaction picks the registered or the unregistered script at random
// (weights 1:1), so load from anything else on the machine hits both
// equally. The overhead is the difference of mean per-transaction latency,
// from pgbench's per-transaction log (-l, microseconds).
func (b *bench) overheadInterleaved(pairs []ovhPair) error {
	w := &b.out
	fmt.Fprintf(w, "#### 2b. Same comparison, interleaved within one pgbench run\n\n")
	fmt.Fprintf(w, "The ABBA runs above are at the mercy of other load on this shared 2-core machine. Here each pgbench run (`-c %d -j %d -T %d -M prepared -l`) gets both scripts at weight 1:1 (`-f reg.sql@1 -f unreg.sql@1`), so every client alternates at random between the registered and the unregistered table and both see the same background load. ", *ovhClients, min(2, *ovhClients), *ovhSecs)
	fmt.Fprintf(w, "Overhead = (mean latency registered − mean latency unregistered) / mean latency unregistered, from pgbench's per-transaction log; %d runs per table kind.\n\n", *ovhReps)
	fmt.Fprintf(w, "| table | runs | registered mean latency µs | unregistered mean latency µs | overhead per run (mean ± sd) | per-run overheads | gate-admitted rows = registered xacts |\n|---|---|---|---|---|---|---|\n")
	for _, p := range pairs {
		col, err := b.seg.Find(p.coll, 0)
		if err != nil {
			return err
		}
		var ovh, lr, lu []float64
		countsMatch := true
		for i := 0; i < *ovhReps; i++ {
			if _, err := b.conn.Exec(b.ctx, "TRUNCATE "+p.reg+", "+p.unreg+"; CHECKPOINT"); err != nil {
				return err
			}
			logDir, err := os.MkdirTemp(*workDir, "ilv")
			if err != nil {
				return err
			}
			before, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
			if err != nil {
				return err
			}
			cmd := exec.CommandContext(b.ctx, *pgbenchPath, "-n", "-M", "prepared",
				"-f", filepath.Join(*workDir, p.reg+".sql")+"@1", "-f", filepath.Join(*workDir, p.unreg+".sql")+"@1",
				"-c", strconv.Itoa(*ovhClients), "-j", strconv.Itoa(min(2, *ovhClients)), "-T", strconv.Itoa(*ovhSecs),
				"-l", "--log-prefix", filepath.Join(logDir, "tx"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("pgbench interleaved %s: %w\n%s", p.name, err, out)
			}
			after, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
			if err != nil {
				return err
			}
			sum, n, err := readTxLog(logDir)
			_ = os.RemoveAll(logDir)
			if err != nil {
				return err
			}
			if n[0] == 0 || n[1] == 0 {
				return fmt.Errorf("interleaved %s: empty transaction log", p.name)
			}
			mr, mu := sum[0]/float64(n[0]), sum[1]/float64(n[1])
			lr, lu = append(lr, mr), append(lu, mu)
			ovh = append(ovh, (mr-mu)/mu*100)
			if admitted := int64(after.AdmittedRows - before.AdmittedRows); admitted != n[0] {
				countsMatch = false
				logf("interleaved %s: gate admitted %d, registered script ran %d", p.name, admitted, n[0])
			}
			logf("interleaved %s run %d: registered %.1f µs (%d), unregistered %.1f µs (%d): %+.2f%%", p.name, i+1, mr, n[0], mu, n[1], (mr-mu)/mu*100)
		}
		match := "yes"
		if !countsMatch {
			match = "NO (see log)"
		}
		per := make([]string, len(ovh))
		for i, o := range ovh {
			per[i] = fmt.Sprintf("%+.2f%%", o)
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %+.2f%% ± %.2f | %s | %s |\n", p.name, len(ovh), mean(lr), mean(lu), mean(ovh), stdev(ovh), strings.Join(per, ", "), match)
	}
	fmt.Fprintln(w)
	return nil
}

// readTxLog sums pgbench -l latencies (µs) per script number (0 and 1).
func readTxLog(dir string) (sum [2]float64, n [2]int64, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "tx*"))
	if err != nil || len(files) == 0 {
		return sum, n, fmt.Errorf("no pgbench log in %s", dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return sum, n, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			// client_id transaction_no time script_no time_epoch time_us
			fl := strings.Fields(line)
			if len(fl) < 4 {
				continue
			}
			lat, err1 := strconv.ParseFloat(fl[2], 64)
			sc, err2 := strconv.Atoi(fl[3])
			if err1 != nil || err2 != nil || sc < 0 || sc > 1 {
				continue
			}
			sum[sc] += lat
			n[sc]++
		}
	}
	return sum, n, nil
}

func fmtList(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

// ---------------------------------------------------------------- 3. accuracy

type accWindowResult struct {
	pct          uint32
	rate         float64 // admitted rows/s over the window
	extBaseline  float64 // the extension's baseline when the window ended
	delayed      uint64
	rejected     uint64
	waitMsPerDel float64
}

func (b *bench) accuracy() error {
	col, err := b.seg.Find("b_acc", 0)
	if err != nil {
		return err
	}
	script, err := writeScript("acc_t.sql", "acc_t")
	if err != nil {
		return err
	}
	w := &b.out
	levels := []uint32{0, 50, 90}
	fmt.Fprintf(w, "### 3. Throttle accuracy: admitted rate under a sidecar throttle vs (100 − p)%% of the unthrottled rate\n\n")
	fmt.Fprintf(w, "`pgbench -n -M prepared -c %d -j 2` single-row INSERTs into registered `acc_t` (op `insert`), `ruvector.throttle_max_wait=60s` for the pgbench sessions. ", *accClients)
	fmt.Fprintf(w, "Throttles set through the segment (`SetSidecarThrottle`, heartbeating every 250 ms). Each level: %v settle, then admitted rows/s over %v from the segment's `admitted` counter (the counter `ruvector_throttle_status()` shows). ", *accSettle, *accWindow)
	fmt.Fprintf(w, "\"Ext. baseline\" is the extension's own EWMA baseline (`BaselineRowsPerSec`), on which its bucket rate is computed.\n\n")
	fmt.Fprintf(w, "| seq | throttle p | admitted rows/s | measured baseline rows/s | admitted / baseline | target | error (points) | within ±5? | ext. baseline rows/s | admitted / (ext. baseline × (100−p)%%) | delayed stmts | mean wait per delayed ms | rejected |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	verdictAll := true
	var traces []string
	for rep := 1; rep <= *accReps; rep++ {
		if _, err := b.conn.Exec(b.ctx, "TRUNCATE acc_t; CHECKPOINT"); err != nil {
			return err
		}
		total := time.Duration(len(levels))*(*accSettle+*accWindow) + 3*time.Second
		secs := int(math.Ceil(total.Seconds())) + 2
		cctx, cancel := context.WithCancel(b.ctx)
		cmd := pgbenchCmd(cctx, script, *accClients, 2, secs, "PGOPTIONS=-c ruvector.throttle_max_wait=60000")
		var outBuf strings.Builder
		cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
		if err := cmd.Start(); err != nil {
			cancel()
			return err
		}
		logf("accuracy seq %d: pgbench %d clients for %d s", rep, *accClients, secs)
		time.Sleep(3 * time.Second) // connect and warm up
		var results []accWindowResult
		var baseline float64
		for _, pct := range levels {
			if err := b.seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, pct, time.Now()); err != nil {
				cancel()
				return err
			}
			time.Sleep(*accSettle)
			c0, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
			if err != nil {
				cancel()
				return err
			}
			t0 := time.Now()
			// Sample each second: the per-second admitted rate next to the
			// extension's baseline shows whether the two drift apart.
			var trace []string
			prev, prevT := c0, t0
			for time.Since(t0) < *accWindow {
				time.Sleep(min(time.Second, *accWindow-time.Since(t0)))
				c, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
				if err != nil {
					cancel()
					return err
				}
				now := time.Now()
				trace = append(trace, fmt.Sprintf("%.0f/%.0f", float64(c.AdmittedRows-prev.AdmittedRows)/now.Sub(prevT).Seconds(), c.BaselineRowsPerSec))
				prev, prevT = c, now
			}
			traces = append(traces, fmt.Sprintf("seq %d p=%d: %s", rep, pct, strings.Join(trace, " ")))
			c1, err := b.seg.ReadCounters(col.Slot, shmproto.OpInsert)
			t1 := time.Now()
			if err != nil {
				cancel()
				return err
			}
			r := accWindowResult{
				pct:         pct,
				rate:        float64(c1.AdmittedRows-c0.AdmittedRows) / t1.Sub(t0).Seconds(),
				extBaseline: c1.BaselineRowsPerSec,
				delayed:     c1.DelayedStatements - c0.DelayedStatements,
				rejected:    c1.RejectedStatements - c0.RejectedStatements,
			}
			if r.delayed > 0 {
				r.waitMsPerDel = float64(c1.WaitMicros-c0.WaitMicros) / 1000 / float64(r.delayed)
			}
			if pct == 0 {
				baseline = r.rate
			}
			logf("accuracy seq %d p=%d: %.0f rows/s (ext baseline %.0f, delayed %d, rejected %d)", rep, pct, r.rate, r.extBaseline, r.delayed, r.rejected)
			results = append(results, r)
		}
		if err := b.seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 0, time.Now()); err != nil {
			cancel()
			return err
		}
		err = cmd.Wait()
		cancel()
		out := outBuf.String()
		var failed int64 = -1
		if m := reFailed.FindStringSubmatch(out); m != nil {
			failed, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if err != nil {
			logf("accuracy pgbench: %v\n%s", err, out)
		}
		for _, r := range results {
			ratio := r.rate / baseline * 100
			target := float64(100 - r.pct)
			errPts := ratio - target
			within := math.Abs(errPts) <= 5
			if r.pct > 0 && !within {
				verdictAll = false
			}
			withinS := "yes"
			if !within {
				withinS = "**NO**"
			}
			bucket := "—"
			if r.pct > 0 {
				// The extension's baseline is frozen while throttled.
				bucket = fmt.Sprintf("%.2f", r.rate/(r.extBaseline*float64(100-r.pct)/100))
			} else {
				withinS = "(reference)"
			}
			fmt.Fprintf(w, "| %d | %d | %.0f | %.0f | %.1f%% | %.0f%% | %+.1f | %s | %.0f | %s | %d | %.1f | %d |\n",
				rep, r.pct, r.rate, baseline, ratio, target, errPts, withinS, r.extBaseline, bucket, r.delayed, r.waitMsPerDel, r.rejected)
		}
		fmt.Fprintf(w, "\nseq %d pgbench: exit %v, failed transactions %d.\n\n", rep, errString(err), failed)
		if rep < *accReps {
			fmt.Fprintf(w, "| seq | throttle p | admitted rows/s | measured baseline rows/s | admitted / baseline | target | error (points) | within ±5? | ext. baseline rows/s | admitted / (ext. baseline × (100−p)%%) | delayed stmts | mean wait per delayed ms | rejected |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		}
	}
	fmt.Fprintf(w, "Per-second trace of each window (admitted rows/s in that second / the extension's baseline rows/s at its end):\n\n")
	for _, t := range traces {
		fmt.Fprintf(w, "- %s\n", t)
	}
	fmt.Fprintln(w)
	if verdictAll {
		fmt.Fprintf(w, "All throttled windows within ±5 points of target.\n\n")
	} else {
		fmt.Fprintf(w, "At least one throttled window is **outside** ±5 points of target.\n\n")
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}
