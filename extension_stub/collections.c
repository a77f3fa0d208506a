/*-------------------------------------------------------------------------
 *
 * collections.c
 *		Vector collections: the row trigger that checks embeddings and
 *		assigns IVF lists, shard routing by the segment's weights, and the
 *		L2 distance.
 *
 * Nothing here runs SQL per row. The routing default reads the weights
 * from the segment; the trigger keeps the active centroids in a
 * backend-local cache keyed by (database, collection, version) and reloads
 * them only when the segment's CentroidVersion moves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "ruvector_healing.h"

PG_FUNCTION_INFO_V1(ruvector_vector_trigger);
PG_FUNCTION_INFO_V1(ruvector_route_shard);
PG_FUNCTION_INFO_V1(ruvector_l2);
PG_FUNCTION_INFO_V1(ruvector_routing_init);
PG_FUNCTION_INFO_V1(ruvector_routing_apply);
PG_FUNCTION_INFO_V1(ruvector_routing_read);
PG_FUNCTION_INFO_V1(ruvector_centroids_publish);
PG_FUNCTION_INFO_V1(ruvector_centroid_version);

/* One collection version's centroids, cached per backend. */
typedef struct RuvCentroidCache
{
	Oid			database;
	uint32		collection_id;
	uint32		version;		/* 0: entry unused */
	int			dim;
	int			nlists;
	int32	   *list_ids;
	float4	   *data;			/* nlists × dim */
	uint64		used;			/* for eviction: the least recently used goes */
} RuvCentroidCache;

#define RUV_CENTROID_CACHE_SIZE 8

static RuvCentroidCache ruv_ccache[RUV_CENTROID_CACHE_SIZE];
static uint64 ruv_ccache_clock = 0;
static MemoryContext ruv_ccache_cxt = NULL;

/*
 * The last version found without centroids, so a statement that cannot
 * see them (they committed after its snapshot) asks once, not per row.
 */
static struct
{
	Oid			database;
	uint32		collection_id;
	uint32		version;
	LocalTransactionId lxid;
	TimestampTz stmt_start;
}			ruv_cmiss;

static int
ruv_slot_of(int32 collection_id)
{
	int			slot = ruv_find_slot((uint32) collection_id);

	if (slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection %d has no slot in the shared segment", collection_id),
				 errhint("After a restart the watchdog reloads collections within a second; a collection unregistered with ruvector_collection_unregister should be dropped with ruvector_collection_drop instead.")));
	return slot;
}

/* Squared L2 distance of two vectors of dim floats, summed in double. */
static inline double
ruv_l2sq(const float4 *a, const float4 *b, int dim)
{
	double		sum = 0;

	for (int i = 0; i < dim; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		sum += d * d;
	}
	return sum;
}

/*
 * A one-dimensional real[] without NULLs as a C array. what names the
 * argument in errors.
 */
static float4 *
ruv_vector_arg(ArrayType *arr, const char *what, int *dim)
{
	if (ARR_NDIM(arr) == 0)
	{
		*dim = 0;
		return NULL;
	}
	if (ARR_NDIM(arr) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s has %d array dimensions, expected 1", what, ARR_NDIM(arr)),
				 errhint("Pass a flat real[] such as '{0.1,0.2,0.3}'.")));
	if (ARR_HASNULL(arr) && array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s contains NULL elements", what),
				 errhint("Every element of a vector must be a finite number.")));
	if (ARR_ELEMTYPE(arr) != FLOAT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s is not a real[]", what)));
	*dim = ARR_DIMS(arr)[0];
	return (float4 *) ARR_DATA_PTR(arr);
}

Datum
ruvector_l2(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *b = PG_GETARG_ARRAYTYPE_P(1);
	int			da;
	int			db;
	float4	   *va = ruv_vector_arg(a, "first vector", &da);
	float4	   *vb = ruv_vector_arg(b, "second vector", &db);

	if (da != db)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("vectors of different dimensions: %d and %d", da, db),
				 errhint("L2 distance is defined between vectors of the same dimension.")));
	PG_RETURN_FLOAT4((float4) sqrt(ruv_l2sq(va, vb, da)));
}

/*
 * The column default of a collection's shard: a weighted random choice by
 * the segment's routing weights. The weights are copied under the routing
 * change counter, so a concurrent change gives either the old or the new
 * weights, never a mix that sums to nothing.
 */
Datum
ruvector_route_shard(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	RuvShmSlot *slot;
	uint32		milli[RUV_MAX_SHARDS];
	uint32		nshards = 0;
	uint64		total = 0;
	uint64		r;

	ruv_require_segment();
	slot = ruv_slot(ruv_slot_of(collection_id));
	for (int try = 0; try < RUV_SHM_SEQLOCK_READ_RETRIES; try++)
	{
		uint32		seq = pg_atomic_read_u32(&slot->routing_seq);

		pg_read_barrier();
		nshards = Min(pg_atomic_read_u32(&slot->routing_shards), RUV_MAX_SHARDS);
		total = 0;
		for (uint32 i = 0; i < nshards; i++)
		{
			milli[i] = pg_atomic_read_u32(&slot->routing_weights[i]) & RUV_ROUTING_MILLI_MASK;
			total += milli[i];
		}
		pg_read_barrier();
		if (pg_atomic_read_u32(&slot->routing_seq) == seq)
			break;
	}
	if (nshards == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("collection %d has no routing", collection_id),
				 errhint("Only collections made by ruvector_collection_create or ruvector_collection_adopt route rows; pass shard explicitly.")));
	/*
	 * A capped shard (shardcap.c) takes routed rows only when every shard is
	 * capped: otherwise a routed row bound for it would queue behind the
	 * writer the cap is for, and a session writing several shards would slow
	 * down on all of them, which lowers the very peers the cap is measured
	 * against.
	 */
	if (total > 0 && pg_atomic_read_u32(&slot->shard_cap_owner) == (uint32) collection_id)
	{
		uint64		open = 0;
		uint32		capped[RUV_MAX_SHARDS];

		for (uint32 i = 0; i < nshards; i++)
		{
			capped[i] = (pg_atomic_read_u32(&slot->shard_caps[i]) & RUV_SHARD_CAP_RATE_MASK) != 0;
			if (!capped[i])
				open += milli[i];
		}
		if (open > 0 && open < total)
		{
			for (uint32 i = 0; i < nshards; i++)
				if (capped[i])
					milli[i] = 0;
			total = open;
		}
	}
	/* Cannot be set from SQL; fail open to uniform rather than refuse rows. */
	if (total == 0)
	{
		for (uint32 i = 0; i < nshards; i++)
			milli[i] = 1;
		total = nshards;
	}
	r = pg_prng_uint64_range(&pg_global_prng_state, 0, total - 1);
	for (uint32 i = 0; i < nshards; i++)
	{
		if (r < milli[i])
			PG_RETURN_INT32((int32) i);
		r -= milli[i];
	}
	PG_RETURN_INT32((int32) nshards - 1);	/* not reached */
}

/* ruvector._routing_init(collection_id, shards): default weights. */
Datum
ruvector_routing_init(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	int32		nshards = PG_GETARG_INT32(1);

	ruv_require_segment();
	ruv_require_admin("set up routing");
	if (nshards < 1 || nshards > RUV_MAX_SHARDS)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%d shards is out of range", nshards),
				 errhint("A collection has 1 to %d shards.", (int) RUV_MAX_SHARDS)));
	ruv_routing_init(ruv_slot_of(collection_id), nshards, true);
	PG_RETURN_VOID();
}

/*
 * ruvector._routing_apply(collection_id, shard, weight, set_by): the
 * segment half of ruvector_routing_set, undone if the transaction aborts.
 */
Datum
ruvector_routing_apply(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	int32		shard = PG_GETARG_INT32(1);
	float4		weight = PG_GETARG_FLOAT4(2);
	char	   *by = text_to_cstring(PG_GETARG_TEXT_PP(3));
	uint32		setby;
	int			slot;

	ruv_require_segment();
	ruv_require_admin("set a routing weight");
	if (strcmp(by, "sidecar") == 0)
		setby = RUV_SETBY_SIDECAR;
	else if (strcmp(by, "manual") == 0)
		setby = RUV_SETBY_MANUAL;
	else if (strcmp(by, "none") == 0)
		setby = RUV_SETBY_NONE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid set_by \"%s\"", by),
				 errhint("set_by is 'manual' or 'sidecar'.")));
	if (isnan(weight) || weight < 0 || weight > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("routing weight %g is out of range", (double) weight),
				 errhint("A weight is 0 (no new rows) to 1000.")));
	slot = ruv_slot_of(collection_id);
	if (shard < 0 || shard >= (int32) pg_atomic_read_u32(&ruv_slot(slot)->routing_shards))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("collection %d has no shard %d", collection_id, shard),
				 errhint("Shards are numbered 0 to %d.",
						 (int) pg_atomic_read_u32(&ruv_slot(slot)->routing_shards) - 1)));
	ruv_routing_apply(slot, shard, ruv_weight_word(setby, (uint32) rint((double) weight * 1000.0)),
					  true);
	PG_RETURN_VOID();
}

/* The segment's weights: shard, weight, set_by. */
Datum
ruvector_routing_read(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RuvShmSlot *slot;
	uint32		nshards;

	ruv_require_segment();
	InitMaterializedSRF(fcinfo, 0);
	slot = ruv_slot(ruv_slot_of(collection_id));
	nshards = Min(pg_atomic_read_u32(&slot->routing_shards), RUV_MAX_SHARDS);
	for (uint32 i = 0; i < nshards; i++)
	{
		uint32		w = pg_atomic_read_u32(&slot->routing_weights[i]);
		uint32		by = w >> RUV_ROUTING_SETBY_SHIFT;
		Datum		values[3];
		bool		nulls[3] = {0};

		values[0] = Int32GetDatum((int32) i);
		values[1] = Float4GetDatum((float4) ((w & RUV_ROUTING_MILLI_MASK) / 1000.0));
		values[2] = CStringGetTextDatum(by < RUV_NUM_SETBY ? ruv_setby_names[by] : "?");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ruvector._centroids_publish(collection_id, version): at commit. */
Datum
ruvector_centroids_publish(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);
	int32		version = PG_GETARG_INT32(1);

	ruv_require_segment();
	ruv_require_admin("activate centroids");
	if (version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("centroid version %d is negative", version),
				 errhint("Versions are positive; 0 means none.")));
	(void) ruv_slot_of(collection_id);
	ruv_centroid_publish_at_commit((uint32) collection_id, (uint32) version);
	PG_RETURN_VOID();
}

/* The version the segment publishes (0: none). */
Datum
ruvector_centroid_version(PG_FUNCTION_ARGS)
{
	int32		collection_id = PG_GETARG_INT32(0);

	ruv_require_segment();
	PG_RETURN_INT32((int32) pg_atomic_read_u32(&ruv_slot(ruv_slot_of(collection_id))->centroid_version));
}

/*
 * Centroids of (collection, version), loaded with SPI on a cache miss. The
 * query runs as the bootstrap superuser, because the inserting role need
 * not read ruvector.centroids; it is schema- and operator-qualified so
 * that no search_path can redirect it. Returns NULL when the version has
 * no centroids a fresh snapshot can see (rows stay unassigned: search
 * scans NULL lists anyway); that is remembered for the statement only.
 */
static RuvCentroidCache *
ruv_centroids_get(uint32 collection_id, uint32 version, int dim, const char *name)
{
	RuvCentroidCache *e = NULL;
	Oid			save_userid;
	int			save_sec;
	int			ret;
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];
	uint64		n;

	for (int i = 0; i < RUV_CENTROID_CACHE_SIZE; i++)
	{
		RuvCentroidCache *c = &ruv_ccache[i];

		if (c->version == version && c->collection_id == collection_id &&
			c->database == MyDatabaseId && c->dim == dim)
		{
			c->used = ++ruv_ccache_clock;
			return c;
		}
	}
	if (ruv_cmiss.version == version && ruv_cmiss.collection_id == collection_id &&
		ruv_cmiss.database == MyDatabaseId && ruv_cmiss.lxid == MyProc->lxid &&
		ruv_cmiss.stmt_start == GetCurrentStatementStartTimestamp())
		return NULL;
	for (int i = 0; i < RUV_CENTROID_CACHE_SIZE; i++)
		if (e == NULL || ruv_ccache[i].used < e->used)
			e = &ruv_ccache[i];

	if (ruv_ccache_cxt == NULL)
		ruv_ccache_cxt = AllocSetContextCreate(TopMemoryContext, "ruvector_healing centroids",
											   ALLOCSET_SMALL_SIZES);
	if (e->list_ids)
		pfree(e->list_ids);
	if (e->data)
		pfree(e->data);
	memset(e, 0, sizeof(*e));

	GetUserIdAndSecContext(&save_userid, &save_sec);
	/* An error here restores the user at (sub)transaction abort. */
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "ruvector_healing: SPI_connect failed");
		args[0] = Int32GetDatum((int32) collection_id);
		args[1] = Int32GetDatum((int32) version);
		ret = SPI_execute_with_args("SELECT list_id, centroid FROM ruvector.centroids "
									"WHERE collection_id OPERATOR(pg_catalog.=) $1 "
									"AND version OPERATOR(pg_catalog.=) $2 ORDER BY list_id",
									2, argtypes, args, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "ruvector_healing: could not read centroids: %d", ret);
		n = SPI_processed;
		if (n > 0)
		{
			e->list_ids = MemoryContextAlloc(ruv_ccache_cxt, sizeof(int32) * n);
			e->data = MemoryContextAlloc(ruv_ccache_cxt, sizeof(float4) * n * dim);
		}
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			HeapTuple	tup = SPI_tuptable->vals[i];
			int32		list_id = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
			ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
			int			cdim;
			float4	   *v = ruv_vector_arg(arr, "centroid", &cdim);

			if (cdim != dim)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("centroid %d of version %u of collection \"%s\" has %d dimensions, expected %d",
								list_id, version, name, cdim, dim),
						 errhint("Activate a version trained for this collection with ruvector._centroids_activate.")));
			e->list_ids[i] = list_id;
			memcpy(e->data + i * dim, v, sizeof(float4) * dim);
		}
		SPI_finish();
	}
	SetUserIdAndSecContext(save_userid, save_sec);

	if (n == 0)
	{
		ruv_cmiss.database = MyDatabaseId;
		ruv_cmiss.collection_id = collection_id;
		ruv_cmiss.version = version;
		ruv_cmiss.lxid = MyProc->lxid;
		ruv_cmiss.stmt_start = GetCurrentStatementStartTimestamp();
		return NULL;
	}
	e->database = MyDatabaseId;
	e->collection_id = collection_id;
	e->version = version;
	e->dim = dim;
	e->nlists = (int) n;
	e->used = ++ruv_ccache_clock;
	return e;
}

/* Arrays equal byte for byte (both detoasted). */
static bool
ruv_same_array(ArrayType *a, ArrayType *b)
{
	return VARSIZE(a) == VARSIZE(b) && memcmp(a, b, VARSIZE(a)) == 0;
}

/*
 * BEFORE INSERT OR UPDATE FOR EACH ROW on a collection's table, with
 * arguments (collection_id, dim, name). Checks the embedding and assigns
 * ivf_list from the active centroid version when ivf_list is NULL, or on
 * UPDATE when the embedding changed and ivf_list was not set by the update.
 */
Datum
ruvector_vector_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	TupleDesc	tupdesc;
	HeapTuple	newtup;
	HeapTuple	oldtup = NULL;
	int32		collection_id;
	int			dim;
	const char *name;
	int			att_emb;
	int			att_list;
	bool		isnull;
	bool		list_null;
	Datum		d;
	ArrayType  *arr;
	float4	   *v;
	int			ndim;
	bool		assign;
	int			slot;
	uint32		version = 0;
	RuvCentroidCache *c;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._vector_check() must be called as a trigger")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._vector_check() must fire BEFORE INSERT OR UPDATE FOR EACH ROW")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 3)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ruvector._vector_check() needs 3 arguments (collection_id, dim, name), got %d",
						trigger->tgnargs)));
	collection_id = pg_strtoint32(trigger->tgargs[0]);
	dim = pg_strtoint32(trigger->tgargs[1]);
	name = trigger->tgargs[2];
	tupdesc = trigdata->tg_relation->rd_att;
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		newtup = trigdata->tg_newtuple;
		oldtup = trigdata->tg_trigtuple;
	}
	else
		newtup = trigdata->tg_trigtuple;

	att_emb = SPI_fnumber(tupdesc, "embedding");
	att_list = SPI_fnumber(tupdesc, "ivf_list");
	if (att_emb <= 0 || att_list <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" of collection \"%s\" lacks column embedding or ivf_list",
						RelationGetRelationName(trigdata->tg_relation), name),
				 errhint("A collection table has columns id, embedding real[], shard and ivf_list.")));

	d = heap_getattr(newtup, att_emb, tupdesc, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("embedding of collection \"%s\" must not be NULL", name),
				 errhint("Insert a real[] of %d finite numbers.", dim)));
	arr = DatumGetArrayTypeP(d);
	if (ARR_NDIM(arr) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("embedding of collection \"%s\" has %d array dimensions, expected 1",
						name, ARR_NDIM(arr)),
				 errhint("Insert a flat real[] of %d numbers such as '{0.1,0.2,...}'.", dim)));
	ndim = ARR_DIMS(arr)[0];
	if (ndim != dim)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("embedding of collection \"%s\" has dimension %d, expected %d", name, ndim, dim),
				 errhint("Every vector of this collection has exactly %d elements.", dim)));
	if (ARR_HASNULL(arr))
	{
		bits8	   *bitmap = ARR_NULLBITMAP(arr);

		for (int i = 0; i < ndim; i++)
			if (!(bitmap[i / 8] & (1 << (i % 8))))
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("element %d of the embedding of collection \"%s\" is NULL", i + 1, name),
						 errhint("Every element must be a finite number.")));
	}
	v = (float4 *) ARR_DATA_PTR(arr);
	for (int i = 0; i < ndim; i++)
		if (!isfinite(v[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("element %d of the embedding of collection \"%s\" is %s", i + 1, name,
							isnan(v[i]) ? "NaN" : (v[i] > 0 ? "Infinity" : "-Infinity")),
					 errhint("Every element must be a finite number.")));

	/* A valid row takes its turn under its shard's write cap, if any. */
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ruv_shardcap_admit((uint32) collection_id, name, trigdata->tg_relation, newtup);

	(void) heap_getattr(newtup, att_list, tupdesc, &list_null);
	assign = list_null;
	if (!assign && oldtup != NULL)
	{
		bool		old_null;
		bool		oldlist_null;
		Datum		od = heap_getattr(oldtup, att_emb, tupdesc, &old_null);
		Datum		ol = heap_getattr(oldtup, att_list, tupdesc, &oldlist_null);
		Datum		nl = heap_getattr(newtup, att_list, tupdesc, &list_null);

		/* The embedding changed and the update left ivf_list as it was. */
		assign = (old_null || !ruv_same_array(DatumGetArrayTypeP(od), arr)) &&
			!oldlist_null && DatumGetInt32(ol) == DatumGetInt32(nl);
	}
	if (!assign || ruv_hdr == NULL)
		return PointerGetDatum(newtup);

	if (!ruv_centroid_pending((uint32) collection_id, &version))
	{
		slot = ruv_find_slot((uint32) collection_id);
		if (slot >= 0)
			version = pg_atomic_read_u32(&ruv_slot(slot)->centroid_version);
	}
	c = version != 0 ? ruv_centroids_get((uint32) collection_id, version, dim, name) : NULL;
	if (c == NULL)
	{
		/* No centroids: an UPDATE that changed the vector unassigns it. */
		if (!list_null)
		{
			Datum		nv = (Datum) 0;
			bool		nn = true;

			newtup = heap_modify_tuple_by_cols(newtup, tupdesc, 1, &att_list, &nv, &nn);
		}
		return PointerGetDatum(newtup);
	}
	{
		int			best = 0;
		double		best_d = ruv_l2sq(v, c->data, dim);
		Datum		nv;
		bool		nn = false;

		for (int i = 1; i < c->nlists; i++)
		{
			double		dd = ruv_l2sq(v, c->data + (Size) i * dim, dim);

			if (dd < best_d)
			{
				best_d = dd;
				best = i;
			}
		}
		nv = Int32GetDatum(c->list_ids[best]);
		newtup = heap_modify_tuple_by_cols(newtup, tupdesc, 1, &att_list, &nv, &nn);
	}
	return PointerGetDatum(newtup);
}
