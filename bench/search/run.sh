#!/usr/bin/env bash
# The search benchmark of "Collections": latency p50/p99 and recall@k of
# ruvector_ivf_search on a drift-skewed collection, before and after a
# centroid rebuild, in one run on a private PostgreSQL 15 cluster (temp
# dir, free port; always stopped). Needs the extension installed
# (make bench-search does that first).
# Usage: bench/search/run.sh [OUTDIR] [bench-search flags...]
#   e.g. bench/search/run.sh /tmp/bs -probes 4,8 -rows 40000 -drift 40000
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-$(mktemp -d /tmp/bench-search.XXXXXX)}
shift || true
mkdir -p "$out"
go build -o "$out/bench-search" ./bench/search
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(go version | cut -d' ' -f3)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cl=$(mktemp -d /tmp/bench-search-pg.XXXXXX)
cleanup() { scripts/pgcluster.sh stop "$cl" immediate >/dev/null 2>&1 || true; rm -rf "$cl"; }
trap cleanup EXIT
scripts/pgcluster.sh init "$cl" "$port" >/dev/null
scripts/pgcluster.sh start "$cl" >/dev/null
eval "$(scripts/pgcluster.sh env "$cl")"
timeout 900 "$out/bench-search" -out "$out/search.json" "$@" | tee "$out/search.md"
echo "results: $out/search.md $out/search.json"
