package collect

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/health"
	"github.com/ruvector/ruvector-healing/sidecar/jobs"
)

// Job priorities (higher is more important). Anti-wraparound vacuum is
// above everything: cancelling or starving it ends in a forced shutdown.
// Index builds come next because writes and queries wait on them; manual
// jobs above automatic ones because someone is waiting for them.
const (
	PriorityWraparound  = 100
	PriorityIndexBuild  = 60
	PriorityVacuum      = 50 // manual VACUUM, VACUUM FULL, CLUSTER
	PriorityAnalyze     = 40
	PriorityAutovacuum  = 30
	PriorityAutoanalyze = 20
)

// Maintenance lists the maintenance jobs touching a collection's relations:
// autovacuum/autoanalyze workers and manual VACUUM, ANALYZE, CREATE INDEX,
// REINDEX, CLUSTER / VACUUM FULL, with their progress and lock waits; and
// the product's own queue (ruvector.maintenance_jobs of the collection),
// see productJobs.
type Maintenance struct {
	// Interval is the cadence (default 5 s).
	Interval time.Duration
	// FloodQueued is the number of queued product jobs of one kind from
	// which they count as a flood: their node is marked waiting (degraded
	// capacity) instead of only adding to the queue depth (default 10).
	FloodQueued int
}

// NewMaintenance returns the maintenance collector.
func NewMaintenance() *Maintenance { return &Maintenance{} }

func (m *Maintenance) Name() string { return "maintenance" }

func (m *Maintenance) Cadence() time.Duration { return orDefault(m.Interval, 5*time.Second) }

// The relation of a job, in order of reliability: the progress views; the
// relation lock it waits for (a job blocked on a lock has not started its
// progress report yet; an index lock is mapped to its table); the table an
// autovacuum worker names in its query text.
const maintenanceSQL = `
WITH db AS (SELECT oid FROM pg_database WHERE datname = current_database()),
waits AS (
    SELECT DISTINCT ON (l.pid) l.pid, coalesce(i.indrelid, l.relation) AS relid
    FROM pg_locks l LEFT JOIN pg_index i ON i.indexrelid = l.relation
    WHERE NOT l.granted AND l.locktype = 'relation' AND l.database = (SELECT oid FROM db)
    ORDER BY l.pid
),
queued AS (
    SELECT b.pid, count(*) AS n
    FROM pg_stat_activity w, unnest(pg_blocking_pids(w.pid)) AS b(pid)
    WHERE w.wait_event_type = 'Lock'
    GROUP BY b.pid
),
jobs AS (
    SELECT a.pid, a.backend_type, coalesce(a.query, '') AS query, coalesce(a.application_name, '') AS app,
           coalesce(a.wait_event_type, '') AS wait_type, coalesce(a.wait_event, '') AS wait_event,
           CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}' END AS blockers,
           coalesce(v.relid, an.relid, ci.relid, cl.relid, w.relid,
                    CASE WHEN a.backend_type = 'autovacuum worker' THEN to_regclass(substring(a.query
                         FROM '^autovacuum: (?:VACUUM ANALYZE|VACUUM|ANALYZE) (\S+)'))::oid END) AS relid,
           v.phase AS v_phase, v.heap_blks_total, v.heap_blks_scanned, v.heap_blks_vacuumed,
           an.phase AS an_phase, an.sample_blks_total, an.sample_blks_scanned,
           ci.command AS ci_command, ci.phase AS ci_phase, ci.blocks_total, ci.blocks_done,
           ci.tuples_total, ci.tuples_done,
           cl.command AS cl_command, cl.heap_blks_total AS cl_total, cl.heap_blks_scanned AS cl_scanned,
           coalesce(q.n, 0) AS queued
    FROM pg_stat_activity a
    LEFT JOIN pg_stat_progress_vacuum v ON v.pid = a.pid
    LEFT JOIN pg_stat_progress_analyze an ON an.pid = a.pid
    LEFT JOIN pg_stat_progress_create_index ci ON ci.pid = a.pid
    LEFT JOIN pg_stat_progress_cluster cl ON cl.pid = a.pid
    LEFT JOIN waits w ON w.pid = a.pid
    LEFT JOIN queued q ON q.pid = a.pid
    WHERE a.datid = (SELECT oid FROM db) AND a.pid <> pg_backend_pid()
      AND (a.backend_type = 'autovacuum worker' OR a.state = 'active')
)
SELECT pid, backend_type, query, app, wait_type, wait_event, blockers, relid::regclass::text,
       v_phase, heap_blks_total, heap_blks_scanned, heap_blks_vacuumed,
       an_phase, sample_blks_total, sample_blks_scanned,
       ci_command, ci_phase, blocks_total, blocks_done, tuples_total, tuples_done,
       cl_command, cl_total, cl_scanned, queued
FROM jobs WHERE relid = ANY($1::oid[])
ORDER BY pid`

type jobRow struct {
	pid                         int64
	backendType, query, app     string
	waitType, waitEvent         string
	blockers                    []int32
	relation                    string
	vPhase                      *string
	vTotal, vScanned, vVacuumed *int64
	anPhase                     *string
	anTotal, anScanned          *int64
	ciCommand, ciPhase          *string
	ciBlocksTotal, ciBlocksDone *int64
	ciTuplesTotal, ciTuplesDone *int64
	clCommand                   *string
	clTotal, clScanned          *int64
	queued                      int64
}

// Collect lists the jobs. Queued is the number of sessions waiting for a
// lock this job holds (the queue behind it); WaitingFor describes the lock
// the job itself waits for and who holds it.
func (m *Maintenance) Collect(ctx context.Context, q Querier, t Target, s *health.Signals) error {
	rows, err := q.Query(ctx, maintenanceSQL, t.Relations)
	if err != nil {
		return fmt.Errorf("maintenance: query pg_stat_activity: %w", err)
	}
	defer rows.Close()
	var out []health.JobSignal
	for rows.Next() {
		var r jobRow
		if err := rows.Scan(&r.pid, &r.backendType, &r.query, &r.app, &r.waitType, &r.waitEvent, &r.blockers, &r.relation,
			&r.vPhase, &r.vTotal, &r.vScanned, &r.vVacuumed,
			&r.anPhase, &r.anTotal, &r.anScanned,
			&r.ciCommand, &r.ciPhase, &r.ciBlocksTotal, &r.ciBlocksDone, &r.ciTuplesTotal, &r.ciTuplesDone,
			&r.clCommand, &r.clTotal, &r.clScanned, &r.queued); err != nil {
			return fmt.Errorf("maintenance: scan: %w", err)
		}
		if j, ok := r.job(); ok {
			// A job runner's session: the product's work even when its job
			// row no longer says so (marked done between this query and the
			// queue's), never someone's manual VACUUM. productJobs names the
			// kind when the row still matches.
			if strings.HasPrefix(r.app, JobAppNamePrefix) {
				j.Type = "product:" + j.Type + " (finishing)"
			}
			out = append(out, j)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("maintenance: read rows: %w", err)
	}
	rows.Close()
	out, err = m.productJobs(ctx, q, t, out)
	if err != nil {
		return err
	}
	s.Maintenance = out
	return nil
}

// JobAppNamePrefix is the application_name prefix of a jobs.Runner's
// session while it works on a job ("ruvector job 42"): how the collector
// finds the backend of a running product job. It must equal
// jobs.AppNamePrefix (a test checks it; collect does not import jobs).
const JobAppNamePrefix = "ruvector job "

// Running product jobs one row each, with the backend of the runner
// working on it, and paused jobs whose runner is still finishing its step
// (a pause takes effect at the next step boundary); queued and paused
// jobs one row per kind and state (a
// flood of thousands of queued jobs is one node per kind, not thousands).
// 'autovacuum' rows are markers of autovacuum paused by pause_maintenance:
// never claimed, so they are neither queued work nor running, only paused.
var productJobsSQL = `
WITH tbl AS (SELECT relid::regclass::text AS name FROM ruvector.collections WHERE collection_id = $1)
SELECT j.job_id, j.kind, j.state, 1::bigint, j.priority, j.progress::float8,
       a.pid, coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''), (SELECT name FROM tbl)
FROM ruvector.maintenance_jobs j
LEFT JOIN LATERAL (SELECT pid, wait_event_type, wait_event FROM pg_stat_activity
                   WHERE application_name = $2 || j.job_id
                     AND datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   ORDER BY pid LIMIT 1) a ON true
WHERE j.collection_id = $1 AND j.kind <> 'autovacuum'
  AND (j.state = 'running' OR (j.state = 'paused' AND a.pid IS NOT NULL))
UNION ALL
SELECT min(j.job_id), j.kind, j.st, count(*), max(j.priority), 0::float8,
       NULL::int, '', '', (SELECT name FROM tbl)
FROM (SELECT j.*, CASE WHEN j.state = 'queued' AND ` + jobs.HeldSQL("j") + ` THEN 'paused' ELSE j.state END AS st
      FROM ruvector.maintenance_jobs j
      WHERE j.collection_id = $1
        AND (j.state = 'paused' OR (j.state = 'queued' AND j.kind <> 'autovacuum'))) j
GROUP BY j.kind, j.st
ORDER BY 3, 2, 1`

// productKinds fixes the node ids of the per-kind aggregates.
var productKinds = []string{"centroid_rebuild", "compaction", "rebalance", "vacuum", "analyze", "autovacuum"}

// Node ids of product jobs are negative, apart from the backend pids of
// PostgreSQL's jobs: a running job is RunningJobID(job_id) = -1 - job_id
// (never -1, the maintenance hub's id, which the classifier would merge
// with it); the queued and paused aggregates of a kind sit below -2^40
// (job ids do not get there).
func RunningJobID(jobID int64) int64 { return -1 - jobID }

func aggregateID(kind, state string) int64 {
	k := slices.Index(productKinds, kind)
	if k < 0 {
		k = len(productKinds)
	}
	id := -(int64(1)<<40 + 2*int64(k))
	if state == "paused" {
		id--
	}
	return id
}

// productPriority maps the queue's priority (0..1000, default 100) onto
// the signal's scale: at most an index build's, never a wraparound
// vacuum's.
func productPriority(p int) int { return min(max(p, 0), 1000) * PriorityIndexBuild / 1000 }

// productJobs adds the collection's product jobs to the PostgreSQL jobs in
// pg:
//   - a running job whose runner's backend is among pg (a product vacuum,
//     analyze or compaction runs as a real VACUUM, ANALYZE or REINDEX) is
//     that entry, retyped "product:<kind>", so it is not counted twice;
//   - another running job (a centroid rebuild or rebalance: UPDATEs across
//     every partition, no progress view) is its own node, RunningJobID.
//     It works on the
//     whole collection, so it contends with any other maintenance running
//     there; the graph pairs contending jobs by relation (two running on
//     one relation are both degraded), so it takes the relation of the
//     first other running job, or the collection table when none runs.
//     A runner waiting for a lock is waiting, as a PostgreSQL job is;
//   - the queued jobs of a kind are one node whose Queued is their count
//     (the classifier's queue depth); FloodQueued or more are a flood and
//     the node is marked waiting ("Queue: ..."), which degrades it;
//   - the paused jobs of a kind are one node, neither running nor queued
//     (no load: pausing is what pause_maintenance does to relieve the
//     queue), named "product:<kind> (paused)"; so are the queued jobs a
//     pause holds back (jobs.HeldSQL), which the runner does not start;
//   - a paused job whose runner is still in its step's statement (it
//     stops at the step's end) is that backend among pg, retyped
//     "product:<kind> (pausing)": still load, but the product's, which a
//     pause has already stopped, not someone else's manual VACUUM.
func (m *Maintenance) productJobs(ctx context.Context, q Querier, t Target, pg []health.JobSignal) ([]health.JobSignal, error) {
	rows, err := q.Query(ctx, productJobsSQL, t.ID, JobAppNamePrefix)
	if err != nil {
		return nil, fmt.Errorf("maintenance: query ruvector.maintenance_jobs: %w", err)
	}
	defer rows.Close()
	type productRow struct {
		id                  int64
		kind, state         string
		n                   int64
		priority            int
		progress            float64
		pid                 *int32
		waitType, waitEvent string
		table               *string
	}
	var prs []productRow
	for rows.Next() {
		var r productRow
		if err := rows.Scan(&r.id, &r.kind, &r.state, &r.n, &r.priority, &r.progress,
			&r.pid, &r.waitType, &r.waitEvent, &r.table); err != nil {
			return nil, fmt.Errorf("maintenance: scan product job: %w", err)
		}
		prs = append(prs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("maintenance: read product jobs: %w", err)
	}
	out := slices.Clone(pg)
	byPid := make(map[int64]int, len(out))
	for i, j := range out {
		byPid[j.ID] = i
	}
	flood := m.FloodQueued
	if flood <= 0 {
		flood = 10
	}
	var own []health.JobSignal // running jobs without a backend among pg
	for _, r := range prs {
		typ := "product:" + r.kind
		table := ""
		if r.table != nil {
			table = *r.table
		}
		switch r.state {
		case "running":
			if r.pid != nil {
				if i, ok := byPid[int64(*r.pid)]; ok {
					out[i].Type = typ
					continue
				}
			}
			j := health.JobSignal{ID: RunningJobID(r.id), Type: typ, Relation: table, Running: true,
				Progress: min(max(r.progress, 0), 1), Priority: productPriority(r.priority)}
			if r.waitType == "Lock" {
				j.WaitingFor = "Lock:" + r.waitEvent
				j.Running = false
			}
			own = append(own, j)
		case "queued":
			j := health.JobSignal{ID: aggregateID(r.kind, r.state), Type: typ, Relation: table,
				Queued: int(r.n), Priority: productPriority(r.priority)}
			if r.n >= int64(flood) {
				j.WaitingFor = fmt.Sprintf("Queue: %d queued %s jobs", r.n, r.kind)
			}
			out = append(out, j)
		case "paused":
			if r.pid != nil {
				// Paused, its runner still in the step's statement: the
				// product's job finishing a step, not someone's VACUUM.
				if i, ok := byPid[int64(*r.pid)]; ok {
					out[i].Type = typ + " (pausing)"
				}
				continue
			}
			out = append(out, health.JobSignal{ID: aggregateID(r.kind, r.state), Type: typ + " (paused)",
				Relation: table, Priority: productPriority(r.priority)})
		}
	}
	for i := range own {
		if own[i].Running {
			for _, j := range pg {
				if j.Running && j.Relation != "" {
					own[i].Relation = j.Relation
					break
				}
			}
		}
	}
	return append(out, own...), nil
}

// job classifies a backend; ok is false for sessions that are not
// maintenance (an INSERT waiting on the same lock, say).
func (r jobRow) job() (health.JobSignal, bool) {
	j := health.JobSignal{ID: r.pid, Relation: r.relation, Queued: int(r.queued)}
	switch {
	case r.backendType == "autovacuum worker":
		j.Type, j.Priority = "autovacuum", PriorityAutovacuum
		if strings.HasPrefix(r.query, "autovacuum: ANALYZE") {
			j.Type, j.Priority = "autoanalyze", PriorityAutoanalyze
		}
		if strings.Contains(r.query, "to prevent wraparound") {
			j.Priority = PriorityWraparound
		}
	case r.vPhase != nil:
		j.Type, j.Priority = "vacuum", PriorityVacuum
	case r.anPhase != nil:
		j.Type, j.Priority = "analyze", PriorityAnalyze
	case r.ciCommand != nil:
		j.Type, j.Priority = "create_index", PriorityIndexBuild
		if strings.HasPrefix(*r.ciCommand, "REINDEX") {
			j.Type = "reindex"
		}
	case r.clCommand != nil:
		j.Type, j.Priority = "cluster", PriorityVacuum
		if *r.clCommand == "VACUUM FULL" {
			j.Type = "vacuum_full"
		}
	default:
		// No progress report yet (typically: still waiting for its lock):
		// classify by the statement.
		j.Type, j.Priority = statementJob(r.query)
		if j.Type == "" {
			return j, false
		}
	}
	j.Progress = r.progress()
	if r.waitType == "Lock" && !r.waitsForOlderTransactions() {
		j.WaitingFor = "Lock:" + r.waitEvent
		if len(r.blockers) > 0 {
			pids := make([]string, len(r.blockers))
			for i, p := range r.blockers {
				pids[i] = fmt.Sprint(p)
			}
			j.WaitingFor += " blocked by pid " + strings.Join(pids, ",")
		}
	}
	j.Running = j.WaitingFor == ""
	return j, true
}

// waitsForOlderTransactions: a CREATE INDEX or REINDEX CONCURRENTLY in
// one of its "waiting for …" phases waits for transactions that began
// before it to end (a virtualxid lock), by design. It holds only SHARE
// UPDATE EXCLUSIVE on the table, so no writer or reader queues behind
// it: read as a lock wait, compact_indexes' own rebuild took λ to the
// floor for 15 s in scorecard run 23, under an application's short
// transactions. Its wait for a relation lock (queued behind a VACUUM or
// an explicit LOCK) is contention and stays one.
func (r jobRow) waitsForOlderTransactions() bool {
	return r.ciPhase != nil && strings.HasPrefix(*r.ciPhase, "waiting for") &&
		(r.waitEvent == "virtualxid" || r.waitEvent == "transactionid")
}

var leadingComments = regexp.MustCompile(`(?s)^(\s+|--[^\n]*\n|/\*.*?\*/)+`)

var statementKinds = []struct {
	re       *regexp.Regexp
	typ      string
	priority int
}{
	{regexp.MustCompile(`(?i)^VACUUM\s*(\(([^)]*\bFULL\b[^)]*)\)|FULL\b)`), "vacuum_full", PriorityVacuum},
	{regexp.MustCompile(`(?i)^VACUUM\b`), "vacuum", PriorityVacuum},
	{regexp.MustCompile(`(?i)^ANALY[SZ]E\b`), "analyze", PriorityAnalyze},
	{regexp.MustCompile(`(?i)^CREATE\s+(UNIQUE\s+)?INDEX\b`), "create_index", PriorityIndexBuild},
	{regexp.MustCompile(`(?i)^REINDEX\b`), "reindex", PriorityIndexBuild},
	{regexp.MustCompile(`(?i)^CLUSTER\b`), "cluster", PriorityVacuum},
}

// statementJob classifies a statement's text, "" when it is not
// maintenance.
func statementJob(query string) (string, int) {
	q := leadingComments.ReplaceAllString(query, "")
	for _, k := range statementKinds {
		if k.re.MatchString(q) {
			return k.typ, k.priority
		}
	}
	return "", 0
}

// progress is the fraction done, 0..1, from the progress views. Phases are
// weighted by their usual share of the work (the heap scan dominates a
// vacuum, the table scan and the tree load an index build); this is an
// estimate, and a vacuum that needs several index passes jumps back.
func (r jobRow) progress() float64 {
	switch {
	case r.vPhase != nil:
		switch *r.vPhase {
		case "scanning heap":
			return 0.6 * frac(r.vScanned, r.vTotal)
		case "vacuuming indexes":
			return 0.6
		case "vacuuming heap":
			return 0.6 + 0.3*frac(r.vVacuumed, r.vTotal)
		case "cleaning up indexes":
			return 0.9
		case "truncating heap":
			return 0.95
		case "performing final cleanup":
			return 0.98
		}
	case r.anPhase != nil:
		switch *r.anPhase {
		case "acquiring sample rows", "acquiring inherited sample rows":
			return 0.8 * frac(r.anScanned, r.anTotal)
		case "computing statistics":
			return 0.8
		case "computing extended statistics":
			return 0.9
		case "finalizing analyze":
			return 0.95
		}
	case r.ciPhase != nil:
		ph := *r.ciPhase
		switch {
		case strings.Contains(ph, "scanning table"):
			return 0.5 * frac(r.ciBlocksDone, r.ciBlocksTotal)
		case strings.Contains(ph, "sorting"):
			return 0.5
		case strings.Contains(ph, "loading tuples"):
			return 0.5 + 0.5*frac(r.ciTuplesDone, r.ciTuplesTotal)
		case strings.HasPrefix(ph, "waiting for"):
			return 0 // CONCURRENTLY: waiting for older transactions
		default:
			if r.ciBlocksTotal != nil && *r.ciBlocksTotal > 0 {
				return frac(r.ciBlocksDone, r.ciBlocksTotal)
			}
			return frac(r.ciTuplesDone, r.ciTuplesTotal)
		}
	case r.clCommand != nil:
		return frac(r.clScanned, r.clTotal)
	}
	return 0
}

func frac(done, total *int64) float64 {
	if done == nil || total == nil || *total <= 0 {
		return 0
	}
	return min(max(float64(*done)/float64(*total), 0), 1)
}
