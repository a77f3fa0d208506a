package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/internal/sensortest"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

// lockedBuffer lets the test read what a running --watch has written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

func TestJobsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, state, progress, owner, created_at, started_at)
SELECT collection_id, 'centroid_rebuild', 500, 'running', 0.4, 'sidecar@test:42', now() - interval '5 minutes',
       now() - interval '3 minutes'
FROM ruvector.collections WHERE name = 'emb';
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, priority, state)
SELECT collection_id, 'vacuum', 50, 'queued' FROM ruvector.collections WHERE name = 'emb';
INSERT INTO ruvector.maintenance_jobs (collection_id, kind, state, progress, created_at, started_at, finished_at, error)
SELECT collection_id, 'compaction', 'failed', 0.7, now() - interval '1 hour', now() - interval '50 minutes',
       now() - interval '40 minutes', 'disk full'
FROM ruvector.collections WHERE name = 'emb';`)
	dsn := env.Cluster.DSN("postgres")
	var out bytes.Buffer
	if err := runJobs(ctx, []string{"--dsn", dsn}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "JOB") {
		t.Fatalf("want a header and 3 jobs:\n%s", text)
	}
	// Open jobs by priority first, then the finished one. Ages are
	// matched to the minute: on a loaded machine seconds pass between the
	// fixture's now() and the listing's.
	for i, want := range [][]string{
		{"centroid_rebuild", "running", "[########------------]  40%", "sidecar@test:42", "  5m", "running for 3m"},
		{"vacuum", "queued", "[--------------------]   0%", " - "},
		{"compaction", "failed", "[##############------]  70%", "1h0m", "disk full"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
	// Columns line up: PROGRESS starts at the same offset in every row.
	col := strings.Index(lines[0], "PROGRESS")
	for _, l := range lines[1:] {
		if strings.Index(l, "[") != col {
			t.Errorf("progress column at %d, header at %d:\n%s", strings.Index(l, "["), col, text)
		}
	}

	// --watch refreshes until interrupted, sees progress move, and exits
	// cleanly on Ctrl-C (the context main cancels on SIGINT).
	wctx, stop := context.WithCancel(ctx)
	var live lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runJobs(wctx, []string{"--dsn", dsn, "--watch", "--interval", "100ms"}, &live) }()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(live.String(), "--- ") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	env.Cluster.MustExec(ctx, `UPDATE ruvector.maintenance_jobs SET progress = 0.9 WHERE kind = 'centroid_rebuild'`)
	for !strings.Contains(live.String(), "[##################--]  90%") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("--watch ended with %v after Ctrl-C", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--watch did not stop on Ctrl-C")
	}
	got := live.String()
	if strings.Count(got, "--- ") < 3 || !strings.Contains(got, "[##################--]  90%") {
		t.Errorf("--watch did not refresh with the new progress:\n%s", got)
	}
	if strings.Contains(got, "\033[") {
		t.Errorf("screen-clearing codes written to a non-terminal")
	}

	for _, bad := range [][]string{{"--interval", "0s"}, {"extra"}} {
		if err := runJobs(ctx, append([]string{"--dsn", dsn}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		p    float32
		want string
	}{{0, "[----------]   0%"}, {0.25, "[###-------]  25%"}, {1, "[##########] 100%"}, {1.5, "[##########] 100%"}, {-1, "[----------]   0%"}} {
		if got := progressBar(tc.p, 10); got != tc.want {
			t.Errorf("progressBar(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// TestJobsStart enqueues jobs with "jobs start" against a real server and
// a real jobs.Runner (the one "run" embeds), follows them with --wait, and
// checks bad input is refused with nothing queued.
func TestJobsStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := sensortest.Start(t, ctx, 2, `
SELECT ruvector_collection_create('vecs', 2, 3, 4);
INSERT INTO vecs (embedding) SELECT ARRAY[g::real, 1] FROM generate_series(1, 300) g;`)
	dsn := env.Cluster.DSN("postgres")
	jobCount := func() int {
		var n int
		if err := env.Conn.QueryRow(ctx, `SELECT count(*) FROM ruvector.maintenance_jobs`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Bad input: a clear error, nothing queued.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vacuum"}, "want KIND and COLLECTION"},
		{[]string{"defrag", "vecs"}, `job kind "defrag" is not run by the sidecar; kinds: analyze, centroid_rebuild`},
		{[]string{"autovacuum", "vecs"}, `job kind "autovacuum"`},
		{[]string{"vacuum", "vecs", "--param", "bogus=1"}, `unknown field "bogus"`},
		{[]string{"rebalance", "vecs", "--param", "rows=many"}, "rows"},
		{[]string{"rebalance", "vecs", "--param", "rows=1", "--param", "rows=2"}, `key "rows" given twice`},
		{[]string{"rebalance", "vecs", "--param", "resume=1"}, "resume"},
		{[]string{"vacuum", "vecs", "--param", "novalue"}, "want key=value"},
		{[]string{"vacuum", "nosuch"}, "nosuch"},
		{[]string{"vacuum", "vecs", "--priority", "5000"}, "hint: priority is 0 to 1000"},
	} {
		err := runJobs(ctx, append([]string{"start", "--dsn", dsn}, tc.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	if n := jobCount(); n != 0 {
		t.Fatalf("bad input queued %d jobs", n)
	}

	// Without a runner the job stays queued; Ctrl-C stops following, not
	// the job.
	wctx, stop := context.WithCancel(ctx)
	var live lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runJobs(wctx, []string{"start", "analyze", "vecs", "--dsn", dsn, "--priority", "10", "--wait", "--interval", "50ms"}, &live)
	}()
	pgtest.WaitFor(t, 10*time.Second, "the queued job's line", func() (bool, error) {
		return strings.Contains(live.String(), "analyze: queued"), nil
	})
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("--wait ended with %v after Ctrl-C", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--wait did not stop on Ctrl-C")
	}
	if !strings.Contains(live.String(), "stopped following job 1; the job goes on") {
		t.Errorf("no note on Ctrl-C:\n%s", live.String())
	}
	var state string
	if err := env.Conn.QueryRow(ctx, `SELECT state FROM ruvector.maintenance_jobs WHERE job_id = 1`).Scan(&state); err != nil || state != "queued" {
		t.Fatalf("job 1 after Ctrl-C: %q %v, want still queued", state, err)
	}

	// The runner, held at each step boundary of the vacuum job until the
	// command has printed the progress of the step before (a fixed pause
	// let a poll slowed by a loaded machine miss a percentage), and slowed
	// at the other job's.
	var out lockedBuffer
	shown := map[int]string{1: "running [#######-------------]  33% on test-runner", 2: "running [#############-------]  67% on test-runner"}
	rconn := env.Cluster.Connect(ctx, "postgres")
	r := &jobs.Runner{Conn: rconn, Owner: "test-runner", Poll: 50 * time.Millisecond,
		AfterStep: func(ctx context.Context, j jobs.Job, step int) {
			want, ok := shown[step]
			if j.Kind != "vacuum" || !ok {
				time.Sleep(300 * time.Millisecond)
				return
			}
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), want) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
		}}
	rctx, stopRunner := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(rctx) }()
	defer func() {
		stopRunner()
		<-ran
	}()

	if err := runJobs(ctx, []string{"start", "vacuum", "vecs", "--priority", "200", "--wait", "--dsn", dsn, "--interval", "50ms"}, &out); err != nil {
		t.Fatalf("vacuum job: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Logf("jobs start vacuum vecs --wait:\n%s", text)
	// Three partitions: one step each, and the command saw each of them.
	for _, want := range []string{"job 2 queued: vacuum on vecs, priority 200, params {}",
		"running [#######-------------]  33% on test-runner", "running [#############-------]  67% on test-runner",
		"done    [####################] 100%", "job 2 done in "} {
		if !strings.Contains(text, want) {
			t.Errorf("vacuum --wait output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\033[") {
		t.Errorf("terminal codes written to a non-terminal:\n%s", text)
	}
	var kind, coll string
	var prio int
	if err := env.Conn.QueryRow(ctx, `SELECT j.kind, c.name, j.priority, j.state FROM ruvector.maintenance_jobs j
		JOIN ruvector.collections c USING (collection_id) WHERE j.job_id = 2`).Scan(&kind, &coll, &prio, &state); err != nil {
		t.Fatal(err)
	}
	if kind != "vacuum" || coll != "vecs" || prio != 200 || state != "done" {
		t.Errorf("job 2 is %s on %s priority %d %s", kind, coll, prio, state)
	}
	// The job whose following was interrupted ran too.
	pgtest.WaitFor(t, 20*time.Second, "the analyze job to be done", func() (bool, error) {
		err := env.Conn.QueryRow(ctx, `SELECT state FROM ruvector.maintenance_jobs WHERE job_id = 1`).Scan(&state)
		return state == "done", err
	})

	// A failing job: a rebalance to a shard the collection does not have.
	out.Reset()
	err := runJobs(ctx, []string{"start", "rebalance", "vecs", "--dsn", dsn, "--wait", "--interval", "50ms",
		"--param", "from=0", "--param", "to=[9]", "--param", "rows=10"}, &out)
	var failed *jobFailedError
	if !errors.As(err, &failed) || failed.ID != 3 || !strings.Contains(failed.Msg, "bad plan: destination shard 9") {
		t.Fatalf("rebalance with a bad plan: %v, want job 3 failed with its error\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `params {"from":0,"rows":10,"to":[9]}`) || !strings.Contains(out.String(), "job 3 rebalance: failed") {
		t.Errorf("rebalance --wait output:\n%s", out.String())
	}
	// Without --wait it only queues.
	out.Reset()
	if err := runJobs(ctx, []string{"start", "analyze", "vecs", "--dsn", dsn}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "job 4 queued") || !strings.Contains(out.String(), "jobs --watch") {
		t.Errorf("start without --wait:\n%s", out.String())
	}
}
