-- A job that died and whose death handlers have not run yet.
ALTER TABLE errand_jobs ADD COLUMN death_pending INTEGER NOT NULL DEFAULT 0;
-- `client.cancel` asked a running job to stop.
ALTER TABLE errand_jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

CREATE INDEX errand_jobs_finished ON errand_jobs (state, finished_at);
CREATE INDEX errand_jobs_deaths ON errand_jobs (id) WHERE death_pending = 1;

-- Leases on chores that one node at a time should do (pruning).
CREATE TABLE errand_locks (
    name   TEXT    PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  INTEGER NOT NULL
);
