#!/usr/bin/env bash
# pgcluster.sh: a private PostgreSQL 15 cluster with ruvector_healing preloaded.
#
# One script for every private cluster the project starts (make run/up,
# the regression tests, the Go test harness) so they cannot drift apart.
#
#   pgcluster.sh init  DIR PORT   create DIR/data (initdb) and its configuration
#   pgcluster.sh start DIR        start it (waits until it accepts connections)
#   pgcluster.sh stop  DIR [MODE] stop it (fast by default; immediate for tests)
#   pgcluster.sh env   DIR        print PG* variables to reach it
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# postgres user, and DIR is handed to that user.
set -euo pipefail

PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin

die() { echo "pgcluster: $*" >&2; exit 1; }

as_server_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: pgcluster.sh init|start|stop|env DIR [PORT|MODE]"
[ -x "$PGBIN/initdb" ] || die "initdb not found in $PGBIN: install postgresql-15 (apt-get install postgresql-15)"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data

case "$cmd" in
init)
	port=${3:?port required}
	[ -e "$data/PG_VERSION" ] && die "$data already holds a cluster"
	mkdir -p "$dir/sock" "$dir/log"
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || die "no postgres user: install postgresql-15"
		chown postgres: "$dir" "$dir/sock" "$dir/log"
		# The server user must be able to reach DIR.
		p=$dir
		while [ "$p" != / ]; do
			p=$(dirname "$p")
			runuser -u postgres -- test -x "$p" || chmod o+x "$p"
		done
	fi
	as_server_user "$PGBIN/initdb" --no-sync -D "$data" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C >"$dir/log/initdb.log" 2>&1 ||
		{ cat "$dir/log/initdb.log" >&2; die "initdb failed"; }
	cat >>"$data/postgresql.conf" <<CONF

# --- ruvector-healing private cluster ---
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
shared_preload_libraries = 'ruvector_healing'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
fsync = off
full_page_writes = off
logging_collector = off
ruvector.sidecar_timeout = '${RUVECTOR_SIDECAR_TIMEOUT:-5s}'
CONF
	cat >>"$data/pg_hba.conf" <<HBA
local   replication     all                 trust
host    replication     all  127.0.0.1/32   trust
HBA
	;;
start)
	[ -e "$data/PG_VERSION" ] || die "no cluster in $data: run init first"
	as_server_user "$PGBIN/pg_ctl" -D "$data" -l "$dir/log/postgresql.log" -w -t 60 start >/dev/null ||
		{ tail -n 30 "$dir/log/postgresql.log" >&2; die "server did not start"; }
	;;
stop)
	mode=${3:-fast}
	[ -e "$data/postmaster.pid" ] || exit 0
	as_server_user "$PGBIN/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null
	;;
env)
	port=$(sed -n "s/^port = \([0-9]*\)$/\1/p" "$data/postgresql.conf" | tail -n 1)
	echo "export PGHOST=$dir/sock PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGDATA=$data"
	;;
*)
	die "unknown command $cmd"
	;;
esac
