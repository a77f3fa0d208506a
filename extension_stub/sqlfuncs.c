/*-------------------------------------------------------------------------
 *
 * sqlfuncs.c
 *		SQL-callable functions: registry and throttle writers, status readers.
 *
 * Argument validation with user-facing messages lives in the SQL wrappers
 * (the files in sql/src); these functions check again what would
 * corrupt shared memory if wrong, and check privileges themselves because
 * no table privilege guards the segment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "ruvector_healing.h"

PG_FUNCTION_INFO_V1(ruvector_registry_attach);
PG_FUNCTION_INFO_V1(ruvector_registry_detach);
PG_FUNCTION_INFO_V1(ruvector_throttle_apply);
PG_FUNCTION_INFO_V1(ruvector_throttle_status);
PG_FUNCTION_INFO_V1(ruvector_segment_status);
PG_FUNCTION_INFO_V1(ruvector_integrity_read);

#define RUV_UNIX_TO_PG_US ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/* Shared with the other SQL-callable files (ruvector_healing.h). */
void
ruv_require_segment(void)
{
	if (ruv_hdr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ruvector_healing's shared segment is not available"),
				 errhint("Add ruvector_healing to shared_preload_libraries and restart the server.")));
}

void
ruv_require_admin(const char *action)
{
	Oid			admin = get_role_oid("ruvector_admin", true);

	if (superuser())
		return;
	if (OidIsValid(admin) && has_privs_of_role(GetUserId(), admin))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s", action),
			 errhint("Only superusers and members of ruvector_admin may do this.")));
}

static int
ruv_op_from_text(text *t)
{
	char	   *s = text_to_cstring(t);

	for (int i = 0; i < RUV_NUM_OPS; i++)
		if (strcmp(s, ruv_op_names[i]) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid throttle op \"%s\"", s),
			 errhint("op is 'insert' or 'bulk_insert'.")));
	return -1;					/* keep compiler quiet */
}

Datum
ruvector_registry_attach(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(2);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Oid		   *relids;

	ruv_require_segment();
	ruv_require_admin("register a collection");
	deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("collection \"%s\" has no relations", name),
				 errhint("Pass the collection's table and its partitions.")));
	relids = palloc(sizeof(Oid) * n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("relation list of collection \"%s\" contains NULL", name),
					 errhint("Pass only valid relation OIDs.")));
		relids[i] = DatumGetObjectId(elems[i]);
	}
	(void) ruv_registry_attach((uint32) collection_id, name, relids, n);
	PG_RETURN_VOID();
}

Datum
ruvector_registry_detach(PG_FUNCTION_ARGS)
{
	ruv_require_segment();
	ruv_require_admin("unregister a collection");
	ruv_registry_detach((uint32) PG_GETARG_INT32(0));
	PG_RETURN_VOID();
}

Datum
ruvector_throttle_apply(PG_FUNCTION_ARGS)
{
	int32		collection_id;
	int			op;
	int32		pct;
	int64		expires_us = 0;
	int			slot;

	ruv_require_segment();
	ruv_require_admin("set a throttle");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("collection, op and pct must not be NULL"),
				 errhint("Use ruvector_throttle_set(collection, op, pct, ttl).")));
	collection_id = PG_GETARG_INT32(0);
	op = ruv_op_from_text(PG_GETARG_TEXT_PP(1));
	pct = PG_GETARG_INT32(2);
	if (pct < 0 || pct > 100)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("throttle percentage %d is out of range", pct),
				 errhint("pct is 0 to 100.")));
	if (!PG_ARGISNULL(3))
		expires_us = PG_GETARG_TIMESTAMPTZ(3) + RUV_UNIX_TO_PG_US;
	slot = ruv_find_slot((uint32) collection_id);
	if (slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("Register the collection with ruvector_collection_register.")));
	ruv_throttle_apply(slot, op, (uint32) pct, expires_us, true);
	PG_RETURN_VOID();
}

Datum
ruvector_throttle_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	ruv_require_segment();
	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);
		uint32		collection_id;
		char		name[RUV_SHM_NAME_LEN];

		if (slot->database_oid != MyDatabaseId || !ruv_slot_identity(i, &collection_id, name))
			continue;
		for (int o = 0; o < RUV_NUM_OPS; o++)
		{
			RuvShmOpState *op = &slot->ops[o];
			Datum		values[10];
			bool		nulls[10] = {0};
			uint32		pct;
			uint32		setby;
			int64		expires;
			int64		outcome;

			ruv_throttle_read(op, &pct, &setby, &expires);
			if (pct == 0)
				setby = RUV_SETBY_NONE;
			outcome = ruv_throttle_outcome(op, setby);
			values[0] = CStringGetTextDatum(name);
			values[1] = CStringGetTextDatum(ruv_op_names[o]);
			values[2] = Int32GetDatum((int32) pct);
			values[3] = CStringGetTextDatum(setby < RUV_NUM_SETBY ? ruv_setby_names[setby] : "?");
			if (expires != 0 && pct != 0)
				values[4] = TimestampTzGetDatum(expires - RUV_UNIX_TO_PG_US);
			else
				nulls[4] = true;
			values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&op->admitted_rows));
			values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&op->delayed_statements));
			values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&op->rejected_statements));
			values[8] = Float8GetDatum((double) pg_atomic_read_u64(&op->wait_us) / 1000.0);
			/* NULL: no throttle, a manual one, or a sidecar one set by hand */
			values[9] = Int64GetDatum(outcome);
			nulls[9] = outcome <= 0;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

/* The header as jsonb: what an operator checks first when in doubt. */
Datum
ruvector_segment_status(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	int64		now = ruv_now_us();
	int64		hb;
	int64		wd;
	int			used = 0;

	ruv_require_segment();
	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
		if (pg_atomic_read_u32(&ruv_slot(i)->in_use) != 0)
			used++;
	hb = (int64) pg_atomic_read_u64(&ruv_hdr->sidecar_heartbeat_us);
	wd = (int64) pg_atomic_read_u64(&ruv_hdr->watchdog_heartbeat_us);

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"layout_version\": %u, \"generation\": " UINT64_FORMAT
					 ", \"system_identifier\": \"" UINT64_FORMAT "\", \"postmaster_pid\": %u"
					 ", \"slots\": %u, \"slots_in_use\": %d, \"relations\": %u, \"lists_per_slot\": %u"
					 ", \"watchdog_pid\": %u, \"watchdog_heartbeat_age_ms\": %s"
					 ", \"sidecar_pid\": %u, \"sidecar_heartbeat_age_ms\": %s"
					 ", \"sidecar_timeout_ms\": %u, \"sidecar_alive\": %s"
					 ", \"sidecar_outages\": " UINT64_FORMAT "}",
					 ruv_hdr->version, ruv_hdr->generation, ruv_hdr->system_identifier,
					 ruv_hdr->postmaster_pid, ruv_hdr->slot_count, used, ruv_hdr->relmap_count,
					 ruv_hdr->lists_per_slot,
					 pg_atomic_read_u32(&ruv_hdr->watchdog_pid),
					 wd ? psprintf(INT64_FORMAT, (now - wd) / 1000) : "null",
					 pg_atomic_read_u32(&ruv_hdr->sidecar_pid),
					 hb ? psprintf(INT64_FORMAT, (now - hb) / 1000) : "null",
					 pg_atomic_read_u32(&ruv_hdr->sidecar_timeout_ms),
					 (hb != 0 && now - hb <= (int64) pg_atomic_read_u32(&ruv_hdr->sidecar_timeout_ms) * 1000) ? "true" : "false",
					 pg_atomic_read_u64(&ruv_hdr->sidecar_outages));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * λ and state of one collection, read under the slot's seqlock, with the
 * sidecar's liveness so callers can tell a fresh value from a stale one.
 */
Datum
ruvector_integrity_read(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {0};
	int			slot_index;
	RuvShmSlot *slot;
	int64		now = ruv_now_us();
	int64		hb;
	bool		got = false;
	double		lambda = 0;
	uint32		state = RUV_STATE_UNKNOWN;
	int64		since = 0;
	int64		updated = 0;

	ruv_require_segment();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	slot_index = ruv_find_slot((uint32) collection_id);
	if (slot_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("Register the collection with ruvector_collection_register.")));
	slot = ruv_slot(slot_index);
	for (int try = 0; try < RUV_SHM_SEQLOCK_READ_RETRIES && !got; try++)
	{
		uint64		seq = pg_atomic_read_u64(&slot->seq);
		uint64		bits;

		if (seq & 1)
		{
			pg_spin_delay();
			continue;
		}
		pg_read_barrier();
		bits = pg_atomic_read_u64(&slot->lambda_bits);
		memcpy(&lambda, &bits, sizeof(lambda));
		state = pg_atomic_read_u32(&slot->state);
		since = (int64) pg_atomic_read_u64(&slot->state_since_us);
		updated = (int64) pg_atomic_read_u64(&slot->lambda_updated_us);
		pg_read_barrier();
		got = pg_atomic_read_u64(&slot->seq) == seq;
	}
	hb = (int64) pg_atomic_read_u64(&ruv_hdr->sidecar_heartbeat_us);

	/* A writer that died mid-write: report unknown rather than torn data. */
	if (!got || state >= RUV_NUM_STATES)
		state = RUV_STATE_UNKNOWN;
	values[0] = Float8GetDatum(lambda);
	nulls[0] = !got || updated == 0;
	values[1] = CStringGetTextDatum(ruv_state_names[state]);
	values[2] = TimestampTzGetDatum(since - RUV_UNIX_TO_PG_US);
	nulls[2] = since == 0;
	values[3] = TimestampTzGetDatum(updated - RUV_UNIX_TO_PG_US);
	nulls[3] = updated == 0;
	values[4] = BoolGetDatum(hb != 0 && now - hb <= (int64) pg_atomic_read_u32(&ruv_hdr->sidecar_timeout_ms) * 1000);
	values[5] = Int64GetDatum(hb ? (now - hb) / 1000 : 0);
	nulls[5] = hb == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
