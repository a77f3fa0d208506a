package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// runStatus prints, for a person at a terminal, what the segment says of
// each collection (state, λ, throttles, gate counters) and the sidecar's
// liveness; --watch refreshes it.
func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var sf serverFlags
	sf.register(fs)
	watch := fs.Bool("watch", false, "refresh until interrupted")
	every := fs.Duration("interval", 2*time.Second, "refresh period with --watch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *every <= 0 {
		return fmt.Errorf("--interval %v must be positive", *every)
	}
	conn, srv, seg, err := sf.attach(ctx)
	if err != nil {
		return err
	}
	defer seg.Close()
	defer conn.Close(context.Background())
	for {
		if _, err := seg.Refresh(); err != nil {
			return err
		}
		if *watch {
			fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal
		}
		if err := printStatus(ctx, stdout, conn, srv, seg, time.Now()); err != nil {
			return err
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

func printStatus(ctx context.Context, w io.Writer, conn *pgx.Conn, srv instance.Server, seg *shmproto.Segment, now time.Time) error {
	info, err := seg.Info()
	if err != nil {
		return err
	}
	alive := !info.SidecarBeat.IsZero() && now.Sub(info.SidecarBeat) <= info.SidecarTimeout
	fmt.Fprintf(w, "segment %s  generation %d  database %s\n", info.Path, info.Generation, srv.Database)
	fmt.Fprintf(w, "sidecar pid %d  heartbeat %s  alive %v  outages %d  watchdog pid %d\n\n",
		info.SidecarPID, heartbeatAge(info.SidecarBeat, now), alive, info.SidecarOutages, info.WatchdogPID)

	cols, err := seg.Collections()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLLECTION\tSTATE\tLAMBDA\tSINCE\tINSERT\tBULK_INSERT\tADMITTED\tDELAYED\tREJECTED")
	n := 0
	for _, c := range cols {
		if c.DatabaseOID != srv.DatabaseOID {
			continue
		}
		n++
		in, err := seg.ReadIntegrity(c.Slot)
		state, lambda, since := "unknown", "-", "-"
		if err == nil {
			if alive {
				state = shmproto.StateNames[in.State]
			}
			if !in.Updated.IsZero() {
				lambda = fmt.Sprintf("%.3f", in.Lambda)
			}
			if !in.Since.IsZero() {
				since = now.Sub(in.Since).Round(time.Second).String()
			}
		}
		var throttles [shmproto.NumOps]string
		var admitted, delayed, rejected uint64
		for op := shmproto.Op(0); op < shmproto.NumOps; op++ {
			th, err := seg.ReadThrottle(c.Slot, op)
			if err != nil {
				return err
			}
			throttles[op] = throttleText(th, now)
			ct, err := seg.ReadCounters(c.Slot, op)
			if err != nil {
				return err
			}
			admitted += ct.AdmittedRows
			delayed += ct.DelayedStatements
			rejected += ct.RejectedStatements
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", c.Name, state, lambda, since,
			throttles[shmproto.OpInsert], throttles[shmproto.OpBulkInsert], admitted, delayed, rejected)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(w, "(no collections registered in this database)")
	}
	if err := printRemediations(ctx, w, conn, now); err != nil {
		return err
	}
	return printRecentEvents(ctx, w, conn)
}

// missingCatalog reports an error that only says the extension (or a
// newer part of it) is not created in this database.
func missingCatalog(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000" || pe.Code == "42703")
}

// printRemediations shows what the healer is doing and did: active and
// pending remediations, routing weights it or a person changed, and the
// last outcomes with their verdict.
func printRemediations(ctx context.Context, w io.Writer, conn *pgx.Conn, now time.Time) error {
	type outcome struct {
		id                    int64
		name, strategy, class string
		state                 string
		started               time.Time
		completed             *time.Time
		success, rolledBack   bool
		verified              *bool
		initial               float32
		final                 *float32
		errMsg                string
	}
	rows, err := conn.Query(ctx, `SELECT o.id, coalesce(c.name, '#' || o.collection_id), o.strategy_name, o.problem_class,
			o.state, o.started_at, o.completed_at, o.success, o.rolled_back, o.verified, o.initial_lambda,
			o.final_lambda, coalesce(o.error_message, '')
		FROM ruvector.healing_outcomes o LEFT JOIN ruvector.collections c USING (collection_id)
		WHERE o.state <> 'done' OR o.id IN (SELECT id FROM ruvector.healing_outcomes WHERE state = 'done' ORDER BY id DESC LIMIT 5)
		ORDER BY o.id DESC LIMIT 20`)
	if missingCatalog(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remediations: %w", err)
	}
	outs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outcome, error) {
		var o outcome
		err := r.Scan(&o.id, &o.name, &o.strategy, &o.class, &o.state, &o.started, &o.completed, &o.success,
			&o.rolledBack, &o.verified, &o.initial, &o.final, &o.errMsg)
		return o, err
	})
	if err != nil {
		return fmt.Errorf("remediations: %w", err)
	}
	var active, done []outcome
	for _, o := range outs {
		if o.state == "done" {
			done = append(done, o)
		} else {
			active = append(active, o)
		}
	}
	fmt.Fprintln(w, "\nactive remediations:")
	if len(active) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, o := range active {
		fmt.Fprintf(w, "  #%d  %-12s %-22s %-24s %s for %s  (λ %.3f at start)\n", o.id, o.name, o.strategy, o.class,
			o.state, now.Sub(o.started).Round(time.Second), o.initial)
	}
	if err := printRouting(ctx, w, conn); err != nil {
		return err
	}
	if len(done) > 0 {
		fmt.Fprintln(w, "\nlast outcomes:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tCOLLECTION\tSTRATEGY\tPROBLEM\tRESULT\tLAMBDA\tTOOK\tENDED")
		for _, o := range done {
			lam := fmt.Sprintf("%.3f", o.initial)
			if o.final != nil {
				lam += fmt.Sprintf(" -> %.3f", *o.final)
			}
			took, ended := "-", "-"
			if o.completed != nil {
				took = o.completed.Sub(o.started).Round(100 * time.Millisecond).String()
				ended = now.Sub(*o.completed).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(tw, "  #%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.id, o.name, o.strategy, o.class,
				verdict(o.success, o.verified, o.rolledBack, o.errMsg), lam, took, ended)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// verdict says in a word or two how a finished remediation ended.
func verdict(success bool, verified *bool, rolledBack bool, errMsg string) string {
	switch {
	case verified != nil && *verified:
		return "verified"
	case rolledBack && errMsg != "":
		return "failed, rolled back"
	case rolledBack:
		return "unverified, rolled back"
	case errMsg != "" || !success:
		return "failed"
	}
	return "done"
}

// printRouting lists shards whose routing weight differs from the default.
func printRouting(ctx context.Context, w io.Writer, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT c.name, r.shard, r.weight, r.set_by, coalesce(r.outcome_id, 0)
		FROM ruvector.routing_weights r JOIN ruvector.collections c USING (collection_id)
		WHERE r.weight <> 1 ORDER BY c.name, r.shard`)
	if missingCatalog(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("routing weights: %w", err)
	}
	defer rows.Close()
	first := true
	for rows.Next() {
		var name, by string
		var shard int32
		var weight float32
		var outcome int64
		if err := rows.Scan(&name, &shard, &weight, &by, &outcome); err != nil {
			return fmt.Errorf("routing weights: %w", err)
		}
		if first {
			fmt.Fprintln(w, "\nrouting weights changed:")
			first = false
		}
		line := fmt.Sprintf("  %-12s shard %-3d weight %g  set by %s", name, shard, weight, by)
		if outcome != 0 {
			line += fmt.Sprintf(" (outcome #%d)", outcome)
		}
		fmt.Fprintln(w, line)
	}
	return rows.Err()
}

func throttleText(th shmproto.Throttle, now time.Time) string {
	if th.Pct == 0 || (th.SetBy == shmproto.SetByManual && !th.Expires.IsZero() && !th.Expires.After(now)) {
		return "-"
	}
	s := fmt.Sprintf("%d%% %s", th.Pct, shmproto.SetByNames[th.SetBy])
	if th.SetBy == shmproto.SetByManual && !th.Expires.IsZero() {
		s += " for " + th.Expires.Sub(now).Round(time.Second).String()
	}
	return s
}

// printRecentEvents lists the last integrity transitions; a database
// without the extension simply has none.
func printRecentEvents(ctx context.Context, w io.Writer, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT c.name, e.created_at, coalesce(e.previous_state, ''), coalesce(e.new_state, ''),
			e.event_type, coalesce(e.metadata->>'reason', '')
		FROM ruvector.integrity_events e JOIN ruvector.collections c USING (collection_id)
		ORDER BY e.id DESC LIMIT 5`)
	if missingCatalog(err) {
		return nil // undefined table or schema: the extension is not created here
	}
	if err != nil {
		return fmt.Errorf("recent events: %w", err)
	}
	type event struct {
		name, from, to, kind, reason string
		at                           time.Time
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
		var e event
		err := r.Scan(&e.name, &e.at, &e.from, &e.to, &e.kind, &e.reason)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("recent events: %w", err)
	}
	if len(evs) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nrecent integrity events:")
	for _, e := range evs {
		fmt.Fprintf(w, "  %s  %-12s %-16s %s -> %s  %s\n", e.at.Format(time.RFC3339), e.name, e.kind, e.from, e.to, e.reason)
	}
	return nil
}
