-- Listings and counts for operators (`Client::jobs`, `Client::count`, `Client::queue_stats`):
-- jobs of a state, newest or oldest first by id, and each queue's jobs by state, read from an
-- index at any table size rather than by walking every row.
CREATE INDEX errand_jobs_state ON errand_jobs (state, id);
CREATE INDEX errand_jobs_queue_state ON errand_jobs (queue, state, id);
