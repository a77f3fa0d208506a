package collect

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/sidecar/health"
)

// asServerUser runs a PostgreSQL binary as the postgres user when we are
// root (the server refuses to run as root).
func asServerUser(t *testing.T, name string, args ...string) {
	t.Helper()
	bin := filepath.Join("/usr/lib/postgresql/15/bin", name)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// startStandby clones c with pg_basebackup and starts it streaming from c.
func startStandby(t *testing.T, c *pgtest.Cluster) (dsn string) {
	t.Helper()
	dir := filepath.Join(c.Dir, "standby")
	sock := filepath.Join(c.Dir, "standby_sock")
	asServerUser(t, "pg_basebackup", "-h", c.SocketDir(), "-p", fmt.Sprint(c.Port), "-U", "postgres",
		"-D", dir, "-R", "-X", "stream", "-c", "fast")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := os.Mkdir(sock, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		asChown := exec.Command("chown", "postgres:", sock)
		if out, err := asChown.CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "port = %d\nunix_socket_directories = '%s'\ncluster_name = 'standby1'\n", port, sock)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	asServerUser(t, "pg_ctl", "-D", dir, "-l", filepath.Join(c.Dir, "log", "standby.log"), "-w", "-t", "60", "start")
	t.Cleanup(func() {
		bin := "/usr/lib/postgresql/15/bin/pg_ctl"
		args := []string{"-D", dir, "-m", "immediate", "-w", "stop"}
		if os.Geteuid() == 0 {
			_ = exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...).Run()
		} else {
			_ = exec.Command(bin, args...).Run()
		}
	})
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", sock, port)
}

func replica(s health.Signals, name string) (health.ReplicaSignal, bool) {
	for _, r := range s.Replicas {
		if r.Name == name {
			return r, true
		}
	}
	return health.ReplicaSignal{}, false
}

// A real standby: streaming and caught up, then with replay paused its lag
// grows in bytes and seconds; an inactive slot is broken; a logical slot
// reports its backlog.
func TestReplicasRealStandby(t *testing.T) {
	t.Parallel()
	c, conn, tg := startCollection(t)
	ctx := context.Background()
	dsn := startStandby(t, c)
	r := NewReplicas()

	var rs health.ReplicaSignal
	pgtest.WaitFor(t, 15*time.Second, "the standby streaming", func() (bool, error) {
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "standby1")
		return rs.State == "streaming", err
	})
	if rs.Broken || rs.ID <= 0 {
		t.Fatalf("streaming standby: %+v", rs)
	}
	t.Logf("caught up: %+v", rs)

	standby, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Close(context.Background()) })
	mustExec(t, standby, "SELECT pg_wal_replay_pause()")

	writer := c.Connect(ctx, "postgres")
	var first health.ReplicaSignal
	pgtest.WaitFor(t, 20*time.Second, "replay lag in bytes and seconds", func() (bool, error) {
		mustExec(t, writer, "INSERT INTO emb (embedding, shard) SELECT '{1,2,3,4}', 0 FROM generate_series(1, 200)")
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "standby1")
		if first.LagBytes == 0 {
			first = rs
		}
		return rs.LagBytes > first.LagBytes && rs.LagSeconds > 2, err
	})
	t.Logf("paused: first %+v, later %+v", first, rs)
	if rs.Broken || rs.State != "streaming" {
		t.Fatalf("a paused standby still streams: %+v", rs)
	}

	mustExec(t, standby, "SELECT pg_wal_replay_resume()")
	pgtest.WaitFor(t, 15*time.Second, "the standby catching up", func() (bool, error) {
		s, err := collectOnce(t, r, conn, tg)
		rs, _ = replica(s, "standby1")
		return rs.LagBytes == 0, err
	})

	// Slots: an unused physical slot is broken; a logical slot with
	// unconsumed changes has a backlog.
	mustExec(t, writer, "SELECT pg_create_physical_replication_slot('gone', true)")
	mustExec(t, writer, "SELECT pg_create_logical_replication_slot('feed', 'pgoutput')")
	// The sidecar's own change feed is not a replica (an inactive slot of
	// it at start read as replication lag).
	mustExec(t, writer, "SELECT pg_create_logical_replication_slot('ruvector_healing_feed_5', 'pgoutput')")
	feedConn, err := pgconn.Connect(ctx, c.DSN("postgres")+" replication=database application_name=ruvector_healing_changefeed")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { feedConn.Close(context.Background()) })
	mustExec(t, writer, "INSERT INTO emb (embedding, shard) SELECT '{1}', 1 FROM generate_series(1, 100)")
	s, err := collectOnce(t, r, conn, tg)
	if err != nil {
		t.Fatal(err)
	}
	gone, ok1 := replica(s, "gone")
	feed, ok2 := replica(s, "feed")
	if !ok1 || !gone.Broken || gone.State != "inactive" || !ok2 || !feed.Broken || feed.LagBytes <= 0 || feed.ID != slotID("feed") {
		t.Fatalf("slots: gone %+v, feed %+v", gone, feed)
	}
	if len(s.Replicas) != 3 {
		t.Fatalf("replicas %+v: want the standby and two slots, not the sidecar's own feed", s.Replicas)
	}
}
