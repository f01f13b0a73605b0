-- Failure handling (issue C).
--   holds_key         a parked row that holds back later rows of its (topic, key) until an
--                     operator replays it or skips it (`on_parked = "hold-key"`)
--   replay_count      how many times an operator replayed this row
--   last_replayed_at  when it was last replayed
ALTER TABLE ${qualified}
    ADD COLUMN holds_key        boolean     NOT NULL DEFAULT false,
    ADD COLUMN replay_count     integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_replayed_at timestamptz;

-- "Is this key held by a parked row?" without touching delivered rows.
CREATE INDEX "${table}_holding_idx" ON ${qualified} (topic, key, id)
    WHERE status = 'parked' AND holds_key;

-- Operators list and replay parked rows; keep that cheap however many rows were delivered.
CREATE INDEX "${table}_parked_idx" ON ${qualified} (id) WHERE status = 'parked';

-- "Is an earlier row of this key backing off after a failure?" Only rows that failed at least
-- once are in this index, so the claim's check stays an index probe into a tiny index.
CREATE INDEX "${table}_backoff_idx" ON ${qualified} (topic, key, id)
    WHERE status = 'pending' AND attempts > 0 AND key IS NOT NULL;
