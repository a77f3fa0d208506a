package main

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/ruvector/ruvector-healing/sidecar/jobs"
	"github.com/ruvector/ruvector-healing/sidecar/ownload"
)

// superviseJobs runs the product's maintenance queue (ruvector.maintenance_jobs)
// until ctx ends: one job at a time on a connection of its own, redialled
// after a server restart. Several sidecars may run it: a job is claimed
// with FOR UPDATE SKIP LOCKED, so none runs twice. On (re)connect the jobs
// this process had claimed and not finished are queued again.
func superviseJobs(ctx context.Context, dial func(context.Context) (*pgx.Conn, error), owner string, poll time.Duration,
	own *ownload.Ledger, log zerolog.Logger) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	r := &jobs.Runner{Owner: owner, Poll: poll, Own: own, Logf: func(format string, args ...any) { log.Info().Msgf(format, args...) }}
	for ctx.Err() == nil {
		if conn == nil || conn.IsClosed() {
			c, err := dial(ctx)
			if err != nil {
				log.Warn().Err(err).Msg("maintenance jobs: cannot connect; retrying")
				pause(ctx, 2*time.Second)
				continue
			}
			conn, r.Conn = c, c
			if n, err := r.RequeueOwned(ctx); err != nil {
				log.Warn().Err(err).Msg("maintenance jobs: requeue this sidecar's unfinished jobs")
			} else if n > 0 {
				log.Info().Int64("jobs", n).Msg("maintenance jobs: requeued this sidecar's unfinished jobs")
			}
		}
		job, out, err := r.RunOne(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn().Err(err).Msg("maintenance jobs: runner error")
			pause(ctx, poll)
		case out == jobs.None:
			pause(ctx, poll)
		default:
			log.Info().Int64("job", job.ID).Str("kind", job.Kind).Str("collection", job.Collection).
				Str("outcome", string(out)).Msg("maintenance job ended its run")
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
