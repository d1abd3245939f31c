-- A job that died and whose death handlers have not run yet.
ALTER TABLE errand_jobs ADD COLUMN death_pending BOOLEAN NOT NULL DEFAULT false;
-- `client.cancel` asked a running job to stop.
ALTER TABLE errand_jobs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX errand_jobs_finished ON errand_jobs (state, finished_at);
CREATE INDEX errand_jobs_deaths ON errand_jobs (id) WHERE death_pending;

-- Leases on chores that one node at a time should do (pruning).
CREATE TABLE errand_locks (
    name   TEXT    PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  BIGINT  NOT NULL
);
