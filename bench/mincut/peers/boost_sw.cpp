// Boost.Graph peer for bench/mincut: reads a METIS graph (integer edge
// weights, kept as long long: exact), times ONLY boost::stoer_wagner_min_cut
// and prints one JSON line {"lambda", "seconds", "side"} where side lists the
// 0-based nodes the parity map puts on one side.
#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/one_bit_color_map.hpp>
#include <boost/graph/stoer_wagner_min_cut.hpp>
#include <boost/property_map/property_map.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

typedef boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, boost::no_property,
                              boost::property<boost::edge_weight_t, long long>>
    Graph;

static bool next_line(std::istream &in, std::string &line) {
    while (std::getline(in, line)) {
        if (!line.empty() && line[0] == '%') continue;
        return true;
    }
    return false;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: boost_sw FILE.graph\n");
        return 2;
    }
    std::ifstream in(argv[1]);
    std::string line;
    if (!in || !next_line(in, line)) {
        std::fprintf(stderr, "boost_sw: cannot read %s\n", argv[1]);
        return 1;
    }
    std::istringstream hdr(line);
    long n = 0, m = 0;
    std::string fmt = "0";
    hdr >> n >> m;
    hdr >> fmt;
    bool weighted = !fmt.empty() && fmt.back() == '1';
    Graph g(n);
    for (long u = 0; u < n; u++) {
        if (!next_line(in, line)) {
            std::fprintf(stderr, "boost_sw: short file\n");
            return 1;
        }
        std::istringstream ls(line);
        long v;
        while (ls >> v) {
            long long w = 1;
            if (weighted) ls >> w;
            if (v - 1 > u) boost::add_edge(u, v - 1, w, g);
        }
    }
    auto parity = boost::make_one_bit_color_map(boost::num_vertices(g), boost::get(boost::vertex_index, g));
    auto t0 = std::chrono::steady_clock::now();
    long long w = boost::stoer_wagner_min_cut(g, boost::get(boost::edge_weight, g), boost::parity_map(parity));
    auto t1 = std::chrono::steady_clock::now();
    double secs = std::chrono::duration<double>(t1 - t0).count();
    std::printf("{\"lambda\": %lld, \"seconds\": %.9f, \"side\": [", w, secs);
    bool first = true;
    for (long v = 0; v < n; v++) {
        if (boost::get(parity, v)) {
            std::printf(first ? "%ld" : ",%ld", v);
            first = false;
        }
    }
    std::printf("]}\n");
    return 0;
}
