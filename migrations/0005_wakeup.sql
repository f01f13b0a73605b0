-- LISTEN/NOTIFY wakeup (issue E). An idle relay "arms" the wakeup row and waits on a channel;
-- the first statement that inserts into the outbox after that disarms it and notifies, so an
-- idle relay hears of a new row at the inserting transaction's commit instead of at its next
-- poll. Debounced: while no relay is idle the row stays disarmed and inserting statements only
-- read it (no NOTIFY, no write); one NOTIFY per idle period, not one per row. Notifications are
-- hints: the relay still polls (`relay.poll_interval_ms`), so a lost one only costs latency.
--
-- The channel is 'outbox_' || the first 24 hex digits of md5('<schema>.<table>'), so that
-- outboxes in different schemas of one database do not wake each other.
CREATE TABLE "${schema}"."${table}_wakeup" (
    armed boolean NOT NULL
);
INSERT INTO "${schema}"."${table}_wakeup" (armed) VALUES (false);

-- SECURITY DEFINER: applications that may insert into the outbox need no right on the wakeup
-- row. SKIP LOCKED: a second inserter never waits for the first one's transaction (the first
-- one notifies at its commit; if it rolls back, the relay's next poll finds the row).
CREATE FUNCTION "${schema}"."${table}_wake"() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $wake$
BEGIN
    UPDATE "${schema}"."${table}_wakeup" AS w SET armed = false
     WHERE w.ctid = (SELECT x.ctid FROM "${schema}"."${table}_wakeup" AS x
                      WHERE x.armed FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        PERFORM pg_notify('outbox_' || left(md5(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME), 24), '');
    END IF;
    RETURN NULL;
END
$wake$;

CREATE TRIGGER "${table}_wake" AFTER INSERT ON ${qualified}
    FOR EACH STATEMENT EXECUTE FUNCTION "${schema}"."${table}_wake"();
