-- Rolling deploys: options change while jobs of a kind wait.
--
-- A job stored before its kind had a limit carries no limit key, but takes its kind's slots
-- when a build with the limit claims it; that claim now writes the key on the job, so that
-- the trigger frees the slot when the job stops running. Slots held by jobs that are no longer
-- running (kept by builds before this migration) are freed here.
UPDATE errand_jobs j SET limit_key = s.limit_key
FROM errand_limit_slots s
WHERE s.job_id = j.id AND s.purpose = 'running' AND j.state = 'running' AND j.limit_key IS NULL;
UPDATE errand_limit_slots s SET job_id = NULL
WHERE s.purpose = 'running' AND s.job_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM errand_jobs j WHERE j.id = s.job_id AND j.state = 'running');

-- The live workers, each with the queues it works and the kinds it knows: a job is buried as
-- of an unknown kind only when no live worker knows its kind. Each worker writes its row as it
-- starts and at every heartbeat, and deletes it as it stops; a row not seen for a while is
-- pruned.
CREATE TABLE errand_workers (
    id          TEXT   PRIMARY KEY,
    host        TEXT   NOT NULL,
    pid         BIGINT NOT NULL,
    queues      TEXT[] NOT NULL,
    kinds       TEXT[] NOT NULL,
    concurrency BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);
