/*-------------------------------------------------------------------------
 *
 * ruvector_healing.h
 *		Declarations shared by the files of the ruvector_healing extension.
 *
 * The extension is deliberately thin: it owns the shared segment that the
 * Go sidecar maps, gates writes into registered collections by the
 * throttles in it, and watches the sidecar's heartbeat.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RUVECTOR_HEALING_H
#define RUVECTOR_HEALING_H

#include "access/htup.h"
#include "nodes/nodes.h"
#include "utils/relcache.h"

#include "ruvector_shm_layout.h"

/* GUCs (ruvector_healing.c) */
extern int	ruv_max_collections;
extern int	ruv_max_relations;
extern int	ruv_max_lists;
extern int	ruv_sidecar_timeout_ms;
extern int	ruv_throttle_max_wait_ms;
extern int	ruv_throttle_burst_ms;
extern bool ruv_shard_cap_exempt;
extern int	ruv_bulk_threshold;
extern int	ruv_watchdog_naptime_ms;
extern char *ruv_database;

/* segment.c: the mapped segment, valid in the postmaster and every child */
extern RuvShmHeader *ruv_hdr;

extern void ruv_segment_startup(void);
extern RuvShmSlot *ruv_slot(int i);
extern RuvShmRelmapEntry *ruv_relmap(int i);
extern int64 ruv_now_us(void);		/* wall clock, shared with Go */
extern int64 ruv_mono_us(void);		/* monotonic, C-only intervals */
extern void ruv_registry_write_begin(void);
extern void ruv_registry_write_end(void);
extern bool ruv_slot_identity(int slot, uint32 *collection_id, char *name);
extern int	ruv_find_slot(uint32 collection_id);
extern bool ruv_integrity_try_lock(RuvShmSlot *slot, uint64 *seq);
extern void ruv_integrity_unlock(RuvShmSlot *slot, uint64 seq);
extern void ruv_throttle_read(RuvShmOpState *op, uint32 *pct, uint32 *setby, int64 *expires_us);
extern bool ruv_throttle_cas(RuvShmOpState *op, uint32 oldword, uint32 setby, uint32 pct);
extern int64 ruv_throttle_outcome(RuvShmOpState *op, uint32 setby);

static inline uint32
ruv_throttle_word(uint32 seq, uint32 setby, uint32 pct)
{
	return (seq << RUV_THROTTLE_SEQ_SHIFT) |
		(setby << RUV_THROTTLE_SETBY_SHIFT) |
		(pct & RUV_THROTTLE_PCT_MASK);
}

static inline uint32
ruv_weight_word(uint32 setby, uint32 milli)
{
	return (setby << RUV_ROUTING_SETBY_SHIFT) | (milli & RUV_ROUTING_MILLI_MASK);
}

/* registry.c: slot and relation-map changes, undone on abort */
extern int	ruv_registry_attach(uint32 collection_id, const char *name, Oid *relids, int nrelids);
extern void ruv_registry_detach(uint32 collection_id);
extern void ruv_throttle_apply(int slot, int op, uint32 pct, int64 expires_us, bool transactional);
extern int	ruv_relmap_lookup(Oid relid);
extern void ruv_routing_apply(int slot, int shard, uint32 word, bool transactional);
extern void ruv_routing_init(int slot, int nshards, bool transactional);
extern void ruv_centroid_publish_at_commit(uint32 collection_id, uint32 version);
extern bool ruv_centroid_pending(uint32 collection_id, uint32 *version);

/* listcounts.c: exact per-IVF-list row counters */
extern void ruv_lists_reset(int slot);
extern void ruv_lists_invalidate(int slot);
extern void ruv_lists_invalidate_at_commit(int slot);
extern int	ruv_lists_utility_slots(Node *parsetree, int *slots, int max);

/* shardcap.c: per-shard write caps, enforced by the vector row trigger */
extern void ruv_shardcap_admit(uint32 collection_id, const char *name, Relation rel, HeapTuple tup);
extern void ruv_shardcap_apply(int slot, int shard, uint32 word, bool transactional);
extern int	ruv_shardcap_release_sidecar(void);

/* sqlfuncs.c: checks every SQL-callable segment writer makes */
extern void ruv_require_segment(void);
extern void ruv_require_admin(const char *action);

/* gate.c */
extern void ruv_gate_install_hooks(void);

/* watchdog.c */
extern void ruv_watchdog_register(void);
extern PGDLLEXPORT void ruv_watchdog_main(Datum main_arg);

#endif							/* RUVECTOR_HEALING_H */
