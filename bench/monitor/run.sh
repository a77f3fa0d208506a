#!/usr/bin/env bash
# Benchmark 3 of "The sensor": the integrity loop's CPU, memory and
# signal-to-segment latency. Usage: bench/monitor/run.sh [OUTDIR]
#   1. in process: 64 health.Trackers (64 partitions + 256 lists + 3
#      replicas + 8 jobs + 4 indexes each), one sample per simulated second;
#   2. live: a private PostgreSQL 15 cluster (temp dir, free port, loopback
#      and unix socket only) with 64 collections × 64 LIST partitions, a
#      light write load, the real `ruvector-sidecar run --sample-interval 1s`;
#      warm-up, a 60 s CPU/RSS window, then >= 10 latency repetitions.
# Bounded: the live part times out after 7 minutes; the cluster is always
# stopped.
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-$(mktemp -d /tmp/bench-monitor.XXXXXX)}
mkdir -p "$out"
WARMUP=${WARMUP:-30s} MEASURE=${MEASURE:-60s} REPS=${REPS:-12}

echo "== build (extension, sidecar, bench program) -> $out"
make -s ext install-ext >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
go build -o "$out/ruvector-sidecar" ./sidecar/cmd/ruvector-sidecar
# SIDECAR_BIN: run another build of the daemon (e.g. one with a CPU profile).
sidecar_bin=${SIDECAR_BIN:-$out/ruvector-sidecar}
go build -o "$out/bench-monitor" ./bench/monitor
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(go version | cut -d' ' -f3)"

echo "== 1. in-process loop with lists (synthetic signals)"
timeout 120 "$out/bench-monitor" -mode synth -out "$out/synth.json"

echo "== 2. live: real server, real sidecar"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cl=$(mktemp -d /tmp/bench-monitor-pg.XXXXXX)
cleanup() { scripts/pgcluster.sh stop "$cl" immediate >/dev/null 2>&1 || true; rm -rf "$cl"; }
trap cleanup EXIT
scripts/pgcluster.sh init "$cl" "$port"
# 64 × (1 parent + 64 partitions) = 4,160 relations > the default 4,096.
cat >>"$cl/data/postgresql.conf" <<CONF
ruvector.max_relations = 8192
CONF
# Diagnostic runs (BENCH_PGSS=1): which statements cost the server CPU.
if [ -n "${BENCH_PGSS:-}" ]; then
	sed -i "s/^shared_preload_libraries = 'ruvector_healing'$/shared_preload_libraries = 'ruvector_healing,pg_stat_statements'/" "$cl/data/postgresql.conf"
	echo "pg_stat_statements.track = all" >>"$cl/data/postgresql.conf"
fi
scripts/pgcluster.sh start "$cl"
eval "$(scripts/pgcluster.sh env "$cl")"
export BENCH_SIDECAR_LOG=$out/sidecar.log
timeout 480 "$out/bench-monitor" -mode live -sidecar "$sidecar_bin" \
	-warmup "$WARMUP" -measure "$MEASURE" -reps "$REPS" -out "$out/live.json"
echo "results: $out/synth.json $out/live.json (sidecar stderr: $out/sidecar.log)"
