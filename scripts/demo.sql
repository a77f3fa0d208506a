-- scripts/demo.sql: the demo collection `make run` creates (idempotent: a
-- second `make run` keeps the data).
CREATE EXTENSION IF NOT EXISTS ruvector_healing;
CREATE EXTENSION IF NOT EXISTS pgstattuple;
-- The extension's functions live in schema ruvector; let psql users call
-- them unqualified in this database.
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SET search_path = "$user", public, ruvector;

-- A vector collection: 8-dimensional embeddings, 4 partitions routed by
-- the segment's weights, 16 IVF lists; 2,000 rows in four clusters so
-- that centroids can be trained and searches have something to find.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ruvector.collections WHERE name = 'embeddings') THEN
        PERFORM ruvector_collection_create('embeddings', 8, 4, 16);
        INSERT INTO embeddings (embedding)
        SELECT ARRAY(SELECT (g % 4) * 10 + random()::real FROM generate_series(1, 8))::real[]
        FROM generate_series(1, 2000) g;
    END IF;
END
$$;
