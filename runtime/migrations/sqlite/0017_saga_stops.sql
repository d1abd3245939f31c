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
--
-- The trigger is made again, still the newest, so that it fires before the one that settles
-- deferred cascades.
DROP TRIGGER errand_jobs_settle_dependents;

CREATE TRIGGER errand_jobs_settle_dependents AFTER UPDATE OF state, settle_depth ON errand_jobs
    WHEN NEW.has_dependents AND NEW.state IN ('completed', 'dead', 'cancelled')
         AND NEW.settle_depth < 10 AND (OLD.state <> NEW.state OR OLD.settle_depth >= 10)
BEGIN
    UPDATE errand_jobs
    SET waiting_on = waiting_on - 1,
        state = CASE WHEN waiting_on > 1 THEN 'pending'
                     WHEN run_at > NEW.finished_at THEN 'scheduled'
                     ELSE 'available' END
    WHERE state = 'pending' AND id IN (
        SELECT job_id FROM errand_job_deps
        WHERE depends_on = NEW.id
          AND ((NEW.state = 'completed' AND on_failure = 'cancel') OR on_failure = 'run'));
    -- Released by any one parent: the first that ends the right way.
    UPDATE errand_jobs
    SET waiting_on = 0,
        state = CASE WHEN run_at > NEW.finished_at THEN 'scheduled' ELSE 'available' END
    WHERE state = 'pending' AND id IN (
        SELECT job_id FROM errand_job_deps
        WHERE depends_on = NEW.id
          AND ((on_failure = 'when_failed'
                AND NOT (NEW.state = 'cancelled' AND OLD.state = 'running'
                         AND NEW.attempt = OLD.attempt AND EXISTS (
                    SELECT 1 FROM errand_job_deps s WHERE s.depends_on = NEW.id AND s.on_failure = 'when_stopped'))
                AND (NEW.state = 'dead' OR (NEW.state = 'cancelled'
                    AND NOT EXISTS (SELECT 1 FROM errand_job_deps d JOIN errand_jobs p ON p.id = d.depends_on
                                    WHERE d.job_id = NEW.id AND d.on_failure = 'cancel'
                                      AND p.state <> 'completed'))))
               OR (on_failure = 'when_ran' AND NEW.state IN ('completed', 'dead'))
               OR (on_failure = 'when_stopped' AND NEW.state = 'cancelled' AND OLD.state = 'running'
                   AND NEW.attempt = OLD.attempt)
               -- A step that completes after a later one was cancelled of itself (not by a
               -- cascade: `settle_depth` 0) while this one ran is undone now.
               OR (on_failure = 'when_stopped' AND NEW.state = 'completed' AND EXISTS (
                   SELECT 1 FROM errand_job_deps f JOIN errand_jobs later ON later.id = f.depends_on
                   WHERE f.job_id = errand_job_deps.job_id AND f.on_failure = 'when_failed'
                     AND later.state = 'cancelled' AND later.settle_depth = 0))));
    -- ... or cancelled when the last parent that could release it did not (its cancellation
    -- settles its own dependents through this trigger).
    UPDATE errand_jobs
    SET waiting_on = waiting_on - 1,
        state = CASE WHEN waiting_on > 1 THEN 'pending' ELSE 'cancelled' END,
        finished_at = CASE WHEN waiting_on > 1 THEN NULL ELSE NEW.finished_at END,
        settle_depth = CASE WHEN waiting_on > 1 THEN settle_depth ELSE NEW.settle_depth + 1 END,
        unique_key = CASE WHEN waiting_on > 1 OR unique_strategy = 'until_expired' THEN unique_key END,
        errors = CASE WHEN waiting_on > 1 THEN errors
                      ELSE json_insert(errors, '$[#]', json_object(
                          'attempt', attempt, 'kind', 'cancelled',
                          'message', 'not needed: job ' || NEW.id || COALESCE(' (' || NEW.step || ')', '')
                              || CASE NEW.state WHEN 'completed' THEN ' completed'
                                                WHEN 'dead' THEN ' died'
                                                ELSE ' was cancelled' END,
                          'at', NEW.finished_at, 'duration_ms', 0, 'worker', '')) END
    WHERE state = 'pending' AND id IN (
        SELECT job_id FROM errand_job_deps
        WHERE depends_on = NEW.id AND on_failure IN ('when_failed', 'when_ran', 'when_stopped'));
    UPDATE errand_jobs
    SET state = 'cancelled', finished_at = NEW.finished_at, waiting_on = 0,
        settle_depth = NEW.settle_depth + 1,
        unique_key = CASE WHEN unique_strategy = 'until_expired' THEN unique_key END,
        errors = json_insert(errors, '$[#]', json_object(
            'attempt', attempt, 'kind', 'cancelled',
            'message', 'job ' || NEW.id || COALESCE(' (' || NEW.step || ')', '')
                || ' that it depends on ' || CASE NEW.state WHEN 'dead' THEN 'died' ELSE 'was cancelled' END,
            'at', NEW.finished_at, 'duration_ms', 0, 'worker', ''))
    WHERE state = 'pending' AND NEW.state <> 'completed' AND id IN (
        SELECT job_id FROM errand_job_deps WHERE depends_on = NEW.id AND on_failure = 'cancel');
END;

-- A dead job retried while a job that runs after it anyway (`run` edges: a batch's
-- `on_complete`, `OnDependencyFailure::Run`) still waits on others was no longer waited for:
-- its death had counted the dependent down, and the dependent could run before the retried job
-- ended again. Its dependents still waiting now wait for it again. (Dependents its death
-- cancelled or released are why such a retry is refused.)
CREATE TRIGGER errand_jobs_reopen_dependents AFTER UPDATE OF state ON errand_jobs
    WHEN OLD.state = 'dead' AND NEW.state <> 'dead' AND NEW.has_dependents
BEGIN
    UPDATE errand_jobs SET waiting_on = waiting_on + 1
    WHERE state = 'pending' AND id IN (
        SELECT job_id FROM errand_job_deps WHERE depends_on = NEW.id AND on_failure = 'run');
END;
