-- Claims read only jobs that are `available`: a job waiting for its time (`scheduled`, or
-- `retryable` after a failure) is promoted to `available` once due, by a statement that walks
-- only due rows. So a million retries backing off during an outage cost a claim nothing.
DROP INDEX errand_jobs_ready;
CREATE INDEX errand_jobs_available ON errand_jobs (queue, priority, run_at, id) WHERE state = 'available';
CREATE INDEX errand_jobs_due ON errand_jobs (run_at) WHERE state IN ('scheduled', 'retryable');
