#!/bin/sh
# Run once by the postgres image's entrypoint when it creates the data
# directory (/docker-entrypoint-initdb.d): the extension, pgstattuple (the
# index collector's; creating it needs a superuser), and the sidecar's own
# least-privileged role. RUVECTOR_SIDECAR_PASSWORD is its password.
set -eu
: "${RUVECTOR_SIDECAR_PASSWORD:?set RUVECTOR_SIDECAR_PASSWORD for the ruvector_sidecar role}"
psql -v ON_ERROR_STOP=1 -v pw="$RUVECTOR_SIDECAR_PASSWORD" -v db="$POSTGRES_DB" \
	--username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'EOSQL'
CREATE EXTENSION IF NOT EXISTS ruvector_healing;
CREATE EXTENSION IF NOT EXISTS pgstattuple;
-- pg_monitor: data directory, system identifier, statistics.
-- ruvector_admin: integrity events, contracted graph, healing.
-- REPLICATION and CREATE on the database: the change feed's slot and
-- publications (it must also be a member of the collection tables' owner).
CREATE ROLE ruvector_sidecar LOGIN REPLICATION PASSWORD :'pw' IN ROLE pg_monitor, ruvector_admin;
GRANT CREATE ON DATABASE :"db" TO ruvector_sidecar;
-- SET on shard_cap_exempt: its row moves pass the shard caps it set.
GRANT SET ON PARAMETER ruvector.shard_cap_exempt TO ruvector_sidecar;
EOSQL
