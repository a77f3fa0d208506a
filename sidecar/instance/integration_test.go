package instance_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

const setupSQL = `
CREATE EXTENSION ruvector_healing;
SET search_path = public, ruvector;
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
CREATE TABLE emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE emb_0 PARTITION OF emb FOR VALUES IN (0);
CREATE TABLE emb_1 PARTITION OF emb FOR VALUES IN (1);
SELECT ruvector_collection_register('emb', 'emb');
CREATE TABLE other (id bigserial, v int);
SELECT ruvector_collection_register('other', 'other');
`

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func attach(t *testing.T, ctx context.Context, c *pgtest.Cluster) (instance.Server, *shmproto.Segment) {
	t.Helper()
	conn := c.Connect(ctx, "postgres")
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := instance.OpenSegment(srv, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	return srv, seg
}

// startHeartbeat runs the sidecar's heartbeat in-process until the test ends.
func startHeartbeat(t *testing.T, seg *shmproto.Segment, onRemap func(uint64)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	hb := &instance.Heartbeat{Segment: seg, Interval: 100 * time.Millisecond, Log: zerolog.Nop(), OnRemap: onRemap}
	go func() { done <- hb.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func insertOne(ctx context.Context, conn *pgx.Conn, table string) error {
	_, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (embedding, shard) VALUES ('{1,2}', 0)", table))
	return err
}

// The sidecar's throttle travels through the segment alone and the gate
// enforces it on INSERT and COPY; a manual throttle pins the slot; a clean
// sidecar exit releases what it set at once.
func TestSidecarThrottleGatesWrites(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	srv, seg := attach(t, ctx, c)

	info, err := seg.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.SystemIdentifier != srv.SystemIdentifier || info.Generation < 1 || info.PostmasterPID != uint32(c.PostmasterPID()) {
		t.Fatalf("segment header %+v does not match server %+v (postmaster %d)", info, srv, c.PostmasterPID())
	}
	stop := startHeartbeat(t, seg, nil)
	col, err := seg.Find("emb", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.Connect(ctx, "postgres")
	if err := insertOne(ctx, conn, "emb"); err != nil {
		t.Fatalf("unthrottled insert: %v", err)
	}

	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	err = insertOne(ctx, conn, "emb")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53000" || !strings.Contains(pe.Message, `"emb"`) ||
		!strings.Contains(pe.Detail, "sidecar") || pe.Hint == "" {
		t.Fatalf("insert at throttle 100: %#v", err)
	}
	// Bulk writes have their own throttle: COPY still passes...
	rows := [][]any{{[]float32{1, 2}, int32(1)}, {[]float32{3, 4}, int32(0)}}
	if n, err := conn.CopyFrom(ctx, pgx.Identifier{"emb"}, []string{"embedding", "shard"}, pgx.CopyFromRows(rows)); err != nil || n != 2 {
		t.Fatalf("COPY with only insert throttled: %d %v", n, err)
	}
	// ...until the sidecar throttles bulk_insert too.
	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpBulkInsert, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"emb"}, []string{"embedding", "shard"}, pgx.CopyFromRows(rows)); pgCode(err) != "53000" {
		t.Fatalf("COPY at bulk throttle 100: %v", err)
	}
	var pct int
	var setBy string
	if err := conn.QueryRow(ctx, `SELECT pct, set_by FROM ruvector_throttle_status() WHERE collection = 'emb' AND op = 'insert'`).Scan(&pct, &setBy); err != nil {
		t.Fatal(err)
	}
	if pct != 100 || setBy != "sidecar" {
		t.Fatalf("status shows %d%% by %s", pct, setBy)
	}
	// Other collections are not affected.
	if _, err := conn.Exec(ctx, "INSERT INTO other (v) VALUES (1)"); err != nil {
		t.Fatalf("insert into another collection: %v", err)
	}

	// A manual throttle pins the slot.
	if _, err := conn.Exec(ctx, "SELECT ruvector_throttle_set('emb', 'insert', 20)"); err != nil {
		t.Fatal(err)
	}
	if err := seg.SetSidecarThrottle(col.Slot, shmproto.OpInsert, 90, time.Now()); !errors.Is(err, shmproto.ErrManualPinned) {
		t.Fatalf("sidecar over manual: %v", err)
	}

	// A clean exit releases the sidecar's bulk throttle at once, not the manual one.
	stop()
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"emb"}, []string{"embedding", "shard"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatalf("COPY after the sidecar detached: %v", err)
	}
	th, _ := seg.ReadThrottle(col.Slot, shmproto.OpInsert)
	if th.Pct != 20 || th.SetBy != shmproto.SetByManual {
		t.Fatalf("manual throttle after detach: %+v", th)
	}
	cnt, err := seg.ReadCounters(col.Slot, shmproto.OpBulkInsert)
	if err != nil || cnt.AdmittedRows != 4 || cnt.RejectedStatements != 1 {
		t.Fatalf("bulk counters %+v %v", cnt, err)
	}
}

func buildSidecar(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ruvector-sidecar")
	cmd := exec.Command("go", "build", "-o", bin, "./sidecar/cmd/ruvector-sidecar")
	cmd.Dir = pgtest.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sidecar: %v\n%s", err, out)
	}
	return bin
}

// If the sidecar dies, nothing it set stays in force longer than the
// watchdog allows: the real binary is killed with SIGKILL.
func TestWatchdogReleasesThrottlesOfAKilledSidecar(t *testing.T) {
	ctx := context.Background()
	bin := buildSidecar(t)
	c := pgtest.Start(t, pgtest.Options{SidecarTimeout: "1s"})
	c.MustExec(ctx, setupSQL)
	_, seg := attach(t, ctx, c)
	conn := c.Connect(ctx, "postgres")

	// Without a daemon the CLI refuses: its throttle would not be watched.
	out, err := runCLI(c, bin, "throttle", "emb", "insert", "50")
	if err == nil || !strings.Contains(out, "no sidecar daemon is running") {
		t.Fatalf("throttle without a daemon: %v\n%s", err, out)
	}

	daemon := exec.Command(bin, "run", "--heartbeat-interval", "100ms", "--metrics-listen", "")
	daemon.Env = c.Env()
	logPath := filepath.Join(t.TempDir(), "sidecar.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	daemon.Stdout, daemon.Stderr = logFile, logFile
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.Process.Kill(); _, _ = daemon.Process.Wait() })
	pgtest.WaitFor(t, 10*time.Second, "the sidecar's first heartbeat", func() (bool, error) {
		in, err := seg.Info()
		return err == nil && in.SidecarPID == uint32(daemon.Process.Pid), err
	})

	for _, args := range [][]string{{"throttle", "emb", "insert", "100"}, {"throttle", "emb", "bulk_insert", "70"}} {
		if out, err := runCLI(c, bin, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if _, err := c.Connect(ctx, "postgres").Exec(ctx, "SELECT ruvector_throttle_set('other', 'insert', 100)"); err != nil {
		t.Fatal(err)
	}
	if err := insertOne(ctx, conn, "emb"); pgCode(err) != "53000" {
		t.Fatalf("insert with the sidecar's throttle: %v", err)
	}
	// The sidecar publishes integrity; after its death it must read unknown.
	col, _ := seg.Find("emb", 0)
	if err := seg.WriteIntegrity(col.Slot, 0.9, shmproto.StateNormal, time.Now()); err != nil {
		t.Fatal(err)
	}

	if err := daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = daemon.Process.Wait()
	killed := time.Now()
	// Timeout 1 s plus the watchdog's 200 ms nap; the deadline is generous
	// because a loaded machine delays the watchdog's wake-ups (how soon is
	// logged, not asserted: speed belongs in bench/).
	pgtest.WaitFor(t, 30*time.Second, "the watchdog to release the sidecar's throttles", func() (bool, error) {
		return insertOne(ctx, conn, "emb") == nil, nil
	})
	t.Logf("throttle released %v after SIGKILL (ruvector.sidecar_timeout = 1s)", time.Since(killed).Round(10*time.Millisecond))
	for _, op := range []shmproto.Op{shmproto.OpInsert, shmproto.OpBulkInsert} {
		if th, _ := seg.ReadThrottle(col.Slot, op); th.Pct != 0 || th.SetBy != shmproto.SetByNone {
			t.Fatalf("op %d after the sidecar died: %+v", op, th)
		}
	}
	// Manual throttles stay.
	if _, err := conn.Exec(ctx, "INSERT INTO other (v) VALUES (1)"); pgCode(err) != "53000" {
		t.Fatalf("manual throttle on other after the sidecar died: %v", err)
	}
	in, err := seg.ReadIntegrity(col.Slot)
	if err != nil || in.State != shmproto.StateUnknown {
		t.Fatalf("integrity after the sidecar died: %+v %v", in, err)
	}
	info, _ := seg.Info()
	if !info.Outage || info.SidecarOutages != 1 {
		t.Fatalf("outage not recorded: %+v", info)
	}
	// One warning per outage, however long it lasts: once the first is in
	// the log (the watchdog writes it after releasing the throttles, so
	// it is polled for), several more naps pass without another.
	want := fmt.Sprintf("sidecar (pid %d) silent for", daemon.Process.Pid)
	warnings := func() int {
		t.Helper()
		logText, err := os.ReadFile(c.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(logText), want)
	}
	pgtest.WaitFor(t, 30*time.Second, "the outage warning in the server log", func() (bool, error) { return warnings() > 0, nil })
	time.Sleep(600 * time.Millisecond)
	if n := warnings(); n != 1 {
		t.Fatalf("server log has %d outage warnings, want 1", n)
	}
}

func runCLI(c *pgtest.Cluster, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = c.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Every restart, crash restarts included, gives a new segment file with a
// higher generation; the sidecar remaps, and the watchdog reloads the
// registry and manual throttles from the catalog.
func TestRestartRemapsAndReloads(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	c.MustExec(ctx, "SELECT ruvector_throttle_set('emb', 'insert', 30); SELECT ruvector_throttle_set('other', 'insert', 60, '1 second')")
	srv, seg := attach(t, ctx, c)
	gens := make(chan uint64, 8)
	startHeartbeat(t, seg, func(g uint64) { gens <- g })
	before, _ := seg.Info()

	expectReload := func(what string, wantGen uint64) {
		t.Helper()
		select {
		case g := <-gens:
			if g != wantGen {
				t.Fatalf("%s: generation %d, want %d", what, g, wantGen)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the sidecar never remapped", what)
		}
		pgtest.WaitFor(t, 10*time.Second, what+": registry reloaded", func() (bool, error) {
			col, err := seg.Find("emb", srv.DatabaseOID)
			if err != nil {
				return false, err
			}
			th, err := seg.ReadThrottle(col.Slot, shmproto.OpInsert)
			return err == nil && th.Pct == 30 && th.SetBy == shmproto.SetByManual, err
		})
		in, _ := seg.Info()
		if in.PostmasterPID != uint32(c.PostmasterPID()) {
			t.Fatalf("%s: segment names postmaster %d, server has %d", what, in.PostmasterPID, c.PostmasterPID())
		}
	}

	// Crash restart: a backend killed with SIGKILL makes the postmaster
	// reinitialise shared memory.
	victim := c.Connect(ctx, "postgres")
	var pid int
	if err := victim.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	expectReload("crash restart", before.Generation+1)

	// A full restart; the 1-second manual throttle has lapsed meanwhile and
	// must not come back.
	time.Sleep(1100 * time.Millisecond)
	c.Restart("fast")
	expectReload("fast restart", before.Generation+2)
	col, err := seg.Find("other", srv.DatabaseOID)
	if err != nil {
		t.Fatal(err)
	}
	if th, _ := seg.ReadThrottle(col.Slot, shmproto.OpInsert); th.Pct != 0 {
		t.Fatalf("an expired manual throttle came back after restart: %+v", th)
	}
	var n int
	conn := c.Connect(ctx, "postgres")
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ruvector.throttles").Scan(&n); err != nil || n != 1 {
		t.Fatalf("throttles table after restart: %d %v", n, err)
	}
}

// A throttled statement waits interruptibly and never holds back another
// collection; statement_timeout and cancel end the wait.
func TestThrottleWaitIsIsolatedAndInterruptible(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	admin := c.Connect(ctx, "postgres")
	// With no baseline, 99% admits 1 row/s: 50 rows leave 50 s of debt.
	if _, err := admin.Exec(ctx, "SELECT ruvector_throttle_set('emb', 'insert', 99)"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "INSERT INTO emb (embedding, shard) SELECT '{1,2}', 0 FROM generate_series(1, 50)"); err != nil {
		t.Fatal(err)
	}

	waiter := c.Connect(ctx, "postgres")
	var waiterPID int
	if err := waiter.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&waiterPID); err != nil {
		t.Fatal(err)
	}
	if _, err := waiter.Exec(ctx, "SET ruvector.throttle_max_wait = '120s'"); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- insertOne(ctx, waiter, "emb") }()
	pgtest.WaitFor(t, 10*time.Second, "the waiter to block in the gate", func() (bool, error) {
		var ev *string
		err := admin.QueryRow(ctx, "SELECT wait_event FROM pg_stat_activity WHERE pid = $1", waiterPID).Scan(&ev)
		return err == nil && ev != nil && *ev == "Extension", err
	})

	other := c.Connect(ctx, "postgres")
	for i := 0; i < 50; i++ {
		if _, err := other.Exec(ctx, "INSERT INTO other (v) VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-waited:
		t.Fatalf("the throttled insert finished (%v) before the unthrottled collection's 50 inserts were checked", err)
	default:
	}

	if _, err := admin.Exec(ctx, "SELECT pg_cancel_backend($1)", waiterPID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if pgCode(err) != "57014" {
			t.Fatalf("cancelled wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not end the wait")
	}

	if _, err := waiter.Exec(ctx, "SET statement_timeout = '300ms'"); err != nil {
		t.Fatal(err)
	}
	if err := insertOne(ctx, waiter, "emb"); pgCode(err) != "57014" {
		t.Fatalf("statement_timeout during the wait: %v", err)
	}
	var delayed, rejected int64
	var waitMS float64
	if err := admin.QueryRow(ctx, `SELECT delayed, rejected, wait_ms FROM ruvector_throttle_status() WHERE collection = 'emb' AND op = 'insert'`).Scan(&delayed, &rejected, &waitMS); err != nil {
		t.Fatal(err)
	}
	// Interrupted waits are errors, not delays: neither counter moves, so
	// the admitted-rate figures stay honest.
	if delayed != 0 || rejected != 0 {
		t.Fatalf("counters after interrupted waits: delayed %d rejected %d wait_ms %.0f", delayed, rejected, waitMS)
	}
}

// Without shared_preload_libraries, CREATE EXTENSION fails with a clear
// message instead of later with a missing segment, and the sidecar says
// what is wrong.
func TestNotPreloaded(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{Conf: []string{"shared_preload_libraries = ''"}})
	conn := c.Connect(ctx, "postgres")
	_, err := conn.Exec(ctx, "CREATE EXTENSION ruvector_healing")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "55000" || !strings.Contains(pe.Message, "shared_preload_libraries") || pe.Hint == "" {
		t.Fatalf("CREATE EXTENSION without preloading: %#v", err)
	}
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := instance.OpenSegment(srv, ""); !errors.Is(err, instance.ErrNoExtension) {
		t.Fatalf("OpenSegment without the library: %v", err)
	}
}

// The watchdog is restarted by the postmaster if it dies.
func TestWatchdogRestarts(t *testing.T) {
	ctx := context.Background()
	c := pgtest.Start(t, pgtest.Options{})
	c.MustExec(ctx, setupSQL)
	_, seg := attach(t, ctx, c)
	before, _ := seg.Info()
	if before.WatchdogPID == 0 {
		t.Fatal("no watchdog pid in the segment")
	}
	if err := syscall.Kill(int(before.WatchdogPID), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 15*time.Second, "a new watchdog", func() (bool, error) {
		in, err := seg.Info()
		return err == nil && in.WatchdogPID != 0 && in.WatchdogPID != before.WatchdogPID &&
			time.Since(in.WatchdogBeat) < time.Second, err
	})
	after, _ := seg.Info()
	if after.Generation != before.Generation {
		t.Fatalf("a watchdog restart must not reset the segment: generation %d -> %d", before.Generation, after.Generation)
	}
	// The reload after its restart is idempotent: the registry is unchanged.
	cs, err := seg.Collections()
	if err != nil || len(cs) != 2 {
		t.Fatalf("collections after the watchdog restarted: %+v %v", cs, err)
	}
}
