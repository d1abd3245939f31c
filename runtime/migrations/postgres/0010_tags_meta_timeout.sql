-- Per-job labels and data a request can carry (`Request::tags`, `Request::meta`) and a run
-- time limit that overrides the job's own (`Request::timeout`, in milliseconds).
ALTER TABLE errand_jobs
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN meta jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN timeout_ms bigint;
