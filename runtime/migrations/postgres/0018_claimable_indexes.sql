-- Claims read indexes whose rows they can take.
--
-- The plain claim read `errand_jobs_available`, which holds every available job, and skipped
-- those of kinds it does not claim plainly (fair and limited kinds) row by row: a backlog held
-- back by a limit, or one tenant's backlog of a fair kind, was walked again by every claim.
-- Jobs with a limit key or a fair key are not in the plain claim's index: it holds only the
-- jobs it can take. A job of a plain kind carrying keys of options its kind no longer has (an
-- option removed) has its keys cleared by a worker that knows the kind (adoption), as a job
-- stored without keys its kind now has is given them.
CREATE INDEX errand_jobs_plain ON errand_jobs (queue, priority, run_at, id)
    WHERE state = 'available' AND limit_key IS NULL AND fair_key IS NULL;

-- The limited claim reads each key of a queue once (a skip through this index) and takes jobs
-- only of keys with a free slot, the first few of each: a full key's backlog is never read.
CREATE INDEX errand_jobs_limited ON errand_jobs (queue, limit_key, priority, run_at, id)
    WHERE state = 'available' AND limit_key IS NOT NULL;

-- Adoption finds the waiting jobs of a kind that carry keys (of a kind that lost its options)
-- without reading the others.
CREATE INDEX errand_jobs_keyed ON errand_jobs (kind, id)
    WHERE state IN ('available', 'scheduled', 'retryable', 'pending')
      AND (limit_key IS NOT NULL OR fair_key IS NOT NULL);
