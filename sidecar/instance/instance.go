// Package instance attaches the sidecar to the PostgreSQL instance beside
// it: it finds the server's data directory and identity over SQL, maps the
// ruvector_healing segment, and keeps the sidecar's heartbeat and mapping
// current across server restarts.
package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/shmproto"
)

// Server is what the sidecar learns about its PostgreSQL instance.
type Server struct {
	DataDir          string
	SystemIdentifier uint64
	DatabaseOID      uint32
	Database         string
	// OwnerUID owns the data directory: the server's OS user, the only
	// owner a genuine segment can have.
	OwnerUID int
}

// ErrNoExtension means the library is not preloaded or the extension is
// not created in the database the sidecar connected to.
var ErrNoExtension = errors.New("ruvector_healing is not ready on this server")

// Discover asks the server where its data lives and who it is.
func Discover(ctx context.Context, conn *pgx.Conn) (Server, error) {
	var s Server
	var sysid string
	var preload string
	err := conn.QueryRow(ctx, `SELECT current_setting('data_directory'),
		(SELECT system_identifier::text FROM pg_control_system()),
		(SELECT oid FROM pg_database WHERE datname = current_database()),
		current_database(), current_setting('shared_preload_libraries')`).
		Scan(&s.DataDir, &sysid, &s.DatabaseOID, &s.Database, &preload)
	if err != nil {
		return s, fmt.Errorf("discover server (the sidecar's role needs pg_monitor or superuser): %w", err)
	}
	if s.SystemIdentifier, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return s, fmt.Errorf("discover server: system identifier %q: %w", sysid, err)
	}
	fi, err := os.Stat(s.DataDir)
	if err != nil {
		return s, fmt.Errorf("data directory %s is not visible to the sidecar (run it on the database host, as the server's user): %w", s.DataDir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return s, fmt.Errorf("data directory %s: no owner information", s.DataDir)
	}
	s.OwnerUID = int(st.Uid)
	return s, nil
}

// OpenSegment maps the segment of server (or the file at path when
// non-empty) and proves it belongs to that server.
func OpenSegment(s Server, path string) (*shmproto.Segment, error) {
	if path == "" {
		path = shmproto.Path(s.DataDir)
	}
	seg, err := shmproto.Open(path, shmproto.Options{SystemIdentifier: s.SystemIdentifier, OwnerUID: s.OwnerUID})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no segment at %s (is ruvector_healing in shared_preload_libraries?): %v", ErrNoExtension, path, err)
		}
		return nil, err
	}
	return seg, nil
}

// Heartbeat keeps the watchdog convinced the sidecar is alive and follows
// the segment across server restarts. It returns when ctx ends, after a
// clean Detach (the sidecar's throttles are released at once).
type Heartbeat struct {
	Segment  *shmproto.Segment
	Interval time.Duration
	Log      zerolog.Logger
	// OnRemap, if set, runs after the segment was replaced (new generation).
	OnRemap func(generation uint64)
}

// Run beats until ctx is done.
func (h *Heartbeat) Run(ctx context.Context) error {
	pid := os.Getpid()
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	var lastErr string
	for {
		remapped, err := h.Segment.Refresh()
		switch {
		case err != nil:
			// The server may be restarting: keep beating into the old
			// mapping (harmless) and retry the remap next tick.
			if err.Error() != lastErr {
				h.Log.Warn().Err(err).Msg("segment refresh failed; retrying")
				lastErr = err.Error()
			}
		case remapped:
			lastErr = ""
			info, _ := h.Segment.Info()
			h.Log.Info().Uint64("generation", info.Generation).Uint32("postmaster_pid", info.PostmasterPID).
				Msg("server restarted: segment remapped")
			if h.OnRemap != nil {
				h.OnRemap(info.Generation)
			}
		default:
			lastErr = ""
		}
		if err := h.Segment.Heartbeat(pid, time.Now()); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		select {
		case <-ctx.Done():
			n, err := h.Segment.Detach(time.Now())
			h.Log.Info().Int("released_throttles", n).Msg("detached from segment")
			return err
		case <-t.C:
		}
	}
}
