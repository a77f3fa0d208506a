package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/ruvector/ruvector-healing/shmproto"
)

// runThrottle sets a throttle through shared memory alone: the one SQL
// query is discovery (where the segment is); the write is a
// compare-and-swap in the segment.
func runThrottle(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("throttle", flag.ContinueOnError)
	var sf serverFlags
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return fmt.Errorf("usage: ruvector-sidecar throttle [flags] COLLECTION OP PCT (op: insert or bulk_insert, pct: 0..100)")
	}
	name, opName, pctText := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	op := -1
	for i, n := range shmproto.OpNames {
		if n == opName {
			op = i
		}
	}
	if op < 0 {
		return fmt.Errorf("op %q: want insert or bulk_insert", opName)
	}
	pct, err := strconv.ParseUint(pctText, 10, 32)
	if err != nil || pct > 100 {
		return fmt.Errorf("pct %q: want a whole number from 0 to 100", pctText)
	}
	conn, srv, seg, err := sf.attach(ctx)
	if err != nil {
		return err
	}
	defer seg.Close()
	conn.Close(ctx)

	info, err := seg.Info()
	if err != nil {
		return err
	}
	now := time.Now()
	if pct > 0 && (info.SidecarBeat.IsZero() || now.Sub(info.SidecarBeat) > info.SidecarTimeout) {
		return fmt.Errorf("no sidecar daemon is running (last heartbeat %v): the watchdog would release a sidecar throttle within %v; start `ruvector-sidecar run`, or set a manual throttle with SELECT ruvector_throttle_set(...)",
			heartbeatAge(info.SidecarBeat, now), info.SidecarTimeout)
	}
	c, err := seg.Find(name, srv.DatabaseOID)
	if err != nil {
		return fmt.Errorf("collection %q is not registered in database %s: %w", name, srv.Database, err)
	}
	if err := seg.SetSidecarThrottle(c.Slot, shmproto.Op(op), uint32(pct), now); err != nil {
		if errors.Is(err, shmproto.ErrManualPinned) {
			t, _ := seg.ReadThrottle(c.Slot, shmproto.Op(op))
			return fmt.Errorf("collection %q has a manual %s throttle of %d%% (until %s): the sidecar does not override it; clear it with SELECT ruvector_throttle_clear('%s', '%s')",
				name, opName, t.Pct, untilText(t.Expires), name, opName)
		}
		return err
	}
	fmt.Fprintf(stdout, "%s %s throttle set to %d%% by the sidecar\n", name, opName, pct)
	return nil
}

func heartbeatAge(beat, now time.Time) string {
	if beat.IsZero() {
		return "never"
	}
	return now.Sub(beat).Round(time.Millisecond).String() + " ago"
}

func untilText(t time.Time) string {
	if t.IsZero() {
		return "cleared"
	}
	return t.Format(time.RFC3339)
}
