/*-------------------------------------------------------------------------
 *
 * registry.c
 *		Collection slots and the relation map, kept in step with the catalog.
 *
 * ruvector.collections is the durable truth; the segment is what the write
 * gate and the sidecar read without SQL. Changes are written to the segment
 * at once (so the registering transaction is gated like any other) and
 * undone if the (sub)transaction aborts, so the segment never keeps what
 * the catalog lost.
 *
 * Backends look relations up in a private sorted copy of the relation map,
 * rebuilt only when the registry sequence moves: an INSERT into a table
 * that is not a collection costs one atomic read and a binary search.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "ruvector_healing.h"

typedef enum RuvUndoKind
{
	RUV_UNDO_ATTACH,			/* undo: free the slot and its relations */
	RUV_UNDO_DETACH,			/* undo: restore the saved slot and relations */
	RUV_UNDO_THROTTLE,			/* undo: restore the saved throttle */
	RUV_UNDO_RELMAP,			/* undo: restore the saved relation-map entries */
	RUV_UNDO_WEIGHT,			/* undo: restore one shard's routing weight */
	RUV_UNDO_ROUTING,			/* undo: restore the saved shard count and weights */
	RUV_UNDO_PUBLISH			/* at commit: publish a centroid version */
} RuvUndoKind;

typedef struct RuvUndo
{
	RuvUndoKind kind;
	SubTransactionId subxid;
	int			slot;
	int			op;
	uint32		word;			/* throttle word we wrote (RUV_UNDO_THROTTLE) */
	uint32		prev_pct;
	uint32		prev_setby;
	int64		prev_expires;
	int64		prev_outcome;	/* the sidecar's outcome id, if it set it */
	uint32		collection_id;	/* RUV_UNDO_PUBLISH */
	uint32		version;		/* RUV_UNDO_PUBLISH */
	RuvShmSlot	saved_slot;		/* RUV_UNDO_DETACH, RUV_UNDO_ROUTING */
	int			nrels;
	int		   *rel_index;
	RuvShmRelmapEntry *rels;
} RuvUndo;

static List *ruv_undo = NIL;
static bool ruv_callbacks_registered = false;

/* Backend-local copy of this database's relation map, sorted by relid. */
typedef struct RuvRelCacheEntry
{
	Oid			relid;
	int			slot;
} RuvRelCacheEntry;

static RuvRelCacheEntry *ruv_relcache = NULL;
static int	ruv_relcache_len = 0;
static uint64 ruv_relcache_seq = UINT64CONST(~0);
static uint64 ruv_relcache_gen = 0;

static void ruv_xact_callback(XactEvent event, void *arg);
static void ruv_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								 SubTransactionId parentSubid, void *arg);

static void
ruv_register_callbacks(void)
{
	if (ruv_callbacks_registered)
		return;
	RegisterXactCallback(ruv_xact_callback, NULL);
	RegisterSubXactCallback(ruv_subxact_callback, NULL);
	ruv_callbacks_registered = true;
}

static RuvUndo *
ruv_undo_push(RuvUndoKind kind, int slot)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	RuvUndo    *u = palloc0(sizeof(RuvUndo));

	u->kind = kind;
	u->slot = slot;
	u->subxid = GetCurrentSubTransactionId();
	ruv_undo = lappend(ruv_undo, u);
	MemoryContextSwitchTo(old);
	ruv_register_callbacks();
	return u;
}

static void
ruv_clear_slot_identity(RuvShmSlot *slot)
{
	pg_atomic_write_u32(&slot->in_use, 0);
	slot->collection_id = 0;
	slot->database_oid = InvalidOid;
	slot->relation_oid = InvalidOid;
	memset(slot->name, 0, sizeof(slot->name));
}

/*
 * Reset a slot's live state for a new owner: a reused slot must not carry
 * the previous collection's throttles, counters or integrity.
 */
static void
ruv_reset_slot_state(RuvShmSlot *slot)
{
	uint64		seq;

	if (ruv_integrity_try_lock(slot, &seq))
	{
		pg_atomic_write_u64(&slot->lambda_bits, 0);
		pg_atomic_write_u32(&slot->state, RUV_STATE_UNKNOWN);
		pg_atomic_write_u64(&slot->state_since_us, (uint64) ruv_now_us());
		pg_atomic_write_u64(&slot->lambda_updated_us, 0);
		ruv_integrity_unlock(slot, seq);
	}
	for (int o = 0; o < RUV_NUM_OPS; o++)
	{
		RuvShmOpState *op = &slot->ops[o];
		uint32		w = pg_atomic_read_u32(&op->throttle);

		pg_atomic_write_u32(&op->throttle,
							ruv_throttle_word(((w >> RUV_THROTTLE_SEQ_SHIFT) + 1) & 0xffff,
											  RUV_SETBY_NONE, 0));
		pg_atomic_write_u64(&op->expires_us, 0);
		pg_atomic_write_u64(&op->outcome_id, 0);
		pg_atomic_write_u64(&op->set_at_us, 0);
		pg_atomic_write_u64(&op->tat_us, 0);
		pg_atomic_write_u64(&op->baseline_milli, 0);
		pg_atomic_write_u64(&op->window_start_us, 0);
		pg_atomic_write_u64(&op->window_rows, 0);
		pg_atomic_write_u32(&op->window_throttled, 0);
		pg_atomic_write_u64(&op->admitted_rows, 0);
		pg_atomic_write_u64(&op->delayed_statements, 0);
		pg_atomic_write_u64(&op->wait_us, 0);
		pg_atomic_write_u64(&op->rejected_statements, 0);
	}
	pg_atomic_write_u32(&slot->routing_shards, 0);
	for (int i = 0; i < RUV_MAX_SHARDS; i++)
		pg_atomic_write_u32(&slot->routing_weights[i], 0);
	pg_atomic_write_u32(&slot->centroid_version, 0);
	pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
	ruv_lists_reset((int) (((char *) slot - (char *) ruv_slot(0)) / ruv_hdr->slot_size));
}

static bool
ruv_oid_in(Oid relid, Oid *relids, int n)
{
	for (int i = 0; i < n; i++)
		if (relids[i] == relid)
			return true;
	return false;
}

/*
 * Make the relation map of an attached slot exactly relids: partitions
 * attached since registration are added, detached ones removed. The
 * entries changed are saved so an abort restores them.
 */
static void
ruv_relmap_sync(int slot_index, const char *name, Oid *relids, int nrelids)
{
	uint32		mine = (uint32) slot_index + 1;
	int			nfree = 0;
	int			nmissing = 0;
	int			nchanged = 0;
	int		   *idx;
	RuvShmRelmapEntry *saved;
	RuvUndo    *u;
	MemoryContext old;

	for (int i = 0; i < nrelids; i++)
	{
		bool		mapped = false;

		for (int j = 0; j < (int) ruv_hdr->relmap_count && !mapped; j++)
		{
			RuvShmRelmapEntry *e = ruv_relmap(j);

			mapped = e->slot_plus_one == mine && e->relation_oid == relids[i];
		}
		if (!mapped)
			nmissing++;
	}
	for (int j = 0; j < (int) ruv_hdr->relmap_count; j++)
		if (ruv_relmap(j)->slot_plus_one == 0)
			nfree++;
	if (nfree < nmissing)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no room in the relation map for %d more relations of \"%s\"", nmissing, name),
				 errhint("Raise ruvector.max_relations (now %d) and restart the server.", ruv_max_relations)));

	old = MemoryContextSwitchTo(TopTransactionContext);
	idx = palloc(sizeof(int) * (ruv_hdr->relmap_count));
	saved = palloc(sizeof(RuvShmRelmapEntry) * (ruv_hdr->relmap_count));
	MemoryContextSwitchTo(old);

	ruv_registry_write_begin();
	/* Drop relations that left the collection (a detached partition). */
	for (int j = 0; j < (int) ruv_hdr->relmap_count; j++)
	{
		RuvShmRelmapEntry *e = ruv_relmap(j);

		if (e->slot_plus_one == mine && !ruv_oid_in(e->relation_oid, relids, nrelids))
		{
			idx[nchanged] = j;
			saved[nchanged++] = *e;
			memset(e, 0, sizeof(*e));
		}
	}
	/* Add the ones that joined it (a partition attached or created). */
	for (int i = 0; i < nrelids; i++)
	{
		bool		mapped = false;
		int			free_j = -1;

		for (int j = 0; j < (int) ruv_hdr->relmap_count && !mapped; j++)
		{
			RuvShmRelmapEntry *e = ruv_relmap(j);

			mapped = e->slot_plus_one == mine && e->relation_oid == relids[i];
			if (free_j < 0 && e->slot_plus_one == 0)
				free_j = j;
		}
		if (mapped || free_j < 0)
			continue;
		idx[nchanged] = free_j;
		saved[nchanged++] = *ruv_relmap(free_j);
		ruv_relmap(free_j)->database_oid = MyDatabaseId;
		ruv_relmap(free_j)->relation_oid = relids[i];
		ruv_relmap(free_j)->slot_plus_one = mine;
	}
	ruv_registry_write_end();

	if (nchanged == 0)
		return;
	u = ruv_undo_push(RUV_UNDO_RELMAP, slot_index);
	u->nrels = nchanged;
	u->rel_index = idx;
	u->rels = saved;
}

/*
 * Give collection_id a slot and map its relations to it. Returns the slot.
 * For a collection already attached it brings the relation map in line
 * with relids instead, which makes the watchdog's reload after a restart
 * idempotent and lets ruvector_collection_refresh follow partitions.
 */
int
ruv_registry_attach(uint32 collection_id, const char *name, Oid *relids, int nrelids)
{
	int			slot_index = ruv_find_slot(collection_id);
	int		   *free_rel;
	int			nfree = 0;
	RuvShmSlot *slot;
	RuvUndo    *u;

	if (slot_index >= 0)
	{
		ruv_relmap_sync(slot_index, name, relids, nrelids);
		return slot_index;
	}
	if (strlen(name) >= RUV_SHM_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("collection name \"%s\" is too long", name),
				 errhint("A collection name has at most %d bytes.", (int) RUV_SHM_NAME_LEN - 1)));

	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
		if (pg_atomic_read_u32(&ruv_slot(i)->in_use) == 0)
		{
			slot_index = i;
			break;
		}
	if (slot_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free collection slot for \"%s\": all %d are in use", name, ruv_max_collections),
				 errhint("Raise ruvector.max_collections and restart the server, or unregister an unused collection.")));

	free_rel = palloc(sizeof(int) * Max(nrelids, 1));
	for (int i = 0; i < (int) ruv_hdr->relmap_count && nfree < nrelids; i++)
		if (ruv_relmap(i)->slot_plus_one == 0)
			free_rel[nfree++] = i;
	if (nfree < nrelids)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no room in the relation map for the %d relations of \"%s\"", nrelids, name),
				 errhint("Raise ruvector.max_relations (now %d) and restart the server.", ruv_max_relations)));

	u = ruv_undo_push(RUV_UNDO_ATTACH, slot_index);
	slot = ruv_slot(slot_index);
	ruv_registry_write_begin();
	ruv_reset_slot_state(slot);
	slot->collection_id = collection_id;
	slot->database_oid = MyDatabaseId;
	slot->relation_oid = nrelids > 0 ? relids[0] : InvalidOid;
	strlcpy(slot->name, name, sizeof(slot->name));
	pg_atomic_write_u32(&slot->in_use, 1);
	for (int i = 0; i < nrelids; i++)
	{
		RuvShmRelmapEntry *e = ruv_relmap(free_rel[i]);

		e->database_oid = MyDatabaseId;
		e->relation_oid = relids[i];
		e->slot_plus_one = slot_index + 1;
	}
	ruv_registry_write_end();
	(void) u;
	pfree(free_rel);
	return slot_index;
}

static void
ruv_detach_slot(int slot_index)
{
	RuvShmSlot *slot = ruv_slot(slot_index);

	ruv_registry_write_begin();
	for (int i = 0; i < (int) ruv_hdr->relmap_count; i++)
	{
		RuvShmRelmapEntry *e = ruv_relmap(i);

		if (e->slot_plus_one == (uint32) slot_index + 1)
			memset(e, 0, sizeof(*e));
	}
	ruv_reset_slot_state(slot);
	ruv_clear_slot_identity(slot);
	ruv_registry_write_end();
}

void
ruv_registry_detach(uint32 collection_id)
{
	int			slot_index = ruv_find_slot(collection_id);
	RuvUndo    *u;
	MemoryContext old;
	int			n = 0;

	if (slot_index < 0)
		return;
	u = ruv_undo_push(RUV_UNDO_DETACH, slot_index);
	old = MemoryContextSwitchTo(TopTransactionContext);
	memcpy(&u->saved_slot, ruv_slot(slot_index), sizeof(RuvShmSlot));
	for (int i = 0; i < (int) ruv_hdr->relmap_count; i++)
		if (ruv_relmap(i)->slot_plus_one == (uint32) slot_index + 1)
			n++;
	u->nrels = n;
	u->rel_index = palloc(sizeof(int) * Max(n, 1));
	u->rels = palloc(sizeof(RuvShmRelmapEntry) * Max(n, 1));
	n = 0;
	for (int i = 0; i < (int) ruv_hdr->relmap_count; i++)
		if (ruv_relmap(i)->slot_plus_one == (uint32) slot_index + 1)
		{
			u->rel_index[n] = i;
			u->rels[n++] = *ruv_relmap(i);
		}
	MemoryContextSwitchTo(old);
	ruv_detach_slot(slot_index);
}

/*
 * Set a throttle by hand (or clear it with pct 0). The word is
 * compare-and-swapped so a concurrent sidecar write is never lost half-way;
 * the expiry is written first because readers trust it only once the word
 * says "manual".
 */
void
ruv_throttle_apply(int slot_index, int opno, uint32 pct, int64 expires_us, bool transactional)
{
	RuvShmOpState *op = &ruv_slot(slot_index)->ops[opno];

	for (;;)
	{
		uint32		w = pg_atomic_read_u32(&op->throttle);
		int64		prev_exp = (int64) pg_atomic_read_u64(&op->expires_us);
		int64		prev_outcome = (int64) pg_atomic_read_u64(&op->outcome_id);

		pg_atomic_write_u64(&op->expires_us, (uint64) expires_us);
		pg_write_barrier();
		if (ruv_throttle_cas(op, w, RUV_SETBY_MANUAL, pct))
		{
			if (transactional)
			{
				RuvUndo    *u = ruv_undo_push(RUV_UNDO_THROTTLE, slot_index);

				u->op = opno;
				u->word = pg_atomic_read_u32(&op->throttle);
				u->prev_pct = w & RUV_THROTTLE_PCT_MASK;
				u->prev_setby = (w >> RUV_THROTTLE_SETBY_SHIFT) & RUV_THROTTLE_SETBY_MASK;
				u->prev_expires = prev_exp;
				u->prev_outcome = prev_outcome;
			}
			return;
		}
	}
}

/*
 * Set one shard's routing weight (setby<<shift | milli). The word is
 * compare-and-swapped so the watchdog releasing a sidecar weight at the same
 * moment is never lost half-way; transactional changes are undone on abort
 * unless someone changed the weight since.
 */
void
ruv_routing_apply(int slot_index, int shard, uint32 word, bool transactional)
{
	RuvShmSlot *slot = ruv_slot(slot_index);
	uint32		prev;

	Assert(shard >= 0 && shard < RUV_MAX_SHARDS);
	prev = pg_atomic_exchange_u32(&slot->routing_weights[shard], word);
	pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
	if (transactional)
	{
		RuvUndo    *u = ruv_undo_push(RUV_UNDO_WEIGHT, slot_index);

		u->op = shard;
		u->word = word;
		u->prev_pct = prev;
	}
}

/*
 * Give a slot nshards shards: shards it did not have get the default
 * weight, shards it keeps keep theirs, shards beyond nshards get none.
 */
void
ruv_routing_init(int slot_index, int nshards, bool transactional)
{
	RuvShmSlot *slot = ruv_slot(slot_index);

	Assert(nshards >= 0 && nshards <= RUV_MAX_SHARDS);
	if (transactional)
	{
		RuvUndo    *u = ruv_undo_push(RUV_UNDO_ROUTING, slot_index);

		u->saved_slot.routing_shards.value = pg_atomic_read_u32(&slot->routing_shards);
		for (int i = 0; i < RUV_MAX_SHARDS; i++)
			u->saved_slot.routing_weights[i].value = pg_atomic_read_u32(&slot->routing_weights[i]);
	}
	for (int i = 0; i < RUV_MAX_SHARDS; i++)
	{
		if (i >= nshards)
			pg_atomic_write_u32(&slot->routing_weights[i], 0);
		else if (i >= (int) pg_atomic_read_u32(&slot->routing_shards))
			pg_atomic_write_u32(&slot->routing_weights[i],
								ruv_weight_word(RUV_SETBY_NONE, RUV_ROUTING_DEFAULT_MILLI));
	}
	pg_atomic_write_u32(&slot->routing_shards, (uint32) nshards);
	pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
}

/*
 * Publish a centroid version when the transaction commits: backends of
 * other sessions must not assign lists from centroids they cannot see yet.
 * Until then ruv_centroid_pending gives the version to this backend.
 */
void
ruv_centroid_publish_at_commit(uint32 collection_id, uint32 version)
{
	RuvUndo    *u = ruv_undo_push(RUV_UNDO_PUBLISH, -1);

	u->collection_id = collection_id;
	u->version = version;
}

bool
ruv_centroid_pending(uint32 collection_id, uint32 *version)
{
	/* The newest wins. */
	for (int i = list_length(ruv_undo) - 1; i >= 0; i--)
	{
		RuvUndo    *u = (RuvUndo *) list_nth(ruv_undo, i);

		if (u->kind == RUV_UNDO_PUBLISH && u->collection_id == collection_id)
		{
			*version = u->version;
			return true;
		}
	}
	return false;
}

static void
ruv_publish_committed(void)
{
	ListCell   *lc;

	foreach(lc, ruv_undo)
	{
		RuvUndo    *u = (RuvUndo *) lfirst(lc);
		int			slot;

		if (u->kind != RUV_UNDO_PUBLISH)
			continue;
		slot = ruv_find_slot(u->collection_id);
		if (slot >= 0)
			pg_atomic_write_u32(&ruv_slot(slot)->centroid_version, u->version);
	}
}

static void
ruv_undo_one(RuvUndo *u)
{
	switch (u->kind)
	{
		case RUV_UNDO_ATTACH:
			ruv_detach_slot(u->slot);
			break;
		case RUV_UNDO_DETACH:
			{
				RuvShmSlot *slot = ruv_slot(u->slot);

				ruv_registry_write_begin();
				slot->collection_id = u->saved_slot.collection_id;
				slot->database_oid = u->saved_slot.database_oid;
				slot->relation_oid = u->saved_slot.relation_oid;
				memcpy(slot->name, u->saved_slot.name, sizeof(slot->name));
				for (int o = 0; o < RUV_NUM_OPS; o++)
				{
					pg_atomic_write_u64(&slot->ops[o].expires_us,
										u->saved_slot.ops[o].expires_us.value);
					pg_atomic_write_u64(&slot->ops[o].outcome_id,
										u->saved_slot.ops[o].outcome_id.value);
					pg_atomic_write_u32(&slot->ops[o].throttle,
										u->saved_slot.ops[o].throttle.value);
				}
				pg_atomic_write_u32(&slot->routing_shards,
									u->saved_slot.routing_shards.value);
				for (int i = 0; i < RUV_MAX_SHARDS; i++)
					pg_atomic_write_u32(&slot->routing_weights[i],
										u->saved_slot.routing_weights[i].value);
				pg_atomic_write_u32(&slot->centroid_version,
									u->saved_slot.centroid_version.value);
				pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
				pg_atomic_write_u32(&slot->in_use, 1);
				for (int i = 0; i < u->nrels; i++)
					*ruv_relmap(u->rel_index[i]) = u->rels[i];
				ruv_registry_write_end();
			}
			break;
		case RUV_UNDO_RELMAP:
			ruv_registry_write_begin();
			for (int i = u->nrels - 1; i >= 0; i--)
				*ruv_relmap(u->rel_index[i]) = u->rels[i];
			ruv_registry_write_end();
			break;
		case RUV_UNDO_WEIGHT:
			{
				RuvShmSlot *slot = ruv_slot(u->slot);
				uint32		expected = u->word;

				/* Only if nobody changed it since, as for throttles. */
				if (pg_atomic_compare_exchange_u32(&slot->routing_weights[u->op], &expected,
												   u->prev_pct))
					pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
			}
			break;
		case RUV_UNDO_ROUTING:
			{
				RuvShmSlot *slot = ruv_slot(u->slot);

				pg_atomic_write_u32(&slot->routing_shards, u->saved_slot.routing_shards.value);
				for (int i = 0; i < RUV_MAX_SHARDS; i++)
					pg_atomic_write_u32(&slot->routing_weights[i],
										u->saved_slot.routing_weights[i].value);
				pg_atomic_fetch_add_u32(&slot->routing_seq, 1);
			}
			break;
		case RUV_UNDO_PUBLISH:
			break;				/* never happened: it waits for commit */
		case RUV_UNDO_THROTTLE:
			{
				RuvShmOpState *op = &ruv_slot(u->slot)->ops[u->op];

				/* Only if nobody changed it since: never clobber a newer setting. */
				pg_atomic_write_u64(&op->expires_us, (uint64) u->prev_expires);
				/* A sidecar throttle comes back with its remediation's id. */
				if (u->prev_setby == RUV_SETBY_SIDECAR &&
					(pg_atomic_read_u32(&op->throttle) == u->word))
					pg_atomic_write_u64(&op->outcome_id, (uint64) u->prev_outcome);
				pg_write_barrier();
				(void) ruv_throttle_cas(op, u->word, u->prev_setby, u->prev_pct);
			}
			break;
	}
}

static void
ruv_undo_run(SubTransactionId subxid, bool all)
{
	ListCell   *lc;
	List	   *keep = NIL;

	/* Newest first, like any undo log. */
	for (int i = list_length(ruv_undo) - 1; i >= 0; i--)
	{
		RuvUndo    *u = (RuvUndo *) list_nth(ruv_undo, i);

		if (all || u->subxid == subxid)
			ruv_undo_one(u);
	}
	if (!all)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		foreach(lc, ruv_undo)
		{
			RuvUndo    *u = (RuvUndo *) lfirst(lc);

			if (u->subxid != subxid)
				keep = lappend(keep, u);
		}
		MemoryContextSwitchTo(old);
	}
	ruv_undo = keep;
}

static void
ruv_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (ruv_undo != NIL)
				ruv_undo_run(InvalidSubTransactionId, true);
			ruv_undo = NIL;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (ruv_undo != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed ruvector_healing's registry or throttles"),
						 errhint("Register collections and set throttles outside two-phase transactions.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			ruv_publish_committed();
			ruv_undo = NIL;		/* the list lived in TopTransactionContext */
			break;
		case XACT_EVENT_PREPARE:
			ruv_undo = NIL;
			break;
		default:
			break;
	}
}

static void
ruv_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (ruv_undo == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ruv_undo_run(mySubid, false);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		/* A committed subtransaction's changes now belong to its parent. */
		foreach(lc, ruv_undo)
		{
			RuvUndo    *u = (RuvUndo *) lfirst(lc);

			if (u->subxid == mySubid)
				u->subxid = parentSubid;
		}
	}
}

static int
ruv_relcache_cmp(const void *a, const void *b)
{
	Oid			x = ((const RuvRelCacheEntry *) a)->relid;
	Oid			y = ((const RuvRelCacheEntry *) b)->relid;

	return (x > y) - (x < y);
}

static bool
ruv_relcache_rebuild(uint64 seq)
{
	int			n = 0;

	if (ruv_relcache == NULL)
		ruv_relcache = MemoryContextAlloc(TopMemoryContext,
										  sizeof(RuvRelCacheEntry) * ruv_hdr->relmap_count);
	pg_read_barrier();
	for (int i = 0; i < (int) ruv_hdr->relmap_count; i++)
	{
		RuvShmRelmapEntry *e = ruv_relmap(i);

		if (e->slot_plus_one != 0 && e->database_oid == MyDatabaseId)
		{
			ruv_relcache[n].relid = e->relation_oid;
			ruv_relcache[n].slot = (int) e->slot_plus_one - 1;
			n++;
		}
	}
	pg_read_barrier();
	if (pg_atomic_read_u64(&ruv_hdr->registry_seq) != seq)
		return false;
	qsort(ruv_relcache, n, sizeof(RuvRelCacheEntry), ruv_relcache_cmp);
	ruv_relcache_len = n;
	return true;
}

/* Slot of a relation, or -1 when it belongs to no collection. */
int
ruv_relmap_lookup(Oid relid)
{
	uint64		seq = pg_atomic_read_u64(&ruv_hdr->registry_seq);
	RuvRelCacheEntry key;
	RuvRelCacheEntry *hit;

	if (seq != ruv_relcache_seq || ruv_hdr->generation != ruv_relcache_gen)
	{
		bool		ok = false;

		for (int try = 0; try < RUV_SHM_SEQLOCK_READ_RETRIES && !ok; try++)
		{
			seq = pg_atomic_read_u64(&ruv_hdr->registry_seq);
			if (seq & 1)
			{
				pg_spin_delay();
				continue;
			}
			ok = ruv_relcache_rebuild(seq);
		}
		if (!ok)
			return -1;			/* a registry writer is busy: let this one pass */
		ruv_relcache_seq = seq;
		ruv_relcache_gen = ruv_hdr->generation;
	}
	if (ruv_relcache_len == 0)
		return -1;
	key.relid = relid;
	hit = bsearch(&key, ruv_relcache, ruv_relcache_len, sizeof(RuvRelCacheEntry), ruv_relcache_cmp);
	return hit ? hit->slot : -1;
}
