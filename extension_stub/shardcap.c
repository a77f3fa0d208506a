/*-------------------------------------------------------------------------
 *
 * shardcap.c
 *		Per-shard write caps, enforced per row by the collection trigger.
 *
 * The write gate (gate.c) throttles a whole collection per statement. A
 * hotspot made by a writer that names its shard explicitly (COPY ... (shard)
 * with every row in one shard) is not cured by that: the collection slows
 * down as a whole and the hot shard stays as hot relative to the others.
 * A shard cap limits the rows per second INSERTed into one shard. The
 * vector trigger already runs per row and knows the row's shard, so the cap
 * is enforced there: each row pushes that shard's GCRA theoretical arrival
 * time forward by 1/cap and waits until its turn (less the gate's burst),
 * or the statement fails when the wait would exceed
 * ruvector.throttle_max_wait. An uncapped shard costs one atomic read.
 *
 * Caps are set by hand (ruvector_shard_cap_set, durable in ruvector.
 * shard_caps and reloaded by the watchdog) or by the sidecar through the
 * segment; the watchdog releases the sidecar's when it stops heartbeating.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/wait_event.h"

#include "ruvector_healing.h"

PG_FUNCTION_INFO_V1(ruvector_shard_cap_apply);
PG_FUNCTION_INFO_V1(ruvector_shard_caps_read);
PG_FUNCTION_INFO_V1(ruvector_shard_cap_counters);

#define RUV_CAP_SLEEP_SLICE_US 100000	/* re-check the cap this often */

/* A manual cap change, undone if its (sub)transaction aborts. */
typedef struct RuvCapUndo
{
	SubTransactionId subxid;
	int			slot;
	int			shard;
	uint32		word;			/* what we wrote */
	uint32		prev_word;
	int64		prev_outcome;
} RuvCapUndo;

static List *ruv_cap_undo = NIL;
static bool ruv_cap_callbacks = false;

/* The slot the last capped row's collection had, to skip the slot scan. */
static int	ruv_cap_slot = -1;
static uint32 ruv_cap_collection = 0;

static int
ruv_cap_slot_of(uint32 collection_id)
{
	if (ruv_cap_slot >= 0 && ruv_cap_collection == collection_id &&
		ruv_cap_slot < (int) ruv_hdr->slot_count)
	{
		RuvShmSlot *slot = ruv_slot(ruv_cap_slot);

		/* A freed or reused slot has another identity. */
		if (slot->collection_id == collection_id && slot->database_oid == MyDatabaseId)
			return ruv_cap_slot;
	}
	ruv_cap_slot = ruv_find_slot(collection_id);
	ruv_cap_collection = collection_id;
	return ruv_cap_slot;
}

/*
 * Make the slot's caps its collection's: a slot reused for another
 * collection must not carry the previous one's caps.
 */
static void
ruv_cap_claim(RuvShmSlot *slot)
{
	if (pg_atomic_read_u32(&slot->shard_cap_owner) == slot->collection_id)
		return;
	for (int i = 0; i < RUV_MAX_SHARDS; i++)
	{
		pg_atomic_write_u32(&slot->shard_caps[i], 0);
		pg_atomic_write_u64(&slot->shard_cap_outcomes[i], 0);
	}
	pg_atomic_write_u64(&slot->shard_cap_admitted_rows, 0);
	pg_atomic_write_u64(&slot->shard_cap_delayed_rows, 0);
	pg_atomic_write_u64(&slot->shard_cap_wait_us, 0);
	pg_atomic_write_u64(&slot->shard_cap_rejected_statements, 0);
	pg_write_barrier();
	pg_atomic_write_u32(&slot->shard_cap_owner, slot->collection_id);
}

/* Who set a cap and how to lift it, for the refusal below. */
static void
ruv_cap_who(const char *name, int shard, uint32 setby, int64 outcome_id,
			const char **who, const char **hint)
{
	const char *clear = psprintf("SELECT ruvector_shard_cap_clear(%s, %d)",
								 quote_literal_cstr(name), shard);

	if (setby == RUV_SETBY_MANUAL)
	{
		*who = "set manually";
		*hint = psprintf("%s lifts it.", clear);
	}
	else if (outcome_id > 0)
	{
		*who = psprintf("set by the self-healing sidecar, remediation outcome " INT64_FORMAT,
						outcome_id);
		*hint = psprintf("SELECT ruvector_healing_explain(" INT64_FORMAT ") says why; "
						 "SELECT ruvector_healing_rollback(%s) or %s lifts it.",
						 outcome_id, quote_literal_cstr(name), clear);
	}
	else
	{
		*who = "set by the ruvector sidecar outside any remediation";
		*hint = psprintf("The watchdog releases it if the sidecar stops; %s lifts it now.", clear);
	}
}

pg_attribute_noreturn()
static void
ruv_cap_refuse(int slot_index, const char *name, int shard, uint32 word, int64 need_wait_us)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	uint32		setby = word >> RUV_SHARD_CAP_SETBY_SHIFT;
	int64		outcome_id = 0;
	const char *who;
	const char *hint;

	if (setby == RUV_SETBY_SIDECAR)
	{
		pg_read_barrier();
		outcome_id = (int64) pg_atomic_read_u64(&slot->shard_cap_outcomes[shard]);
	}
	pg_atomic_fetch_add_u64(&slot->shard_cap_rejected_statements, 1);
	ruv_cap_who(name, shard, setby, outcome_id, &who, &hint);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			 errmsg("writes into shard %d of collection \"%s\" are capped longer than ruvector.throttle_max_wait (%d ms)",
					shard, name, ruv_throttle_max_wait_ms),
			 errdetail("Shard %d of collection \"%s\" is capped at %u rows per second, %s; this row would wait %ld ms.",
					   shard, name, (uint32) (word & RUV_SHARD_CAP_RATE_MASK), who, (long) (need_wait_us / 1000)),
			 errhint("%s Otherwise retry later, write fewer rows into this shard, or raise ruvector.throttle_max_wait for this session.",
					 hint)));
}

/*
 * Admit one row into a capped shard: take its turn in the shard's bucket
 * (compare-and-swap, so concurrent writers each get their own) and sleep
 * until then, interruptibly.
 */
static void
ruv_cap_wait(int slot_index, const char *name, int shard, uint32 word)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	pg_atomic_uint64 *tat = &slot->shard_cap_tat_us[shard];
	uint32		rate = word & RUV_SHARD_CAP_RATE_MASK;
	int64		cost = Max(INT64CONST(1000000) / (int64) rate, 1);
	int64		burst_us = (int64) ruv_throttle_burst_ms * 1000;
	int64		cap_us = (int64) ruv_throttle_max_wait_ms * 1000;
	int64		start = ruv_mono_us();
	uint64		old = pg_atomic_read_u64(tat);
	int64		wait;

	for (;;)
	{
		int64		begin = Max((int64) old, start);

		wait = begin - start - burst_us;
		if (wait > cap_us)
			ruv_cap_refuse(slot_index, name, shard, word, wait);
		if (pg_atomic_compare_exchange_u64(tat, &old, (uint64) (begin + cost)))
			break;
	}
	pg_atomic_fetch_add_u64(&slot->shard_cap_admitted_rows, 1);
	if (wait <= 0)
		return;

	for (;;)
	{
		int64		left = start + wait - ruv_mono_us();
		uint32		now_word;

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) (Min(left, RUV_CAP_SLEEP_SLICE_US) + 999) / 1000,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* Lifted or changed while we slept: the new setting applies from now. */
		now_word = pg_atomic_read_u32(&slot->shard_caps[shard]);
		if (now_word != word)
			break;
	}
	pg_atomic_fetch_add_u64(&slot->shard_cap_delayed_rows, 1);
	pg_atomic_fetch_add_u64(&slot->shard_cap_wait_us, (uint64) (ruv_mono_us() - start));
}

/*
 * Called by the vector trigger for every INSERTed row (including a row an
 * UPDATE moves into another partition, which arrives there as an INSERT).
 */
void
ruv_shardcap_admit(uint32 collection_id, const char *name, Relation rel, HeapTuple tup)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			slot_index;
	RuvShmSlot *slot;
	int			att;
	bool		isnull;
	Datum		d;
	int64		shard;
	uint32		word;

	if (ruv_hdr == NULL)
		return;
	slot_index = ruv_cap_slot_of(collection_id);
	if (slot_index < 0)
		return;
	att = SPI_fnumber(desc, "shard");
	if (att <= 0)
		return;
	d = heap_getattr(tup, att, desc, &isnull);
	if (isnull)
		return;
	switch (TupleDescAttr(desc, att - 1)->atttypid)
	{
		case INT2OID:
			shard = DatumGetInt16(d);
			break;
		case INT4OID:
			shard = DatumGetInt32(d);
			break;
		case INT8OID:
			shard = DatumGetInt64(d);
			break;
		default:
			return;
	}
	if (shard < 0 || shard >= RUV_MAX_SHARDS)
		return;
	slot = ruv_slot(slot_index);
	word = pg_atomic_read_u32(&slot->shard_caps[shard]);
	if ((word & RUV_SHARD_CAP_RATE_MASK) == 0)
		return;					/* the common case: one atomic read */
	if (pg_atomic_read_u32(&slot->shard_cap_owner) != collection_id)
		return;
	if (ruv_shard_cap_exempt && (word >> RUV_SHARD_CAP_SETBY_SHIFT) == RUV_SETBY_SIDECAR)
		return;
	ruv_cap_wait(slot_index, name, (int) shard, word);
}

static void
ruv_cap_undo_run(SubTransactionId subxid, bool all)
{
	List	   *keep = NIL;
	ListCell   *lc;

	for (int i = list_length(ruv_cap_undo) - 1; i >= 0; i--)
	{
		RuvCapUndo *u = (RuvCapUndo *) list_nth(ruv_cap_undo, i);
		RuvShmSlot *slot;
		uint32		expected;

		if (!all && u->subxid != subxid)
			continue;
		slot = ruv_slot(u->slot);
		expected = u->word;
		/* Only if nobody changed it since: never clobber a newer setting. */
		if (pg_atomic_read_u32(&slot->shard_caps[u->shard]) == expected)
		{
			pg_atomic_write_u64(&slot->shard_cap_outcomes[u->shard], (uint64) u->prev_outcome);
			pg_write_barrier();
			(void) pg_atomic_compare_exchange_u32(&slot->shard_caps[u->shard], &expected, u->prev_word);
		}
	}
	if (!all)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		foreach(lc, ruv_cap_undo)
		{
			RuvCapUndo *u = (RuvCapUndo *) lfirst(lc);

			if (u->subxid != subxid)
				keep = lappend(keep, u);
		}
		MemoryContextSwitchTo(old);
	}
	ruv_cap_undo = keep;
}

static void
ruv_cap_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (ruv_cap_undo != NIL)
				ruv_cap_undo_run(InvalidSubTransactionId, true);
			ruv_cap_undo = NIL;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (ruv_cap_undo != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed a shard cap"),
						 errhint("Set shard caps outside two-phase transactions.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			ruv_cap_undo = NIL;	/* the list lived in TopTransactionContext */
			break;
		default:
			break;
	}
}

static void
ruv_cap_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (ruv_cap_undo == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ruv_cap_undo_run(mySubid, false);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		/* The parent owns the changes now. */
		foreach(lc, ruv_cap_undo)
		{
			RuvCapUndo *u = (RuvCapUndo *) lfirst(lc);

			if (u->subxid == mySubid)
				u->subxid = parentSubid;
		}
	}
}

/*
 * Set (word with a rate) or lift (word 0) one shard's cap. Transactional
 * changes are undone if the (sub)transaction aborts; the watchdog's reload
 * is not transactional.
 */
void
ruv_shardcap_apply(int slot_index, int shard, uint32 word, bool transactional)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	uint32		prev;
	int64		prev_outcome;

	Assert(shard >= 0 && shard < RUV_MAX_SHARDS);
	ruv_cap_claim(slot);
	prev_outcome = (int64) pg_atomic_read_u64(&slot->shard_cap_outcomes[shard]);
	pg_atomic_write_u64(&slot->shard_cap_tat_us[shard], 0);
	prev = pg_atomic_exchange_u32(&slot->shard_caps[shard], word);
	if (transactional)
	{
		MemoryContext old;
		RuvCapUndo *u;

		if (!ruv_cap_callbacks)
		{
			RegisterXactCallback(ruv_cap_xact_callback, NULL);
			RegisterSubXactCallback(ruv_cap_subxact_callback, NULL);
			ruv_cap_callbacks = true;
		}
		old = MemoryContextSwitchTo(TopTransactionContext);
		u = palloc(sizeof(RuvCapUndo));
		u->subxid = GetCurrentSubTransactionId();
		u->slot = slot_index;
		u->shard = shard;
		u->word = word;
		u->prev_word = prev;
		u->prev_outcome = prev_outcome;
		ruv_cap_undo = lappend(ruv_cap_undo, u);
		MemoryContextSwitchTo(old);
	}
}

/*
 * Lift every cap the sidecar set (fail open); returns how many. A failed
 * compare-and-swap means someone set the cap anew: that stays.
 */
int
ruv_shardcap_release_sidecar(void)
{
	int			released = 0;

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);

		if (pg_atomic_read_u32(&slot->in_use) == 0)
			continue;
		for (int s = 0; s < RUV_MAX_SHARDS; s++)
		{
			uint32		w = pg_atomic_read_u32(&slot->shard_caps[s]);

			if ((w >> RUV_SHARD_CAP_SETBY_SHIFT) != RUV_SETBY_SIDECAR ||
				(w & RUV_SHARD_CAP_RATE_MASK) == 0)
				continue;
			if (pg_atomic_compare_exchange_u32(&slot->shard_caps[s], &w, 0))
			{
				pg_atomic_write_u64(&slot->shard_cap_outcomes[s], 0);
				released++;
			}
		}
	}
	return released;
}

static int
ruv_cap_slot_arg(FunctionCallInfo fcinfo)
{
	int32		collection_id;
	int			slot;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("collection id must not be NULL"),
				 errhint("Use ruvector_shard_caps(collection), ruvector_shard_cap_set or ruvector_shard_cap_clear.")));
	collection_id = PG_GETARG_INT32(0);
	slot = ruv_find_slot((uint32) collection_id);
	if (slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("Register the collection with ruvector_collection_register.")));
	return slot;
}

/*
 * ruvector._shard_cap_apply(collection_id, shard, rows_per_sec): a manual
 * cap (0 lifts whatever cap the shard has). The SQL wrappers validate with
 * user-facing messages; this checks again what would corrupt the segment.
 */
Datum
ruvector_shard_cap_apply(PG_FUNCTION_ARGS)
{
	int			slot;
	int32		shard;
	int32		rate;

	ruv_require_segment();
	ruv_require_admin("set a shard cap");
	slot = ruv_cap_slot_arg(fcinfo);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("shard and rows_per_sec must not be NULL"),
				 errhint("Use ruvector_shard_cap_set(collection, shard, rows_per_sec).")));
	shard = PG_GETARG_INT32(1);
	rate = PG_GETARG_INT32(2);
	if (shard < 0 || shard >= RUV_MAX_SHARDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shard %d is out of range", shard),
				 errhint("A collection has shards 0 to %d at most.", (int) RUV_MAX_SHARDS - 1)));
	if (rate < 0 || rate > (int32) RUV_SHARD_CAP_RATE_MASK)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("shard cap of %d rows per second is out of range", rate),
				 errhint("A cap is 1 to %d rows per second; 0 lifts it.", (int) RUV_SHARD_CAP_RATE_MASK)));
	ruv_shardcap_apply(slot, shard,
					   rate == 0 ? 0 : ((uint32) RUV_SETBY_MANUAL << RUV_SHARD_CAP_SETBY_SHIFT) | (uint32) rate,
					   true);
	PG_RETURN_VOID();
}

/* The segment's caps of one collection: shard, cap, set_by, outcome_id. */
Datum
ruvector_shard_caps_read(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RuvShmSlot *slot;

	ruv_require_segment();
	slot = ruv_slot(ruv_cap_slot_arg(fcinfo));
	InitMaterializedSRF(fcinfo, 0);
	if (pg_atomic_read_u32(&slot->shard_cap_owner) != slot->collection_id)
		return (Datum) 0;
	for (int s = 0; s < RUV_MAX_SHARDS; s++)
	{
		uint32		w = pg_atomic_read_u32(&slot->shard_caps[s]);
		uint32		setby = w >> RUV_SHARD_CAP_SETBY_SHIFT;
		int64		outcome = 0;
		Datum		values[4];
		bool		nulls[4] = {0};

		if ((w & RUV_SHARD_CAP_RATE_MASK) == 0)
			continue;
		if (setby == RUV_SETBY_SIDECAR)
		{
			pg_read_barrier();
			outcome = (int64) pg_atomic_read_u64(&slot->shard_cap_outcomes[s]);
		}
		values[0] = Int32GetDatum(s);
		values[1] = Int32GetDatum((int32) (w & RUV_SHARD_CAP_RATE_MASK));
		values[2] = CStringGetTextDatum(setby < RUV_NUM_SETBY ? ruv_setby_names[setby] : "?");
		values[3] = Int64GetDatum(outcome);
		nulls[3] = outcome <= 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* The trigger's counters of one collection's caps. */
Datum
ruvector_shard_cap_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RuvShmSlot *slot;
	Datum		values[4];
	bool		nulls[4] = {0};

	ruv_require_segment();
	slot = ruv_slot(ruv_cap_slot_arg(fcinfo));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* A reused slot's counters are the previous collection's until claimed. */
	if (pg_atomic_read_u32(&slot->shard_cap_owner) != slot->collection_id)
	{
		values[0] = values[1] = values[2] = Int64GetDatum(0);
		values[3] = Float8GetDatum(0);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}
	values[0] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->shard_cap_admitted_rows));
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->shard_cap_delayed_rows));
	values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->shard_cap_rejected_statements));
	values[3] = Float8GetDatum((double) pg_atomic_read_u64(&slot->shard_cap_wait_us) / 1000.0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
