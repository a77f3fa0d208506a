package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
	"github.com/ruvector/ruvector-healing/sidecar/instance"
)

// serverFlags are the flags every command that reaches the server takes.
type serverFlags struct {
	dsn       string
	segment   string
	logLevel  string
	logFormat string
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dsn, "dsn", os.Getenv("RUVECTOR_DSN"),
		"connection string (default: the standard PG* environment variables; env RUVECTOR_DSN)")
	fs.StringVar(&f.segment, "segment", os.Getenv("RUVECTOR_SEGMENT"),
		"segment file (default: $data_directory/pg_stat_tmp/ruvector_healing.shm; env RUVECTOR_SEGMENT)")
	fs.StringVar(&f.logLevel, "log-level", envOr("RUVECTOR_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env RUVECTOR_LOG_LEVEL)")
	fs.StringVar(&f.logFormat, "log-format", envOr("RUVECTOR_LOG_FORMAT", "json"), "log format: json or console (env RUVECTOR_LOG_FORMAT)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (f *serverFlags) logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(strings.ToLower(f.logLevel))
	if err != nil || f.logLevel == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	switch f.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want json or console", f.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Str("component", "ruvector-sidecar").Logger(), nil
}

// attach connects, discovers the server and maps its segment.
func (f *serverFlags) attach(ctx context.Context) (*pgx.Conn, instance.Server, *shmproto.Segment, error) {
	cfg, err := pgx.ParseConfig(f.dsn)
	if err != nil {
		return nil, instance.Server{}, nil, fmt.Errorf("--dsn: %w", err)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "ruvector-sidecar"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, instance.Server{}, nil, fmt.Errorf("connect: %w", err)
	}
	srv, err := instance.Discover(ctx, conn)
	if err != nil {
		conn.Close(ctx)
		return nil, srv, nil, err
	}
	seg, err := instance.OpenSegment(srv, f.segment)
	if err != nil {
		conn.Close(ctx)
		return nil, srv, nil, err
	}
	return conn, srv, seg, nil
}
