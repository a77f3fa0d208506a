package remedy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/ruvector/ruvector-healing/sidecar/strategy"
)

// ErrNoHotShard is returned (wrapped) when the problem names no partition
// that is a shard of a vector collection.
var ErrNoHotShard = errors.New("no hot shard")

// ErrNoOutcome is returned (wrapped) when a strategy that journals under
// the healing outcome's id runs without one.
var ErrNoOutcome = errors.New("no healing outcome id")

// outcomeIDer is implemented by the engine's recorder.
type outcomeIDer interface{ OutcomeID() int64 }

func outcomeID(rc *strategy.Context) (int64, bool) {
	if o, ok := rc.Recorder.(outcomeIDer); ok && o.OutcomeID() != 0 {
		return o.OutcomeID(), true
	}
	return 0, false
}

// shardLoad is one shard of a vector collection and its partition.
type shardLoad struct {
	Shard int
	RelID int64
	Load  float64
	// LongLoad is the load over the long window (Metrics.PartitionLoadLong),
	// or Load when there is none.
	LongLoad float64
	Rows     int64
}

// shardsOf lists the vector collection's shards (partition <-> shard from
// the partition bound, FOR VALUES IN (n)), with the load the problem was
// classified from and their row counts.
func shardsOf(ctx context.Context, conn *pgx.Conn, rc *strategy.Context) ([]shardLoad, error) {
	rows, err := conn.Query(ctx, `
SELECT c.oid::int8, substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FOR VALUES IN \((\d+)\)'),
       coalesce(s.n_live_tup, 0)
FROM ruvector.collection_relations r
JOIN ruvector.vector_collections v ON v.collection_id = r.collection_id
JOIN pg_class c ON c.oid = r.relid
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE r.collection_id = $1 AND c.relispartition
ORDER BY c.oid`, rc.CollectionID)
	if err != nil {
		return nil, fmt.Errorf("shards of %q: %w", rc.Collection, err)
	}
	type raw struct {
		relid int64
		bound *string
		rows  int64
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (raw, error) {
		var x raw
		return x, r.Scan(&x.relid, &x.bound, &x.rows)
	})
	if err != nil {
		return nil, fmt.Errorf("shards of %q: %w", rc.Collection, err)
	}
	var out []shardLoad
	for _, x := range rs {
		if x.bound == nil {
			continue
		}
		n, err := strconv.Atoi(*x.bound)
		if err != nil {
			continue
		}
		load := rc.Metrics.PartitionLoad[x.relid]
		long, ok := rc.Metrics.PartitionLoadLong[x.relid]
		if !ok {
			long = load
		}
		out = append(out, shardLoad{Shard: n, RelID: x.relid, Load: load, LongLoad: long, Rows: x.rows})
	}
	return out, nil
}

// hotShard picks the shard to act on: {"shard": n} in a manual
// execution's parameters, else the problem's hot partition with the
// highest load.
func hotShard(rc *strategy.Context, shards []shardLoad) (shardLoad, error) {
	if len(rc.Params) > 0 {
		var p struct {
			Shard *int `json:"shard"`
		}
		if err := json.Unmarshal(rc.Params, &p); err != nil {
			return shardLoad{}, fmt.Errorf("parameters: %w", err)
		}
		if p.Shard != nil {
			for _, s := range shards {
				if s.Shard == *p.Shard {
					return s, nil
				}
			}
			return shardLoad{}, fmt.Errorf("%w: parameter shard %d is not a shard of %q", ErrNoHotShard, *p.Shard, rc.Collection)
		}
	}
	if rc.Problem.HotspotCongestion == nil {
		return shardLoad{}, fmt.Errorf("%w: the problem names no hot partition (class %q)", ErrNoHotShard, rc.Problem.Class)
	}
	var cands []shardLoad
	for _, id := range rc.Problem.HotspotCongestion.PartitionIDs {
		for _, s := range shards {
			if s.RelID == id {
				cands = append(cands, s)
			}
		}
	}
	if len(cands) == 0 {
		return shardLoad{}, fmt.Errorf("%w: partitions %v are not shards of vector collection %q",
			ErrNoHotShard, rc.Problem.HotspotCongestion.PartitionIDs, rc.Collection)
	}
	slices.SortStableFunc(cands, func(a, b shardLoad) int {
		switch {
		case a.Load > b.Load:
			return -1
		case a.Load < b.Load:
			return 1
		}
		return 0
	})
	return cands[0], nil
}

// stillHotRatio is the classifier's default hot-partition ratio
// (classify.Thresholds.HotPartitionRatio): a shard whose load would still
// be this many times the median partition's after a strategy did its best
// is still a hotspot, so the strategy cannot cure it.
const stillHotRatio = 1.5

// minReferenceLoad mirrors health's MinPartitionLoad: below 10 rows/s the
// median is not a meaningful reference.
const minReferenceLoad = 10.0

// medianOf returns the median of vs (0 for none).
func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	return (s[(n-1)/2] + s[n/2]) / 2
}

// writeRates is what the problem's metrics say of the shards' write rates:
// the hot shard's, its peers' median, and the reference load (the median
// partition load, as the health graph judges a hotspot). ok is false when
// the metrics carry no write rates (an older sidecar's trigger, a manual
// execution without signals): the callers then act as before.
type writeRates struct {
	hot, peerMedian, refLoad float64
	peers                    map[int]float64 // shard → rows/s written
}

func writesOf(rc *strategy.Context, shards []shardLoad, hot shardLoad) (writeRates, bool) {
	w := rc.Metrics.PartitionWrites
	if len(w) == 0 {
		return writeRates{}, false
	}
	hw, ok := w[hot.RelID]
	if !ok {
		return writeRates{}, false
	}
	r := writeRates{hot: hw, peers: map[int]float64{}}
	var peer, loads []float64
	for _, s := range shards {
		loads = append(loads, s.Load)
		if s.Shard == hot.Shard {
			continue
		}
		if v, ok := w[s.RelID]; ok {
			r.peers[s.Shard] = v
			peer = append(peer, v)
		}
	}
	if len(peer) == 0 {
		return writeRates{}, false
	}
	r.peerMedian = medianOf(peer)
	r.refLoad = max(medianOf(loads), minReferenceLoad)
	return r, true
}
