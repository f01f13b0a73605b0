-- Grants an application role what it needs to publish events, and nothing else: USAGE on the
-- outbox's schema and EXECUTE on the two publish functions of migration 0006 (SECURITY DEFINER:
-- they write the table with their owner's rights). The role gets no privilege on the table
-- itself (any it had is revoked), so it can neither read nor write rows directly. The relay's
-- own role is separate (it owns or is granted SELECT/UPDATE on the table). Not a migration: run
-- it once per application role, with psql, after `outbox-relay migrate`:
--
--   psql "$DATABASE_URL" -v schema=public -v table=outbox -v role=orders_app \
--        -f migrations/grant_publisher.sql
--
-- The role must exist (CREATE ROLE orders_app LOGIN PASSWORD '...').
\set ON_ERROR_STOP on
\set publish_fn :table '_publish'
\set batch_fn :table '_publish_batch'

BEGIN;
GRANT USAGE ON SCHEMA :"schema" TO :"role";
REVOKE ALL ON TABLE :"schema".:"table" FROM :"role";
GRANT EXECUTE ON FUNCTION
    :"schema".:"publish_fn"(text, text, jsonb, jsonb, text, integer, uuid),
    :"schema".:"batch_fn"(jsonb)
    TO :"role";
COMMIT;
