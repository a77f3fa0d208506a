-- ---------------------------------------------------------------------------
-- Follow partitions: CREATE TABLE ... PARTITION OF, ATTACH/DETACH PARTITION
-- and DROP TABLE on a collection's tree keep the write gate's relation map
-- in step without anyone having to remember ruvector_collection_refresh.
-- SECURITY DEFINER: the DDL's author need not be a ruvector_admin; a
-- failure only warns, it never undoes the user's DDL.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ruvector._follow_partitions()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT col.name FROM ruvector.collections col
        WHERE EXISTS (SELECT 1 FROM pg_partition_tree(col.relid) t
                      WHERE NOT EXISTS (SELECT 1 FROM ruvector.collection_relations r
                                        WHERE r.collection_id = col.collection_id AND r.relid = t.relid))
           OR EXISTS (SELECT 1 FROM ruvector.collection_relations r
                      WHERE r.collection_id = col.collection_id
                        AND NOT EXISTS (SELECT 1 FROM pg_partition_tree(col.relid) t WHERE t.relid = r.relid))
    LOOP
        BEGIN
            PERFORM ruvector.ruvector_collection_refresh(c.name);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ruvector_healing: could not follow the partitions of collection "%": %', c.name, SQLERRM
                USING HINT = 'Run SELECT ruvector_collection_refresh(...) as a member of ruvector_admin.';
        END;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION ruvector._follow_partitions() FROM PUBLIC;

CREATE EVENT TRIGGER ruvector_follow_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'DROP TABLE')
    EXECUTE FUNCTION ruvector._follow_partitions();
