-- scripts/demo.sql: the demo collection `make run` creates.
CREATE EXTENSION IF NOT EXISTS ruvector_healing;
-- The extension's functions live in schema ruvector; let psql users call
-- them unqualified in this database.
ALTER DATABASE postgres SET search_path = "$user", public, ruvector;
SET search_path = "$user", public, ruvector;

CREATE TABLE IF NOT EXISTS embeddings (
    id        bigserial,
    embedding real[] NOT NULL,
    shard     int NOT NULL
) PARTITION BY LIST (shard);
DO $$
BEGIN
    FOR s IN 0..3 LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS embeddings_%s PARTITION OF embeddings FOR VALUES IN (%s)', s, s);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM ruvector.collections WHERE name = 'embeddings') THEN
        PERFORM ruvector_collection_register('embeddings', 'embeddings');
    END IF;
END
$$;
