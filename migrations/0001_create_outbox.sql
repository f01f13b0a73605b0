-- The outbox table. When `outbox-relay migrate` runs, ${qualified} becomes the configured
-- "schema"."table" and ${table} the bare table name (both validated as SQL identifiers).
CREATE TABLE ${qualified} (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    topic           text        NOT NULL CHECK (topic <> ''),
    key             text,
    payload         jsonb       NOT NULL,
    -- Flat string -> string; `event_id` is reserved (the relay always sends the row's event_id).
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb
                    CHECK (jsonb_typeof(headers) = 'object'
                           AND NOT jsonb_path_exists(headers, '$.* ? (@.type() != "string")')
                           AND NOT headers ? 'event_id'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'parked')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    kafka_partition integer,
    kafka_offset    bigint,
    CONSTRAINT "${table}_event_id_key" UNIQUE (event_id)
);

-- Claiming scans pending rows in id order; delivered rows never enter this index, so claiming
-- stays fast however many of them pile up.
CREATE INDEX "${table}_pending_idx" ON ${qualified} (id) WHERE status = 'pending';

-- "Is an earlier row of this key still pending?" (per-key order) without touching delivered rows.
CREATE INDEX "${table}_pending_key_idx" ON ${qualified} (topic, key, id)
    WHERE status = 'pending' AND key IS NOT NULL;
