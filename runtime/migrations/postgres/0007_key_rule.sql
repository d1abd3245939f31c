-- The one rule of unique keys: the key a job holds once it moves to `state`, given the key it
-- `held`. A finished job keeps its key only under `until_expired` (until `unique_until`); a
-- running `until_executing` job gives its key up; every other move keeps what it held. Each
-- statement that changes a job's state sets `unique_key` through this function, except the
-- two that take a key back (a retry or snooze of an `until_executing` job, a retried dead job),
-- which must first see that no other job holds the key.
CREATE FUNCTION errand_key_after(strategy text, state text, held text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN state IN ('completed', 'cancelled', 'dead') THEN
            CASE WHEN strategy = 'until_expired' THEN held END
        WHEN state = 'running' THEN
            CASE WHEN strategy = 'until_executing' THEN NULL ELSE held END
        ELSE held
    END
$$;
