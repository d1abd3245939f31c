-- Aging reads each level of each queue for the jobs whose next step is due. A job aged k
-- steps (its base priority less its priority) steps again once it has waited k + 1 steps, so
-- this index, by queue, level, steps aged and run time, gives each k's due jobs as one range.
-- The index it replaces ordered a level by run time alone, and aging walked the jobs it had
-- aged (waiting, not due for another step) before any due one: a backlog aged one level read
-- in full at every poll. Nothing else reads by that index.
DROP INDEX errand_jobs_available;
CREATE INDEX errand_jobs_aging
    ON errand_jobs (queue, priority, (COALESCE(base_priority, priority) - priority), run_at)
    WHERE state = 'available';
