-- Per-row serialization overrides (issue B). Both are optional; NULL means "use the topic's
-- configuration". `value_subject` names the registry subject of the value; `value_schema_version`
-- pins a version of it (NULL: the topic's selection, by default the latest version).
ALTER TABLE ${qualified}
    ADD COLUMN value_subject        text    CHECK (value_subject <> ''),
    ADD COLUMN value_schema_version integer CHECK (value_schema_version > 0),
    ADD CONSTRAINT "${table}_version_needs_subject"
        CHECK (value_schema_version IS NULL OR value_subject IS NOT NULL);
