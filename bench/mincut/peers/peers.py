#!/usr/bin/python3
"""Minimum-cut peers for bench/mincut: python3-igraph and python3-networkx.

usage: peers.py igraph|networkx FILE.graph [--side]

Reads a METIS graph (edge weights are the fixed-point integers, given to the
libraries as floats), then times ONLY the minimum-cut call:
  igraph:   Graph.mincut_value(capacity="weight")   (Stoer-Wagner in C)
  networkx: networkx.stoer_wagner(G, weight="weight")
and prints one JSON line {"lambda", "seconds", "side"}. The side (0-based
nodes of one side of the cut) comes from networkx's partition, or for igraph
from an extra, untimed Graph.mincut() call made only with --side.
"""
import json
import sys
import time


def read_metis(path):
    with open(path) as f:
        lines = [l for l in f if not l.startswith("%")]
    hdr = lines[0].split()
    n = int(hdr[0])
    weighted = len(hdr) > 2 and hdr[2].endswith("1")
    step = 2 if weighted else 1
    edges, weights = [], []
    for u in range(n):
        t = lines[1 + u].split()
        for i in range(0, len(t), step):
            v = int(t[i]) - 1
            if v > u:
                edges.append((u, v))
                weights.append(float(t[i + 1]) if weighted else 1.0)
    return n, edges, weights


def main():
    lib, path = sys.argv[1], sys.argv[2]
    want_side = "--side" in sys.argv[3:]
    n, edges, weights = read_metis(path)
    side = None
    if lib == "igraph":
        import igraph

        g = igraph.Graph(n=n, edges=edges)
        g.es["weight"] = weights
        t0 = time.perf_counter()
        val = g.mincut_value(capacity="weight")
        dt = time.perf_counter() - t0
        if want_side:
            side = list(g.mincut(capacity="weight").partition[0])
    elif lib == "networkx":
        import networkx as nx

        G = nx.Graph()
        G.add_nodes_from(range(n))
        G.add_weighted_edges_from((u, v, w) for (u, v), w in zip(edges, weights))
        t0 = time.perf_counter()
        val, (a, _) = nx.stoer_wagner(G, weight="weight")
        dt = time.perf_counter() - t0
        side = sorted(a)
    else:
        sys.exit("unknown peer " + lib)
    print(json.dumps({"lambda": val, "seconds": dt, "side": side}))


if __name__ == "__main__":
    main()
