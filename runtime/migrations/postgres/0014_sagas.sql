-- Sagas: a saga's compensation waits on several jobs and runs as soon as one of them ends a
-- given way, or is cancelled once none of them can: each of its edges says which end releases
-- it ('when_failed': a step after the one it undoes failed: it died, or was cancelled itself,
-- everything it waited on having completed; 'when_ran': the compensation before it ran,
-- completed or dead). `waiting_on` counts the edges still open; the first edge that releases the
-- job makes it available at once, and the last that does not cancels it, naming its parent.
-- The edges that wait for every parent ('cancel', 'run') are settled as before.
-- `kind` says what a workflow row is: 'workflow', 'batch' or 'saga'.
ALTER TABLE errand_workflows ADD COLUMN kind TEXT NOT NULL DEFAULT 'workflow';

CREATE OR REPLACE FUNCTION errand_settle_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Whether this job failed of itself: it died, or it was cancelled while everything it
    -- waited on had completed (not cancelled because a job it waited on failed).
    failed boolean := NEW.state = 'dead' OR (NEW.state = 'cancelled' AND NOT EXISTS (
        SELECT 1 FROM errand_job_deps d JOIN errand_jobs p ON p.id = d.depends_on
        WHERE d.job_id = NEW.id AND d.on_failure = 'cancel' AND p.state <> 'completed'));
BEGIN
    UPDATE errand_jobs j
    SET waiting_on = j.waiting_on - 1,
        state = CASE WHEN j.waiting_on > 1 THEN 'pending'
                     WHEN j.run_at > errand_now_ms() THEN 'scheduled'
                     ELSE 'available' END
    FROM errand_job_deps d
    WHERE d.depends_on = NEW.id AND j.id = d.job_id AND j.state = 'pending'
      AND ((NEW.state = 'completed' AND d.on_failure = 'cancel') OR d.on_failure = 'run');
    -- Released by any one parent: the first that ends the right way.
    UPDATE errand_jobs j
    SET waiting_on = 0,
        state = CASE WHEN j.run_at > errand_now_ms() THEN 'scheduled' ELSE 'available' END
    FROM errand_job_deps d
    WHERE d.depends_on = NEW.id AND j.id = d.job_id AND j.state = 'pending'
      AND ((d.on_failure = 'when_failed' AND failed)
           OR (d.on_failure = 'when_ran' AND NEW.state IN ('completed', 'dead')));
    -- ... or cancelled when the last parent that could release it did not. (Those released by
    -- the statement above are no longer pending.) Its cancellation settles its own dependents
    -- through this trigger.
    UPDATE errand_jobs j
    SET waiting_on = j.waiting_on - 1,
        state = CASE WHEN j.waiting_on > 1 THEN 'pending' ELSE 'cancelled' END,
        finished_at = CASE WHEN j.waiting_on > 1 THEN NULL ELSE errand_now_ms() END,
        unique_key = CASE WHEN j.waiting_on > 1 THEN j.unique_key
                          ELSE errand_key_after(j.unique_strategy, 'cancelled', j.unique_key) END,
        errors = CASE WHEN j.waiting_on > 1 THEN j.errors
                      ELSE j.errors || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempt, 'kind', 'cancelled',
                          'message', 'not needed: job ' || NEW.id || COALESCE(' (' || NEW.step || ')', '')
                              || CASE NEW.state WHEN 'completed' THEN ' completed'
                                                WHEN 'dead' THEN ' died'
                                                ELSE ' was cancelled' END,
                          'at', errand_now_ms(), 'duration_ms', 0, 'worker', '')) END
    FROM errand_job_deps d
    WHERE d.depends_on = NEW.id AND j.id = d.job_id AND j.state = 'pending'
      AND d.on_failure IN ('when_failed', 'when_ran');
    IF NEW.state <> 'completed' THEN
        -- Every job that waits on this one through dependents that are cancelled with it, at
        -- once: no trigger recursion, whatever the depth.
        -- Each is named with the job it waited on: this one, or one cancelled with it.
        WITH RECURSIVE doomed(id, parent) AS (
            SELECT d.job_id, d.depends_on FROM errand_job_deps d
            WHERE d.depends_on = NEW.id AND d.on_failure = 'cancel'
            UNION
            SELECT d.job_id, d.depends_on FROM errand_job_deps d JOIN doomed ON d.depends_on = doomed.id
            WHERE d.on_failure = 'cancel'
        ), named AS (
            SELECT DISTINCT ON (doomed.id) doomed.id, doomed.parent, p.step,
                   CASE WHEN doomed.parent = NEW.id AND NEW.state = 'dead' THEN 'died'
                        ELSE 'was cancelled' END AS what
            FROM doomed JOIN errand_jobs p ON p.id = doomed.parent
            ORDER BY doomed.id, doomed.parent
        )
        UPDATE errand_jobs j
        SET state = 'cancelled', finished_at = errand_now_ms(), waiting_on = 0,
            unique_key = errand_key_after(j.unique_strategy, 'cancelled', j.unique_key),
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'kind', 'cancelled',
                'message', 'job ' || n.parent || COALESCE(' (' || n.step || ')', '')
                    || ' that it depends on ' || n.what,
                'at', errand_now_ms(), 'duration_ms', 0, 'worker', ''))
        FROM named n
        WHERE j.id = n.id AND j.state = 'pending';
    END IF;
    RETURN NULL;
END
$$;
