#!/usr/bin/env bash
# Benchmarks sidecar/mincut against igraph, networkx and Boost.Graph on the
# same METIS files, and its incremental updates against full recomputation.
#
#   bench/mincut/run.sh [--write-results] [extra flags for the Go program]
#
# --write-results replaces the mincut section of bench/RESULTS.md (only the
# text between <!-- mincut:begin --> and <!-- mincut:end -->). Other flags go
# to the Go program, e.g. -sizes 1000,10000 or -peers igraph,boost.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$root/.tmp/mincut-bench
mkdir -p "$work"

# Peers come from Debian packages; g++ builds the Boost peer.
need=(python3-igraph python3-networkx libboost-graph-dev g++)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
/usr/bin/python3 -c 'import igraph, networkx' || { echo "/usr/bin/python3 cannot import igraph and networkx" >&2; exit 1; }

g++ -O2 -std=c++17 -o "$work/boost_sw" bench/mincut/peers/boost_sw.cpp
go build -o "$work/mincut-bench" ./bench/mincut

args=()
results=()
for a in "$@"; do
  if [ "$a" = "--write-results" ]; then
    results=(-results "$root/bench/RESULTS.md")
  else
    args+=("$a")
  fi
done
cmdline="bench/mincut/run.sh $*"
exec "$work/mincut-bench" -work "$work" -boost "$work/boost_sw" \
  -python /usr/bin/python3 -peers-script bench/mincut/peers/peers.py \
  -command "${cmdline% }" ${results[@]+"${results[@]}"} ${args[@]+"${args[@]}"}
