package workload

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbySpec is where to make a streaming standby of a local primary.
type StandbySpec struct {
	PrimaryHost string // socket directory or host of the primary
	PrimaryPort int
	User        string   // replication-capable role (default postgres)
	Dir         string   // new data directory; must not exist
	SocketDir   string   // default Dir + "_sock"
	Port        int      // default: a free loopback port
	Name        string   // cluster_name, the application_name it streams as (default "workload_standby")
	BinDir      string   // default /usr/lib/postgresql/15/bin
	Conf        []string // more lines for the standby's postgresql.auto.conf
}

// Standby is a running streaming standby.
type Standby struct {
	DSN  string
	Name string
	spec StandbySpec
}

// StartStandby clones the primary with pg_basebackup (-R: streaming
// replication configured) and starts it on loopback. As root the server
// binaries run as the postgres user (the server refuses root).
func StartStandby(ctx context.Context, spec StandbySpec) (*Standby, error) {
	if spec.User == "" {
		spec.User = "postgres"
	}
	if spec.BinDir == "" {
		spec.BinDir = "/usr/lib/postgresql/15/bin"
	}
	if spec.SocketDir == "" {
		spec.SocketDir = spec.Dir + "_sock"
	}
	if spec.Name == "" {
		spec.Name = "workload_standby"
	}
	if spec.Port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		spec.Port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	if err := asServer(ctx, spec.BinDir, "pg_basebackup", "-h", spec.PrimaryHost, "-p", fmt.Sprint(spec.PrimaryPort),
		"-U", spec.User, "-D", spec.Dir, "-R", "-X", "stream", "-c", "fast"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.SocketDir, 0o755); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if out, err := exec.CommandContext(ctx, "chown", "postgres:", spec.SocketDir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("workload: chown %s: %v: %s", spec.SocketDir, err, out)
		}
	}
	f, err := os.OpenFile(filepath.Join(spec.Dir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(f, "port = %d\nunix_socket_directories = '%s'\nlisten_addresses = '127.0.0.1'\ncluster_name = '%s'\n",
		spec.Port, spec.SocketDir, spec.Name)
	for _, line := range spec.Conf {
		if err == nil {
			_, err = fmt.Fprintln(f, line)
		}
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := asServer(ctx, spec.BinDir, "pg_ctl", "-D", spec.Dir, "-l", spec.Dir+".log", "-w", "-t", "60", "start"); err != nil {
		return nil, err
	}
	return &Standby{Name: spec.Name, spec: spec,
		DSN: fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", spec.SocketDir, spec.Port, spec.User)}, nil
}

// Stop stops the standby (immediate).
func (s *Standby) Stop(ctx context.Context) error {
	return asServer(ctx, s.spec.BinDir, "pg_ctl", "-D", s.spec.Dir, "-m", "immediate", "-w", "stop")
}

func asServer(ctx context.Context, binDir, name string, args ...string) error {
	bin := filepath.Join(binDir, name)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("workload: %s %v: %w\n%s", name, args, err, out)
	}
	return nil
}

// LaggingReplica pauses WAL replay on the standby (pg_wal_replay_pause):
// it keeps receiving WAL but applies none, so its replay lag in bytes and
// seconds grows with every write on the primary. The returned function
// resumes replay.
func LaggingReplica(ctx context.Context, standbyDSN string) (resume func(context.Context) error, err error) {
	conn, err := pgx.Connect(ctx, standbyDSN)
	if err != nil {
		return nil, fmt.Errorf("workload: connect to the standby: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("workload: pause replay: %w", err)
	}
	// Wait until the pause has taken effect, so the caller's writes from
	// now on are not applied.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state string
		if err := conn.QueryRow(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&state); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("workload: replay pause state: %w", err)
		}
		if state == "paused" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func(ctx context.Context) error {
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
			return fmt.Errorf("workload: resume replay: %w", err)
		}
		return nil
	}, nil
}
