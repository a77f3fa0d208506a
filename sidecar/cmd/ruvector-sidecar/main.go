// Command ruvector-sidecar is the process beside PostgreSQL that closes the
// self-healing loop of ruvector_healing.
//
//	ruvector-sidecar run                      the daemon
//	ruvector-sidecar status [--watch]          what the segment says, for a person
//	ruvector-sidecar throttle COLLECTION OP PCT
//	ruvector-sidecar mincut FILE [--json]     exact minimum cut of a METIS graph
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"run":      {"run the daemon (heartbeat, segment, healing loop)", runDaemon},
		"throttle": {"set a collection's throttle through shared memory: throttle COLLECTION OP PCT", runThrottle},
		"mincut":   {"print the exact minimum cut of a METIS graph: mincut FILE [--json]", runMincut},
		"status":   {"print each collection's state, lambda, throttles and counters: status [--watch]", runStatus},
		"report":   {"draw lambda, states and remediations as SVG: report [--since 1h] [--collection NAME] [-o report.svg]", runReport},
		"explain":  {"print why a remediation happened: explain [--json] OUTCOME_ID", runExplain},
		"jobs":     {"list maintenance jobs with their progress: jobs [--watch]; start one: jobs start KIND COLLECTION [--param k=v ...] [--wait]", runJobs},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ruvector-sidecar COMMAND [flags] [args]")
	fmt.Fprintln(w, "commands:")
	for _, name := range []string{"run", "status", "throttle", "mincut", "report", "explain", "jobs"} {
		fmt.Fprintf(w, "  %-9s %s\n", name, commands()[name].summary)
	}
	fmt.Fprintln(w, "Run 'ruvector-sidecar COMMAND -h' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "ruvector-sidecar: unknown command %q\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "ruvector-sidecar %s: %v\n", name, err)
		os.Exit(1)
	}
}
