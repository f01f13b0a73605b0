-- Limits checked where the row is written (issue D). Before this migration some limits
-- surfaced as someone else's error: a long key was refused by a btree index the application
-- never heard of, an array header passed the (lax) headers CHECK and was parked later, a
-- deeply nested payload was parked as "not JSON". Each constraint's name reads as the rule.
--
--   ${table}_topic_is_a_kafka_topic_name     1-249 of [A-Za-z0-9._-], not "." or ".." (Kafka's rule)
--   ${table}_key_at_most_1024_bytes           octet_length(key) <= 1024
--   ${table}_headers_are_flat_strings         every header value is a JSON string (strict jsonpath:
--                                             the lax `$.*` of 0001 unwraps arrays)
--   ${table}_payload_nests_at_most_100_levels at most 100 nested arrays/objects (the relay's JSON
--                                             parser stops at 128)
--
-- Rows written before this migration are exempt (`id <= <highest id at migration time>`):
-- they were accepted under the old rules, and a CHECK is evaluated on every UPDATE, so without
-- the exemption marking such a row delivered (or parked) would fail its whole batch. The lock
-- makes "highest id" exact: no row is inserted between reading it and adding the constraints.
LOCK TABLE ${qualified} IN ACCESS EXCLUSIVE MODE;
DO $migration$
DECLARE
    before bigint;
BEGIN
    SELECT coalesce(max(id), 0) INTO before FROM ${qualified};
    EXECUTE format($sql$
        ALTER TABLE ${qualified}
            ADD CONSTRAINT "${table}_topic_is_a_kafka_topic_name"
                CHECK (id <= %1$s OR (topic ~ '^[A-Za-z0-9._-]{1,249}$' AND topic NOT IN ('.', '..'))),
            ADD CONSTRAINT "${table}_key_at_most_1024_bytes"
                CHECK (id <= %1$s OR key IS NULL OR octet_length(key) <= 1024),
            ADD CONSTRAINT "${table}_headers_are_flat_strings"
                CHECK (id <= %1$s OR NOT jsonb_path_exists(headers, 'strict $.* ? (@.type() != "string")')),
            ADD CONSTRAINT "${table}_payload_nests_at_most_100_levels"
                CHECK (id <= %1$s OR NOT jsonb_path_exists(payload,
                    'strict $.**{100 to last} ? (@.type() == "object" || @.type() == "array")'))
    $sql$, before);
END
$migration$;
