package collect

import (
	"testing"
	"testing/fstest"
)

func TestShardOf(t *testing.T) {
	for bound, want := range map[string]int64{
		"FOR VALUES IN (3)":                        3,
		"FOR VALUES IN (-12)":                      -12,
		"FOR VALUES IN ('5')":                      5,
		"FOR VALUES IN (7, 8)":                     -1,
		"FOR VALUES FROM (0) TO (10)":              -1,
		"FOR VALUES WITH (modulus 4, remainder 1)": -1,
		"DEFAULT":               -1,
		"":                      -1,
		"FOR VALUES IN ('abc')": -1,
		"FOR VALUES IN (99999999999999999999999999)": -1,
	} {
		if got := ShardOf(bound); got != want {
			t.Errorf("ShardOf(%q) = %d, want %d", bound, got, want)
		}
	}
}

func TestStatementJob(t *testing.T) {
	for q, want := range map[string]string{
		"VACUUM emb_0":                          "vacuum",
		"  vacuum (verbose) emb_0":              "vacuum",
		"VACUUM FULL emb_0":                     "vacuum_full",
		"VACUUM (FULL, ANALYZE) emb_0":          "vacuum_full",
		"-- nightly\n/* x\n y */ ANALYZE emb":   "analyze",
		"analyse emb":                           "analyze",
		"CREATE UNIQUE INDEX i ON emb_0 (id)":   "create_index",
		"create index concurrently on emb (id)": "create_index",
		"REINDEX INDEX emb_0_id_idx":            "reindex",
		"CLUSTER emb_0 USING i":                 "cluster",
		"INSERT INTO emb VALUES (1)":            "",
		"SELECT 'VACUUM'":                       "",
		"VACUUMX":                               "",
	} {
		if got, _ := statementJob(q); got != want {
			t.Errorf("statementJob(%q) = %q, want %q", q, got, want)
		}
	}
}

const gib = int64(1) << 30

func meminfo(totalKB, availKB string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte("MemTotal:       " + totalKB + " kB\nMemFree:  1 kB\nMemAvailable:   " + availKB + " kB\n")}
}

func TestReadMemoryParsing(t *testing.T) {
	// 16 GiB host, 12 GiB available.
	host := meminfo("16777216", "12582912")
	cases := []struct {
		name        string
		files       fstest.MapFS
		pid         int
		source      string
		used, limit int64
	}{
		{
			name: "cgroup v2 with a limit, page cache subtracted",
			files: fstest.MapFS{
				"proc/meminfo":                 host,
				"sys/fs/cgroup/memory.current": {Data: []byte("3221225472\n")},
				"sys/fs/cgroup/memory.max":     {Data: []byte("4294967296\n")},
				"sys/fs/cgroup/memory.stat":    {Data: []byte("anon 1\nfile 2\ninactive_file 1073741824\nactive_file 5\n")},
			},
			source: "cgroup v2", used: 2 * gib, limit: 4 * gib,
		},
		{
			name: "cgroup v2 without a limit falls back to MemTotal",
			files: fstest.MapFS{
				"proc/meminfo":                 host,
				"sys/fs/cgroup/memory.current": {Data: []byte("1073741824\n")},
				"sys/fs/cgroup/memory.max":     {Data: []byte("max\n")},
			},
			source: "cgroup v2", used: gib, limit: 16 * gib,
		},
		{
			name: "cgroup v2: the postmaster's own cgroup wins",
			files: fstest.MapFS{
				"proc/meminfo":                 host,
				"proc/42/cgroup":               {Data: []byte("0::/system.slice/postgresql.service\n")},
				"sys/fs/cgroup/memory.current": {Data: []byte("8589934592\n")},
				"sys/fs/cgroup/memory.max":     {Data: []byte("max\n")},
				"sys/fs/cgroup/system.slice/postgresql.service/memory.current": {Data: []byte("1073741824\n")},
				"sys/fs/cgroup/system.slice/postgresql.service/memory.max":     {Data: []byte("2147483648\n")},
			},
			pid: 42, source: "cgroup v2", used: gib, limit: 2 * gib,
		},
		{
			name: "cgroup v1 unlimited (LONG_MAX sentinel) is the host's memory",
			files: fstest.MapFS{
				"proc/meminfo":   host,
				"proc/42/cgroup": {Data: []byte("4:memory:/not/visible/here\n0::/\n")},
				"sys/fs/cgroup/memory/memory.usage_in_bytes": {Data: []byte("663048192\n")},
				"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
				"sys/fs/cgroup/memory/memory.stat":           {Data: []byte("cache 5\ntotal_inactive_file 62914560\n")},
			},
			pid: 42, source: "cgroup v1", used: 663048192 - 62914560, limit: 16 * gib,
		},
		{
			name: "cgroup v1 with a limit",
			files: fstest.MapFS{
				"proc/meminfo": host,
				"sys/fs/cgroup/memory/memory.usage_in_bytes": {Data: []byte("1073741824\n")},
				"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("4294967296\n")},
			},
			source: "cgroup v1", used: gib, limit: 4 * gib,
		},
		{
			name:   "no cgroup: /proc/meminfo",
			files:  fstest.MapFS{"proc/meminfo": host},
			source: "/proc/meminfo", used: 4 * gib, limit: 16 * gib,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ReadMemory(tc.files, tc.pid)
			if err != nil {
				t.Fatal(err)
			}
			if ms.Source != tc.source || ms.UsedBytes != tc.used || ms.LimitBytes != tc.limit {
				t.Fatalf("got %+v, want source %s used %d limit %d", ms, tc.source, tc.used, tc.limit)
			}
			if want := 100 * float64(tc.used) / float64(tc.limit); ms.UsagePct != want {
				t.Fatalf("usage %.3f%%, want %.3f%%", ms.UsagePct, want)
			}
		})
	}
	// Broken inputs are errors, not zeros.
	for name, files := range map[string]fstest.MapFS{
		"no meminfo":      {},
		"garbage current": {"proc/meminfo": host, "sys/fs/cgroup/memory.current": {Data: []byte("lots\n")}, "sys/fs/cgroup/memory.max": {Data: []byte("max")}},
		"garbage max":     {"proc/meminfo": host, "sys/fs/cgroup/memory.current": {Data: []byte("1\n")}, "sys/fs/cgroup/memory.max": {Data: []byte("lots")}},
		"no MemAvailable": {"proc/meminfo": {Data: []byte("MemTotal: 10 kB\n")}},
	} {
		if ms, err := ReadMemory(files, 0); err == nil {
			t.Errorf("%s: no error, got %+v", name, ms)
		}
	}
}

func TestProcessMemoryPrefersPrivate(t *testing.T) {
	fsys := fstest.MapFS{
		"proc/7/status": {Data: []byte("Name:\tpostgres\nVmRSS:\t  204800 kB\nRssAnon:\t    2048 kB\nRssShmem:\t  200000 kB\n")},
		"proc/8/status": {Data: []byte("Name:\tpostgres\nVmRSS:\t  1024 kB\n")},
		"proc/9/status": {Data: []byte("Name:\tkthread\n")},
	}
	if b, err := processMemory(fsys, 7); err != nil || b != 2048*1024 {
		t.Fatalf("pid 7: %d %v", b, err)
	}
	if b, err := processMemory(fsys, 8); err != nil || b != 1024*1024 {
		t.Fatalf("pid 8: %d %v", b, err)
	}
	if _, err := processMemory(fsys, 9); err == nil {
		t.Fatal("pid 9 without VmRSS: no error")
	}
	if _, err := processMemory(fsys, 10); err == nil {
		t.Fatal("missing pid: no error")
	}
}
