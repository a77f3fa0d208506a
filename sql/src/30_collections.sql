
-- ---------------------------------------------------------------------------
-- Vector collections: partitioned tables with routing weights, IVF lists and
-- the product's own maintenance queue. These are the things the healing
-- strategies act on (rebalance, drain, rebuild centroids, pause maintenance).
--
-- Layout of a collection table made by ruvector_collection_create (an
-- adopted table must follow it):
--   id        bigserial            (primary key together with shard)
--   embedding real[] NOT NULL     (dimension and finiteness checked by the
--                                  ruvector_vector_check row trigger, function
--                                  ruvector._vector_check)
--   shard     int NOT NULL        DEFAULT ruvector._route_shard(<collection_id>)
--   ivf_list  int                 assigned by the same trigger from the
--                                  active centroid version when NULL (or on
--                                  UPDATE when the embedding changed and
--                                  ivf_list did not); NULL until the first
--                                  version is active
-- Functions: 31_collections_api.sql.
-- LIST-partitioned by shard: partition <name>_p<N> holds shard N,
-- N in 0 .. partitions-1.
-- ---------------------------------------------------------------------------

-- What a collection's table looks like; one row per vector collection.
-- owned: made by ruvector_collection_create (drop drops the table) rather
-- than adopted (drop leaves the table and only forgets it).
CREATE TABLE ruvector.vector_collections (
    collection_id integer PRIMARY KEY REFERENCES ruvector.collections ON DELETE CASCADE,
    dim           integer NOT NULL CHECK (dim BETWEEN 1 AND 16000),
    partitions    integer NOT NULL CHECK (partitions BETWEEN 1 AND 256),
    lists         integer NOT NULL CHECK (lists BETWEEN 1 AND 4096),
    owned         boolean NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Routing weights: the durable copy of the segment's per-shard weights
-- (the segment is what the column default reads). A missing row means the
-- default weight 1. set_by 'sidecar' weights are restored to 1 by the
-- watchdog when the sidecar stops heartbeating, like its throttles.
CREATE TABLE ruvector.routing_weights (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    shard         integer NOT NULL CHECK (shard BETWEEN 0 AND 255),
    weight        real NOT NULL CHECK (weight >= 0 AND weight <= 1000),
    set_by        text NOT NULL CHECK (set_by IN ('sidecar', 'manual')),
    outcome_id    bigint,
    set_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, shard)
);

-- Versioned IVF centroids. Exactly one version per collection is active
-- (the one the insert trigger and ruvector_ivf_search use); the previous
-- ones stay so that a rebuild can be rolled back.
CREATE TABLE ruvector.centroid_versions (
    collection_id integer NOT NULL REFERENCES ruvector.collections ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version > 0),
    state         text NOT NULL CHECK (state IN ('training', 'active', 'retired')),
    lists         integer NOT NULL CHECK (lists > 0),
    sample_rows   bigint NOT NULL DEFAULT 0,
    inertia       double precision,
    outcome_id    bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    PRIMARY KEY (collection_id, version)
);
CREATE UNIQUE INDEX centroid_versions_one_active
    ON ruvector.centroid_versions (collection_id) WHERE state = 'active';

CREATE TABLE ruvector.centroids (
    collection_id integer NOT NULL,
    version       integer NOT NULL,
    list_id       integer NOT NULL CHECK (list_id >= 0),
    centroid      real[] NOT NULL,
    PRIMARY KEY (collection_id, version, list_id),
    FOREIGN KEY (collection_id, version)
        REFERENCES ruvector.centroid_versions ON DELETE CASCADE
);

-- Row moves between partitions (rebalance_partitions). A batch's journal
-- rows and its UPDATEs of the shard key commit in one transaction, so after
-- any crash the journal says exactly which rows moved; a rollback moves
-- those rows back (and sets reverted_at) in one transaction per batch.
CREATE TABLE ruvector.healing_moves (
    outcome_id    bigint NOT NULL,
    collection_id integer NOT NULL,
    batch         integer NOT NULL,
    row_id        bigint NOT NULL,
    from_shard    integer NOT NULL,
    to_shard      integer NOT NULL,
    moved_at      timestamptz NOT NULL DEFAULT now(),
    reverted_at   timestamptz,
    PRIMARY KEY (outcome_id, row_id)
);
CREATE INDEX healing_moves_pending ON ruvector.healing_moves (outcome_id, batch)
    WHERE reverted_at IS NULL;

-- Per batch: what was verified after it (row counts of the two shards and
-- a checksum of the moved rows' content, before and after).
CREATE TABLE ruvector.healing_move_batches (
    outcome_id      bigint NOT NULL,
    batch           integer NOT NULL,
    collection_id   integer NOT NULL,
    rows_moved      integer NOT NULL,
    checksum_before text NOT NULL,
    checksum_after  text,
    lambda_after    real,
    state           text NOT NULL CHECK (state IN ('moved', 'verified', 'undone', 'reverted')),
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (outcome_id, batch)
);

-- The product's own background jobs, run by the sidecar. Priority: higher
-- runs first; jobs below the configured low-priority bar are the ones
-- pause_maintenance may pause. kind 'autovacuum' rows stand for autovacuum
-- on a collection table while it is paused by the per-table setting
-- (params: {"relid": ..., "previous_reloptions": [...]}), so that pausing
-- and resuming it goes through the same queue and audit.
CREATE TABLE ruvector.maintenance_jobs (
    job_id        bigserial PRIMARY KEY,
    collection_id integer REFERENCES ruvector.collections ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('centroid_rebuild', 'compaction', 'rebalance',
                                                 'vacuum', 'analyze', 'autovacuum')),
    priority      integer NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 1000),
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'paused', 'done', 'failed')),
    progress      real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    owner         text,
    params        jsonb NOT NULL DEFAULT '{}',
    paused_by     bigint,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_jobs_open ON ruvector.maintenance_jobs (state, priority DESC, job_id)
    WHERE state IN ('queued', 'running', 'paused');

GRANT SELECT ON ruvector.vector_collections, ruvector.routing_weights, ruvector.centroid_versions,
    ruvector.centroids, ruvector.healing_moves, ruvector.healing_move_batches,
    ruvector.maintenance_jobs TO ruvector_monitor;
GRANT INSERT, UPDATE, DELETE ON ruvector.vector_collections, ruvector.routing_weights,
    ruvector.centroid_versions, ruvector.centroids, ruvector.healing_moves,
    ruvector.healing_move_batches, ruvector.maintenance_jobs TO ruvector_admin;
GRANT USAGE ON SEQUENCE ruvector.maintenance_jobs_job_id_seq TO ruvector_admin;
