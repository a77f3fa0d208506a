// Package chaos is the seeded fault campaign of the product: under a steady
// write workload it kills the sidecar (SIGKILL), kills backends, restarts
// PostgreSQL (fast and immediate), corrupts the segment's header, blocks the
// collectors behind a lock, makes their queries fail, floods the job queue,
// fires conflicting SQL and pauses a streaming standby, and after every
// fault checks the invariants and times the recovery.
//
// `make test` runs a short campaign (-chaos.faults default: the first eight
// kinds of allFaults, no standby); `make chaos` runs at least 100 faults,
// prints the table and writes it into bench/RESULTS.md (-chaos.results).
package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/bench/workload"
	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

var (
	faults      = flag.Int("chaos.faults", 8, "number of faults to inject")
	seed        = flag.Uint64("chaos.seed", 1, "campaign seed (the same seed replays the same campaign)")
	only        = flag.String("chaos.only", "", "comma-separated fault kinds to draw from (default: all)")
	resultsFile = flag.String("chaos.results", "", "write the recovery table into this markdown file, between <!-- chaos:begin --> and <!-- chaos:end -->")
)

// sidecarTimeout is ruvector.sidecar_timeout for the campaign: short, so a
// campaign of 100 faults stays within minutes.
const sidecarTimeout = 2 * time.Second

// ledger is the workload's own record of what it wrote: committed ids must
// exist exactly once, failed ids must not exist, unknown ids (the
// connection died during COMMIT) are resolved against the table.
type ledger struct {
	mu        sync.Mutex
	committed map[int64]bool
	failed    map[int64]bool
	unknown   map[int64]bool
	next      int64
	throttled int
}

func newLedger() *ledger {
	return &ledger{committed: map[int64]bool{}, failed: map[int64]bool{}, unknown: map[int64]bool{}, next: 1}
}

// writer inserts rows one by one with client-chosen ids, reconnecting
// after any connection loss, until ctx ends. Rows are routed by the
// collection's weights, or all sent to shard 0 while hot is set.
func writer(ctx context.Context, dsn string, l *ledger, hot *atomic.Bool) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				sleep(ctx, 100*time.Millisecond)
				continue
			}
			conn = c
		}
		l.mu.Lock()
		id := l.next
		l.next++
		l.mu.Unlock()
		var err error
		if hot.Load() {
			_, err = conn.Exec(ctx, `INSERT INTO vecs (id, embedding, shard) VALUES ($1, ARRAY[$2::real, 1], 0)`, id, float32(id))
		} else {
			_, err = conn.Exec(ctx, `INSERT INTO vecs (id, embedding) VALUES ($1, ARRAY[$2::real, 1])`, id, float32(id))
		}
		l.mu.Lock()
		var pe *pgconn.PgError
		switch {
		case err == nil:
			l.committed[id] = true
		case errors.As(err, &pe):
			// The server answered: the statement did not commit.
			l.failed[id] = true
			if pe.Code == "53000" {
				l.throttled++
			}
		default:
			// No answer: it may or may not have committed.
			l.unknown[id] = true
			conn.Close(context.Background())
			conn = nil
		}
		l.mu.Unlock()
		sleep(ctx, 5*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// checkLedger: every committed id exactly once, no failed id, no id twice.
func (l *ledger) check(ctx context.Context, conn *pgx.Conn) []string {
	rows, err := conn.Query(ctx, `SELECT id, count(*) FROM vecs GROUP BY id`)
	if err != nil {
		return []string{"ledger: " + err.Error()}
	}
	seen := map[int64]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return []string{"ledger: " + err.Error()}
		}
		seen[id] = n
	}
	if err := rows.Err(); err != nil {
		return []string{"ledger: " + err.Error()}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for id := range l.committed {
		if seen[id] != 1 {
			bad = append(bad, fmt.Sprintf("committed row %d present %d times", id, seen[id]))
		}
	}
	for id := range l.failed {
		if seen[id] != 0 {
			bad = append(bad, fmt.Sprintf("failed insert %d present %d times", id, seen[id]))
		}
	}
	for id, n := range seen {
		if n > 1 {
			bad = append(bad, fmt.Sprintf("row %d duplicated (%d)", id, n))
		}
		if !l.committed[id] && !l.failed[id] && !l.unknown[id] {
			bad = append(bad, fmt.Sprintf("row %d was never written by the workload", id))
		}
	}
	if len(bad) > 5 {
		bad = append(bad[:5], fmt.Sprintf("… and %d more", len(bad)-5))
	}
	return bad
}

// daemon is the real sidecar binary under a supervisor that restarts it
// restartDelay after it exits, as systemd's Restart=on-failure or a
// Kubernetes container restart would.
type daemon struct {
	bin, log string
	env      []string
	metrics  string // host:port of its /metrics
	auditKey string
	mu       sync.Mutex
	cmd      *exec.Cmd
	diedAt   time.Time
	exits    int
	stopped  bool
}

// restartDelay is longer than the watchdog's timeout, so that a fault
// that kills the sidecar can check what the watchdog released before a
// new sidecar starts.
const restartDelay = sidecarTimeout + 1500*time.Millisecond

func (d *daemon) supervise(t *testing.T) {
	t.Helper()
	started := make(chan error, 1)
	go func() {
		first := true
		for {
			f, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				if first {
					started <- err
				}
				return
			}
			cmd := exec.Command(d.bin, "run", "--heartbeat-interval", "200ms", "--sample-interval", "500ms",
				"--collections-refresh", "2s", "--metrics-listen", d.metrics, "--audit-key", d.auditKey)
			cmd.Env = d.env
			cmd.Stdout, cmd.Stderr = f, f
			err = cmd.Start()
			f.Close()
			if first {
				started <- err
				first = false
			}
			if err != nil {
				return
			}
			d.mu.Lock()
			d.cmd = cmd
			d.mu.Unlock()
			_ = cmd.Wait()
			d.mu.Lock()
			d.cmd = nil
			if d.diedAt.IsZero() || time.Since(d.diedAt) > time.Second {
				d.diedAt = time.Now()
			}
			d.exits++
			stopped := d.stopped
			d.mu.Unlock()
			if stopped {
				return
			}
			time.Sleep(restartDelay)
		}
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
}

// kill sends SIGKILL to the running sidecar (the supervisor restarts it).
func (d *daemon) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		d.diedAt = time.Now()
	}
}

func (d *daemon) stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.kill()
}

func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// campaign holds what the faults act on.
type campaign struct {
	t       *testing.T
	ctx     context.Context
	cluster *pgtest.Cluster
	d       *daemon
	rng     *rand.Rand
	hot     atomic.Bool // the writer sends every row to shard 0
	// standby is made on the first pause_replica fault (a base backup
	// costs seconds, and the short campaign has no such fault).
	standby *workload.Standby
}

// hotspot makes shard 0 hot for d, so that the healer acts; kill, if set,
// SIGKILLs the sidecar as soon as a remediation is running.
func (c *campaign) hotspot(d time.Duration, kill bool) error {
	c.hot.Store(true)
	defer c.hot.Store(false)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if kill {
			var running int
			if err := c.queryRow(`SELECT count(*) FROM ruvector.healing_outcomes WHERE state = 'running'`, &running); err == nil && running > 0 {
				c.d.kill()
				c.t.Logf("SIGKILLed the sidecar while %d remediation(s) ran", running)
				kill = false
			}
		}
		sleep(c.ctx, 200*time.Millisecond)
	}
	return nil
}

// segment opens the current segment file (a restart replaces it).
func (c *campaign) segment() (*shmproto.Segment, error) {
	conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	srv, err := instance.Discover(c.ctx, conn)
	if err != nil {
		return nil, err
	}
	return instance.OpenSegment(srv, "")
}

// recovered: the running daemon heartbeats into the current segment, the
// collection's state is known again (every collector reported) and λ was
// published after the fault began (the sidecar's loops work again, not
// only its heartbeat).
func (c *campaign) recovered() (bool, error) { return c.recoveredSince(time.Time{}) }

func (c *campaign) recoveredSince(faultAt time.Time) (bool, error) {
	seg, err := c.segment()
	if err != nil {
		return false, err
	}
	defer seg.Close()
	in, err := seg.Info()
	if err != nil {
		return false, err
	}
	if int(in.SidecarPID) != c.d.pid() || time.Since(in.SidecarBeat) > time.Second {
		return false, fmt.Errorf("sidecar pid %d beat %v ago, daemon %d", in.SidecarPID, time.Since(in.SidecarBeat).Round(time.Millisecond), c.d.pid())
	}
	col, err := seg.Find("vecs", 0)
	if err != nil {
		return false, err
	}
	st, err := seg.ReadIntegrity(col.Slot)
	if err != nil {
		return false, err
	}
	if st.State == shmproto.StateUnknown {
		return false, errors.New("state still unknown")
	}
	if !st.Updated.After(faultAt) {
		return false, fmt.Errorf("λ last published %v, before the fault", st.Updated.Format(time.RFC3339Nano))
	}
	return true, nil
}

// sidecarThrottles lists throttles and shard caps the sidecar set that are
// in force.
// sidecarOutages is the watchdog's count of sidecar outages.
func (c *campaign) sidecarOutages() (uint64, error) {
	seg, err := c.segment()
	if err != nil {
		return 0, err
	}
	defer seg.Close()
	in, err := seg.Info()
	if err != nil {
		return 0, err
	}
	return in.SidecarOutages, nil
}

func (c *campaign) sidecarThrottles() ([]string, error) {
	seg, err := c.segment()
	if err != nil {
		return nil, err
	}
	defer seg.Close()
	cols, err := seg.Collections()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, col := range cols {
		for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
			th, err := seg.ReadThrottle(col.Slot, op)
			if err != nil {
				return nil, err
			}
			if th.SetBy == shmproto.SetBySidecar && th.Pct > 0 {
				out = append(out, fmt.Sprintf("%s/%s=%d", col.Name, shmproto.OpNames[op], th.Pct))
			}
		}
		// Shard caps (throttle_ingestion on a hotspot) are sidecar throttles too.
		caps, err := seg.ReadShardCaps(col.Slot)
		if err != nil {
			return nil, err
		}
		for _, sc := range caps {
			if sc.SetBy == shmproto.SetBySidecar {
				out = append(out, fmt.Sprintf("%s/shard %d cap=%d rows/s", col.Name, sc.Shard, sc.RowsPerSec))
			}
		}
	}
	return out, nil
}

type fault struct {
	name string
	// prepare, when set, readies what the fault acts on; its time is not
	// part of the recovery time.
	prepare func(c *campaign) error
	// inject causes the fault and returns when it is over (the thing that
	// was broken is allowed to come back).
	inject func(c *campaign) error
}

var allFaults = []fault{
	{name: "hotspot", inject: func(c *campaign) error { return c.hotspot(12*time.Second, false) }},
	{name: "hotspot_sigkill_mid_remediation", inject: func(c *campaign) error { return c.hotspot(15*time.Second, true) }},
	{name: "sigkill_sidecar", inject: func(c *campaign) error {
		outages, err := c.sidecarOutages()
		if err != nil {
			return err
		}
		c.d.kill()
		// The watchdog must release whatever the dead sidecar set once it
		// declares the outage (it releases first, then counts the outage).
		// Waited for by the outage count rather than a fixed pause after
		// the timeout, whose 1 s of slack a loaded machine could eat;
		// checked before the supervisor restarts the sidecar.
		for deadline := time.Now().Add(restartDelay); ; sleep(c.ctx, 100*time.Millisecond) {
			n, err := c.sidecarOutages()
			if err != nil {
				return err
			}
			if n > outages {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the watchdog declared no outage %v after the sidecar's death (timeout %v)",
					time.Since(c.d.diedAt).Round(time.Millisecond), sidecarTimeout)
			}
		}
		if left, err := c.sidecarThrottles(); err != nil {
			return err
		} else if len(left) > 0 {
			return fmt.Errorf("sidecar throttles still in force %v after its death: %v", time.Since(c.d.diedAt).Round(time.Millisecond), left)
		}
		return nil
	}},
	{name: "kill_backends", inject: func(c *campaign) error {
		_, err := c.exec(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
		return err
	}},
	{name: "restart_fast", inject: func(c *campaign) error { c.cluster.Restart("fast"); return nil }},
	{name: "restart_immediate", inject: func(c *campaign) error { c.cluster.Restart("immediate"); return nil }},
	{name: "corrupt_segment_header", inject: func(c *campaign) error {
		// A sidecar that starts on a corrupt segment must refuse it; a
		// restart of the server writes a fresh one, and the sidecar attaches.
		c.d.kill()
		sleep(c.ctx, 200*time.Millisecond)
		path := shmproto.Path(c.cluster.DataDir())
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt([]byte("garbage!"), 0)
		f.Close()
		if err != nil {
			return err
		}
		if seg, err := c.segment(); err == nil {
			seg.Close()
			return errors.New("a segment with a corrupt header was accepted")
		}
		// Let the supervisor's restart meet the corrupt segment first.
		sleep(c.ctx, restartDelay+time.Second)
		c.cluster.Restart("fast")
		return nil
	}},
	{name: "collector_blocked", inject: func(c *campaign) error {
		// Collectors read the catalog of collections; hold it locked for a
		// while: they time out, the state goes unknown, the loop survives.
		conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		tx, err := conn.Begin(c.ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(c.ctx, `LOCK TABLE ruvector.collections IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err
		}
		sleep(c.ctx, 4*time.Second)
		return nil
	}},
	{name: "collector_failing", inject: (*campaign).collectorsFailing},
	{name: "flood_job_queue", inject: func(c *campaign) error {
		_, err := c.exec(`INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, params)
			SELECT (SELECT collection_id FROM ruvector.collections WHERE name = 'vecs'), 'analyze', 1 + g % 20, '{}'
			FROM generate_series(1, 500) g`)
		return err
	}},
	{name: "conflicting_sql", inject: func(c *campaign) error {
		// Many sessions set and clear the same manual throttles at once;
		// afterwards the catalog and the segment must agree.
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close(context.Background())
				for i := range 20 {
					var q string
					if (w+i)%3 == 0 {
						q = `SELECT ruvector_throttle_clear('vecs', 'bulk_insert')`
					} else {
						q = fmt.Sprintf(`SELECT ruvector_throttle_set('vecs', 'bulk_insert', %d)`, 10+(w*7+i)%80)
					}
					if _, err := conn.Exec(c.ctx, q); err != nil {
						var pe *pgconn.PgError
						if !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "40001") {
							errs <- fmt.Errorf("%s: %w", q, err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return err
		}
		var pct *int32
		if err := c.queryRow(`SELECT pct FROM ruvector.throttles t JOIN ruvector.collections c USING (collection_id)
			WHERE c.name = 'vecs' AND t.op = 'bulk_insert'`, &pct); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		seg, err := c.segment()
		if err != nil {
			return err
		}
		defer seg.Close()
		col, err := seg.Find("vecs", 0)
		if err != nil {
			return err
		}
		th, err := seg.ReadThrottle(col.Slot, shmproto.OpBulkInsert)
		if err != nil {
			return err
		}
		want := 0
		if pct != nil {
			want = int(*pct)
		}
		if int(th.Pct) != want {
			return fmt.Errorf("catalog says bulk_insert %d, segment %d (%v)", want, th.Pct, th.SetBy)
		}
		_, err = c.exec(`SELECT ruvector_throttle_clear('vecs')`)
		return err
	}},
	{name: "pause_replica", prepare: (*campaign).standbyStreaming, inject: (*campaign).pauseReplica},
}

// collectorsFailing terminates the collectors' backend (the daemon names
// that connection ruvector-sidecar-collect) every 50 ms for
// 12 s (their SQL runs every 5 s): their queries fail (unlike
// collector_blocked, where they hang) and they redial. The sidecar must count the failures (collector_errors_total
// rises), stay up (same process) and publish again afterwards.
func (c *campaign) collectorsFailing() error {
	pid := c.d.pid()
	before, err := c.collectorErrors()
	if err != nil {
		return fmt.Errorf("scrape before: %w", err)
	}
	conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	killed := 0
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); {
		var n int
		if err := conn.QueryRow(c.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'ruvector-sidecar-collect' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			return err
		}
		killed += n
		sleep(c.ctx, 50*time.Millisecond)
	}
	if killed == 0 {
		return errors.New("no collector backend found to terminate: the fault did not happen")
	}
	// The failed calls are counted once they end; give the runner a
	// cadence, and a loaded machine's slack (polled: no cost when quick).
	var after float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		if after, err = c.collectorErrors(); err != nil {
			return fmt.Errorf("scrape after: %w", err)
		}
		if after > before || time.Now().After(deadline) {
			break
		}
		sleep(c.ctx, 200*time.Millisecond)
	}
	if p := c.d.pid(); p != pid {
		return fmt.Errorf("the sidecar did not survive failing collectors: pid %d, now %d", pid, p)
	}
	if after <= before {
		return fmt.Errorf("collector backend terminated %d times, but ruvector_collector_errors_total stayed at %v", killed, after)
	}
	c.t.Logf("terminated the collectors' backend %d times; collector errors %v → %v", killed, before, after)
	return nil
}

// collectorErrors is the sum of the running daemon's
// ruvector_collector_errors_total over its collectors.
func (c *campaign) collectorErrors() (float64, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, "http://"+c.d.metrics+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "ruvector_collector_errors_total{") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, errors.New("no ruvector_collector_errors_total in /metrics")
	}
	return sum, nil
}

// standbyName is the standby's cluster_name, the application_name it
// streams as and the replica's name in the sidecar's graph.
const standbyName = "chaos_standby"

// replicaEdge is the standby's replication edge in the sidecar's last
// published graph of vecs.
type replicaEdge struct {
	found    bool
	capacity float64 // 1 − lag/budget
	at       time.Time
}

func (c *campaign) replicaEdge() (replicaEdge, error) {
	var e replicaEdge
	var capacity *float64
	var unknown bool
	err := c.queryRow(`SELECT g.updated_at,
			coalesce(g.graph->'unknown_kinds' ? 'replicas', false),
			(SELECT (x->>'capacity')::float8 FROM jsonb_array_elements(g.graph->'edges') x
			 WHERE x->>'edge_type' = 'replication' AND x->'target'->>'name' = '`+standbyName+`' LIMIT 1)
		FROM ruvector.contracted_graph g JOIN ruvector.collections c USING (collection_id) WHERE c.name = 'vecs'`,
		&e.at, &unknown, &capacity)
	if err != nil || unknown || capacity == nil {
		return e, err
	}
	e.found, e.capacity = true, *capacity
	return e, nil
}

// standbyStreaming makes the standby on first use and waits until the
// sidecar's graph shows it streaming and caught up (after a restart of the
// primary it reconnects within wal_retrieve_retry_interval).
func (c *campaign) standbyStreaming() error {
	if c.standby == nil {
		t0 := time.Now()
		sb, err := workload.StartStandby(c.ctx, workload.StandbySpec{PrimaryHost: c.cluster.SocketDir(), PrimaryPort: c.cluster.Port,
			Dir: filepath.Join(c.cluster.Dir, "standby"), Name: standbyName})
		if err != nil {
			return err
		}
		c.standby = sb
		c.t.Cleanup(func() { _ = sb.Stop(context.Background()) })
		c.t.Logf("standby %s made in %v", standbyName, time.Since(t0).Round(10*time.Millisecond))
	}
	t0 := time.Now()
	var e replicaEdge
	var err error
	for deadline := t0.Add(60 * time.Second); time.Now().Before(deadline); sleep(c.ctx, 250*time.Millisecond) {
		if e, err = c.replicaEdge(); err == nil && e.found && e.capacity >= 0.99 && e.at.After(t0) {
			return nil
		}
	}
	return fmt.Errorf("the sidecar's graph did not show the standby streaming within 60 s: %+v %v", e, err)
}

// pauseReplica pauses WAL replay on the standby until the sidecar's graph
// shows its lag (capacity 1 − lag/60 s below 0.95, i.e. over 3 s of lag,
// and at least 5 s of pause), then resumes it: meanwhile the sidecar must
// keep publishing λ, and afterwards its graph must show the replica caught
// up again.
func (c *campaign) pauseReplica() error {
	resume, err := workload.LaggingReplica(c.ctx, c.standby.DSN)
	if err != nil {
		return err
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = resume(context.Background())
		}
	}()
	t0 := time.Now()
	var bad []error
	var e replicaEdge
	shown := false
	for deadline := t0.Add(40 * time.Second); time.Now().Before(deadline); sleep(c.ctx, 250*time.Millisecond) {
		if e, err = c.replicaEdge(); err == nil && e.found && e.capacity < 0.95 && e.at.After(t0) && time.Since(t0) > 5*time.Second {
			shown = true
			break
		}
	}
	if !shown {
		bad = append(bad, fmt.Errorf("the sidecar's graph did not show the paused standby's lag within 40 s: %+v %v", e, err))
	} else {
		c.t.Logf("paused standby: the sidecar showed %.1f s of lag after %v", (1-e.capacity)*60, time.Since(t0).Round(10*time.Millisecond))
	}
	// The sidecar kept publishing λ while the standby lagged.
	if updated, err := c.lambdaUpdated(); err != nil {
		bad = append(bad, err)
	} else if !updated.After(t0) {
		bad = append(bad, fmt.Errorf("λ last published %v, before the standby was paused at %v", updated.Format(time.RFC3339Nano), t0.Format(time.RFC3339Nano)))
	}
	if err := resume(c.ctx); err != nil {
		return errors.Join(append(bad, err)...)
	}
	resumed = true
	t1 := time.Now()
	recovered := false
	for deadline := t1.Add(40 * time.Second); time.Now().Before(deadline); sleep(c.ctx, 250*time.Millisecond) {
		if e, err = c.replicaEdge(); err == nil && e.found && e.capacity >= 0.99 && e.at.After(t1) {
			recovered = true
			break
		}
	}
	if !recovered {
		bad = append(bad, fmt.Errorf("the sidecar's graph did not show the standby caught up within 40 s of resuming: %+v %v", e, err))
	} else {
		c.t.Logf("resumed standby: the sidecar showed it caught up after %v", time.Since(t1).Round(10*time.Millisecond))
	}
	return errors.Join(bad...)
}

// lambdaUpdated is when the sidecar last published vecs' λ in the segment.
func (c *campaign) lambdaUpdated() (time.Time, error) {
	seg, err := c.segment()
	if err != nil {
		return time.Time{}, err
	}
	defer seg.Close()
	col, err := seg.Find("vecs", 0)
	if err != nil {
		return time.Time{}, err
	}
	st, err := seg.ReadIntegrity(col.Slot)
	if err != nil {
		return time.Time{}, err
	}
	return st.Updated, nil
}

func (c *campaign) exec(q string) (pgconn.CommandTag, error) {
	conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer conn.Close(context.Background())
	return conn.Exec(c.ctx, q)
}

func (c *campaign) queryRow(q string, dst ...any) error {
	conn, err := pgx.Connect(c.ctx, c.cluster.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(c.ctx, q).Scan(dst...)
}

// orphanGrace is how long a remediation may stay running after its lease
// lapsed (its holder died) before that counts as orphaned: the active
// sidecar recovers orphans on its leader tick (a third of --leader-ttl),
// so a check right after a lease ran out would see one not yet picked up.
const orphanGrace = 20 * time.Second

// outcomeInvariants, once the sidecar is back: never two remediations at
// once on a collection; none left running more than orphanGrace after its
// lease lapsed (every started remediation ends with exactly one outcome,
// across restarts);
// every reversible one that acted and was not verified was rolled back; no
// routing weight a remediation set to 0 outlives it; no collection was
// attempted more often than max_attempts_per_hour allows.
func (c *campaign) outcomeInvariants() []string {
	var bad []string
	var twice, stale, unrolled, drained, looping int
	err := c.queryRow(`SELECT
		(SELECT count(*) FROM (SELECT collection_id FROM ruvector.healing_outcomes WHERE state = 'running'
			GROUP BY collection_id HAVING count(*) > 1) x),
		(SELECT count(*) FROM ruvector.healing_outcomes o WHERE o.state = 'running'
			AND NOT EXISTS (SELECT 1 FROM ruvector.healing_leases l WHERE l.collection_id = o.collection_id
				AND l.expires_at > clock_timestamp())
			AND coalesce((SELECT max(l.expires_at) FROM ruvector.healing_leases l WHERE l.collection_id = o.collection_id),
				o.started_at) < clock_timestamp() - interval '`+fmt.Sprint(int(orphanGrace.Seconds()))+` seconds'),
		(SELECT count(*) FROM ruvector.healing_outcomes o JOIN ruvector.healing_strategies s ON s.name = o.strategy_name
			WHERE o.state = 'done' AND s.reversible AND coalesce(o.actions_taken, 0) > 0
			  AND NOT coalesce(o.verified, false) AND NOT o.rolled_back
			  AND coalesce(o.metadata->>'kind', '') <> 'rollback'),
		(SELECT count(*) FROM ruvector.routing_weights w WHERE w.set_by = 'sidecar' AND w.weight = 0
			AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes o WHERE o.id = w.outcome_id AND o.state = 'running')
			AND NOT EXISTS (SELECT 1 FROM ruvector.healing_outcomes o WHERE o.id = w.outcome_id AND o.verified)),
		(SELECT count(*) FROM (SELECT collection_id FROM ruvector.healing_outcomes
			WHERE started_at > now() - interval '1 hour' AND coalesce(metadata->>'kind', '') <> 'rollback'
			  AND state IN ('running', 'done') AND strategy_name <> ''
			GROUP BY collection_id HAVING count(*) > coalesce(
				(SELECT (config->>'max_attempts_per_hour')::int FROM ruvector.healing_config), 10)) y)`,
		&twice, &stale, &unrolled, &drained, &looping)
	if err != nil {
		return []string{"outcomes: " + err.Error()}
	}
	if twice > 0 {
		bad = append(bad, fmt.Sprintf("%d collections with two running remediations", twice))
	}
	if stale > 0 {
		bad = append(bad, fmt.Sprintf("%d remediations left running more than %v after their lease lapsed", stale, orphanGrace))
	}
	if unrolled > 0 {
		bad = append(bad, fmt.Sprintf("%d reversible remediations acted, were not verified and were not rolled back", unrolled))
	}
	if drained > 0 {
		bad = append(bad, fmt.Sprintf("%d routing weights left at 0 after their remediation ended unverified", drained))
	}
	if looping > 0 {
		bad = append(bad, fmt.Sprintf("%d collections attempted more often than max_attempts_per_hour", looping))
	}
	return bad
}

func TestChaosCampaign(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos campaign skipped in -short mode")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A vector collection whose rows the routing spreads, with a fast
	// policy and a short cooldown so the healer acts within a campaign.
	env := sensortest.Start(t, ctx, 4, `
SELECT ruvector_collection_create('vecs', 2, 4, 8);
SELECT ruvector_integrity_policy_set('vecs', 'chaos',
  '{"degrade_samples": 2, "critical_samples": 2, "restore_hold_seconds": 3, "cooldown_after_transition_seconds": 1}');
SELECT ruvector_healing_configure('{"min_healing_interval_seconds": 10, "stabilization_seconds": 3}');`)
	cluster := env.Cluster
	cluster.MustExec(ctx, fmt.Sprintf("ALTER SYSTEM SET ruvector.sidecar_timeout = '%s'", sidecarTimeout))
	cluster.MustExec(ctx, "SELECT pg_reload_conf()")

	bin := filepath.Join(t.TempDir(), "ruvector-sidecar")
	build := exec.Command("go", "build", "-o", bin, "./sidecar/cmd/ruvector-sidecar")
	build.Dir = pgtest.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build sidecar: %v\n%s", err, out)
	}
	// Its metrics on a fixed loopback port, the same across restarts.
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ml.Addr().String()
	ml.Close()
	d := &daemon{bin: bin, log: filepath.Join(t.TempDir(), "sidecar.log"), env: cluster.Env(), metrics: metricsAddr,
		// Not in the data directory: this sidecar runs as root, and a
		// root-owned 0600 file there makes pg_basebackup fail.
		auditKey: filepath.Join(t.TempDir(), "audit.key")}
	d.supervise(t)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			if b, err := os.ReadFile(d.log); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("last sidecar log lines:\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})

	began := time.Now()
	c := &campaign{t: t, ctx: ctx, cluster: cluster, d: d, rng: rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))}
	pgtest.WaitFor(t, 60*time.Second, "the sidecar to attach and the state to be known", c.recovered)

	l := newLedger()
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); writer(wctx, cluster.DSN("postgres"), l, &c.hot) }()

	type result struct {
		recover    []time.Duration
		violations []string
	}
	results := map[string]*result{}
	for _, f := range allFaults {
		results[f.name] = &result{}
	}
	kinds, err := pickFaults(*only)
	if err != nil {
		t.Fatal(err)
	}
	// Every kind at least once when the campaign is long enough; the rest
	// drawn with the seed.
	order := make([]fault, 0, *faults)
	for i := range *faults {
		if i < len(kinds) {
			order = append(order, kinds[i])
		} else {
			order = append(order, kinds[c.rng.IntN(len(kinds))])
		}
	}
	c.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	for i, f := range order {
		sleep(ctx, time.Duration(200+c.rng.IntN(1500))*time.Millisecond)
		r := results[f.name]
		if f.prepare != nil {
			if err := f.prepare(c); err != nil {
				r.violations = append(r.violations, "prepare: "+err.Error())
				t.Logf("fault %d/%d %s: not injected: %v", i+1, len(order), f.name, err)
				continue
			}
		}
		start := time.Now()
		if err := f.inject(c); err != nil {
			r.violations = append(r.violations, err.Error())
		}
		deadline := time.Now().Add(60 * time.Second)
		var lastErr error
		ok := false
		for time.Now().Before(deadline) {
			if ok, lastErr = c.recoveredSince(start.Add(time.Second)); ok {
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
		if !ok {
			r.violations = append(r.violations, fmt.Sprintf("no recovery within 60 s: %v", lastErr))
		} else {
			r.recover = append(r.recover, time.Since(start))
		}
		r.violations = append(r.violations, c.outcomeInvariants()...)
		t.Logf("fault %d/%d %s: recovered=%v in %v", i+1, len(order), f.name, ok, time.Since(start).Round(10*time.Millisecond))
	}

	stopWriter()
	wg.Wait()
	conn := cluster.Connect(ctx, "postgres")
	ledgerBad := l.check(ctx, conn)
	// Every remediation that started ends with exactly one outcome: once
	// the faults stop, the last orphan (its lease runs 30 s) is finished
	// by the active sidecar within a lease and a tick.
	var endRunning int
	deadline := time.Now().Add(30*time.Second + orphanGrace)
	for {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.healing_outcomes WHERE state = 'running'`).Scan(&endRunning); err != nil {
			t.Fatal(err)
		}
		if endRunning == 0 || time.Now().After(deadline) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if endRunning > 0 {
		ledgerBad = append(ledgerBad, fmt.Sprintf("%d remediations still running %v after the last fault", endRunning, 30*time.Second+orphanGrace))
	}

	// The table.
	names := make([]string, 0, len(results))
	for n, r := range results {
		if len(r.recover) > 0 || len(r.violations) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "\nchaos campaign: seed %d, %d faults, %d rows committed, %d failed (%d throttled), %d unknown\n",
		*seed, len(order), len(l.committed), len(l.failed), l.throttled, len(l.unknown))
	width := len("fault")
	for _, n := range names {
		width = max(width, len(n))
	}
	fmt.Fprintf(&b, "%-*s %6s %12s %12s %s\n", width, "fault", "count", "recover p50", "recover max", "violations")
	var md strings.Builder
	md.WriteString("| fault | count | recover p50 | recover max | violations |\n|---|---:|---:|---:|---:|\n")
	for _, n := range names {
		r := results[n]
		slices.Sort(r.recover)
		p50, mx := time.Duration(0), time.Duration(0)
		if len(r.recover) > 0 {
			p50, mx = r.recover[len(r.recover)/2], r.recover[len(r.recover)-1]
		}
		count := len(r.recover) + countFailed(r.violations)
		p50, mx = p50.Round(10*time.Millisecond), mx.Round(10*time.Millisecond)
		fmt.Fprintf(&b, "%-*s %6d %12v %12v %d\n", width, n, count, p50, mx, len(r.violations))
		fmt.Fprintf(&md, "| %s | %d | %v | %v | %d |\n", n, count, p50, mx, len(r.violations))
	}
	fmt.Fprintf(&b, "ledger (no row lost or duplicated): %d violations\n", len(ledgerBad))
	var outcomes, verified, rolledBack, failed, running int
	var leaseLeft float64
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE verified),
		count(*) FILTER (WHERE rolled_back), count(*) FILTER (WHERE state = 'done' AND error_message IS NOT NULL),
		count(*) FILTER (WHERE state = 'running'),
		coalesce((SELECT extract(epoch FROM max(expires_at) - clock_timestamp()) FROM ruvector.healing_leases), 0)
		FROM ruvector.healing_outcomes`).Scan(&outcomes, &verified, &rolledBack, &failed, &running, &leaseLeft); err == nil {
		fmt.Fprintf(&b, "healing during the campaign: %d outcomes, %d verified, %d rolled back, %d with an error; %d still running under a live lease (%.0f s left)\n",
			outcomes, verified, rolledBack, failed, running, leaseLeft)
	}
	t.Log(b.String())
	if os.Getenv("CHAOS_REPORT") != "" {
		_ = os.WriteFile(os.Getenv("CHAOS_REPORT"), []byte(b.String()), 0o644)
	}
	if *resultsFile != "" {
		var violations []string
		for _, n := range names {
			for _, v := range results[n].violations {
				violations = append(violations, n+": "+v)
			}
		}
		violations = append(violations, ledgerBad...)
		rev, _ := exec.Command("git", "-C", pgtest.RepoRoot(t), "describe", "--always", "--dirty").Output()
		sec := resultsSection(b.String(), md.String(), violations, len(order), time.Since(began), strings.TrimSpace(string(rev)))
		if err := replaceSection(*resultsFile, sec); err != nil {
			t.Errorf("write %s: %v", *resultsFile, err)
		} else {
			t.Logf("recovery table written to %s", *resultsFile)
		}
	}
	for _, n := range names {
		for _, v := range results[n].violations {
			t.Errorf("%s: %s", n, v)
		}
	}
	for _, v := range ledgerBad {
		t.Error(v)
	}
	if len(l.committed) == 0 {
		t.Fatal("the workload committed nothing: the campaign proved nothing")
	}
}

// countFailed counts faults with no recovery (they have a violation
// saying so), so that the count column is the number injected.
func countFailed(v []string) int {
	n := 0
	for _, s := range v {
		if strings.HasPrefix(s, "no recovery") {
			n++
		}
	}
	return n
}

// pickFaults returns the fault kinds named in list (comma-separated), in
// allFaults' order, or all of them for "".
func pickFaults(list string) ([]fault, error) {
	if strings.TrimSpace(list) == "" {
		return allFaults, nil
	}
	var out []fault
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(allFaults, func(f fault) bool { return f.name == name })
		if i < 0 {
			known := make([]string, len(allFaults))
			for j, f := range allFaults {
				known[j] = f.name
			}
			return nil, fmt.Errorf("-chaos.only: unknown fault %q; kinds: %s", name, strings.Join(known, ", "))
		}
		out = append(out, allFaults[i])
	}
	return out, nil
}

// resultsSection is the campaign's section of bench/RESULTS.md.
func resultsSection(text, table string, violations []string, n int, took time.Duration, rev string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Chaos campaign: recovery time per fault class\n\n")
	fmt.Fprintf(&b, "**Command:** `make chaos CHAOS_FAULTS=%d CHAOS_SEED=%d` (%s, tree %s, %s UTC, %v). ", n, *seed,
		"internal/chaos, TestChaosCampaign", orUnknown(rev), time.Now().UTC().Format("2006-01-02 15:04"), took.Round(time.Second))
	b.WriteString("A real PostgreSQL 15 server under a steady ledgered insert workload, the real sidecar binary under a " +
		"supervisor that restarts it 3.5 s after it exits, and a streaming standby made with pg_basebackup on the first " +
		"pause_replica fault. Recovery is the time from the fault's start until the running sidecar heartbeats into the " +
		"current segment, the collection's state is known and λ was published after the fault began; for faults that " +
		"last (hotspot, collector_blocked, collector_failing, pause_replica) it includes the fault itself.\n\n")
	b.WriteString(table)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "chaos campaign:") || strings.HasPrefix(line, "ledger") || strings.HasPrefix(line, "healing during") {
			fmt.Fprintf(&b, "\n- %s", strings.TrimSpace(line))
		}
	}
	b.WriteString("\n")
	if len(violations) == 0 {
		b.WriteString("\nNo invariant was violated.\n")
	} else {
		fmt.Fprintf(&b, "\n%d invariant violations:\n\n", len(violations))
		for i, v := range violations {
			if i == 20 {
				fmt.Fprintf(&b, "- … and %d more\n", len(violations)-20)
				break
			}
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(v, "\n", " "))
		}
	}
	return b.String()
}

// replaceSection rewrites only the text between the chaos markers of the
// results file (appending the section when the file has none), re-reading
// the file right before writing because other sections are edited by
// others.
func replaceSection(path, body string) error {
	const begin, end = "<!-- chaos:begin -->", "<!-- chaos:end -->"
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	switch {
	case i < 0 && j < 0:
		s = strings.TrimRight(s, "\n") + "\n\n" + begin + "\n" + strings.TrimSpace(body) + "\n" + end + "\n"
	case i < 0 || j < i:
		return fmt.Errorf("%s: markers %s ... %s are broken", path, begin, end)
	default:
		s = s[:i+len(begin)] + "\n" + strings.TrimSpace(body) + "\n" + s[j:]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
