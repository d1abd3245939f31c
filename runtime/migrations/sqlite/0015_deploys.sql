-- Rolling deploys: options change while jobs of a kind wait.
--
-- A job stored before its kind had a limit carries no limit key, but takes its kind's slots
-- when a build with the limit claims it; that claim now writes the key on the job, so that
-- the trigger frees the slot when the job stops running. Slots held by jobs that are no longer
-- running (kept by builds before this migration) are freed here.
UPDATE errand_jobs SET limit_key = (
    SELECT s.limit_key FROM errand_limit_slots s
    WHERE s.job_id = errand_jobs.id AND s.purpose = 'running')
WHERE state = 'running' AND limit_key IS NULL
  AND id IN (SELECT job_id FROM errand_limit_slots WHERE purpose = 'running');
UPDATE errand_limit_slots SET job_id = NULL
WHERE purpose = 'running' AND job_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                  WHERE j.id = errand_limit_slots.job_id AND j.state = 'running');

-- The live workers, each with the queues it works and the kinds it knows (JSON arrays): a job
-- is buried as of an unknown kind only when no live worker knows its kind. Each worker writes
-- its row as it starts and at every heartbeat, and deletes it as it stops; a row not seen for a
-- while is pruned.
CREATE TABLE errand_workers (
    id          TEXT    PRIMARY KEY,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT    NOT NULL,
    kinds       TEXT    NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL
) WITHOUT ROWID;
