// Package pgtest starts private PostgreSQL clusters for integration tests:
// a real server from initdb, ruvector_healing preloaded, wal_level=logical,
// on its own port and socket directory. It drives scripts/pgcluster.sh,
// the same script behind `make run`, so tests and the demo cannot drift.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is one private server.
type Cluster struct {
	Dir  string // holds data/, sock/, log/
	Port int
	t    testing.TB
}

// Options tune a cluster.
type Options struct {
	// SidecarTimeout sets ruvector.sidecar_timeout (default 5s).
	SidecarTimeout string
	// Conf lines appended to postgresql.conf.
	Conf []string
}

// RepoRoot finds the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("pgtest: go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// Start creates and starts a cluster; it is stopped (immediately) and
// removed when the test ends. A missing server or extension fails the test
// with what to install: integration tests never pass by skipping.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if _, err := os.Stat("/usr/share/postgresql/15/extension/ruvector_healing.control"); err != nil {
		t.Fatalf("pgtest: ruvector_healing is not installed into PostgreSQL 15: run `make test` (it builds and installs it) or `make install`")
	}
	dir, err := os.MkdirTemp("", "ruvtest-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir, Port: freePort(t), t: t}
	env := os.Environ()
	if opts.SidecarTimeout != "" {
		env = append(env, "RUVECTOR_SIDECAR_TIMEOUT="+opts.SidecarTimeout)
	}
	c.script(env, "init", dir, fmt.Sprint(c.Port))
	if len(opts.Conf) > 0 {
		f, err := os.OpenFile(filepath.Join(c.DataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString(strings.Join(opts.Conf, "\n") + "\n")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	c.script(env, "start", dir)
	t.Cleanup(func() {
		_ = exec.Command(filepath.Join(RepoRoot(t), "scripts", "pgcluster.sh"), "stop", dir, "immediate").Run()
		if !t.Failed() {
			_ = os.RemoveAll(dir)
		} else {
			t.Logf("pgtest: kept %s for inspection (server log in log/postgresql.log)", dir)
		}
	})
	return c
}

func (c *Cluster) script(env []string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(c.t), "scripts", "pgcluster.sh"), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("pgtest: pgcluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// DataDir is the cluster's PGDATA.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// SocketDir is the unix socket directory.
func (c *Cluster) SocketDir() string { return filepath.Join(c.Dir, "sock") }

// LogFile is the server log.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "log", "postgresql.log") }

// DSN for a database on this cluster, as the postgres superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", c.SocketDir(), c.Port, db)
}

// Env is PG* variables for psql and the sidecar.
func (c *Cluster) Env() []string {
	return append(os.Environ(), "PGHOST="+c.SocketDir(), fmt.Sprintf("PGPORT=%d", c.Port),
		"PGUSER=postgres", "PGDATABASE=postgres", "PGDATA="+c.DataDir())
}

// Connect opens a pgx connection closed when the test ends.
func (c *Cluster) Connect(ctx context.Context, db string) *pgx.Conn {
	c.t.Helper()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		c.t.Fatalf("pgtest: connect: %v", err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Psql runs SQL through the real psql client and returns its output.
func (c *Cluster) Psql(sql string, extra ...string) (string, error) {
	args := append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"}, extra...)
	cmd := exec.Command("psql", append(args, "-c", sql)...)
	cmd.Env = c.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustExec runs statements as the superuser in database postgres.
func (c *Cluster) MustExec(ctx context.Context, sql string) {
	c.t.Helper()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		c.t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		c.t.Fatalf("pgtest: %v\nSQL: %s", err, sql)
	}
}

// Stop stops the server with the given mode (fast, immediate).
func (c *Cluster) Stop(mode string) {
	c.t.Helper()
	c.script(os.Environ(), "stop", c.Dir, mode)
}

// Restart stops and starts the server.
func (c *Cluster) Restart(mode string) {
	c.t.Helper()
	c.Stop(mode)
	c.script(os.Environ(), "start", c.Dir)
}

// PostmasterPID reads postmaster.pid.
func (c *Cluster) PostmasterPID() int {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		c.t.Fatal(err)
	}
	var pid int
	fmt.Sscan(strings.SplitN(string(b), "\n", 2)[0], &pid)
	return pid
}

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pgtest: timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
