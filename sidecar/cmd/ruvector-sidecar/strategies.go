package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/healing"
	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// strategyDeps are what the strategies need from the daemon.
type strategyDeps struct {
	Segment     healing.Segment
	DatabaseOID uint32
	// Dial opens a connection a strategy owns from then on.
	Dial func(ctx context.Context) (*pgx.Conn, error)
}

// buildStrategies is the one place the daemon's strategy registry is
// assembled: a new strategy is registered here. The returned cleanup closes
// what the strategies own.
func buildStrategies(ctx context.Context, d strategyDeps) (*strategy.Registry, func(), error) {
	pmConn, err := d.Dial(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("pause_maintenance connection: %w", err)
	}
	cleanup := func() { pmConn.Close(context.Background()) }
	reg, err := strategy.NewRegistry(
		healing.ThrottleIngestion{Segment: d.Segment, DatabaseOID: d.DatabaseOID},
		healing.NewPauseMaintenance(pmConn),
	)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return reg, cleanup, nil
}
