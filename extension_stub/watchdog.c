/*-------------------------------------------------------------------------
 *
 * watchdog.c
 *		Background worker that keeps the sidecar's actions bounded in time.
 *
 * The sidecar sets throttles and shard caps through shared memory with no
 * SQL. If it dies, nothing it set may stay in force longer than
 * ruvector.sidecar_timeout: the watchdog releases every throttle, shard cap
 * and routing weight the sidecar set (fail open), marks integrity states
 * unknown and warns once per outage. It also lapses manual throttles whose
 * TTL has passed, and after a (re)start reloads the registry, manual
 * throttles and manual shard caps from the catalog, since the segment starts
 * empty.
 *
 * Modelled on contrib/pg_prewarm's autoprewarm worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "ruvector_healing.h"

#define RUV_UNIX_TO_PG_US ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

void
ruv_watchdog_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strcpy(worker.bgw_library_name, "ruvector_healing");
	strcpy(worker.bgw_function_name, "ruv_watchdog_main");
	strcpy(worker.bgw_name, "ruvector_healing watchdog");
	strcpy(worker.bgw_type, "ruvector_healing watchdog");
	RegisterBackgroundWorker(&worker);
}

/*
 * Vector collections' routing weights and active centroid versions, from
 * the catalog into a segment whose registry is loaded. Sidecar weights are
 * loaded too; with no live sidecar the main loop releases them at once.
 */
static void
ruv_reload_collections(void)
{
	int			ret;

	/* An install from before vector collections existed: nothing to load. */
	ret = SPI_execute("SELECT to_regclass('ruvector.vector_collections') IS NOT NULL", true, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1 ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		return;
	ret = SPI_execute("SELECT collection_id, partitions FROM ruvector.vector_collections", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "ruvector_healing: could not read ruvector.vector_collections: %d", ret);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int32		parts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		int			slot = ruv_find_slot((uint32) id);

		if (slot >= 0 && parts >= 1 && parts <= RUV_MAX_SHARDS)
			ruv_routing_init(slot, parts, false);
	}
	ret = SPI_execute("SELECT collection_id, shard, weight, set_by FROM ruvector.routing_weights", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "ruvector_healing: could not read ruvector.routing_weights: %d", ret);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int32		shard = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		float4		weight = DatumGetFloat4(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *by = SPI_getvalue(tup, desc, 4);
		int			slot = ruv_find_slot((uint32) id);

		if (slot < 0 || shard < 0 || shard >= (int) pg_atomic_read_u32(&ruv_slot(slot)->routing_shards))
			continue;
		ruv_routing_apply(slot, shard,
						  ruv_weight_word(strcmp(by, "sidecar") == 0 ? RUV_SETBY_SIDECAR : RUV_SETBY_MANUAL,
										  (uint32) rint((double) weight * 1000.0)),
						  false);
	}
	/*
	 * Manual shard caps (the sidecar's live only in the segment). An install
	 * from before shard caps existed has no table: nothing to load.
	 */
	ret = SPI_execute("SELECT to_regclass('ruvector.shard_caps') IS NOT NULL", true, 0);
	if (ret == SPI_OK_SELECT && SPI_processed == 1 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
	{
		ret = SPI_execute("SELECT collection_id, shard, rows_per_sec FROM ruvector.shard_caps", true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "ruvector_healing: could not read ruvector.shard_caps: %d", ret);
	}
	else
		SPI_processed = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int32		shard = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		int32		rate = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		int			slot = ruv_find_slot((uint32) id);

		if (slot < 0 || shard < 0 || shard >= RUV_MAX_SHARDS ||
			rate <= 0 || rate > (int32) RUV_SHARD_CAP_RATE_MASK)
			continue;
		ruv_shardcap_apply(slot, shard,
						   ((uint32) RUV_SETBY_MANUAL << RUV_SHARD_CAP_SETBY_SHIFT) | (uint32) rate,
						   false);
	}
	ret = SPI_execute("SELECT collection_id, version FROM ruvector.centroid_versions WHERE state = 'active'",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "ruvector_healing: could not read ruvector.centroid_versions: %d", ret);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int32		version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		int			slot = ruv_find_slot((uint32) id);

		if (slot >= 0)
			pg_atomic_write_u32(&ruv_slot(slot)->centroid_version, (uint32) version);
	}
}

/*
 * Put every routing weight the sidecar set back to the default, in the
 * segment at once (fail open) and then in the catalog; returns how many.
 */
static int
ruv_release_sidecar_weights(void)
{
	int			released = 0;
	int64		now = ruv_now_us();
	uint32		dflt = ruv_weight_word(RUV_SETBY_NONE, RUV_ROUTING_DEFAULT_MILLI);
	int			ret;
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1];

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);
		int			n = (int) Min(pg_atomic_read_u32(&slot->routing_shards), RUV_MAX_SHARDS);

		if (pg_atomic_read_u32(&slot->in_use) == 0)
			continue;
		for (int s = 0; s < n; s++)
		{
			uint32		w = pg_atomic_read_u32(&slot->routing_weights[s]);

			/* A failed CAS means someone set it anew: leave that alone. */
			if ((w >> RUV_ROUTING_SETBY_SHIFT) == RUV_SETBY_SIDECAR &&
				pg_atomic_compare_exchange_u32(&slot->routing_weights[s], &w, dflt))
			{
				pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
				released++;
			}
		}
	}
	if (released == 0)
		return 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "ruvector_healing: releasing sidecar routing weights");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "ruvector_healing: SPI_connect failed");
	args[0] = TimestampTzGetDatum(now - RUV_UNIX_TO_PG_US);
	ret = SPI_execute_with_args("DELETE FROM ruvector.routing_weights WHERE set_by = 'sidecar' AND set_at <= $1",
								1, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "ruvector_healing: could not release sidecar routing weights: %d", ret);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return released;
}

/*
 * Rebuild the segment's registry and manual throttles from the catalog.
 * Attaching is idempotent, so a watchdog restarted without a server restart
 * changes nothing.
 */
static void
ruv_watchdog_reload(void)
{
	int			ret;
	int			nloaded = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "ruvector_healing: reloading registry");

	if (!OidIsValid(get_extension_oid("ruvector_healing", true)))
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "ruvector_healing: SPI_connect failed");
	ret = SPI_execute("LOCK TABLE ruvector.collections IN SHARE ROW EXCLUSIVE MODE", false, 0);
	if (ret != SPI_OK_UTILITY)
		elog(ERROR, "ruvector_healing: could not lock ruvector.collections: %d", ret);
	ret = SPI_execute("SELECT c.collection_id, c.name, "
					  "       array_agg(r.relid ORDER BY r.relid = c.relid::oid DESC, r.relid) "
					  "FROM ruvector.collections c "
					  "JOIN ruvector.collection_relations r USING (collection_id) "
					  "GROUP BY c.collection_id, c.name ORDER BY c.collection_id",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "ruvector_healing: could not read ruvector.collections: %d", ret);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *name = SPI_getvalue(tup, desc, 2);
		ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull));
		Datum	   *elems;
		int			n;
		Oid		   *relids;

		deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, NULL, &n);
		relids = palloc(sizeof(Oid) * n);
		for (int j = 0; j < n; j++)
			relids[j] = DatumGetObjectId(elems[j]);
		(void) ruv_registry_attach((uint32) id, name, relids, n);
		nloaded++;
	}

	/* Manual throttles whose TTL passed while the server was down lapse now. */
	ret = SPI_execute("DELETE FROM ruvector.throttles WHERE expires_at <= now()", false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "ruvector_healing: could not lapse expired throttles: %d", ret);
	ret = SPI_execute("SELECT collection_id, op, pct, expires_at FROM ruvector.throttles", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "ruvector_healing: could not read ruvector.throttles: %d", ret);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *op = SPI_getvalue(tup, desc, 2);
		int32		pct = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		exp = SPI_getbinval(tup, desc, 4, &isnull);
		int			slot = ruv_find_slot((uint32) id);
		int			opno = strcmp(op, ruv_op_names[RUV_OP_BULK_INSERT]) == 0 ? RUV_OP_BULK_INSERT : RUV_OP_INSERT;

		if (slot >= 0)
			ruv_throttle_apply(slot, opno, (uint32) pct,
							   isnull ? 0 : DatumGetTimestampTz(exp) + RUV_UNIX_TO_PG_US, false);
	}

	ruv_reload_collections();

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (nloaded > 0)
		ereport(LOG,
				(errmsg("ruvector_healing watchdog: reloaded %d collections into segment generation " UINT64_FORMAT,
						nloaded, ruv_hdr->generation)));
}

/* Release every throttle the sidecar set; returns how many. */
static int
ruv_release_sidecar_throttles(void)
{
	int			released = 0;

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);

		if (pg_atomic_read_u32(&slot->in_use) == 0)
			continue;
		for (int o = 0; o < RUV_NUM_OPS; o++)
		{
			RuvShmOpState *op = &slot->ops[o];

			for (;;)
			{
				uint32		w = pg_atomic_read_u32(&op->throttle);
				uint32		setby = (w >> RUV_THROTTLE_SETBY_SHIFT) & RUV_THROTTLE_SETBY_MASK;

				if (setby != RUV_SETBY_SIDECAR)
					break;
				if (ruv_throttle_cas(op, w, RUV_SETBY_NONE, 0))
				{
					released++;
					break;
				}
			}
		}
	}
	return released;
}

/*
 * Mark every state unknown. The sidecar is dead, so a seqlock left odd is
 * its unfinished write: after a grace period we take it over.
 */
static void
ruv_mark_states_unknown(bool force)
{
	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);
		uint64		seq;

		if (pg_atomic_read_u32(&slot->in_use) == 0 ||
			pg_atomic_read_u32(&slot->state) == RUV_STATE_UNKNOWN)
			continue;
		if (!ruv_integrity_try_lock(slot, &seq))
		{
			if (!force)
				continue;
			seq = pg_atomic_read_u64(&slot->seq) & ~UINT64CONST(1);
			pg_atomic_write_u64(&slot->seq, seq + 1);
		}
		pg_atomic_write_u32(&slot->state, RUV_STATE_UNKNOWN);
		pg_atomic_write_u64(&slot->state_since_us, (uint64) ruv_now_us());
		ruv_integrity_unlock(slot, seq);
	}
}

/* Lapse manual throttles past their TTL; returns how many. */
static int
ruv_expire_manual_throttles(int64 now)
{
	int			expired = 0;

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);

		if (pg_atomic_read_u32(&slot->in_use) == 0)
			continue;
		for (int o = 0; o < RUV_NUM_OPS; o++)
		{
			RuvShmOpState *op = &slot->ops[o];
			uint32		w = pg_atomic_read_u32(&op->throttle);
			uint32		setby = (w >> RUV_THROTTLE_SETBY_SHIFT) & RUV_THROTTLE_SETBY_MASK;
			int64		exp;

			if (setby != RUV_SETBY_MANUAL)
				continue;
			pg_read_barrier();
			exp = (int64) pg_atomic_read_u64(&op->expires_us);
			/* A failed CAS means someone set it anew: leave that alone. */
			if (exp != 0 && exp <= now && ruv_throttle_cas(op, w, RUV_SETBY_NONE, 0))
				expired++;
		}
	}
	return expired;
}

void
ruv_watchdog_main(Datum main_arg)
{
	int64		outage_since = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (ruv_hdr == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ruvector_healing watchdog: no shared segment")));
	pg_atomic_write_u32(&ruv_hdr->watchdog_pid, (uint32) MyProcPid);
	pg_atomic_write_u64(&ruv_hdr->watchdog_heartbeat_us, (uint64) ruv_now_us());

	BackgroundWorkerInitializeConnection(ruv_database, NULL, 0);
	ruv_watchdog_reload();

	for (;;)
	{
		int64		now = ruv_now_us();
		int64		hb = (int64) pg_atomic_read_u64(&ruv_hdr->sidecar_heartbeat_us);
		int64		timeout_us = (int64) ruv_sidecar_timeout_ms * 1000;
		int			n;
		int			w;
		int			c;

		pg_atomic_write_u64(&ruv_hdr->watchdog_heartbeat_us, (uint64) now);

		/*
		 * No live sidecar: nothing it set may stay. That includes a throttle
		 * written by "ruvector-sidecar throttle" with no daemon running (a
		 * heartbeat of 0); only an outage of a sidecar that was there is
		 * worth a warning.
		 */
		if (now - hb > timeout_us)
		{
			n = ruv_release_sidecar_throttles();
			c = ruv_shardcap_release_sidecar();
			w = ruv_release_sidecar_weights();
			if (c > 0)
				ereport(LOG,
						(errmsg("ruvector_healing: released %d shard caps the sidecar had set: no sidecar heartbeat", c)));
			if (w > 0)
				ereport(LOG,
						(errmsg("ruvector_healing: %d routing weights the sidecar had set are back to 1: no sidecar heartbeat", w)));
			if (hb != 0)
				ruv_mark_states_unknown(outage_since != 0 && now - outage_since > timeout_us);
			if (hb != 0 && pg_atomic_read_u32(&ruv_hdr->outage) == 0)
			{
				outage_since = now;
				pg_atomic_write_u32(&ruv_hdr->outage, 1);
				pg_atomic_fetch_add_u64(&ruv_hdr->sidecar_outages, 1);
				ereport(WARNING,
						(errmsg("ruvector_healing: sidecar (pid %u) silent for %ld ms, more than ruvector.sidecar_timeout (%d ms)",
								pg_atomic_read_u32(&ruv_hdr->sidecar_pid), (long) ((now - hb) / 1000),
								ruv_sidecar_timeout_ms),
						 errdetail("Released %d throttles the sidecar had set; integrity states are unknown until it returns.", n),
						 errhint("Check the ruvector-sidecar process and its log.")));
			}
			else if (n > 0)
				ereport(LOG,
						(errmsg("ruvector_healing: released %d sidecar throttles: no sidecar heartbeat", n)));
		}
		else if (hb != 0 && pg_atomic_read_u32(&ruv_hdr->outage) != 0)
		{
			pg_atomic_write_u32(&ruv_hdr->outage, 0);
			outage_since = 0;
			ereport(LOG,
					(errmsg("ruvector_healing: sidecar (pid %u) is back",
							pg_atomic_read_u32(&ruv_hdr->sidecar_pid))));
		}

		n = ruv_expire_manual_throttles(now);
		if (n > 0)
			ereport(LOG, (errmsg("ruvector_healing: %d manual throttles reached their TTL and were released", n)));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ruv_watchdog_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			pg_atomic_write_u32(&ruv_hdr->sidecar_timeout_ms, (uint32) ruv_sidecar_timeout_ms);
		}
	}
}
