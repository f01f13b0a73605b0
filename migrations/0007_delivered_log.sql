-- The delivery log (issue E), written when `relay.on_delivered = "delete"`: the relay deletes a
-- delivered row from the outbox (a DELETE costs Postgres about a third of the UPDATE that marks
-- the wide row delivered) and appends its coordinates here, in the same statement and
-- transaction: which event went where in Kafka, for audits and `outbox-relay check-order`.
-- Narrow and without indexes, so an append costs little; `delivered_at` is BRIN-indexed for
-- pruning by age. With `on_delivered = "mark"` (the default) it stays empty.
CREATE TABLE "${schema}"."${table}_delivered" (
    id              bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    topic           text        NOT NULL,
    key             text,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz NOT NULL
);
CREATE INDEX "${table}_delivered_at_idx" ON "${schema}"."${table}_delivered"
    USING brin (delivered_at);
