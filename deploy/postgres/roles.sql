-- rotator's PostgreSQL roles: an owner that migrates, a runtime role that cannot rewrite
-- the audit trail, and a read-only auditor. Run once, as a superuser or a role with
-- CREATEROLE, in the database rotator uses, before the first `rotator db upgrade`:
--
--   psql "host=db.internal dbname=rotator user=postgres sslmode=verify-full" \
--     -v ON_ERROR_STOP=1 -v owner=rotator_owner -v runtime=rotator \
--     -v auditor=rotator_auditor -v schema=rotator -f deploy/postgres/roles.sql
--
-- then give the two login roles rotator uses their passwords, without them ever being on
-- a command line:  \password rotator_owner  and  \password rotator  (the auditor's too).
--
--   owner    owns the schema, its tables, sequences, trigger functions and views. Only the
--            init container (`rotator db upgrade`) logs in as it. Only an owner may ALTER
--            a table or DISABLE its triggers, so only it could unprotect rotation_events.
--   runtime  what `rotator run`, `rotate`, `status`, `audit` and `verify` log in as:
--            SELECT, INSERT, UPDATE on rotations, leases and pending_cleanups (no DELETE:
--            rotator never deletes a row), SELECT and INSERT only on rotation_events (no
--            UPDATE, DELETE, TRUNCATE, and not its owner: no ALTER or DISABLE TRIGGER),
--            SELECT on alembic_version (the schema check) and the audit_* views, and the
--            sequences of the SERIAL ids. No CREATE anywhere.
--   auditor  SELECT on every table and view of the schema; nothing else.
--
-- The grants are default privileges of the owner in the schema, so the tables and views
-- the migrations create (now and in later revisions) come with them. Migration 0005 then
-- takes from every role but the owner all privileges on rotation_events except SELECT and
-- INSERT, and all on the audit_* views and alembic_version except SELECT. A later migration that adds a table
-- the runtime role must not update has to do the same (see docs/audit.md).
--
-- Recommended beside this, for the whole database (not done here: it affects every role
-- of it):  REVOKE ALL ON DATABASE rotator FROM PUBLIC;
--          GRANT CONNECT ON DATABASE rotator TO rotator_owner, rotator, rotator_auditor;

CREATE ROLE :"owner" LOGIN NOINHERIT;
CREATE ROLE :"runtime" LOGIN NOINHERIT;
CREATE ROLE :"auditor" LOGIN NOINHERIT;

CREATE SCHEMA :"schema" AUTHORIZATION :"owner";
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE ON SCHEMA :"schema" TO :"runtime", :"auditor";

-- Each role finds rotator's tables (and nothing else) without naming the schema.
ALTER ROLE :"owner" IN DATABASE :"DBNAME" SET search_path = :"schema";
ALTER ROLE :"runtime" IN DATABASE :"DBNAME" SET search_path = :"schema";
ALTER ROLE :"auditor" IN DATABASE :"DBNAME" SET search_path = :"schema";

ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT USAGE ON SEQUENCES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO :"auditor";
-- Trigger functions are EXECUTE-able by PUBLIC by default; no one calls them directly.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
