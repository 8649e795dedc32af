#!/bin/sh
# LOCAL ONLY. Run once by the postgres image when its volume is first initialised
# (/docker-entrypoint-initdb.d): rotator's roles from deploy/postgres/roles.sql, then
# their passwords, read from the compose secrets by psql itself (never on a command line).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner=rotator_owner -v runtime=rotator -v auditor=rotator_auditor -v schema=rotator \
    -f /rotator/roles.sql
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\set owner_password `cat /run/secrets/db-owner-password`
\set runtime_password `cat /run/secrets/db-password`
ALTER ROLE rotator_owner PASSWORD :'owner_password';
ALTER ROLE rotator PASSWORD :'runtime_password';
SQL
