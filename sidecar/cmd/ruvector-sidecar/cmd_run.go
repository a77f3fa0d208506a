package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

func runDaemon(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var sf serverFlags
	sf.register(fs)
	interval := fs.Duration("heartbeat-interval", time.Second,
		"how often the sidecar tells the watchdog it is alive; keep well under ruvector.sidecar_timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *interval <= 0 {
		return fmt.Errorf("--heartbeat-interval %v must be positive", *interval)
	}
	log, err := sf.logger(os.Stderr)
	if err != nil {
		return err
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
	if timeout := info.SidecarTimeout; timeout > 0 && *interval*2 > timeout {
		log.Warn().Dur("heartbeat_interval", *interval).Dur("sidecar_timeout", timeout).
			Msg("heartbeat interval is more than half of ruvector.sidecar_timeout: the watchdog may release throttles while the sidecar is alive")
	}
	log.Info().Str("data_directory", srv.DataDir).Str("database", srv.Database).
		Uint64("generation", info.Generation).Int("slots", info.SlotCount).
		Int("pid", os.Getpid()).Msg("attached to segment")

	hb := &instance.Heartbeat{Segment: seg, Interval: *interval, Log: log}
	return hb.Run(ctx)
}
