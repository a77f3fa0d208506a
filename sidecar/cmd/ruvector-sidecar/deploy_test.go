package main

// The deployment checks of issue "Deployment": what can be checked on a
// machine without a Docker engine or a Kubernetes cluster. The install
// script is run for real (into a DESTDIR), the installed sidecar is asked
// for its flags and then run against a real server with the environment,
// role and flags the compose file gives it; every YAML file is parsed, and
// the compose file, the manifests, the systemd unit, the Dockerfile, the
// Prometheus and Grafana files are checked against each other and against
// what the code reads, registers and accepts.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/ruvector/ruvector-healing/internal/pgtest"
	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/metrics"
)

// pendingFlags are named in deploy/kubernetes/statefulset.yaml for the
// scale_replicas strategy before the sidecar accepts them. The check
// tolerates their absence (and says so); nothing else gets this pass.
var pendingFlags = map[string]bool{}

const (
	// The postgres image's data directory and uid, which the sidecar
	// container must share.
	imageDataDir = "/var/lib/postgresql/data"
	imageUID     = "999"
	postgresPort = 5432
)

// --- the install script and the installed sidecar ----------------------------

func TestInstallScriptAndInstalledSidecar(t *testing.T) {
	root := pgtest.RepoRoot(t)
	pgConfig := envOr("PG_CONFIG", "pg_config")
	pkglibdir := pgConfigValue(t, pgConfig, "--pkglibdir")
	sharedir := pgConfigValue(t, pgConfig, "--sharedir")

	// World-traversable: the sidecar runs from here as the server's user.
	destdir, err := os.MkdirTemp("", "ruvector-destdir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(destdir) })
	if err := os.Chmod(destdir, 0o755); err != nil {
		t.Fatal(err)
	}
	const prefix = "/opt/ruvector"
	install := func(action string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "scripts", "install.sh"), action)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "DESTDIR="+destdir, "PREFIX="+prefix, "PG_CONFIG="+pgConfig, "GO="+goCommand(t))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %s: %v\n%s", action, err, out)
		}
		return string(out)
	}
	install("install")

	// Where CREATE EXTENSION looks: the control file in sharedir/extension,
	// the script its default_version names, the library its
	// module_pathname names in pkglibdir.
	control := filepath.Join(destdir, sharedir, "extension", "ruvector_healing.control")
	ctl, err := os.ReadFile(control)
	if err != nil {
		t.Fatalf("control file not where pg_config --sharedir says: %v", err)
	}
	version := controlValue(t, string(ctl), "default_version")
	module := controlValue(t, string(ctl), "module_pathname")
	if module != "$libdir/ruvector_healing" {
		t.Fatalf("module_pathname %q: want $libdir/ruvector_healing", module)
	}
	lib := filepath.Join(destdir, pkglibdir, "ruvector_healing.so")
	script := filepath.Join(destdir, sharedir, "extension", "ruvector_healing--"+version+".sql")
	sidecar := filepath.Join(destdir, prefix, "bin", "ruvector-sidecar")
	for _, f := range []string{lib, script, sidecar} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatalf("not installed: %v", err)
		}
		if st.Size() == 0 {
			t.Fatalf("%s is empty", f)
		}
	}
	if st, _ := os.Stat(sidecar); st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("%s is not executable (%v)", sidecar, st.Mode())
	}
	sql, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(sql, []byte("ruvector_throttle_set")) {
		t.Fatalf("%s does not hold the extension's SQL", script)
	}

	flags := sidecarFlags(t, sidecar)
	t.Run("FlagsNamedInDeployFilesExist", func(t *testing.T) { checkDeployFlags(t, root, flags) })
	t.Run("FlagsDocumented", func(t *testing.T) { checkFlagsDocumented(t, root, flags) })
	t.Run("MetricsPortIsTheDefault", func(t *testing.T) { checkMetricsPort(t, root, flags) })
	t.Run("SystemdUnitVerifies", func(t *testing.T) { checkSystemdVerify(t, root, sidecar) })
	t.Run("ComposeSidecarOnARealServer", func(t *testing.T) { checkComposeSidecarRuns(t, root, sidecar) })

	// A second install is idempotent, and uninstall removes exactly what
	// was installed: a file beside them stays.
	install("install")
	decoy := filepath.Join(destdir, sharedir, "extension", "someone_elses.control")
	if err := os.WriteFile(decoy, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	install("uninstall")
	for _, f := range []string{lib, script, control, sidecar, filepath.Join(destdir, prefix, "share", "ruvector-healing", "install-manifest")} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("uninstall left %s (%v)", f, err)
		}
	}
	if _, err := os.Stat(decoy); err != nil {
		t.Errorf("uninstall removed a file it did not install: %v", err)
	}
	// Nothing left to uninstall is an error that says why.
	cmd := exec.Command(filepath.Join(root, "scripts", "install.sh"), "uninstall")
	cmd.Env = append(os.Environ(), "DESTDIR="+destdir, "PREFIX="+prefix)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no install manifest") {
		t.Errorf("second uninstall: err %v, output %s; want a failure naming the missing manifest", err, out)
	}
}

// A bad PG_CONFIG or action fails before anything is built or installed.
func TestInstallScriptRefusesBadInput(t *testing.T) {
	root := pgtest.RepoRoot(t)
	destdir := t.TempDir()
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"reinstall"}, nil, `unknown action "reinstall"`},
		{[]string{"install"}, []string{"PG_CONFIG=/nonexistent/pg_config"}, "PG_CONFIG=/nonexistent/pg_config not found"},
		{[]string{"install"}, []string{"PREFIX=relative/path"}, `PREFIX="relative/path" must be an absolute path`},
	} {
		cmd := exec.Command(filepath.Join(root, "scripts", "install.sh"), tc.args...)
		cmd.Env = append(append(os.Environ(), "DESTDIR="+destdir), tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("install.sh %v %v: err %v, output %q; want failure with %q", tc.args, tc.env, err, out, tc.want)
		}
	}
	entries, _ := os.ReadDir(destdir)
	if len(entries) != 0 {
		t.Errorf("refused installs wrote into DESTDIR: %v", entries)
	}
}

// subcommandFlags maps each subcommand to its flags (name → default).
type subcommandFlags map[string]map[string]string

var flagLine = regexp.MustCompile(`^  -([A-Za-z0-9][-A-Za-z0-9_]*)`)
var flagDefault = regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`)

// sidecarFlags asks the binary for each subcommand's flags: the flag sets
// are built inside the commands, so their own -h output is the truth.
func sidecarFlags(t *testing.T, bin string) subcommandFlags {
	t.Helper()
	out := subcommandFlags{}
	for _, sub := range []string{"run", "status", "throttle"} {
		cmd := exec.Command(bin, sub, "-h")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s -h: %v\n%s", bin, sub, err, buf.String())
		}
		fl := map[string]string{}
		var last string
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			line := sc.Text()
			if m := flagLine.FindStringSubmatch(line); m != nil {
				last = m[1]
				fl[last] = ""
				continue
			}
			if m := flagDefault.FindStringSubmatch(line); m != nil && last != "" {
				fl[last] = m[1]
			}
		}
		if len(fl) == 0 {
			t.Fatalf("%s %s -h listed no flags:\n%s", bin, sub, buf.String())
		}
		out[sub] = fl
	}
	for _, want := range []string{"dsn", "segment", "metrics-listen", "changefeed", "log-level"} {
		if _, ok := out["run"][want]; !ok {
			t.Fatalf("run -h does not list -%s: the flag parser of this test is wrong", want)
		}
	}
	return out
}

// flagArgs returns the flag names in a command line (after the
// subcommand), and the value given to each.
func flagArgs(args []string) (names []string, values map[string]string) {
	values = map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name := strings.TrimLeft(a, "-")
		if k, v, ok := strings.Cut(name, "="); ok {
			name = k
			values[k] = v
		} else if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			values[name] = args[i+1]
		}
		names = append(names, name)
	}
	return names, values
}

// deployCommandLines are the sidecar command lines of every deployment:
// source → arguments starting with the subcommand.
func deployCommandLines(t *testing.T, root string) map[string][]string {
	t.Helper()
	lines := map[string][]string{}
	compose := loadCompose(t, root)
	lines["docker-compose.yml sidecar.command"] = compose.Services["sidecar"].Command

	sts := loadStatefulSet(t, root)
	c := sts.container(t, "ruvector-sidecar")
	lines["deploy/kubernetes/statefulset.yaml ruvector-sidecar.args"] = append(slices.Clone(c.Command), c.Args...)

	unit := systemdUnit(t, root)
	exec := strings.Fields(unit["ExecStart"][0])
	if exec[0] != "/usr/local/bin/ruvector-sidecar" {
		t.Fatalf("systemd ExecStart runs %s, not the binary make install puts in /usr/local/bin", exec[0])
	}
	lines["deploy/systemd/ruvector-sidecar.service ExecStart"] = exec[1:]

	lines["deploy/docker/Dockerfile sidecar CMD"] = dockerfileStage(t, root, "sidecar").cmd
	return lines
}

func checkDeployFlags(t *testing.T, root string, flags subcommandFlags) {
	for n := range pendingFlags {
		if _, ok := flags["run"][n]; ok {
			t.Errorf("run --%s is accepted now: drop it from pendingFlags in deploy_test.go and the \"pending\" note of deploy/README.md", n)
		}
	}
	for src, args := range deployCommandLines(t, root) {
		if len(args) == 0 {
			t.Errorf("%s: empty", src)
			continue
		}
		sub := args[0]
		known, ok := flags[sub]
		if !ok {
			t.Errorf("%s: subcommand %q is not one the sidecar has", src, sub)
			continue
		}
		names, _ := flagArgs(args[1:])
		for _, n := range names {
			if _, ok := known[n]; ok {
				continue
			}
			if pendingFlags[n] {
				t.Logf("%s: --%s is not accepted by the sidecar yet (pending: scale_replicas)", src, n)
				continue
			}
			t.Errorf("%s: --%s is not a flag of `ruvector-sidecar %s` (it has: %s)", src, n, sub, strings.Join(sortedKeys(known), ", "))
		}
	}
}

// Every flag of the daemon is in the setup guide's flag table, and every
// flag in that table exists: the guide cannot fall behind the code.
func checkFlagsDocumented(t *testing.T, root string, flags subcommandFlags) {
	b, err := os.ReadFile(filepath.Join(root, "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	row := regexp.MustCompile("^\\| `--([a-z0-9-]+)`")
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = true
		}
	}
	if len(documented) == 0 {
		t.Fatal("deploy/README.md has no flag table (rows starting with | `--flag`)")
	}
	for name := range flags["run"] {
		if !documented[name] {
			t.Errorf("ruvector-sidecar run --%s is missing from the flag table of deploy/README.md", name)
		}
	}
	for name := range documented {
		found := pendingFlags[name]
		for _, fl := range flags {
			if _, ok := fl[name]; ok {
				found = true
			}
		}
		if !found {
			t.Errorf("deploy/README.md documents --%s, which no subcommand of the sidecar accepts", name)
		}
	}
}

// The metrics port is the sidecar's default everywhere it is named.
func checkMetricsPort(t *testing.T, root string, flags subcommandFlags) {
	def := flags["run"]["metrics-listen"]
	_, port, err := net.SplitHostPort(def)
	if err != nil {
		t.Fatalf("default of --metrics-listen %q: %v", def, err)
	}
	if port != "9187" {
		t.Errorf("the sidecar's default metrics port is %s; the deployment files use 9187", port)
	}
	if host, _, _ := net.SplitHostPort(def); host != "127.0.0.1" && host != "localhost" {
		t.Errorf("--metrics-listen defaults to %q: it must stay on localhost (no authentication)", def)
	}
	for src, args := range deployCommandLines(t, root) {
		_, values := flagArgs(args[1:])
		v, ok := values["metrics-listen"]
		if !ok {
			continue
		}
		if _, p, err := net.SplitHostPort(v); err != nil || p != port {
			t.Errorf("%s: --metrics-listen %q: want port %s", src, v, port)
		}
	}
}

func checkSystemdVerify(t *testing.T, root, sidecar string) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd)")
	}
	src, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "ruvector-sidecar.service"))
	if err != nil {
		t.Fatal(err)
	}
	// verify insists that ExecStart exists: point it at the DESTDIR copy.
	unit := strings.ReplaceAll(string(src), "/usr/local/bin/ruvector-sidecar", sidecar)
	dir := t.TempDir()
	path := filepath.Join(dir, "ruvector-sidecar.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The sidecar as docker-compose.yml runs it: the image's init script makes
// the role, the compose file's environment and flags start the daemon
// (as the server's OS user) against a real preloaded server with a
// registered collection, and it serves healthy metrics without logging an
// error. This is what proves the documented privileges are enough.
func checkComposeSidecarRuns(t *testing.T, root, sidecar string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := pgtest.Start(t, pgtest.Options{})
	compose := loadCompose(t, root)
	pgEnv := compose.Services["postgres"].Environment

	// The image's /docker-entrypoint-initdb.d script, as the entrypoint runs it.
	initdb := exec.CommandContext(ctx, "sh", filepath.Join(root, "deploy", "docker", "initdb", "10-ruvector-healing.sh"))
	initdb.Env = append(c.Env(), "POSTGRES_USER=postgres", "POSTGRES_DB=postgres",
		"RUVECTOR_SIDECAR_PASSWORD="+pgEnv["RUVECTOR_SIDECAR_PASSWORD"])
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb script: %v\n%s", err, out)
	}
	// An application's collection, owned by its own role, as the setup
	// guide describes: the sidecar is made a member of the owner.
	c.MustExec(ctx, `CREATE ROLE app_owner NOLOGIN;
CREATE TABLE public.emb (id bigserial, embedding real[], shard int NOT NULL) PARTITION BY LIST (shard);
CREATE TABLE public.emb_0 PARTITION OF public.emb FOR VALUES IN (0);
CREATE TABLE public.emb_1 PARTITION OF public.emb FOR VALUES IN (1);
ALTER TABLE public.emb OWNER TO app_owner; ALTER TABLE public.emb_0 OWNER TO app_owner; ALTER TABLE public.emb_1 OWNER TO app_owner;
GRANT app_owner TO ruvector_sidecar;
SELECT ruvector.ruvector_collection_register('emb', 'public.emb');`)
	conn := c.Connect(ctx, "postgres")
	var super, repl, passCaps bool
	var member []string
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolreplication,
		ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid ORDER BY 1),
		has_parameter_privilege('ruvector_sidecar', 'ruvector.shard_cap_exempt', 'SET')
		FROM pg_roles r WHERE rolname = 'ruvector_sidecar'`).Scan(&super, &repl, &member, &passCaps); err != nil {
		t.Fatalf("the init script made no ruvector_sidecar role: %v", err)
	}
	if super || !repl || !slices.Contains(member, "pg_monitor") || !slices.Contains(member, "ruvector_admin") || !passCaps {
		t.Fatalf("ruvector_sidecar: superuser %v, replication %v, member of %v, SET on ruvector.shard_cap_exempt %v; "+
			"want a non-superuser with REPLICATION in pg_monitor and ruvector_admin that may set it", super, repl, member, passCaps)
	}

	addr := freeAddr(t)
	args := slices.Clone(compose.Services["sidecar"].Command)
	setFlagValue(t, args, "metrics-listen", addr)
	env := os.Environ()
	for k, v := range compose.Services["sidecar"].Environment {
		env = append(env, k+"="+v)
	}
	// The compose network's names stand for this machine's cluster.
	env = append(env, "PGHOST="+c.SocketDir(), fmt.Sprintf("PGPORT=%d", c.Port))
	runSidecarCleanly(t, "docker-compose.yml", sidecar, args, env, addr, true)

	// The same server as the systemd unit and its environment file run it:
	// over the local socket with peer authentication mapped to the role
	// (deploy/README.md, systemd), no password.
	osUser := "postgres"
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		osUser = u.Username
	}
	hbaPath, identPath := filepath.Join(c.DataDir(), "pg_hba.conf"), filepath.Join(c.DataDir(), "pg_ident.conf")
	hba, err := os.ReadFile(hbaPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hbaPath, append([]byte("local all ruvector_sidecar peer map=ruvector\n"), hba...), 0o600); err != nil {
		t.Fatal(err)
	}
	ident, err := os.OpenFile(identPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(ident, "ruvector %s ruvector_sidecar\n", osUser)
	ident.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.MustExec(ctx, `SELECT pg_reload_conf()`)
	unit := systemdUnit(t, root)
	args = strings.Fields(unit["ExecStart"][0])[1:]
	addr = freeAddr(t)
	setFlagValue(t, args, "metrics-listen", addr)
	// The state directory stands in the data directory here: writable by
	// the server's user, as StateDirectory= makes it.
	setFlagValue(t, args, "audit-key", filepath.Join(c.DataDir(), "systemd_audit.key"))
	env = os.Environ()
	envFile, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "ruvector-sidecar.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(envFile), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			env = append(env, line)
		}
	}
	env = append(env, "PGHOST="+c.SocketDir(), fmt.Sprintf("PGPORT=%d", c.Port), "PGPASSWORD=", "PGPASSFILE=/nonexistent")
	runSidecarCleanly(t, "the systemd unit", sidecar, args, env, addr, false)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func setFlagValue(t *testing.T, args []string, name, value string) {
	t.Helper()
	for i := range args {
		if args[i] == "--"+name && i+1 < len(args) {
			args[i+1] = value
			return
		}
	}
	t.Fatalf("no --%s in %v", name, args)
}

// runSidecarCleanly runs the daemon as the server's OS user until it
// serves healthy metrics with the collection "emb" and every collector
// succeeding, lets it sample a while, stops it with SIGTERM, and fails on
// an error or a privilege failure in its log.
func runSidecarCleanly(t *testing.T, how, sidecar string, args, env []string, addr string, leads bool) {
	t.Helper()
	cmd := exec.Command(sidecar, args...)
	cmd.Env = env
	if os.Geteuid() == 0 {
		// As the server's OS user, directly (not under runuser, which would
		// turn the sidecar's clean exit on SIGTERM into its own death by it).
		pgUser, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.ParseUint(pgUser.Uid, 10, 32)
		gid, _ := strconv.ParseUint(pgUser.Gid, 10, 32)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	var logBuf syncBuffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	var body string
	for {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("%s: the sidecar exited: %v\n%s", how, err, logBuf.String())
		default:
		}
		code, _ := get("/healthz")
		var mcode int
		mcode, body = get("/metrics")
		if code == 200 && mcode == 200 && strings.Contains(body, "ruvector_segment_up 1") &&
			strings.Contains(body, `ruvector_integrity_state{collection="emb"}`) &&
			strings.Contains(body, `ruvector_collector_success{collector="partitions"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the sidecar never served healthy metrics with the collection's state\n/metrics:\n%s\nlog:\n%s", how, body, logBuf.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// What the live endpoint serves is what the registry describes: the
	// names the dashboard and alert checks trust are the served ones.
	known := registeredMetrics(t)
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(body, -1) {
		if !known[m[1]] {
			t.Errorf("%s: /metrics serves %s, which the registry's descriptions lack", how, m[1])
		}
	}
	// With the role's privileges the change feed streams and the healing
	// engine takes the lead (a later run on the same server may have to
	// wait out the previous one's leader row, so only the first must lead).
	wants := []string{"changefeed: streaming", "audit signing key loaded"}
	if leads {
		wants = append(wants, "healing: this sidecar is the active one")
	}
	// Run a few samples more, so that every collector and the change feed
	// have had their turn, then stop it as systemd and Kubernetes do. The
	// 4 s are a floor: on a loaded machine the feed or the election can
	// come later, so the log is polled for them (up to a minute) rather
	// than judged after a fixed pause.
	time.Sleep(4 * time.Second)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		log := logBuf.String()
		if !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(log, w) }) {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("%s: the sidecar exited: %v\n%s", how, err, logBuf.String())
		default:
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("%s: the sidecar did not exit cleanly on SIGTERM: %v", how, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: the sidecar did not stop within 20s of SIGTERM\n%s", how, logBuf.String())
	}
	for _, line := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"fatal"`) ||
			strings.Contains(line, "permission denied") || strings.Contains(line, "42501") || strings.Contains(line, "must be owner") {
			t.Errorf("%s: the sidecar logged: %s", how, line)
		}
	}
	for _, want := range wants {
		if !strings.Contains(logBuf.String(), want) {
			t.Errorf("%s: the sidecar never logged %q\n%s", how, want, logBuf.String())
		}
	}
	if !strings.Contains(logBuf.String(), `"level":"info"`) {
		t.Errorf("%s: no JSON log lines (RUVECTOR_LOG_FORMAT=json was not honoured?)\n%s", how, logBuf.String())
	}
}

// --- the files parse and agree with each other -------------------------------

// Every YAML file of the deployment parses (all documents of it), and so
// does the dashboard's JSON.
func TestDeployFilesParse(t *testing.T) {
	root := pgtest.RepoRoot(t)
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); ext == ".yml" || ext == ".yaml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "docker-compose.yml"))
	if len(files) < 10 {
		t.Fatalf("found only %d YAML files: %v", len(files), files)
	}
	for _, f := range files {
		docs := yamlDocs(t, f)
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
	var dash map[string]any
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "ruvector-healing.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
}

func TestComposeManifestsAndDockerfileAgree(t *testing.T) {
	root := pgtest.RepoRoot(t)
	compose := loadCompose(t, root)
	pg, sc := compose.Services["postgres"], compose.Services["sidecar"]
	sts := loadStatefulSet(t, root)
	kpg, ksc := sts.container(t, "postgres"), sts.container(t, "ruvector-sidecar")

	// Images: compose builds them from the Dockerfile's stages; the
	// manifests run the same names.
	for name, svc := range map[string]composeService{"postgres": pg, "sidecar": sc} {
		if svc.Build.Dockerfile != "deploy/docker/Dockerfile" || svc.Build.Context != "." {
			t.Errorf("compose %s: build %+v, want context . and deploy/docker/Dockerfile", name, svc.Build)
		}
		dockerfileStage(t, root, svc.Build.Target) // fails if no such stage
	}
	if kpg.Image != pg.Image || ksc.Image != sc.Image {
		t.Errorf("images: compose %s and %s, statefulset %s and %s", pg.Image, sc.Image, kpg.Image, ksc.Image)
	}
	for _, img := range []string{pg.Image, sc.Image} {
		if img == "" || !strings.HasPrefix(img, "ruvector-healing/") {
			t.Errorf("image %q: want ruvector-healing/…", img)
		}
	}
	pgStage := dockerfileStage(t, root, "postgres")
	if !slices.Contains(pgStage.cmd, "shared_preload_libraries=ruvector_healing") || !slices.Contains(pgStage.cmd, "wal_level=logical") {
		t.Errorf("Dockerfile postgres CMD %v: want shared_preload_libraries=ruvector_healing and wal_level=logical", pgStage.cmd)
	}
	if !slices.Equal(kpg.Args, pgStage.cmd) {
		t.Errorf("statefulset postgres args %v differ from the image's CMD %v", kpg.Args, pgStage.cmd)
	}
	// The images hold what the install script staged, nothing built
	// another way.
	build := dockerfileStage(t, root, "build").body
	install := regexp.MustCompile(`(?m)^RUN .*DESTDIR=(\S+) PREFIX=(\S+) .*scripts/install\.sh install\s*$`).FindStringSubmatch(build)
	if install == nil {
		t.Fatalf("the Dockerfile's build stage does not run DESTDIR=… PREFIX=… scripts/install.sh install: the image would drift from make install")
	}
	if strings.Contains(build, "go build") || strings.Contains(build, "make -C extension_stub") {
		t.Errorf("the Dockerfile's build stage builds outside scripts/install.sh")
	}
	if !strings.Contains(pgStage.body, "COPY --from=build "+install[1]+"/ /") {
		t.Errorf("the postgres stage does not copy the staged install (%s) into place", install[1])
	}
	if !strings.Contains(dockerfileStage(t, root, "sidecar").body, "COPY --from=build "+install[1]+install[2]+"/bin/ruvector-sidecar /usr/local/bin/ruvector-sidecar") {
		t.Errorf("the sidecar stage does not copy the installed binary from %s%s/bin", install[1], install[2])
	}

	// The data volume: both containers, the same path, the image's.
	pgVol, scVol := volumeTarget(t, pg.Volumes, "pgdata"), volumeTarget(t, sc.Volumes, "pgdata")
	if pgVol != imageDataDir || scVol != imageDataDir {
		t.Errorf("compose mounts pgdata at %s (postgres) and %s (sidecar); both must be %s", pgVol, scVol, imageDataDir)
	}
	kpgMount, kscMount := kpg.mount(t, "data"), ksc.mount(t, "data")
	if kpgMount != imageDataDir || kscMount != imageDataDir {
		t.Errorf("statefulset mounts data at %s (postgres) and %s (sidecar); both must be %s", kpgMount, kscMount, imageDataDir)
	}
	if pgdata := kpg.envValue("PGDATA"); pgdata != "" && !strings.HasPrefix(pgdata, imageDataDir+"/") {
		t.Errorf("statefulset PGDATA %s is outside the shared volume %s", pgdata, imageDataDir)
	}
	if !strings.Contains(dockerfileStage(t, root, "sidecar").body, imageDataDir) {
		t.Errorf("the sidecar stage of the Dockerfile no longer documents the data directory %s", imageDataDir)
	}

	// Same uid, same PID namespace.
	if sc.User != imageUID+":"+imageUID {
		t.Errorf("compose sidecar user %q, want %s:%s (the postgres image's)", sc.User, imageUID, imageUID)
	}
	if !regexp.MustCompile(`useradd -u `+imageUID+` `).MatchString(dockerfileStage(t, root, "sidecar").body) ||
		!strings.Contains(dockerfileStage(t, root, "sidecar").body, "USER "+imageUID) {
		t.Errorf("the Dockerfile's sidecar stage does not run as uid %s", imageUID)
	}
	if sc.Pid != "service:postgres" {
		t.Errorf("compose sidecar pid %q: want service:postgres (the memory collector reads /proc of the server)", sc.Pid)
	}
	if !sts.Spec.Template.Spec.ShareProcessNamespace {
		t.Errorf("statefulset: shareProcessNamespace must be true")
	}
	if u := sts.Spec.Template.Spec.SecurityContext.RunAsUser; strconv.Itoa(u) != imageUID {
		t.Errorf("statefulset runAsUser %d, want %s", u, imageUID)
	}

	// Ports.
	if !slices.ContainsFunc(pg.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+strconv.Itoa(postgresPort)) }) {
		t.Errorf("compose postgres ports %v do not publish %d", pg.Ports, postgresPort)
	}
	if !slices.ContainsFunc(sc.Ports, func(p string) bool { return strings.HasSuffix(p, ":9187") }) {
		t.Errorf("compose sidecar ports %v do not publish 9187", sc.Ports)
	}
	for _, p := range append(slices.Clone(pg.Ports), sc.Ports...) {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("compose publishes %q beyond localhost", p)
		}
	}
	if sc.Environment["PGPORT"] != strconv.Itoa(postgresPort) {
		t.Errorf("compose sidecar PGPORT %q", sc.Environment["PGPORT"])
	}
	if kpg.port("postgres") != postgresPort || ksc.port("metrics") != 9187 {
		t.Errorf("statefulset ports: postgres %d, metrics %d", kpg.port("postgres"), ksc.port("metrics"))
	}
	ann := sts.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9187" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("statefulset prometheus.io annotations %v", ann)
	}
	cm := k8sObjectNamed(t, root, "ConfigMap", "ruvector-sidecar")
	if cm.Data["PGPORT"] != strconv.Itoa(postgresPort) || cm.Data["PGHOST"] != "127.0.0.1" {
		t.Errorf("configmap PGHOST %q PGPORT %q: the sidecar reaches the server inside the pod", cm.Data["PGHOST"], cm.Data["PGPORT"])
	}
	svc := k8sObjectNamed(t, root, "Service", "ruvector-healing")
	var svcSpec struct {
		Ports []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"`
		Selector map[string]string `yaml:"selector"`
	}
	decodeNode(t, &svc.Spec, &svcSpec)
	got := map[string]int{}
	for _, p := range svcSpec.Ports {
		got[p.Name] = p.Port
	}
	if got["postgres"] != postgresPort || got["metrics"] != 9187 {
		t.Errorf("service ports %v", got)
	}
	for k, v := range svcSpec.Selector {
		if sts.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("service selector %s=%s does not select the statefulset's pods", k, v)
		}
	}
	if dockerfileStage(t, root, "sidecar").expose != "9187" {
		t.Errorf("the sidecar image exposes %q, want 9187", dockerfileStage(t, root, "sidecar").expose)
	}

	// Secrets and config maps the pod refers to exist, with those keys.
	secret := k8sObjectNamed(t, root, "Secret", "ruvector-healing-credentials")
	for _, ct := range []k8sContainer{kpg, ksc} {
		for _, e := range ct.Env {
			if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
				if ref.Name != secret.Metadata.Name || secret.StringData[ref.Key] == "" {
					t.Errorf("%s env %s: secret %s key %s does not exist", ct.Name, e.Name, ref.Name, ref.Key)
				}
			}
		}
		for _, ef := range ct.EnvFrom {
			if ef.ConfigMapRef.Name != "" && ef.ConfigMapRef.Name != cm.Metadata.Name {
				t.Errorf("%s envFrom config map %s does not exist", ct.Name, ef.ConfigMapRef.Name)
			}
		}
	}
	// The sidecar's password is the one the init script gives its role.
	if kpg.secretKey("RUVECTOR_SIDECAR_PASSWORD") != ksc.secretKey("PGPASSWORD") || ksc.secretKey("PGPASSWORD") == "" {
		t.Errorf("statefulset: the sidecar's PGPASSWORD and the server's RUVECTOR_SIDECAR_PASSWORD come from different secret keys")
	}
	if pg.Environment["RUVECTOR_SIDECAR_PASSWORD"] != sc.Environment["PGPASSWORD"] || sc.Environment["PGUSER"] != "ruvector_sidecar" ||
		cm.Data["PGUSER"] != "ruvector_sidecar" {
		t.Errorf("compose/configmap: the sidecar must log in as ruvector_sidecar with RUVECTOR_SIDECAR_PASSWORD")
	}
}

// The Role allows exactly get/patch/update on the scale subresource of the
// workload --k8s-replicas names, and is bound to the pod's account.
func TestKubernetesRBACMatchesScaleTarget(t *testing.T) {
	root := pgtest.RepoRoot(t)
	sts := loadStatefulSet(t, root)
	c := sts.container(t, "ruvector-sidecar")
	_, values := flagArgs(c.Args)
	target := values["k8s-replicas"]
	kind, name, ok := strings.Cut(target, "/")
	if !ok || name == "" || (kind != "statefulset" && kind != "deployment") {
		t.Fatalf("--k8s-replicas %q: want statefulset/NAME or deployment/NAME", target)
	}
	if values["k8s-namespace"] != "$(POD_NAMESPACE)" || c.envField("POD_NAMESPACE") != "metadata.namespace" {
		t.Errorf("--k8s-namespace %q: want $(POD_NAMESPACE) from the downward API", values["k8s-namespace"])
	}
	if n, err := strconv.Atoi(values["max-replicas"]); err != nil || n < 1 {
		t.Errorf("--max-replicas %q: want a positive number", values["max-replicas"])
	}
	role := k8sObjectNamed(t, root, "Role", "ruvector-sidecar-scale")
	covered := false
	for _, r := range role.Rules {
		verbs := slices.Clone(r.Verbs)
		sort.Strings(verbs)
		if !slices.Equal(verbs, []string{"get", "patch", "update"}) {
			t.Errorf("role rule %+v: verbs must be exactly get, patch, update", r)
		}
		if !slices.Equal(r.APIGroups, []string{"apps"}) || len(r.ResourceNames) == 0 {
			t.Errorf("role rule %+v: want apiGroups [apps] and resourceNames", r)
		}
		for _, res := range r.Resources {
			if !strings.HasSuffix(res, "/scale") {
				t.Errorf("role grants %s: only scale subresources are needed", res)
			}
			if res == kind+"s/scale" && slices.Contains(r.ResourceNames, name) {
				covered = true
			}
		}
	}
	if !covered {
		t.Errorf("the role does not allow scaling %s (resource %ss/scale, name %s)", target, kind, name)
	}
	binding := k8sObjectNamed(t, root, "RoleBinding", "ruvector-sidecar-scale")
	sa := sts.Spec.Template.Spec.ServiceAccountName
	k8sObjectNamed(t, root, "ServiceAccount", sa)
	if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Metadata.Name ||
		!slices.ContainsFunc(binding.Subjects, func(s k8sSubject) bool { return s.Kind == "ServiceAccount" && s.Name == sa }) {
		t.Errorf("rolebinding %+v does not bind role %s to service account %s", binding, role.Metadata.Name, sa)
	}
	// The ServiceMonitor scrapes the service's metrics port under the job
	// name the alerts select.
	sm := k8sObjectNamed(t, root, "ServiceMonitor", "ruvector-sidecar")
	var smSpec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port        string `yaml:"port"`
			Relabelings []struct {
				TargetLabel string `yaml:"targetLabel"`
				Replacement string `yaml:"replacement"`
			} `yaml:"relabelings"`
		} `yaml:"endpoints"`
	}
	decodeNode(t, &sm.Spec, &smSpec)
	svc := k8sObjectNamed(t, root, "Service", "ruvector-healing")
	for k, v := range smSpec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("servicemonitor selects %s=%s; the service is labelled %v", k, v, svc.Metadata.Labels)
		}
	}
	job := scrapeJob(t, root)
	if len(smSpec.Endpoints) != 1 || smSpec.Endpoints[0].Port != "metrics" ||
		!slices.ContainsFunc(smSpec.Endpoints[0].Relabelings, func(r struct {
			TargetLabel string `yaml:"targetLabel"`
			Replacement string `yaml:"replacement"`
		}) bool {
			return r.TargetLabel == "job" && r.Replacement == job
		}) {
		t.Errorf("servicemonitor endpoints %+v: want port metrics with job=%s", smSpec.Endpoints, job)
	}
	// kustomize builds the set (offline) where kubectl is installed.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "deploy", "kubernetes")).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl kustomize deploy/kubernetes: %v\n%s", err, out)
		}
		for _, kind := range []string{"StatefulSet", "Role", "RoleBinding", "ServiceAccount", "Service", "ConfigMap", "Secret"} {
			if !bytes.Contains(out, []byte("kind: "+kind+"\n")) {
				t.Errorf("kubectl kustomize output has no %s", kind)
			}
		}
	}
}

// Every environment variable the deployment files give the sidecar is one
// that the sidecar or its PostgreSQL driver reads.
func TestDeployEnvironmentVariablesAreRead(t *testing.T) {
	root := pgtest.RepoRoot(t)
	named := map[string][]string{} // variable → where
	add := func(src string, names ...string) {
		for _, n := range names {
			named[n] = append(named[n], src)
		}
	}
	compose := loadCompose(t, root)
	add("docker-compose.yml sidecar", sortedKeys(compose.Services["sidecar"].Environment)...)
	cm := k8sObjectNamed(t, root, "ConfigMap", "ruvector-sidecar")
	add("deploy/kubernetes/configmap.yaml", sortedKeys(cm.Data)...)
	sts := loadStatefulSet(t, root)
	c := sts.container(t, "ruvector-sidecar")
	argsText := strings.Join(c.Args, " ")
	for _, e := range c.Env {
		// Variables only for the kubelet's $(VAR) expansion in args.
		if strings.Contains(argsText, "$("+e.Name+")") {
			continue
		}
		add("deploy/kubernetes/statefulset.yaml ruvector-sidecar", e.Name)
	}
	envFile, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "ruvector-sidecar.env"))
	if err != nil {
		t.Fatal(err)
	}
	assign := regexp.MustCompile(`(?m)^#?\s*([A-Z][A-Z0-9_]*)=`)
	for _, m := range assign.FindAllStringSubmatch(string(envFile), -1) {
		add("deploy/systemd/ruvector-sidecar.env", m[1])
	}
	if len(named) < 5 {
		t.Fatalf("found only %v", named)
	}

	var sources []string
	for _, dir := range []string{filepath.Join(root, "sidecar"), filepath.Join(root, "shmproto")} {
		sources = append(sources, goSources(t, dir)...)
	}
	pgxDir := moduleDir(t, root, "github.com/jackc/pgx/v5")
	sources = append(sources, goSources(t, filepath.Join(pgxDir, "pgconn"))...)
	var all bytes.Buffer
	for _, f := range sources {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for name, where := range named {
		if !bytes.Contains(all.Bytes(), []byte(`"`+name+`"`)) {
			t.Errorf("%s (set in %s) is read by neither the sidecar nor pgconn", name, strings.Join(where, ", "))
		}
	}
}

// Every metric the alert rules and the dashboard query is one the sidecar
// registers (or Prometheus makes), and the dashboard shows what the
// operator needs.
func TestQueriedMetricsAreRegistered(t *testing.T) {
	root := pgtest.RepoRoot(t)
	known := registeredMetrics(t)

	type query struct{ src, expr string }
	var queries []query
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	decodeFile(t, filepath.Join(root, "deploy", "prometheus", "alerts.yml"), &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			queries = append(queries, query{"alerts.yml " + r.Alert + r.Record, r.Expr})
			if r.Record != "" {
				known[r.Record] = true
			}
		}
	}
	if len(queries) < 3 {
		t.Fatalf("alerts.yml: only %d rules", len(queries))
	}
	var dash any
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "ruvector-healing.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	nDash := 0
	walkJSON(dash, func(obj map[string]any) {
		if e, ok := obj["expr"].(string); ok {
			queries = append(queries, query{fmt.Sprintf("dashboard %v", obj["legendFormat"]), e})
			nDash++
		}
		if q, ok := obj["query"].(string); ok && strings.HasPrefix(q, "label_values(") {
			m := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`).FindStringSubmatch(q)
			if m == nil {
				t.Errorf("dashboard variable query %q: want label_values(METRIC, LABEL)", q)
				return
			}
			queries = append(queries, query{"dashboard variable", m[1]})
		}
	})
	if nDash < 10 {
		t.Fatalf("the dashboard has only %d queries", nDash)
	}
	used := map[string]bool{}
	for _, q := range queries {
		names := promqlMetricNames(q.expr)
		if len(names) == 0 && !strings.Contains(q.expr, "time()") {
			t.Errorf("%s: no metric found in %q", q.src, q.expr)
		}
		for _, n := range names {
			used[n] = true
			if !known[n] {
				t.Errorf("%s queries %s, which the sidecar does not register (expr %q)", q.src, n, q.expr)
			}
		}
	}
	for _, want := range []string{
		"ruvector_integrity_lambda_cut", "ruvector_integrity_state", "ruvector_integrity_witness_edges",
		"ruvector_throttle_percent", "ruvector_gate_admitted_rows_total", "ruvector_gate_delayed_statements_total",
		"ruvector_gate_rejected_statements_total", "ruvector_healing_attempts_total", "ruvector_healing_success_total",
		"ruvector_healing_active", "ruvector_healing_cooldown", "ruvector_healing_duration_seconds_bucket",
		"ruvector_healing_time_to_recovery_seconds", "ruvector_healing_success_rate",
	} {
		if !used[want] {
			t.Errorf("neither the dashboard nor the alerts show %s", want)
		}
	}
	// The collection variable filters every per-collection panel.
	walkJSON(dash, func(obj map[string]any) {
		e, ok := obj["expr"].(string)
		if ok && strings.Contains(e, "ruvector_") && !strings.Contains(e, `collection=~"$collection"`) {
			for _, n := range promqlMetricNames(e) {
				if strings.HasPrefix(n, "ruvector_integrity_") || strings.HasPrefix(n, "ruvector_gate_") ||
					strings.HasPrefix(n, "ruvector_throttle_") || (strings.HasPrefix(n, "ruvector_healing_") && n != "ruvector_healing_enabled") {
					t.Errorf("dashboard query %q ignores the collection variable", e)
					break
				}
			}
		}
	})
}

// Prometheus (compose) scrapes the sidecar under the job the alerts
// select, loads the rules where compose mounts them, and promtool accepts
// the configuration; Grafana's provisioning finds the dashboard.
func TestPrometheusAndGrafanaWiring(t *testing.T) {
	root := pgtest.RepoRoot(t)
	compose := loadCompose(t, root)
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	promPath := filepath.Join(root, "deploy", "prometheus", "prometheus.yml")
	decodeFile(t, promPath, &prom)
	mounts := map[string]string{} // container path → host path
	for _, v := range compose.Services["prometheus"].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && strings.HasPrefix(parts[0], "./") {
			mounts[parts[1]] = parts[0]
		}
	}
	if len(prom.RuleFiles) != 1 || mounts[prom.RuleFiles[0]] != "./deploy/prometheus/alerts.yml" {
		t.Errorf("prometheus rule_files %v: compose must mount deploy/prometheus/alerts.yml there (mounts %v)", prom.RuleFiles, mounts)
	}
	if mounts["/etc/prometheus/prometheus.yml"] != "./deploy/prometheus/prometheus.yml" {
		t.Errorf("compose does not mount deploy/prometheus/prometheus.yml as Prometheus's configuration")
	}
	job := scrapeJob(t, root)
	var target string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName == job && len(sc.StaticConfigs) > 0 && len(sc.StaticConfigs[0].Targets) > 0 {
			target = sc.StaticConfigs[0].Targets[0]
		}
	}
	if target != "sidecar:9187" {
		t.Errorf("prometheus job %s scrapes %q, want sidecar:9187 (the compose service)", job, target)
	}
	// Every job the alerts or the dashboard select is this one.
	jobSel := regexp.MustCompile(`job="([^"]*)"`)
	for _, f := range []string{"deploy/prometheus/alerts.yml", "deploy/grafana/ruvector-healing.json"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range jobSel.FindAllStringSubmatch(string(b), -1) {
			if m[1] != job {
				t.Errorf("%s selects job=%q; Prometheus scrapes the sidecar as %q", f, m[1], job)
			}
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		// With the rule file where this checkout has it.
		b, err := os.ReadFile(promPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg := strings.ReplaceAll(string(b), prom.RuleFiles[0], filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
		p := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "config", p).CombinedOutput(); err != nil {
			t.Errorf("promtool check config: %v\n%s", err, out)
		}
	} else {
		t.Errorf("promtool is not installed (Debian package prometheus; make test installs it)")
	}

	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeFile(t, filepath.Join(root, "deploy", "grafana", "provisioning", "dashboards", "ruvector.yml"), &provider)
	var datasources struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	decodeFile(t, filepath.Join(root, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"), &datasources)
	gmounts := map[string]string{}
	for _, v := range compose.Services["grafana"].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			gmounts[parts[0]] = parts[1]
		}
	}
	if len(provider.Providers) != 1 || gmounts["./deploy/grafana/ruvector-healing.json"] != provider.Providers[0].Options.Path+"/ruvector-healing.json" {
		t.Errorf("grafana: the dashboard provider reads %+v; compose mounts the dashboard at %q", provider.Providers, gmounts["./deploy/grafana/ruvector-healing.json"])
	}
	if gmounts["./deploy/grafana/provisioning"] != "/etc/grafana/provisioning" {
		t.Errorf("grafana: compose does not mount the provisioning directory")
	}
	if len(datasources.Datasources) != 1 || datasources.Datasources[0].Type != "prometheus" || datasources.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data source %+v: want prometheus at http://prometheus:9090", datasources.Datasources)
	}
}

// The systemd unit: hardened, as the server's user, after its server, and
// able to write exactly what the sidecar writes.
func TestSystemdUnitHardening(t *testing.T) {
	root := pgtest.RepoRoot(t)
	u := systemdUnit(t, root)
	want := map[string]string{
		"User": "postgres", "Group": "postgres", "Restart": "on-failure", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes", "RemoveIPC": "no",
		"Requires": "postgresql@15-main.service", "PartOf": "postgresql@15-main.service",
		"StateDirectory": "ruvector-sidecar", "EnvironmentFile": "-/etc/ruvector-sidecar/ruvector-sidecar.env",
	}
	for k, v := range want {
		if !slices.Contains(u[k], v) {
			t.Errorf("%s=%v, want %s", k, u[k], v)
		}
	}
	if !strings.Contains(strings.Join(u["After"], " "), "postgresql@15-main.service") {
		t.Errorf("After=%v: the sidecar must start after the server", u["After"])
	}
	for _, fam := range []string{"AF_UNIX", "AF_INET", "AF_INET6"} {
		if !strings.Contains(strings.Join(u["RestrictAddressFamilies"], " "), fam) {
			t.Errorf("RestrictAddressFamilies=%v lacks %s", u["RestrictAddressFamilies"], fam)
		}
	}
	if len(u["MemoryMax"]) == 0 {
		t.Errorf("no MemoryMax")
	}
	// The segment's directory of the Debian cluster 15/main is writable, and
	// the audit key lives in the state directory, the only other write.
	segDir := filepath.Dir(shmproto.Path("/var/lib/postgresql/15/main"))
	if !slices.Contains(u["ReadWritePaths"], segDir) {
		t.Errorf("ReadWritePaths=%v, want %s (the segment is mapped read-write)", u["ReadWritePaths"], segDir)
	}
	_, values := flagArgs(strings.Fields(u["ExecStart"][0])[2:])
	if key := values["audit-key"]; !strings.HasPrefix(key, "/var/lib/"+u["StateDirectory"][0]+"/") {
		t.Errorf("--audit-key %q is outside StateDirectory=%v: ProtectSystem=strict would make it unwritable", key, u["StateDirectory"])
	}
	for k := range u {
		if _, ok := systemdKnownKeys[k]; !ok {
			t.Errorf("unexpected key %s in the unit (typo?)", k)
		}
	}
}

var systemdKnownKeys = map[string]struct{}{
	"Description": {}, "Documentation": {}, "Requires": {}, "After": {}, "PartOf": {}, "Wants": {}, "Type": {}, "User": {},
	"Group": {}, "EnvironmentFile": {}, "ExecStart": {}, "Restart": {}, "RestartSec": {}, "KillSignal": {},
	"TimeoutStopSec": {}, "StateDirectory": {}, "StateDirectoryMode": {}, "UMask": {}, "NoNewPrivileges": {},
	"CapabilityBoundingSet": {}, "AmbientCapabilities": {}, "ProtectSystem": {}, "ReadWritePaths": {}, "ProtectHome": {},
	"PrivateTmp": {}, "PrivateDevices": {}, "ProtectKernelTunables": {}, "ProtectKernelModules": {}, "ProtectKernelLogs": {},
	"ProtectControlGroups": {}, "ProtectClock": {}, "ProtectHostname": {}, "ProtectProc": {}, "RestrictAddressFamilies": {},
	"RestrictNamespaces": {}, "RestrictRealtime": {}, "RestrictSUIDSGID": {}, "LockPersonality": {},
	"MemoryDenyWriteExecute": {}, "RemoveIPC": {}, "SystemCallArchitectures": {}, "SystemCallFilter": {},
	"SystemCallErrorNumber": {}, "MemoryMax": {}, "TasksMax": {}, "LimitNOFILE": {}, "WantedBy": {},
}

// --- PromQL ------------------------------------------------------------------

var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true, "atan2": true,
}
var promqlGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
var promqlVariable = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
var promqlToken = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9A-Za-z_.]*|\S`)

// promqlMetricNames returns the metric names an expression selects: the
// identifiers left once strings, label matchers, ranges, grouping clauses,
// Grafana variables, functions and keywords are gone.
func promqlMetricNames(expr string) []string {
	var b strings.Builder
	depthCurly, depthSquare := 0, 0
	var quote rune
	for _, r := range expr {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
			continue
		case r == '"' || r == '\'' || r == '`':
			quote = r
			continue
		case r == '{':
			depthCurly++
			continue
		case r == '}':
			depthCurly--
			b.WriteRune(' ')
			continue
		case r == '[':
			depthSquare++
			continue
		case r == ']':
			depthSquare--
			b.WriteRune(' ')
			continue
		}
		if depthCurly == 0 && depthSquare == 0 {
			b.WriteRune(r)
		}
	}
	s := promqlVariable.ReplaceAllString(b.String(), " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	var names []string
	locs := promqlToken.FindAllStringIndex(s, -1)
	for i, loc := range locs {
		tok := s[loc[0]:loc[1]]
		c := tok[0]
		if !(c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z')) || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		if i+1 < len(locs) && s[locs[i+1][0]:locs[i+1][1]] == "(" {
			continue // a function or aggregation
		}
		names = append(names, tok)
	}
	return names
}

func TestPromqlMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`ruvector_integrity_state > 1 and ruvector_healing_attempts_total == 0`:                                           {"ruvector_integrity_state", "ruvector_healing_attempts_total"},
		`histogram_quantile(0.99, sum by (le, collection) (rate(x_bucket{collection=~"$collection"}[$__rate_interval])))`: {"x_bucket"},
		`up{job="ruvector-sidecar"} == 0`:                      {"up"},
		`time() - a_seconds{collection=~"a|b"} > 60`:           {"a_seconds"},
		`increase(b_total[1h]) >= 3 unless on (x) c offset 5m`: {"b_total", "c"},
		`sum without (op) (d) / ignoring(op) group_left e`:     {"d", "e"},
	} {
		if got := promqlMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetricNames(%q) = %v, want %v", expr, got, want)
		}
	}
}

// registeredMetrics are the names the daemon's registry can serve: the
// descriptions of every collector the daemon registers (as startMetrics
// does: the metrics package's own, the healing metrics, Go and process,
// and the handler's), whether or not a series exists yet.
// Histogram and summary series add their suffixes.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	cap := &capturingRegisterer{}
	if err := metrics.Register(cap, metrics.Sources{Segment: noSegment{}, Stats: &metrics.RunnerStats{}, Snapshots: &metrics.SnapshotCache{}}); err != nil {
		t.Fatal(err)
	}
	if err := metrics.NewHealing().Register(cap); err != nil {
		t.Fatal(err)
	}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	known := map[string]bool{"up": true, "scrape_duration_seconds": true, "ALERTS": true, "ALERTS_FOR_STATE": true}
	for _, c := range cap.collectors {
		ch := make(chan *prometheus.Desc, 256)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			known[m[1]] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[m[1]+suffix] = true
			}
		}
	}
	// The handler instruments itself on the registry it serves
	// (promhttp_metric_handler_*): gather those from a real one.
	served := prometheus.NewRegistry()
	metrics.Handler(served, metrics.HandlerOptions{})
	families, err := served.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		known[f.GetName()] = true
	}
	for _, must := range []string{"promhttp_metric_handler_requests_total", "ruvector_integrity_lambda_cut", "ruvector_healing_attempts_total", "process_resident_memory_bytes", "go_goroutines"} {
		if !known[must] {
			t.Fatalf("registered metrics lack %s: the description reader is wrong (%d names)", must, len(known))
		}
	}
	return known
}

type capturingRegisterer struct{ collectors []prometheus.Collector }

func (c *capturingRegisterer) Register(col prometheus.Collector) error {
	c.collectors = append(c.collectors, col)
	return nil
}
func (c *capturingRegisterer) MustRegister(cs ...prometheus.Collector) {
	c.collectors = append(c.collectors, cs...)
}
func (c *capturingRegisterer) Unregister(prometheus.Collector) bool { return false }

// noSegment stands in for the segment: describing metrics reads nothing.
type noSegment struct{}

var errNoSegment = errors.New("no segment in this test")

func (noSegment) Info() (shmproto.Info, error)                { return shmproto.Info{}, errNoSegment }
func (noSegment) Collections() ([]shmproto.Collection, error) { return nil, errNoSegment }
func (noSegment) ReadIntegrity(int) (shmproto.Integrity, error) {
	return shmproto.Integrity{}, errNoSegment
}
func (noSegment) ReadThrottle(int, shmproto.Op) (shmproto.Throttle, error) {
	return shmproto.Throttle{}, errNoSegment
}
func (noSegment) ReadCounters(int, shmproto.Op) (shmproto.Counters, error) {
	return shmproto.Counters{}, errNoSegment
}

// --- file readers ------------------------------------------------------------

type composeService struct {
	Build struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
		Target     string `yaml:"target"`
	} `yaml:"build"`
	Image       string            `yaml:"image"`
	Environment map[string]string `yaml:"environment"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	User        string            `yaml:"user"`
	Pid         string            `yaml:"pid"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadCompose(t *testing.T, root string) composeFile {
	t.Helper()
	var c composeFile
	decodeFile(t, filepath.Join(root, "docker-compose.yml"), &c)
	for _, s := range []string{"postgres", "sidecar", "prometheus", "grafana"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("docker-compose.yml has no service %s", s)
		}
	}
	return c
}

func volumeTarget(t *testing.T, vols []string, name string) string {
	t.Helper()
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[0] == name {
			return parts[1]
		}
	}
	t.Fatalf("no volume %s in %v", name, vols)
	return ""
}

type k8sSubject struct {
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec       yaml.Node         `yaml:"spec"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Rules      []struct {
		APIGroups     []string `yaml:"apiGroups"`
		Resources     []string `yaml:"resources"`
		ResourceNames []string `yaml:"resourceNames"`
		Verbs         []string `yaml:"verbs"`
	} `yaml:"rules"`
	RoleRef struct {
		Kind string `yaml:"kind"`
		Name string `yaml:"name"`
	} `yaml:"roleRef"`
	Subjects []k8sSubject `yaml:"subjects"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func (c k8sContainer) mount(t *testing.T, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	t.Fatalf("container %s does not mount %s", c.Name, name)
	return ""
}

func (c k8sContainer) port(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func (c k8sContainer) envValue(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func (c k8sContainer) envField(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

func (c k8sContainer) secretKey(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	return ""
}

type statefulSet struct {
	Spec struct {
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				ServiceAccountName    string `yaml:"serviceAccountName"`
				ShareProcessNamespace bool   `yaml:"shareProcessNamespace"`
				SecurityContext       struct {
					RunAsUser int `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func (s statefulSet) container(t *testing.T, name string) k8sContainer {
	t.Helper()
	for _, c := range s.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("statefulset has no container %s", name)
	return k8sContainer{}
}

func loadStatefulSet(t *testing.T, root string) statefulSet {
	t.Helper()
	obj := k8sObjectNamed(t, root, "StatefulSet", "ruvector-healing")
	var s statefulSet
	decodeNode(t, &obj.Spec, &s.Spec)
	return s
}

// k8sObjectNamed finds one object among every manifest of deploy/kubernetes.
func k8sObjectNamed(t *testing.T, root, kind, name string) k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			var o k8sObject
			if err := doc.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == kind && o.Metadata.Name == name {
				return o
			}
		}
	}
	t.Fatalf("deploy/kubernetes has no %s %s", kind, name)
	return k8sObject{}
}

func scrapeJob(t *testing.T, root string) string {
	t.Helper()
	var prom struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	decodeFile(t, filepath.Join(root, "deploy", "prometheus", "prometheus.yml"), &prom)
	if len(prom.ScrapeConfigs) != 1 {
		t.Fatalf("prometheus.yml: want one scrape job, have %d", len(prom.ScrapeConfigs))
	}
	return prom.ScrapeConfigs[0].JobName
}

func yamlDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, &n)
	}
}

func decodeFile(t *testing.T, path string, v any) {
	t.Helper()
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	if err := docs[0].Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func decodeNode(t *testing.T, n *yaml.Node, v any) {
	t.Helper()
	if err := n.Decode(v); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

// systemdUnit reads the unit's settings (every section; repeated keys
// accumulate, space-separated values split).
func systemdUnit(t *testing.T, root string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "ruvector-sidecar.service"))
	if err != nil {
		t.Fatal(err)
	}
	u := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q", line)
		}
		if k == "ExecStart" || k == "Description" {
			u[k] = append(u[k], v)
			continue
		}
		u[k] = append(u[k], strings.Fields(v)...)
	}
	return u
}

type dockerStage struct {
	body   string
	cmd    []string
	expose string
}

// dockerfileStage returns one stage of deploy/docker/Dockerfile.
func dockerfileStage(t *testing.T, root, name string) dockerStage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`(?m)^FROM \S+ AS (\S+)\s*$`)
	locs := from.FindAllStringSubmatchIndex(string(b), -1)
	for i, loc := range locs {
		if string(b[loc[2]:loc[3]]) != name {
			continue
		}
		end := len(b)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		st := dockerStage{body: string(b[loc[0]:end])}
		if m := regexp.MustCompile(`(?m)^CMD (\[.*\])\s*$`).FindStringSubmatch(st.body); m != nil {
			if err := json.Unmarshal([]byte(m[1]), &st.cmd); err != nil {
				t.Fatalf("Dockerfile stage %s CMD: %v", name, err)
			}
		}
		if m := regexp.MustCompile(`(?m)^EXPOSE (\d+)\s*$`).FindStringSubmatch(st.body); m != nil {
			st.expose = m[1]
		}
		return st
	}
	t.Fatalf("deploy/docker/Dockerfile has no stage %q", name)
	return dockerStage{}
}

func controlValue(t *testing.T, control, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + `\s*=\s*'([^']*)'`).FindStringSubmatch(control)
	if m == nil {
		t.Fatalf("control file has no %s", key)
	}
	return m[1]
}

func pgConfigValue(t *testing.T, pgConfig, flag string) string {
	t.Helper()
	out, err := exec.Command(pgConfig, flag).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", pgConfig, flag, err)
	}
	return strings.TrimSpace(string(out))
}

func goCommand(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func moduleDir(t *testing.T, root, module string) string {
	t.Helper()
	cmd := exec.Command(goCommand(t), "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

func goSources(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("no Go sources under %s: %v", dir, err)
	}
	return out
}

func walkJSON(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, e := range x {
			walkJSON(e, f)
		}
	case []any:
		for _, e := range x {
			walkJSON(e, f)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
