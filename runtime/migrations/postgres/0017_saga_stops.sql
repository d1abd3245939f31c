-- Saga steps that stop, found by the model of the workflow rules (`errand-model`, flow).
--
-- A step cancelled from `running` counted as stopped (it may have acted, so its own
-- compensation ran) even when its run never began: cancelled as expired, or as asked, while it
-- waited in its worker's buffer. A run that ends before it began gives its attempt back, and
-- one whose end a cancellation overrides keeps it (the statements that end runs), so a stopped
-- step is now one cancelled from `running` with its attempt kept.
--
-- A step cancelled of itself (by an operator, or expired) while the step before it still ran
-- was taken, rightly, as not failed then (the compensation of the running step must not run
-- beside it), but nothing undid that earlier step when it completed afterwards: its
-- compensation was cancelled as not needed, and the saga ended with a completed step not
-- undone. Its completion now releases its compensation when a later step was cancelled so.
CREATE OR REPLACE FUNCTION errand_settle_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Whether this job failed of itself: it died, or it was cancelled while everything it
    -- waited on had completed (not cancelled because a job it waited on failed).
    -- A saga step cancelled while its run had begun (its attempt kept) may have acted: its own
    -- compensation undoes it ('when_stopped'), and the earlier ones wait for that one as after
    -- a completed step.
    stopped boolean := NEW.state = 'cancelled' AND OLD.state = 'running' AND NEW.attempt = OLD.attempt
        AND EXISTS (
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
           OR (d.on_failure = 'when_stopped' AND stopped)
           -- A step that completes after a later one was cancelled of itself (not by a
           -- cascade: `settle_depth` 0) while this one ran is undone now.
           OR (d.on_failure = 'when_stopped' AND NEW.state = 'completed' AND EXISTS (
               SELECT 1 FROM errand_job_deps f JOIN errand_jobs later ON later.id = f.depends_on
               WHERE f.job_id = j.id AND f.on_failure = 'when_failed'
                 AND later.state = 'cancelled' AND later.settle_depth = 0)));
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

-- A dead job retried while a job that runs after it anyway (`run` edges: a batch's
-- `on_complete`, `OnDependencyFailure::Run`) still waits on others was no longer waited for:
-- its death had counted the dependent down, and the dependent could run before the retried job
-- ended again. Its dependents still waiting now wait for it again. (Dependents its death
-- cancelled or released are why such a retry is refused.)
CREATE FUNCTION errand_reopen_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE errand_jobs j SET waiting_on = j.waiting_on + 1
    FROM errand_job_deps d
    WHERE d.depends_on = NEW.id AND d.on_failure = 'run' AND j.id = d.job_id AND j.state = 'pending';
    RETURN NULL;
END
$$;

CREATE TRIGGER errand_jobs_reopen_dependents
    AFTER UPDATE OF state ON errand_jobs
    FOR EACH ROW WHEN (OLD.state = 'dead' AND NEW.state <> 'dead' AND NEW.has_dependents)
    EXECUTE FUNCTION errand_reopen_dependents();
