-- Per-job labels and data a request can carry (`Request::tags`, `Request::meta`: JSON text)
-- and a run time limit that overrides the job's own (`Request::timeout`, in milliseconds).
ALTER TABLE errand_jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE errand_jobs ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
ALTER TABLE errand_jobs ADD COLUMN timeout_ms INTEGER;
