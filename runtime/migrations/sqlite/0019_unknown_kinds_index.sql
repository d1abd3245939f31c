-- Finding jobs of kinds no live worker knows, to bury them, read every available job of the
-- worker's queues every 30 s, filtering by kind row by row. This index lists the available
-- jobs by kind: the search skips from one kind to the next (one probe a kind) and reads the
-- jobs only of kinds no worker knows.
CREATE INDEX errand_jobs_available_kinds ON errand_jobs (kind, queue, run_at)
    WHERE state = 'available';
