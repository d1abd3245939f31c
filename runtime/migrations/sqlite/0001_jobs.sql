-- Jobs: one row per job, for its whole life. Times are milliseconds since the Unix epoch.
CREATE TABLE errand_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    args            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    -- Bumped on every claim; writes from a worker that lost the job carry an older value.
    fence           INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    run_at          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    attempted_at    INTEGER,
    finished_at     INTEGER,
    lease_until     INTEGER,
    worker          TEXT,
    -- A JSON array with one object per failed attempt.
    errors          TEXT    NOT NULL DEFAULT '[]'
);

-- Claiming: the due jobs of a queue, most urgent first.
CREATE INDEX errand_jobs_ready ON errand_jobs (queue, priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retryable');

-- Rescue: running jobs whose lease ran out.
CREATE INDEX errand_jobs_leases ON errand_jobs (lease_until) WHERE state = 'running';

CREATE INDEX errand_jobs_kind ON errand_jobs (kind, id);
