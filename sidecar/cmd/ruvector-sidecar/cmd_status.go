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
	return printRecentEvents(ctx, w, conn)
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
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
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
