-- Workflows deeper than a trigger may nest.
--
-- A job that ends settles its dependents in the same statement, and their cancellation settles
-- theirs, each level a trigger inside the one before. Dependents cancelled because a job they
-- depend on failed are found at once (the recursive query below), but a saga's compensations
-- are decided one after another, each by the one after it, and PostgreSQL's stack holds a few
-- hundred nested triggers (`max_stack_depth`, 2 MB by default): a completed saga of 2,000
-- steps failed its last step's completion, and the step was rescued and failed again, forever.
-- Each job cancelled by a cascade now records how deep in it (`settle_depth`), and one 100
-- levels deep is cancelled but settles nothing yet: the job whose statement began the cascade
-- (depth 0) then settles those, each from depth 1 again, 100 levels a round, until none is
-- left, in the same statement.
--
-- The recursive query also walks only through jobs still pending: it ran again from each job it
-- cancelled (whose trigger runs too) over everything below it, which made a chain of 10,000
-- jobs take minutes.
ALTER TABLE errand_jobs ADD COLUMN settle_depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX errand_jobs_unsettled ON errand_jobs (id) WHERE settle_depth >= 100;

CREATE OR REPLACE FUNCTION errand_settle_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Whether this job failed of itself: it died, or it was cancelled while everything it
    -- waited on had completed (not cancelled because a job it waited on failed).
    -- A saga step cancelled while it ran may have acted: its own compensation undoes it
    -- ('when_stopped'), and the earlier ones wait for that one as after a completed step.
    stopped boolean := NEW.state = 'cancelled' AND OLD.state = 'running' AND EXISTS (
        SELECT 1 FROM errand_job_deps d WHERE d.depends_on = NEW.id AND d.on_failure = 'when_stopped');
    failed boolean := NOT stopped AND (NEW.state = 'dead' OR (NEW.state = 'cancelled' AND NOT EXISTS (
        SELECT 1 FROM errand_job_deps d JOIN errand_jobs p ON p.id = d.depends_on
        WHERE d.job_id = NEW.id AND d.on_failure = 'cancel' AND p.state <> 'completed')));
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
           OR (d.on_failure = 'when_ran' AND NEW.state IN ('completed', 'dead'))
           OR (d.on_failure = 'when_stopped' AND stopped));
    -- ... or cancelled when the last parent that could release it did not. (Those released by
    -- the statement above are no longer pending.) Its cancellation settles its own dependents
    -- through this trigger.
    UPDATE errand_jobs j
    SET waiting_on = j.waiting_on - 1,
        state = CASE WHEN j.waiting_on > 1 THEN 'pending' ELSE 'cancelled' END,
        finished_at = CASE WHEN j.waiting_on > 1 THEN NULL ELSE errand_now_ms() END,
        settle_depth = CASE WHEN j.waiting_on > 1 THEN j.settle_depth ELSE NEW.settle_depth + 1 END,
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
      AND d.on_failure IN ('when_failed', 'when_ran', 'when_stopped');
    IF NEW.state <> 'completed' THEN
        -- Every job that waits on this one through dependents that are cancelled with it, at
        -- once: no trigger recursion, whatever the depth.
        -- Each is named with the job it waited on: this one, or one cancelled with it.
        WITH RECURSIVE doomed(id, parent) AS (
            SELECT d.job_id, d.depends_on FROM errand_job_deps d
            WHERE d.depends_on = NEW.id AND d.on_failure = 'cancel'
            UNION
            SELECT d.job_id, d.depends_on
            FROM doomed JOIN errand_job_deps d ON d.depends_on = doomed.id
                        JOIN errand_jobs j ON j.id = d.job_id
            WHERE d.on_failure = 'cancel' AND j.state = 'pending'
        ), named AS (
            SELECT DISTINCT ON (doomed.id) doomed.id, doomed.parent, p.step,
                   CASE WHEN doomed.parent = NEW.id AND NEW.state = 'dead' THEN 'died'
                        ELSE 'was cancelled' END AS what
            FROM doomed JOIN errand_jobs p ON p.id = doomed.parent
            ORDER BY doomed.id, doomed.parent
        )
        UPDATE errand_jobs j
        SET state = 'cancelled', finished_at = errand_now_ms(), waiting_on = 0,
            settle_depth = NEW.settle_depth + 1,
            unique_key = errand_key_after(j.unique_strategy, 'cancelled', j.unique_key),
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'kind', 'cancelled',
                'message', 'job ' || n.parent || COALESCE(' (' || n.step || ')', '')
                    || ' that it depends on ' || n.what,
                'at', errand_now_ms(), 'duration_ms', 0, 'worker', ''))
        FROM named n
        WHERE j.id = n.id AND j.state = 'pending';
    END IF;
    -- The statement's own job settles what was deferred, 100 levels a round.
    IF NEW.settle_depth = 0 AND OLD.state <> NEW.state THEN
        LOOP
            UPDATE errand_jobs SET settle_depth = 1 WHERE settle_depth >= 100;
            EXIT WHEN NOT FOUND;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER errand_jobs_settle_dependents ON errand_jobs;
CREATE TRIGGER errand_jobs_settle_dependents
    AFTER UPDATE OF state, settle_depth ON errand_jobs
    FOR EACH ROW WHEN (NEW.has_dependents AND NEW.state IN ('completed', 'dead', 'cancelled')
                       AND NEW.settle_depth < 100
                       AND (OLD.state <> NEW.state OR OLD.settle_depth >= 100))
    EXECUTE FUNCTION errand_settle_dependents();
