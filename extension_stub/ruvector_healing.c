/*-------------------------------------------------------------------------
 *
 * ruvector_healing.c
 *		Module entry point: settings, hooks and the watchdog worker.
 *
 * The library must be in shared_preload_libraries: the segment is created
 * by the postmaster so that every backend inherits the mapping, and the
 * watchdog is a background worker registered at startup.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "ruvector_healing.h"

PG_MODULE_MAGIC;

int			ruv_max_collections = 64;
int			ruv_max_relations = 4096;
int			ruv_max_lists = RUV_DEFAULT_LISTS_PER_SLOT;
int			ruv_sidecar_timeout_ms = 5000;
int			ruv_throttle_max_wait_ms = 10000;
int			ruv_throttle_burst_ms = 100;
int			ruv_bulk_threshold = 100;
int			ruv_watchdog_naptime_ms = 200;
bool		ruv_shard_cap_exempt = false;
char	   *ruv_database = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
ruv_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	ruv_segment_startup();
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ruvector_healing must be loaded via shared_preload_libraries"),
				 errhint("Add ruvector_healing to shared_preload_libraries in postgresql.conf and restart the server.")));

	DefineCustomIntVariable("ruvector.max_collections",
							"Number of collection slots in the shared segment.",
							NULL, &ruv_max_collections, 64, 1, 4096,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.max_relations",
							"Number of relations (collection tables and their partitions) the write gate can track.",
							NULL, &ruv_max_relations, 4096, 16, 1 << 20,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.max_lists",
							"IVF lists per collection whose row counts the shared segment keeps (8 bytes each per collection slot; 0: none).",
							"Collections with more lists are counted by a scan instead.",
							&ruv_max_lists, RUV_DEFAULT_LISTS_PER_SLOT, 0, 4096,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.sidecar_timeout",
							"Heartbeat age after which the watchdog releases the sidecar's throttles.",
							NULL, &ruv_sidecar_timeout_ms, 5000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.throttle_max_wait",
							"Longest a throttled statement waits before it fails instead.",
							NULL, &ruv_throttle_max_wait_ms, 10000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.throttle_burst",
							"Burst a throttled collection may write ahead of its rate.",
							NULL, &ruv_throttle_burst_ms, 100, 0, 60 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.bulk_threshold",
							"Estimated rows from which an INSERT counts as bulk_insert (COPY always does).",
							NULL, &ruv_bulk_threshold, 100, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("ruvector.shard_cap_exempt",
							 "Rows this session writes are not held to the shard caps the sidecar set.",
							 "For the sidecar's own row moves (rebalance_partitions and its rollback): its cap on a hot "
							 "shard holds back the application's writer, and moving rows back into that shard under it "
							 "took minutes. Caps set by hand still apply.",
							 &ruv_shard_cap_exempt, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ruvector.watchdog_naptime",
							"How often the watchdog checks the sidecar's heartbeat and throttle expiries.",
							NULL, &ruv_watchdog_naptime_ms, 200, 10, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("ruvector.database",
							   "Database in which the extension keeps its catalog (collections, manual throttles).",
							   NULL, &ruv_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("ruvector");

	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ruv_shmem_startup;

	ruv_gate_install_hooks();
	ruv_watchdog_register();
}
