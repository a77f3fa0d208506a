package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// DefaultListen is the default metrics address: the port postgres_exporter
// uses, on localhost only, since the endpoint names collections and has
// no authentication.
const DefaultListen = "127.0.0.1:9187"

// shutdownGrace bounds how long a stopping server waits for scrapes in
// flight.
const shutdownGrace = 5 * time.Second

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Health, if set, decides /healthz: nil error is 200, else 503 with
	// the error's text.
	Health func() error
	Log    zerolog.Logger
}

// Handler serves /metrics from reg and /healthz.
func Handler(reg *prometheus.Registry, opts HandlerOptions) http.Handler {
	mux := http.NewServeMux()
	// ContinueOnError: one unreadable slot (a seqlock left odd by a dead
	// writer) must not hide every other metric; the error is logged.
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          errorLog{opts.Log},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		Timeout:           10 * time.Second,
		EnableOpenMetrics: true,
	})
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, metrics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Health != nil {
			if err := opts.Health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve serves h on ln until ctx ends, then shuts down, letting scrapes in
// flight finish for a few seconds. It returns nil after a shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// The base context is not ctx: cancelling it would cut scrapes in
		// flight instead of letting Shutdown drain them.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// errorLog adapts zerolog to promhttp's logger.
type errorLog struct{ log zerolog.Logger }

func (l errorLog) Println(v ...any) {
	l.log.Warn().Msg(fmt.Sprint(v...))
}
