-- Unique jobs: a job holds `unique_key` (its rendered key) while its strategy says duplicates are
-- refused; the unique index refuses a second holder of one key within a kind. `unique_until`
-- ends the hold (until_expired, or unique_for as a cap).
ALTER TABLE errand_jobs ADD COLUMN unique_key TEXT;
ALTER TABLE errand_jobs ADD COLUMN unique_strategy TEXT;
ALTER TABLE errand_jobs ADD COLUMN unique_until BIGINT;
-- while_executing: the key a running job holds, so that no two with one key run at once.
ALTER TABLE errand_jobs ADD COLUMN running_key TEXT;

CREATE UNIQUE INDEX errand_jobs_unique ON errand_jobs (kind, unique_key) WHERE unique_key IS NOT NULL;
CREATE UNIQUE INDEX errand_jobs_running_key ON errand_jobs (kind, running_key) WHERE running_key IS NOT NULL;

-- The effect ledger: a step's result, recorded once it succeeded, per job key (or job id).
CREATE TABLE errand_steps (
    scope      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    result     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (scope, name)
);
