-- The effect ledger is pruned: each record knows the job kind, key (or job id) it belongs to,
-- so that it is kept while a job that has not finished holds it.
ALTER TABLE errand_steps ADD COLUMN kind TEXT;
ALTER TABLE errand_steps ADD COLUMN job_key TEXT;
ALTER TABLE errand_steps ADD COLUMN job_id BIGINT;
CREATE INDEX errand_steps_created ON errand_steps (created_at);
CREATE INDEX errand_jobs_key ON errand_jobs (kind, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Pruning walks finished jobs by state and time, newest deaths first with ties by id.
DROP INDEX errand_jobs_finished;
CREATE INDEX errand_jobs_finished ON errand_jobs (state, finished_at, id);
