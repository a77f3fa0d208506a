/*-------------------------------------------------------------------------
 *
 * segment.c
 *		The file-backed shared segment that the Go sidecar maps.
 *
 * PostgreSQL's own shared memory is anonymous: no other process can attach
 * to it. So the postmaster creates a file in $PGDATA/pg_stat_tmp (which
 * base backups and pg_rewind skip), maps it MAP_SHARED, and every backend
 * inherits the mapping through fork. The sidecar maps the same file.
 *
 * Every (re)initialisation, crash restarts included, builds a fresh file
 * under a temporary name and renames it into place, so a sidecar still
 * mapping the old file never sees it half-reset: it notices the new inode
 * and remaps, and the generation number tells old from new.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access/xlog.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/postmaster.h"
#include "utils/timestamp.h"

#include "ruvector_healing.h"

RuvShmHeader *ruv_hdr = NULL;
static Size ruv_seg_size = 0;

int64
ruv_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64
ruv_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

RuvShmSlot *
ruv_slot(int i)
{
	Assert(ruv_hdr != NULL && i >= 0 && i < (int) ruv_hdr->slot_count);
	return (RuvShmSlot *) ((char *) ruv_hdr + ruv_hdr->header_size + (Size) i * ruv_hdr->slot_size);
}

RuvShmRelmapEntry *
ruv_relmap(int i)
{
	Assert(ruv_hdr != NULL && i >= 0 && i < (int) ruv_hdr->relmap_count);
	return (RuvShmRelmapEntry *) ((char *) ruv_hdr + ruv_hdr->relmap_offset) + i;
}

/*
 * Generation of a previous segment file, so the new one continues the
 * sequence; 0 if there is none or it is not ours.
 */
static uint64
ruv_previous_generation(const char *path)
{
	RuvShmHeader old;
	int			fd;
	uint64		gen = 0;

	fd = open(path, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
		return 0;
	if (read(fd, &old, sizeof(old)) == sizeof(old) &&
		old.magic.value == RUV_SHM_MAGIC &&
		old.version == RUV_SHM_LAYOUT_VERSION)
		gen = old.generation;
	close(fd);
	return gen;
}

void
ruv_segment_startup(void)
{
	char		path[MAXPGPATH];
	char		tmppath[MAXPGPATH];
	uint64		generation;
	Size		size;
	int			fd;
	int			rc;
	void	   *mem;
	RuvShmHeader *hdr;
	int64		start_us;

	/* The postmaster's working directory is the data directory. */
	snprintf(path, sizeof(path), "%s/%s", RUV_SHM_FILE_DIR, RUV_SHM_FILE_NAME);
	snprintf(tmppath, sizeof(tmppath), "%s.tmp", path);

	/*
	 * After a crash the postmaster calls us again with the old mapping still
	 * in place: tell a reader of the old file that it is dead, then drop it.
	 */
	if (ruv_hdr != NULL)
	{
		generation = ruv_hdr->generation + 1;
		pg_atomic_write_u64(&ruv_hdr->magic, 0);
		munmap(ruv_hdr, ruv_seg_size);
		ruv_hdr = NULL;
	}
	else
		generation = ruv_previous_generation(path) + 1;

	size = (Size) RUV_SIZEOF_SHM_HEADER +
		(Size) ruv_max_collections * RUV_SIZEOF_SHM_SLOT +
		(Size) ruv_max_relations * RUV_SIZEOF_SHM_RELMAP_ENTRY +
		(Size) ruv_max_collections * ruv_max_lists * RUV_LIST_COUNTER_SIZE;

	(void) unlink(tmppath);
	fd = open(tmppath, O_RDWR | O_CREAT | O_EXCL | PG_BINARY, pg_file_create_mode);
	if (fd < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not create ruvector_healing segment file \"%s\": %m", tmppath)));
	rc = posix_fallocate(fd, 0, size);
	if (rc != 0)
	{
		errno = rc;
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not allocate %zu bytes for ruvector_healing segment file \"%s\": %m",
						size, tmppath)));
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not map ruvector_healing segment file \"%s\": %m", tmppath)));
	close(fd);

	/* posix_fallocate on a new file gives zeroes: set only what is not 0. */
	hdr = (RuvShmHeader *) mem;
	hdr->version = RUV_SHM_LAYOUT_VERSION;
	hdr->header_size = RUV_SIZEOF_SHM_HEADER;
	hdr->slot_size = RUV_SIZEOF_SHM_SLOT;
	hdr->slot_count = ruv_max_collections;
	hdr->relmap_offset = RUV_SIZEOF_SHM_HEADER + ruv_max_collections * RUV_SIZEOF_SHM_SLOT;
	hdr->relmap_count = ruv_max_relations;
	hdr->lists_offset = hdr->relmap_offset + ruv_max_relations * RUV_SIZEOF_SHM_RELMAP_ENTRY;
	hdr->lists_per_slot = ruv_max_lists;
	hdr->system_identifier = GetSystemIdentifier();
	hdr->postmaster_pid = PostmasterPid;
	start_us = PgStartTime != 0
		? PgStartTime + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY
		: ruv_now_us();
	hdr->postmaster_start_us = start_us;
	hdr->generation = generation;
	pg_atomic_init_u32(&hdr->watchdog_pid, 0);
	pg_atomic_init_u32(&hdr->sidecar_timeout_ms, ruv_sidecar_timeout_ms);
	pg_atomic_init_u64(&hdr->watchdog_heartbeat_us, 0);
	pg_atomic_init_u32(&hdr->outage, 0);
	pg_atomic_init_u64(&hdr->sidecar_outages, 0);
	pg_atomic_init_u32(&hdr->sidecar_pid, 0);
	pg_atomic_init_u64(&hdr->sidecar_heartbeat_us, 0);
	pg_atomic_init_u64(&hdr->registry_seq, 0);
	ruv_hdr = hdr;
	ruv_seg_size = size;
	for (int i = 0; i < ruv_max_collections; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);

		pg_atomic_init_u64(&slot->seq, 0);
		pg_atomic_init_u32(&slot->in_use, 0);
		pg_atomic_init_u32(&slot->state, RUV_STATE_UNKNOWN);
	}

	/* Magic last: a reader that sees it sees everything above. */
	pg_write_barrier();
	pg_atomic_write_u64(&hdr->magic, RUV_SHM_MAGIC);

	if (rename(tmppath, path) != 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not rename ruvector_healing segment file \"%s\" to \"%s\": %m",
						tmppath, path)));

	ereport(LOG,
			(errmsg("ruvector_healing: segment %s ready (generation " UINT64_FORMAT ", %d collection slots, %d relations, %d list counters per slot, %zu bytes)",
					path, generation, ruv_max_collections, ruv_max_relations, ruv_max_lists, size)));
}

/*
 * Registry writers (slot identities and the relation map) are serialised
 * by a lock on ruvector.collections; the sequence lets readers, including
 * the sidecar, copy a consistent view without taking any lock.
 */
void
ruv_registry_write_begin(void)
{
	pg_atomic_fetch_add_u64(&ruv_hdr->registry_seq, 1);
	pg_write_barrier();
}

void
ruv_registry_write_end(void)
{
	pg_write_barrier();
	pg_atomic_fetch_add_u64(&ruv_hdr->registry_seq, 1);
}

int
ruv_find_slot(uint32 collection_id)
{
	for (int i = 0; i < (int) ruv_hdr->slot_count; i++)
	{
		RuvShmSlot *slot = ruv_slot(i);

		if (pg_atomic_read_u32(&slot->in_use) != 0 &&
			slot->collection_id == collection_id &&
			slot->database_oid == MyDatabaseId)
			return i;
	}
	return -1;
}

/*
 * Copy a slot's identity consistently. Returns false if the slot is free or
 * a writer kept the sequence busy.
 */
bool
ruv_slot_identity(int i, uint32 *collection_id, char *name)
{
	RuvShmSlot *slot = ruv_slot(i);

	for (int try = 0; try < RUV_SHM_SEQLOCK_READ_RETRIES; try++)
	{
		uint64		seq = pg_atomic_read_u64(&ruv_hdr->registry_seq);
		bool		used;

		if (seq & 1)
		{
			pg_spin_delay();
			continue;
		}
		pg_read_barrier();
		used = pg_atomic_read_u32(&slot->in_use) != 0;
		*collection_id = slot->collection_id;
		memcpy(name, slot->name, RUV_SHM_NAME_LEN);
		name[RUV_SHM_NAME_LEN - 1] = '\0';
		pg_read_barrier();
		if (pg_atomic_read_u64(&ruv_hdr->registry_seq) == seq)
			return used;
	}
	return false;
}

/*
 * The integrity seqlock has two writers, the sidecar and (when the sidecar
 * is dead) the watchdog; each takes it by compare-and-swap from even to odd.
 */
bool
ruv_integrity_try_lock(RuvShmSlot *slot, uint64 *seq)
{
	uint64		cur = pg_atomic_read_u64(&slot->seq);

	if (cur & 1)
		return false;
	if (!pg_atomic_compare_exchange_u64(&slot->seq, &cur, cur + 1))
		return false;
	*seq = cur;
	return true;
}

void
ruv_integrity_unlock(RuvShmSlot *slot, uint64 seq)
{
	pg_write_barrier();
	pg_atomic_write_u64(&slot->seq, seq + 2);
}

/*
 * Read a throttle; a manual throttle past its expiry reads as 0 even
 * before the watchdog gets round to releasing it.
 */
void
ruv_throttle_read(RuvShmOpState *op, uint32 *pct, uint32 *setby, int64 *expires_us)
{
	uint32		w = pg_atomic_read_u32(&op->throttle);
	int64		exp;

	*pct = w & RUV_THROTTLE_PCT_MASK;
	*setby = (w >> RUV_THROTTLE_SETBY_SHIFT) & RUV_THROTTLE_SETBY_MASK;
	pg_read_barrier();
	exp = (int64) pg_atomic_read_u64(&op->expires_us);
	if (expires_us)
		*expires_us = (*setby == RUV_SETBY_MANUAL) ? exp : 0;
	if (*setby == RUV_SETBY_MANUAL && exp != 0 && exp <= ruv_now_us())
		*pct = 0;
}

/*
 * The healing outcome behind a throttle word the caller has just read with
 * setby: only a sidecar throttle has one (0: set outside a remediation).
 * The sidecar writes the id before its word, so after the barrier the id
 * is at least as new as the word. Only error paths call this.
 */
int64
ruv_throttle_outcome(RuvShmOpState *op, uint32 setby)
{
	if (setby != RUV_SETBY_SIDECAR)
		return 0;
	pg_read_barrier();
	return (int64) pg_atomic_read_u64(&op->outcome_id);
}

/*
 * Swap a throttle word. A swap away from a sidecar setting (release, manual
 * override, expiry) clears the sidecar's outcome id, but only the id read
 * before the swap: a sidecar setting written since carries its own. A swap
 * to a sidecar setting (an undo restoring one) leaves the id to the caller.
 */
bool
ruv_throttle_cas(RuvShmOpState *op, uint32 oldword, uint32 setby, uint32 pct)
{
	uint32		seq = oldword >> RUV_THROTTLE_SEQ_SHIFT;
	uint32		expected = oldword;
	uint64		outcome = pg_atomic_read_u64(&op->outcome_id);

	if (pct == 0)
		setby = RUV_SETBY_NONE;
	if (!pg_atomic_compare_exchange_u32(&op->throttle, &expected,
										ruv_throttle_word((seq + 1) & 0xffff, setby, pct)))
		return false;
	pg_atomic_write_u64(&op->set_at_us, (uint64) ruv_now_us());
	if (setby != RUV_SETBY_SIDECAR && outcome != 0)
		(void) pg_atomic_compare_exchange_u64(&op->outcome_id, &outcome, 0);
	return true;
}
