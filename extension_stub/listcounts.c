/*-------------------------------------------------------------------------
 *
 * listcounts.c
 *		Exact per-IVF-list row counters in the shared segment, so the
 *		sidecar knows list sizes without scanning.
 *
 * An AFTER INSERT OR UPDATE OR DELETE row trigger (ruvector_list_count,
 * ENABLE ALWAYS so that replication apply and session_replication_role
 * cannot bypass it) records +1/-1 per ivf_list value in a backend-local
 * table keyed by subtransaction. AFTER triggers fire only for rows really
 * written, with the stored tuple: ON CONFLICT DO NOTHING, a BEFORE trigger
 * that skips the row, and a cross-partition UPDATE (which PostgreSQL runs
 * as AFTER DELETE on the source and AFTER INSERT on the destination, and
 * no AFTER UPDATE) all come out exact. The deltas reach the segment only
 * when the transaction commits; an aborted (sub)transaction drops its own.
 *
 * A baseline (ruvector._list_counts_rebaseline) counts the table once under
 * SHARE ROW EXCLUSIVE: that waits for every transaction holding ROW
 * EXCLUSIVE, and those release it only after the commit callback that
 * applies their deltas, so nothing committed is counted twice or missed,
 * and no writer starts until the new counts are published.
 *
 * The counters are stale (ListsEpoch odd or 0) after a server start, for a
 * new slot, after TRUNCATE, partition ATTACH/DETACH or DROP of a partition
 * (rows come or go without row triggers), after a trigger of the table is
 * dropped, enabled or disabled (the rebaseline refuses while the counting
 * triggers are not ENABLE ALWAYS), and after PREPARE TRANSACTION
 * (the deltas of a prepared transaction cannot be applied by whoever runs
 * COMMIT PREPARED). The sidecar rebaselines when it finds them stale.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "ruvector_healing.h"

PG_FUNCTION_INFO_V1(ruvector_list_count_trigger);
PG_FUNCTION_INFO_V1(ruvector_list_counts_publish);
PG_FUNCTION_INFO_V1(ruvector_list_counts_read);

/* Pseudo list indexes of a pending entry besides 0 .. lists_per_slot-1. */
#define RUV_LIDX_UNASSIGNED	(-1)
#define RUV_LIDX_OTHER		(-2)
#define RUV_LIDX_INVALIDATE	(-3)	/* make the slot stale at commit */

typedef struct RuvListKey
{
	int32		slot;
	uint32		collection_id;
	SubTransactionId subxid;
	int32		lidx;
} RuvListKey;

typedef struct RuvListDelta
{
	RuvListKey	key;
	int64		delta;
} RuvListDelta;

/* Pending deltas of this transaction; lives in TopTransactionContext. */
static HTAB *ruv_ldeltas = NULL;
static bool ruv_lcallbacks = false;

/* Slot of the collection the trigger last saw, valid for one registry seq. */
static struct
{
	uint32		collection_id;
	Oid			database;
	uint64		seq;
	uint64		generation;
	int			slot;
}			ruv_lslot_cache = {0, InvalidOid, UINT64CONST(~0), 0, -1};

static void ruv_lists_xact_callback(XactEvent event, void *arg);
static void ruv_lists_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									   SubTransactionId parentSubid, void *arg);

static pg_atomic_uint64 *
ruv_list_counters(int slot)
{
	return (pg_atomic_uint64 *) ((char *) ruv_hdr + ruv_hdr->lists_offset +
								 (Size) slot * ruv_hdr->lists_per_slot * RUV_LIST_COUNTER_SIZE);
}

static int32
ruv_list_index(bool isnull, int32 value)
{
	if (isnull)
		return RUV_LIDX_UNASSIGNED;
	if (value < 0 || value >= (int32) ruv_hdr->lists_per_slot)
		return RUV_LIDX_OTHER;
	return value;
}

/*
 * Mark a slot's counters stale: an even (valid) epoch becomes odd. 0 (never
 * baselined) and odd stay as they are.
 */
void
ruv_lists_invalidate(int slot_index)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	uint64		e = pg_atomic_read_u64(&slot->lists_epoch);

	while (e != 0 && (e & 1) == 0)
		if (pg_atomic_compare_exchange_u64(&slot->lists_epoch, &e, e + 1))
			break;
}

/* A reused or newly attached slot has no baseline. */
void
ruv_lists_reset(int slot_index)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	pg_atomic_uint64 *c = ruv_list_counters(slot_index);

	pg_atomic_write_u64(&slot->lists_epoch, 0);
	pg_write_barrier();
	for (uint32 i = 0; i < ruv_hdr->lists_per_slot; i++)
		pg_atomic_write_u64(&c[i], 0);
	pg_atomic_write_u64(&slot->lists_unassigned, 0);
	pg_atomic_write_u64(&slot->lists_other, 0);
	pg_atomic_write_u64(&slot->lists_baseline_us, 0);
	pg_atomic_write_u32(&slot->lists_version, 0);
}

static void
ruv_lists_add(int slot, uint32 collection_id, int32 lidx, int64 delta)
{
	RuvListKey	key;
	RuvListDelta *d;
	bool		found;

	if (ruv_ldeltas == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(RuvListKey);
		ctl.entrysize = sizeof(RuvListDelta);
		ctl.hcxt = TopTransactionContext;
		ruv_ldeltas = hash_create("ruvector_healing list deltas", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		if (!ruv_lcallbacks)
		{
			RegisterXactCallback(ruv_lists_xact_callback, NULL);
			RegisterSubXactCallback(ruv_lists_subxact_callback, NULL);
			ruv_lcallbacks = true;
		}
	}
	memset(&key, 0, sizeof(key));
	key.slot = slot;
	key.collection_id = collection_id;
	key.subxid = GetCurrentSubTransactionId();
	key.lidx = lidx;
	d = hash_search(ruv_ldeltas, &key, HASH_ENTER, &found);
	if (!found)
		d->delta = 0;
	d->delta += delta;
}

/* Make the slot stale when (and only if) this transaction commits. */
void
ruv_lists_invalidate_at_commit(int slot_index)
{
	ruv_lists_add(slot_index, ruv_slot(slot_index)->collection_id, RUV_LIDX_INVALIDATE, 1);
}

/* The slot still belongs to the collection the delta was recorded for. */
static bool
ruv_lists_slot_is(int slot_index, uint32 collection_id)
{
	RuvShmSlot *slot = ruv_slot(slot_index);

	return pg_atomic_read_u32(&slot->in_use) != 0 &&
		slot->collection_id == collection_id && slot->database_oid == MyDatabaseId;
}

static void
ruv_lists_apply(void)
{
	HASH_SEQ_STATUS st;
	RuvListDelta *d;

	hash_seq_init(&st, ruv_ldeltas);
	while ((d = hash_seq_search(&st)) != NULL)
	{
		RuvShmSlot *slot;

		if (d->delta == 0 || !ruv_lists_slot_is(d->key.slot, d->key.collection_id))
			continue;
		slot = ruv_slot(d->key.slot);
		if (d->key.lidx == RUV_LIDX_INVALIDATE)
			ruv_lists_invalidate(d->key.slot);
		else if (d->key.lidx == RUV_LIDX_UNASSIGNED)
			pg_atomic_fetch_add_u64(&slot->lists_unassigned, d->delta);
		else if (d->key.lidx == RUV_LIDX_OTHER)
			pg_atomic_fetch_add_u64(&slot->lists_other, d->delta);
		else if (d->key.lidx >= 0 && d->key.lidx < (int32) ruv_hdr->lists_per_slot)
			pg_atomic_fetch_add_u64(&ruv_list_counters(d->key.slot)[d->key.lidx], d->delta);
	}
}

/* A prepared transaction's deltas would be lost: its slots go stale. */
static void
ruv_lists_invalidate_pending(void)
{
	HASH_SEQ_STATUS st;
	RuvListDelta *d;

	hash_seq_init(&st, ruv_ldeltas);
	while ((d = hash_seq_search(&st)) != NULL)
		if (ruv_lists_slot_is(d->key.slot, d->key.collection_id))
			ruv_lists_invalidate(d->key.slot);
}

static void
ruv_lists_xact_callback(XactEvent event, void *arg)
{
	if (ruv_ldeltas == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* After ProcArrayEndTransaction, before the locks go. */
			ruv_lists_apply();
			ruv_ldeltas = NULL;
			break;
		case XACT_EVENT_PREPARE:
			ruv_lists_invalidate_pending();
			ruv_ldeltas = NULL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ruv_ldeltas = NULL; /* freed with TopTransactionContext */
			break;
		default:
			break;
	}
}

static void
ruv_lists_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS st;
	RuvListDelta *d;
	List	   *moved = NIL;
	ListCell   *lc;

	if (ruv_ldeltas == NULL ||
		(event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;
	hash_seq_init(&st, ruv_ldeltas);
	while ((d = hash_seq_search(&st)) != NULL)
	{
		if (d->key.subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			RuvListDelta *copy = MemoryContextAlloc(TopTransactionContext, sizeof(RuvListDelta));

			*copy = *d;
			moved = lappend(moved, copy);
		}
		/* Deleting the entry just returned is allowed during a scan. */
		(void) hash_search(ruv_ldeltas, &d->key, HASH_REMOVE, NULL);
	}
	/* A committed subtransaction's deltas now belong to its parent. */
	foreach(lc, moved)
	{
		RuvListDelta *m = (RuvListDelta *) lfirst(lc);
		RuvListDelta *p;
		bool		found;

		m->key.subxid = parentSubid;
		p = hash_search(ruv_ldeltas, &m->key, HASH_ENTER, &found);
		if (!found)
			p->delta = 0;
		p->delta += m->delta;
	}
}

static int
ruv_lists_slot_of(uint32 collection_id)
{
	uint64		seq = pg_atomic_read_u64(&ruv_hdr->registry_seq);

	if (ruv_lslot_cache.collection_id != collection_id || ruv_lslot_cache.database != MyDatabaseId ||
		ruv_lslot_cache.seq != seq || ruv_lslot_cache.generation != ruv_hdr->generation ||
		(seq & 1) != 0)
	{
		ruv_lslot_cache.slot = ruv_find_slot(collection_id);
		ruv_lslot_cache.collection_id = collection_id;
		ruv_lslot_cache.database = MyDatabaseId;
		ruv_lslot_cache.seq = seq;
		ruv_lslot_cache.generation = ruv_hdr->generation;
	}
	return ruv_lslot_cache.slot;
}

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on a collection's table,
 * with argument (collection_id): counts the row in or out of its list.
 */
Datum
ruvector_list_count_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	int			att_list;
	uint32		collection_id;
	int			slot;
	bool		isnull;
	Datum		v;
	int32		oldidx = 0;
	int32		newidx = 0;
	bool		has_old;
	bool		has_new;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._list_count() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._list_count() must fire AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW")));
	if (trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._list_count() needs 1 argument (collection_id), got %d",
						trigdata->tg_trigger->tgnargs)));
	if (ruv_hdr == NULL || ruv_hdr->lists_per_slot == 0)
		return PointerGetDatum(NULL);
	collection_id = (uint32) pg_strtoint32(trigdata->tg_trigger->tgargs[0]);
	slot = ruv_lists_slot_of(collection_id);
	if (slot < 0)
		return PointerGetDatum(NULL);	/* no slot yet: no baseline either */

	tupdesc = trigdata->tg_relation->rd_att;
	att_list = SPI_fnumber(tupdesc, "ivf_list");
	if (att_list <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" of collection %u lacks column ivf_list",
						RelationGetRelationName(trigdata->tg_relation), collection_id),
				 errhint("A collection table has columns id, embedding real[], shard and ivf_list.")));

	has_old = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) || TRIGGER_FIRED_BY_DELETE(trigdata->tg_event);
	has_new = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) || TRIGGER_FIRED_BY_INSERT(trigdata->tg_event);
	if (has_old)
	{
		v = heap_getattr(trigdata->tg_trigtuple, att_list, tupdesc, &isnull);
		oldidx = ruv_list_index(isnull, isnull ? 0 : DatumGetInt32(v));
	}
	if (has_new)
	{
		HeapTuple	t = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)
			? trigdata->tg_newtuple : trigdata->tg_trigtuple;

		v = heap_getattr(t, att_list, tupdesc, &isnull);
		newidx = ruv_list_index(isnull, isnull ? 0 : DatumGetInt32(v));
	}
	if (has_old && has_new && oldidx == newidx)
		return PointerGetDatum(NULL);
	if (has_old)
		ruv_lists_add(slot, collection_id, oldidx, -1);
	if (has_new)
		ruv_lists_add(slot, collection_id, newidx, 1);
	return PointerGetDatum(NULL);
}

/*
 * ruvector._list_counts_publish(collection_id, relid, list_ids int[],
 * counts bigint[]): publish a baseline counted by the caller, one count
 * per distinct ivf_list (a NULL id counts the unassigned rows). Only valid
 * under the conditions ruvector._list_counts_rebaseline sets up, which are
 * checked: a SHARE ROW EXCLUSIVE (or stronger) lock on the table and READ
 * COMMITTED, so the count's snapshot was taken after the lock.
 */
Datum
ruvector_list_counts_publish(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	Oid			relid = PG_GETARG_OID(1);
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(2);
	ArrayType  *counts = PG_GETARG_ARRAYTYPE_P(3);
	Datum	   *idv;
	bool	   *idn;
	int			nid;
	Datum	   *cv;
	bool	   *cn;
	int			nc;
	int			slot_index;
	RuvShmSlot *slot;
	pg_atomic_uint64 *c;
	int64		unassigned = 0;
	int64		other = 0;
	uint64		e;
	Relation	rel;
	bool		locked;

	if (ruv_hdr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ruvector_healing's shared segment is not available"),
				 errhint("Add ruvector_healing to shared_preload_libraries and restart the server.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("list counts can only be rebaselined at READ COMMITTED"),
				 errhint("The count must see every transaction that committed before the table lock; run it in its own READ COMMITTED transaction.")));
	/*
	 * The count sees this transaction's own writes, whose deltas are still
	 * pending and would be applied again at commit (or, on abort, leave the
	 * count with rows that never were).
	 */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("list counts of collection %d cannot be rebaselined in a transaction that has written",
						collection_id),
				 errhint("Rebaseline in a transaction of its own, before any write.")));
	rel = relation_open(relid, NoLock);
	locked = CheckRelationLockedByMe(rel, ShareRowExclusiveLock, true);
	if (!locked)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" of collection %d is not locked in SHARE ROW EXCLUSIVE mode",
						RelationGetRelationName(rel), collection_id),
				 errhint("Call ruvector._list_counts_rebaseline, which takes the lock before counting.")));
	relation_close(rel, NoLock);
	slot_index = ruv_find_slot((uint32) collection_id);
	if (slot_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("After a restart the watchdog reloads collections within a second.")));
	if (ruv_hdr->lists_per_slot == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the shared segment keeps no list counters"),
				 errhint("Set ruvector.max_lists above 0 and restart the server.")));
	deconstruct_array(ids, INT4OID, 4, true, TYPALIGN_INT, &idv, &idn, &nid);
	deconstruct_array(counts, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &cv, &cn, &nc);
	if (nid != nc)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%d list ids but %d counts", nid, nc),
				 errhint("Pass one count per list id.")));

	slot = ruv_slot(slot_index);
	c = ruv_list_counters(slot_index);
	/* Odd while rewriting, so a reader never takes half a baseline. */
	e = pg_atomic_read_u64(&slot->lists_epoch);
	if (e == 0 || (e & 1) == 0)
		pg_atomic_write_u64(&slot->lists_epoch, e + 1);
	e = pg_atomic_read_u64(&slot->lists_epoch);
	pg_write_barrier();
	for (uint32 i = 0; i < ruv_hdr->lists_per_slot; i++)
		pg_atomic_write_u64(&c[i], 0);
	for (int i = 0; i < nid; i++)
	{
		int64		n = cn[i] ? 0 : DatumGetInt64(cv[i]);
		int32		lidx = ruv_list_index(idn[i], idn[i] ? 0 : DatumGetInt32(idv[i]));

		if (lidx == RUV_LIDX_UNASSIGNED)
			unassigned += n;
		else if (lidx == RUV_LIDX_OTHER)
			other += n;
		else
			pg_atomic_write_u64(&c[lidx], pg_atomic_read_u64(&c[lidx]) + n);
	}
	pg_atomic_write_u64(&slot->lists_unassigned, unassigned);
	pg_atomic_write_u64(&slot->lists_other, other);
	pg_atomic_write_u32(&slot->lists_version, pg_atomic_read_u32(&slot->centroid_version));
	pg_atomic_write_u64(&slot->lists_baseline_us, (uint64) ruv_now_us());
	pg_write_barrier();
	pg_atomic_write_u64(&slot->lists_epoch, e + 1);
	PG_RETURN_INT64((int64) (e + 1));
}

/*
 * ruvector._list_counts_read(collection_id): valid, epoch, counts of lists
 * 0 .. the last non-empty one, unassigned, other, version, baseline_at.
 */
Datum
ruvector_list_counts_read(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7] = {0};
	int			slot_index;
	RuvShmSlot *slot;
	pg_atomic_uint64 *c;
	Datum	   *cd;
	int			n = 0;
	uint64		e = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (ruv_hdr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ruvector_healing's shared segment is not available"),
				 errhint("Add ruvector_healing to shared_preload_libraries and restart the server.")));
	slot_index = ruv_find_slot((uint32) collection_id);
	if (slot_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("After a restart the watchdog reloads collections within a second.")));
	slot = ruv_slot(slot_index);
	c = ruv_list_counters(slot_index);
	cd = palloc(sizeof(Datum) * Max(ruv_hdr->lists_per_slot, 1));
	for (int try = 0; try < RUV_SHM_SEQLOCK_READ_RETRIES; try++)
	{
		e = pg_atomic_read_u64(&slot->lists_epoch);
		pg_read_barrier();
		n = 0;
		for (uint32 i = 0; i < ruv_hdr->lists_per_slot; i++)
		{
			int64		x = (int64) pg_atomic_read_u64(&c[i]);

			cd[i] = Int64GetDatum(x);
			if (x != 0)
				n = (int) i + 1;
		}
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->lists_unassigned));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->lists_other));
		values[5] = Int32GetDatum((int32) pg_atomic_read_u32(&slot->lists_version));
		values[6] = TimestampTzGetDatum((TimestampTz) pg_atomic_read_u64(&slot->lists_baseline_us) -
										(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
		pg_read_barrier();
		if (pg_atomic_read_u64(&slot->lists_epoch) == e)
			break;
	}
	values[0] = BoolGetDatum(e != 0 && (e & 1) == 0);
	values[1] = Int64GetDatum((int64) e);
	values[2] = PointerGetDatum(construct_array(cd, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (!DatumGetBool(values[0]))
		nulls[2] = nulls[3] = nulls[4] = nulls[5] = nulls[6] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * Slots whose rows a utility statement adds or removes without row
 * triggers: TRUNCATE, ALTER TABLE ... ATTACH/DETACH PARTITION, DROP TABLE
 * of a partition; and slots whose counting may stop: ALTER TABLE ...
 * ENABLE/DISABLE TRIGGER, DROP TRIGGER. Looked up before the statement runs (a dropped table
 * cannot be looked up after); the caller marks them stale once it
 * succeeded. Returns how many it put in slots (at most max).
 */
int
ruv_lists_utility_slots(Node *parsetree, int *slots, int max)
{
	int			n = 0;
	List	   *rvs = NIL;
	ListCell   *lc;

	if (ruv_hdr == NULL || ruv_hdr->lists_per_slot == 0)
		return 0;
	if (IsA(parsetree, TruncateStmt))
		rvs = ((TruncateStmt *) parsetree)->relations;
	else if (IsA(parsetree, AlterTableStmt))
	{
		AlterTableStmt *as = (AlterTableStmt *) parsetree;

		foreach(lc, as->cmds)
		{
			AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);

			/* Any trigger switched on or off may be the counting one. */
			if (cmd->subtype == AT_AttachPartition || cmd->subtype == AT_DetachPartition ||
				cmd->subtype == AT_DetachPartitionFinalize ||
				cmd->subtype == AT_EnableTrig || cmd->subtype == AT_EnableAlwaysTrig ||
				cmd->subtype == AT_EnableReplicaTrig || cmd->subtype == AT_DisableTrig ||
				cmd->subtype == AT_EnableTrigAll || cmd->subtype == AT_DisableTrigAll ||
				cmd->subtype == AT_EnableTrigUser || cmd->subtype == AT_DisableTrigUser ||
				cmd->subtype == AT_AlterColumnType) /* USING may rewrite ivf_list */
			{
				rvs = list_make1(as->relation);
				break;
			}
		}
	}
	else if (IsA(parsetree, DropStmt) && ((DropStmt *) parsetree)->removeType == OBJECT_TABLE)
	{
		foreach(lc, ((DropStmt *) parsetree)->objects)
			rvs = lappend(rvs, makeRangeVarFromNameList((List *) lfirst(lc)));
	}
	else if (IsA(parsetree, DropStmt) && ((DropStmt *) parsetree)->removeType == OBJECT_TRIGGER)
	{
		/* [schema.]table.trigger: the table is all but the last name. */
		foreach(lc, ((DropStmt *) parsetree)->objects)
		{
			List	   *names = (List *) lfirst(lc);

			if (list_length(names) >= 2)
				rvs = lappend(rvs, makeRangeVarFromNameList(list_truncate(list_copy(names),
																		  list_length(names) - 1)));
		}
	}
	foreach(lc, rvs)
	{
		Oid			relid = RangeVarGetRelid((RangeVar *) lfirst(lc), NoLock, true);
		int			slot = OidIsValid(relid) ? ruv_relmap_lookup(relid) : -1;

		if (slot >= 0 && n < max)
			slots[n++] = slot;
	}
	return n;
}
