#!/bin/sh
# LOCAL ONLY. Run once by the postgres image when its volume is first initialised
# (/docker-entrypoint-initdb.d): rotator's roles from deploy/postgres/roles.sql, then
# their passwords, read from the compose secrets by psql itself (never on a command line).
# The two paths are variables only so that tests/integration/test_compose_db_tls.py can
# run this very script against a cluster of its own.
set -eu
roles_sql=${ROTATOR_ROLES_SQL:-/rotator/roles.sql}
secrets=${ROTATOR_DB_SECRETS:-/run/secrets}
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner=rotator_owner -v runtime=rotator -v auditor=rotator_auditor -v schema=rotator \
    -f "$roles_sql"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v secrets="$secrets" <<'SQL'
\set owner_password `cat :'secrets'/db-owner-password`
\set runtime_password `cat :'secrets'/db-password`
ALTER ROLE rotator_owner PASSWORD :'owner_password';
ALTER ROLE rotator PASSWORD :'runtime_password';
SQL
