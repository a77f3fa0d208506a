/*-------------------------------------------------------------------------
 *
 * gate.c
 *		The write gate: throttles INSERT and COPY FROM into collections.
 *
 * The gate runs once per statement, never per row: a BEFORE ROW trigger
 * would force COPY out of its batching. INSERTs are gated in
 * ExecutorStart (which every INSERT, INSERT ... SELECT, data-modifying
 * CTE, EXECUTE of a prepared INSERT and MERGE with an INSERT action
 * passes) and charged in ExecutorEnd with es_processed; COPY FROM is
 * gated around the utility call and charged with the rows it reports.
 *
 * Throttle p cuts a collection's admitted rate to (100 - p)% of its recent
 * unthrottled rate, with a shared token bucket in GCRA form: one atomic
 * "theoretical arrival time" per collection and op. A statement waits
 * until that time (less a small burst), then its rows push the time
 * forward by rows / rate once they are known. Each collection has its own
 * bucket, so a throttled collection never holds back another.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "ruvector_healing.h"

/* A statement whose rows the gate will charge when it ends. */
typedef struct RuvGated
{
	QueryDesc  *qd;
	int			slot;
	int			op;
	bool		throttled;
} RuvGated;

#define RUV_MAX_GATED 32
#define RUV_WINDOW_US 1000000	/* rate measurement window */
#define RUV_IDLE_WINDOW_US 5000000	/* longer windows span idle time */
#define RUV_SLEEP_SLICE_US 100000	/* re-check the throttle this often */

static RuvGated ruv_gated[RUV_MAX_GATED];
static int	ruv_ngated = 0;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Admitted rows per second × 1000 at throttle pct. */
static uint64
ruv_rate_milli(RuvShmOpState *op, uint32 pct)
{
	uint64		base = pg_atomic_read_u64(&op->baseline_milli);
	uint64		rate;

	/*
	 * With no unthrottled history there is nothing to take a percentage of;
	 * fall back to a conservative (100 - pct) rows per second.
	 */
	if (base == 0)
		base = 100 * 1000;
	rate = base * (100 - pct) / 100;
	return Max(rate, 1000);
}

static char *
ruv_us_to_text(int64 us)
{
	TimestampTz ts;

	if (us == 0)
		return pstrdup("cleared");
	ts = us - (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	return pstrdup(timestamptz_to_str(ts));
}

/*
 * Who set the throttle, for the errors below: a person (with the TTL, if
 * any) or the sidecar, and then the remediation's outcome id so the client
 * can ask ruvector_healing_explain why, and how to lift it.
 */
static void
ruv_gate_who(const char *name, int opno, uint32 setby, int64 expires_us,
			 int64 outcome_id, const char **who, const char **hint)
{
	const char *clear = psprintf("SELECT ruvector_throttle_clear(%s, '%s')",
								 quote_literal_cstr(name), ruv_op_names[opno]);

	if (setby == RUV_SETBY_MANUAL)
	{
		*who = expires_us
			? psprintf("set manually until %s", ruv_us_to_text(expires_us))
			: "set manually, with no expiry";
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
		*hint = psprintf("The sidecar lowers it when the collection recovers and the watchdog releases it "
						 "if the sidecar stops; %s lifts it now.", clear);
	}
}

pg_attribute_noreturn()
static void
ruv_gate_refuse(int slot_index, int opno, uint32 pct, uint32 setby,
				int64 expires_us, int64 need_wait_us, int64 waited_us)
{
	RuvShmOpState *op = &ruv_slot(slot_index)->ops[opno];
	int64		outcome_id = ruv_throttle_outcome(op, setby);
	uint32		collection_id;
	char		name[RUV_SHM_NAME_LEN];
	const char *who;
	const char *hint;

	pg_atomic_fetch_add_u64(&op->rejected_statements, 1);
	if (waited_us > 0)
		pg_atomic_fetch_add_u64(&op->wait_us, (uint64) waited_us);
	if (!ruv_slot_identity(slot_index, &collection_id, name))
		strlcpy(name, "?", sizeof(name));
	ruv_gate_who(name, opno, setby, expires_us, outcome_id, &who, &hint);

	if (pct >= 100)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("writes into collection \"%s\" are refused: its %s throttle is 100%%",
						name, ruv_op_names[opno]),
				 errdetail("The %s throttle of collection \"%s\" is 100%%, %s.",
						   ruv_op_names[opno], name, who),
				 errhint("%s", hint)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			 errmsg("writes into collection \"%s\" are throttled longer than ruvector.throttle_max_wait (%d ms)",
					name, ruv_throttle_max_wait_ms),
			 errdetail("The %s throttle of collection \"%s\" is %u%%, %s; this statement would wait %ld ms.",
					   ruv_op_names[opno], name, pct, who, (long) (need_wait_us / 1000)),
			 errhint("%s Otherwise retry later, write in smaller batches, or raise ruvector.throttle_max_wait for this session.",
					 hint)));
}

/*
 * Wait until the collection's bucket admits a statement. Returns whether
 * the statement was throttled, i.e. whether its rows must be charged to
 * the bucket.
 */
static bool
ruv_gate_admit(int slot_index, int opno)
{
	RuvShmOpState *op = &ruv_slot(slot_index)->ops[opno];
	uint32		pct;
	uint32		setby;
	int64		expires;
	int64		start = 0;
	bool		slept = false;
	int64		burst_us = (int64) ruv_throttle_burst_ms * 1000;
	int64		cap_us = (int64) ruv_throttle_max_wait_ms * 1000;

	ruv_throttle_read(op, &pct, &setby, &expires);
	if (pct == 0)
		return false;			/* the common case: one atomic read */

	pg_atomic_write_u32(&op->window_throttled, 1);
	start = ruv_mono_us();
	for (;;)
	{
		int64		now = ruv_mono_us();
		int64		tat = (int64) pg_atomic_read_u64(&op->tat_us);
		int64		need = tat - now - burst_us;
		long		sleep_ms;

		if (pct >= 100)
			ruv_gate_refuse(slot_index, opno, pct, setby, expires, 0, now - start);
		if (need <= 0)
			break;
		if ((now - start) + need > cap_us)
			ruv_gate_refuse(slot_index, opno, pct, setby, expires, (now - start) + need, now - start);

		sleep_ms = (long) (Min(need, RUV_SLEEP_SLICE_US) + 999) / 1000;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		slept = true;
		CHECK_FOR_INTERRUPTS();

		/* The throttle may have been lifted or changed while we slept. */
		ruv_throttle_read(op, &pct, &setby, &expires);
		if (pct == 0)
			break;
	}
	if (slept)
	{
		pg_atomic_fetch_add_u64(&op->delayed_statements, 1);
		pg_atomic_fetch_add_u64(&op->wait_us, (uint64) (ruv_mono_us() - start));
	}
	return pct > 0;
}

/*
 * Charge a finished statement's rows: to the counters, to the rate window
 * that measures the unthrottled baseline, and, if it was throttled, to the
 * bucket.
 */
static void
ruv_gate_charge(int slot_index, int opno, uint64 rows, bool throttled)
{
	RuvShmOpState *op = &ruv_slot(slot_index)->ops[opno];
	int64		now = ruv_mono_us();
	uint64		ws;

	pg_atomic_fetch_add_u64(&op->admitted_rows, rows);

	if (throttled && rows > 0)
	{
		uint32		pct;
		uint32		setby;
		uint64		old;
		int64		cost;

		ruv_throttle_read(op, &pct, &setby, NULL);
		if (pct > 0 && pct < 100)
		{
			cost = (int64) (rows * UINT64CONST(1000000000) / ruv_rate_milli(op, pct));
			old = pg_atomic_read_u64(&op->tat_us);
			while (!pg_atomic_compare_exchange_u64(&op->tat_us, &old,
												   (uint64) (Max((int64) old, now) + cost)))
				;
		}
	}

	pg_atomic_fetch_add_u64(&op->window_rows, rows);
	ws = pg_atomic_read_u64(&op->window_start_us);
	if (ws == 0)
		(void) pg_atomic_compare_exchange_u64(&op->window_start_us, &ws, (uint64) now);
	else if (now - (int64) ws >= RUV_WINDOW_US &&
			 pg_atomic_compare_exchange_u64(&op->window_start_us, &ws, (uint64) now))
	{
		/* We closed the window: only one backend gets here per window. */
		uint64		wrows = pg_atomic_exchange_u64(&op->window_rows, 0);
		bool		wthrottled = pg_atomic_exchange_u32(&op->window_throttled, 0) != 0;
		int64		elapsed = now - (int64) ws;

		if (!wthrottled && elapsed <= RUV_IDLE_WINDOW_US && wrows > 0)
		{
			uint64		rate = wrows * UINT64CONST(1000000000) / (uint64) elapsed;
			uint64		base = pg_atomic_read_u64(&op->baseline_milli);

			/*
			 * Weight 0.1 per 1-second window: a time constant of about ten
			 * seconds, long enough that a dip in the last few seconds does
			 * not become the reference a throttle takes its percentage of
			 * (bench/RESULTS.md: with 0.3 one throttle missed by 5 points).
			 */
			pg_atomic_write_u64(&op->baseline_milli,
								base == 0 ? rate : (base * 9 + rate) / 10);
		}
	}
}

static void
ruv_remember(QueryDesc *qd, int slot, int op, bool throttled)
{
	if (ruv_ngated == RUV_MAX_GATED)
	{
		/* Forget the oldest: statements that errored out never ended. */
		memmove(&ruv_gated[0], &ruv_gated[1], sizeof(RuvGated) * (RUV_MAX_GATED - 1));
		ruv_ngated--;
	}
	ruv_gated[ruv_ngated].qd = qd;
	ruv_gated[ruv_ngated].slot = slot;
	ruv_gated[ruv_ngated].op = op;
	ruv_gated[ruv_ngated].throttled = throttled;
	ruv_ngated++;
}

static void
ruv_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *ps = queryDesc->plannedstmt;

	if (ruv_hdr != NULL && !(eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		(ps->commandType == CMD_INSERT || ps->commandType == CMD_MERGE ||
		 ps->hasModifyingCTE))
	{
		ListCell   *lc;
		int			seen = -1;

		foreach(lc, ps->rtable)
		{
			RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);
			int			slot;

			if (rte->rtekind != RTE_RELATION || !(rte->requiredPerms & ACL_INSERT))
				continue;
			slot = ruv_relmap_lookup(rte->relid);
			if (slot < 0 || slot == seen)
				continue;
			{
				Plan	   *top = ps->planTree;
				double		est = top->plan_rows;
				int			op;

				if (IsA(top, ModifyTable) && outerPlan(top) != NULL)
					est = outerPlan(top)->plan_rows;
				op = est >= ruv_bulk_threshold ? RUV_OP_BULK_INSERT : RUV_OP_INSERT;
				ruv_remember(queryDesc, slot, op, ruv_gate_admit(slot, op));
				seen = slot;
			}
		}
	}

	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
ruv_ExecutorEnd(QueryDesc *queryDesc)
{
	uint64		rows = 0;
	bool		found = false;

	for (int i = ruv_ngated - 1; i >= 0; i--)
		if (ruv_gated[i].qd == queryDesc)
		{
			found = true;
			break;
		}
	if (found && queryDesc->estate != NULL)
		rows = queryDesc->estate->es_processed;

	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);

	if (!found)
		return;
	for (int i = ruv_ngated - 1; i >= 0; i--)
	{
		if (ruv_gated[i].qd != queryDesc)
			continue;
		ruv_gate_charge(ruv_gated[i].slot, ruv_gated[i].op, rows, ruv_gated[i].throttled);
		memmove(&ruv_gated[i], &ruv_gated[i + 1], sizeof(RuvGated) * (ruv_ngated - i - 1));
		ruv_ngated--;
	}
}

static void
ruv_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	int			slot = -1;
	bool		throttled = false;
	int			stale[16];
	int			nstale = ruv_lists_utility_slots(parsetree, stale, lengthof(stale));

	if (ruv_hdr != NULL && IsA(parsetree, CopyStmt))
	{
		CopyStmt   *cs = (CopyStmt *) parsetree;

		if (cs->is_from && cs->relation != NULL)
		{
			/* No lock: COPY takes its own; a stale answer only mis-gates. */
			Oid			relid = RangeVarGetRelid(cs->relation, NoLock, true);

			if (OidIsValid(relid))
				slot = ruv_relmap_lookup(relid);
			if (slot >= 0)
				throttled = ruv_gate_admit(slot, RUV_OP_BULK_INSERT);
		}
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (slot >= 0)
		ruv_gate_charge(slot, RUV_OP_BULK_INSERT, qc ? qc->nprocessed : 0, throttled);
	/* Rows came or went without row triggers: the list counts need a new baseline. */
	for (int i = 0; i < nstale; i++)
		ruv_lists_invalidate_at_commit(stale[i]);
}

static void
ruv_gate_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT)
		ruv_ngated = 0;
}

void
ruv_gate_install_hooks(void)
{
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = ruv_ExecutorStart;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = ruv_ExecutorEnd;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = ruv_ProcessUtility;
	RegisterXactCallback(ruv_gate_xact_callback, NULL);
}
