#!/usr/bin/env bash
# bench/gate/run.sh: the "Foundation" write-gate benchmarks (propagation,
# gate overhead, throttle accuracy) on a private, throwaway cluster.
#
#   bash bench/gate/run.sh [gatebench flags...]
#
# Builds and installs the extension, starts a cluster in a temp directory on
# a free local port, runs bench/gate (Go), prints markdown tables on stdout
# (progress on stderr), and stops the cluster. Takes about 6 minutes.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH=$PATH:/usr/local/go/bin
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# The extension: another engineer may be mid-edit, so retry a failed build.
for try in 1 2 3; do
	if make -s -C extension_stub with_llvm=no >&2 && make -s -C extension_stub with_llvm=no install >&2; then
		break
	fi
	[ "$try" = 3 ] && { echo "run.sh: extension build failed" >&2; exit 1; }
	echo "run.sh: extension build failed; retrying in 60 s" >&2
	sleep 60
done

tmp=$(mktemp -d /tmp/ruvgate.XXXXXX)
chmod 755 "$tmp"
go build -o "$tmp/gatebench" ./bench/gate

port=
for p in $(shuf -i 56000-56999 -n 50); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[ -n "$port" ] || { echo "run.sh: no free port" >&2; exit 1; }

cleanup() {
	scripts/pgcluster.sh stop "$tmp/cluster" immediate >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

scripts/pgcluster.sh init "$tmp/cluster" "$port" >&2
scripts/pgcluster.sh start "$tmp/cluster" >&2
eval "$(scripts/pgcluster.sh env "$tmp/cluster")"

echo "run.sh: cluster $tmp/cluster on 127.0.0.1:$port (socket $PGHOST)" >&2
timeout 580 "$tmp/gatebench" -data "$PGDATA" -pgbench "$PGBIN/pgbench" -work "$tmp" "$@"
