-- Publishing functions (issue G): applications write events through these, inside their own
-- transaction, instead of a raw INSERT. For the table "${schema}"."${table}" they are
--
--   "${schema}"."${table}_publish"(topic, key, payload, headers, value_subject,
--                                  value_schema_version, event_id) RETURNS uuid
--   "${schema}"."${table}_publish_batch"(events jsonb) RETURNS SETOF uuid
--   "${schema}"."${table}_publish_check"(...)   internal: the validation both share
--
-- (the default table `outbox` gives `outbox_publish` and `outbox_publish_batch`).
--
-- Every input is checked before anything is written; a refusal raises SQLSTATE 22023
-- (invalid_parameter_value) with the offending column in the error's COLUMN field and a message
-- that starts with the field's name (`topic: ...`, `headers.trace: ...`, in a batch
-- `events[3].topic: ...`). The rules are those of the table's CHECKs (0001, 0002, 0004), plus:
--   * headers: `event_id` and names starting with `outbox.` are reserved (the relay sends the
--     row's event_id, and dead-letter copies carry outbox.topic, outbox.id, ...);
--   * size limits, read at each call from settings (default if unset):
--       outbox.max_payload_bytes  1048576  octet_length(payload::text)
--       outbox.max_headers_bytes    65536  octet_length(headers::text)
--     e.g. ALTER DATABASE app SET outbox.max_payload_bytes = 262144. They guard against
--     mistakes, not against a hostile caller (a session can SET them);
--   * payload.event_id, when present, must be a UUID string: it becomes the row's event_id (so
--     the value and the `event_id` header agree); an explicit event_id argument must equal it.
-- Without either, the event_id is a time-ordered UUID (version 7) made here.
--
-- The two publish functions are SECURITY DEFINER with a fixed search_path, and EXECUTE is
-- revoked from PUBLIC: a role granted EXECUTE on them (migrations/grant_publisher.sql) can
-- publish without any privilege on the table itself.

DO $guard$
BEGIN
    -- Postgres would silently cut longer function names to 63 bytes.
    IF octet_length('${table}') > 49 THEN
        RAISE EXCEPTION 'table name "${table}" is longer than 49 bytes: its publish functions (${table}_publish_batch) would exceed 63';
    END IF;
END
$guard$;

CREATE FUNCTION "${schema}"."${table}_publish_check"(
    topic text,
    key text,
    payload jsonb,
    headers jsonb,
    value_subject text,
    value_schema_version integer,
    event_id uuid,
    field_prefix text DEFAULT ''
) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    max_payload text := coalesce(nullif(current_setting('outbox.max_payload_bytes', true), ''), '1048576');
    max_headers text := coalesce(nullif(current_setting('outbox.max_headers_bytes', true), ''), '65536');
    size bigint;
    bad text;
    bad_type text;
    from_payload uuid;
BEGIN
    IF max_payload !~ '^[0-9]{1,18}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'payload',
            MESSAGE = format('outbox.max_payload_bytes: %L is not a number of bytes', max_payload);
    END IF;
    IF max_headers !~ '^[0-9]{1,18}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'headers',
            MESSAGE = format('outbox.max_headers_bytes: %L is not a number of bytes', max_headers);
    END IF;

    -- topic: Kafka's rule, as the table's CHECK "<table>_topic_is_a_kafka_topic_name".
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'topic',
            MESSAGE = field_prefix || 'topic: must not be empty';
    END IF;
    IF topic !~ '^[A-Za-z0-9._-]{1,249}$' OR topic IN ('.', '..') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'topic',
            MESSAGE = format('%stopic: %s is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -, not "." or "..")',
                             field_prefix, to_jsonb(left(topic, 300))::text);
    END IF;

    -- key: as "<table>_key_at_most_1024_bytes".
    IF octet_length(key) > 1024 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'key',
            MESSAGE = format('%skey: %s bytes, more than 1024', field_prefix, octet_length(key));
    END IF;

    -- payload: present, nesting as "<table>_payload_nests_at_most_100_levels", size.
    IF payload IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'payload',
            MESSAGE = field_prefix || 'payload: must not be null';
    END IF;
    size := octet_length(payload::text);
    IF size > max_payload::bigint THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'payload',
            MESSAGE = format('%spayload: %s bytes, more than outbox.max_payload_bytes (%s)',
                             field_prefix, size, max_payload);
    END IF;
    IF jsonb_path_exists(payload, 'strict $.**{100 to last} ? (@.type() == "object" || @.type() == "array")') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'payload',
            MESSAGE = field_prefix || 'payload: nests more than 100 levels of arrays and objects';
    END IF;
    IF jsonb_typeof(payload) = 'object' AND payload ? 'event_id' THEN
        IF jsonb_typeof(payload -> 'event_id') <> 'string'
           OR (payload ->> 'event_id') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'payload',
                MESSAGE = format('%spayload.event_id: must be a UUID string (it becomes the row''s event_id), got %s',
                                 field_prefix, left((payload -> 'event_id')::text, 100));
        END IF;
        from_payload := (payload ->> 'event_id')::uuid;
        IF event_id IS NOT NULL AND event_id <> from_payload THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'event_id',
                MESSAGE = format('%sevent_id: %s differs from payload.event_id %s',
                                 field_prefix, event_id, from_payload);
        END IF;
        event_id := from_payload;
    END IF;

    -- headers: a flat object of strings, as "<table>_headers_are_flat_strings", no reserved name.
    IF headers IS NOT NULL THEN
        IF jsonb_typeof(headers) <> 'object' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'headers',
                MESSAGE = format('%sheaders: must be a JSON object of strings, got %s',
                                 field_prefix, jsonb_typeof(headers));
        END IF;
        SELECT h.name, jsonb_typeof(h.value) INTO bad, bad_type
        FROM jsonb_each(headers) AS h(name, value)
        WHERE jsonb_typeof(h.value) <> 'string'
        ORDER BY h.name LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'headers',
                MESSAGE = format('%sheaders.%s: must be a string, got %s', field_prefix, bad, bad_type);
        END IF;
        SELECT h.name INTO bad
        FROM jsonb_object_keys(headers) AS h(name)
        WHERE h.name = 'event_id' OR h.name LIKE 'outbox.%'
        ORDER BY h.name LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'headers',
                MESSAGE = format('%sheaders.%s: reserved (the relay sends event_id and the outbox.* headers itself)',
                                 field_prefix, bad);
        END IF;
        size := octet_length(headers::text);
        IF size > max_headers::bigint THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'headers',
                MESSAGE = format('%sheaders: %s bytes, more than outbox.max_headers_bytes (%s)',
                                 field_prefix, size, max_headers);
        END IF;
    END IF;

    -- serialization overrides: as the CHECKs of 0002.
    IF value_subject = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'value_subject',
            MESSAGE = field_prefix || 'value_subject: must not be empty (NULL for the topic''s subject)';
    END IF;
    IF value_schema_version <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'value_schema_version',
            MESSAGE = format('%svalue_schema_version: must be positive, got %s', field_prefix, value_schema_version);
    END IF;
    IF value_schema_version IS NOT NULL AND value_subject IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'value_schema_version',
            MESSAGE = field_prefix || 'value_schema_version: needs value_subject';
    END IF;

    IF event_id IS NULL THEN
        -- UUID version 7: 48 bits of Unix milliseconds, then random bits (version 4's, with the
        -- version nibble turned from 0100 into 0111).
        event_id := encode(
            set_bit(set_bit(
                overlay(uuid_send(gen_random_uuid())
                        PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                        FROM 1 FOR 6),
                52, 1), 53, 1),
            'hex')::uuid;
    END IF;
    RETURN event_id;
END
$fn$;

CREATE FUNCTION "${schema}"."${table}_publish"(
    topic text,
    key text,
    payload jsonb,
    headers jsonb DEFAULT '{}',
    value_subject text DEFAULT NULL,
    value_schema_version integer DEFAULT NULL,
    event_id uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    -- In the SELECT the names are the arguments; in RETURNING, the inserted row's column.
    INSERT INTO ${qualified} (topic, key, payload, headers, value_subject, value_schema_version, event_id)
    SELECT topic, key, payload, coalesce(headers, '{}'), value_subject, value_schema_version,
           "${schema}"."${table}_publish_check"(topic, key, payload, headers, value_subject,
                                                 value_schema_version, event_id)
    RETURNING event_id;
$fn$;

-- events: a JSON array of objects {topic, key, payload, headers, value_subject,
-- value_schema_version, event_id} (only topic and payload required). Rows are inserted in
-- array order (ascending ids, so per-key order is the array's) by one INSERT, after every
-- element passed; the event ids come back in the same order.
CREATE FUNCTION "${schema}"."${table}_publish_batch"(events jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e jsonb;
    i integer;
    prefix text;
    bad text;
    ids uuid[] := '{}';
BEGIN
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'events',
            MESSAGE = format('events: must be a JSON array of events, got %s', coalesce(jsonb_typeof(events), 'NULL'));
    END IF;
    FOR i IN 0 .. jsonb_array_length(events) - 1 LOOP
        e := events -> i;
        prefix := format('events[%s].', i);
        IF jsonb_typeof(e) <> 'object' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'events',
                MESSAGE = format('events[%s]: must be an object, got %s', i, jsonb_typeof(e));
        END IF;
        SELECT k INTO bad FROM jsonb_object_keys(e) AS k
        WHERE k NOT IN ('topic', 'key', 'payload', 'headers', 'value_subject',
                        'value_schema_version', 'event_id')
        ORDER BY k LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'events',
                MESSAGE = format('%s%s: unknown field (known: topic, key, payload, headers, value_subject, value_schema_version, event_id)', prefix, bad);
        END IF;
        SELECT k INTO bad FROM (VALUES ('topic'), ('key'), ('value_subject'), ('event_id')) AS f(k)
        WHERE jsonb_typeof(e -> k) NOT IN ('string', 'null') LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = bad,
                MESSAGE = format('%s%s: must be a string, got %s', prefix, bad, jsonb_typeof(e -> bad));
        END IF;
        IF jsonb_typeof(e -> 'value_schema_version') NOT IN ('number', 'null')
           OR (e ->> 'value_schema_version') !~ '^-?[0-9]{1,9}$' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'value_schema_version',
                MESSAGE = format('%svalue_schema_version: must be an integer, got %s', prefix, e -> 'value_schema_version');
        END IF;
        IF (e ->> 'event_id') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', COLUMN = 'event_id',
                MESSAGE = format('%sevent_id: must be a UUID, got %s', prefix, e -> 'event_id');
        END IF;
        ids := ids || "${schema}"."${table}_publish_check"(
            e ->> 'topic', e ->> 'key', e -> 'payload', nullif(e -> 'headers', 'null'),
            e ->> 'value_subject', (e ->> 'value_schema_version')::integer,
            (e ->> 'event_id')::uuid, prefix);
    END LOOP;

    INSERT INTO ${qualified} (topic, key, payload, headers, value_subject, value_schema_version, event_id)
    SELECT x.e ->> 'topic', x.e ->> 'key', x.e -> 'payload',
           coalesce(nullif(x.e -> 'headers', 'null'), '{}'),
           x.e ->> 'value_subject', (x.e ->> 'value_schema_version')::integer, ids[x.n]
    FROM jsonb_array_elements(events) WITH ORDINALITY AS x(e, n)
    ORDER BY x.n;

    RETURN QUERY SELECT u.id FROM unnest(ids) WITH ORDINALITY AS u(id, n) ORDER BY u.n;
END
$fn$;

REVOKE ALL ON FUNCTION "${schema}"."${table}_publish_check"(text, text, jsonb, jsonb, text, integer, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION "${schema}"."${table}_publish"(text, text, jsonb, jsonb, text, integer, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION "${schema}"."${table}_publish_batch"(jsonb) FROM PUBLIC;
