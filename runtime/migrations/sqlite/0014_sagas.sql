-- Sagas: a saga's compensation waits on several jobs and runs as soon as one of them ends a
-- given way, or is cancelled once none of them can: each of its edges says which end releases
-- it ('when_failed': a step after the one it undoes failed: it died, or was cancelled itself,
-- everything it waited on having completed; 'when_ran': the compensation before it ran,
-- completed or dead). `waiting_on` counts the edges still open; the first edge that releases the
-- job makes it available at once, and the last that does not cancels it, naming its parent.
-- The edges that wait for every parent ('cancel', 'run') are settled as before.
-- `kind` says what a workflow row is: 'workflow', 'batch' or 'saga'.
ALTER TABLE errand_workflows ADD COLUMN kind TEXT NOT NULL DEFAULT 'workflow';

DROP TRIGGER errand_jobs_settle_dependents;

CREATE TRIGGER errand_jobs_settle_dependents AFTER UPDATE OF state ON errand_jobs
    WHEN NEW.has_dependents AND NEW.state IN ('completed', 'dead', 'cancelled')
         AND OLD.state <> NEW.state
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
          AND ((on_failure = 'when_failed' AND (NEW.state = 'dead' OR (NEW.state = 'cancelled'
                    AND NOT EXISTS (SELECT 1 FROM errand_job_deps d JOIN errand_jobs p ON p.id = d.depends_on
                                    WHERE d.job_id = NEW.id AND d.on_failure = 'cancel'
                                      AND p.state <> 'completed'))))
               OR (on_failure = 'when_ran' AND NEW.state IN ('completed', 'dead'))));
    -- ... or cancelled when the last parent that could release it did not (its cancellation
    -- settles its own dependents through this trigger).
    UPDATE errand_jobs
    SET waiting_on = waiting_on - 1,
        state = CASE WHEN waiting_on > 1 THEN 'pending' ELSE 'cancelled' END,
        finished_at = CASE WHEN waiting_on > 1 THEN NULL ELSE NEW.finished_at END,
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
        WHERE depends_on = NEW.id AND on_failure IN ('when_failed', 'when_ran'));
    UPDATE errand_jobs
    SET state = 'cancelled', finished_at = NEW.finished_at, waiting_on = 0,
        unique_key = CASE WHEN unique_strategy = 'until_expired' THEN unique_key END,
        errors = json_insert(errors, '$[#]', json_object(
            'attempt', attempt, 'kind', 'cancelled',
            'message', 'job ' || NEW.id || COALESCE(' (' || NEW.step || ')', '')
                || ' that it depends on ' || CASE NEW.state WHEN 'dead' THEN 'died' ELSE 'was cancelled' END,
            'at', NEW.finished_at, 'duration_ms', 0, 'worker', ''))
    WHERE state = 'pending' AND NEW.state <> 'completed' AND id IN (
        SELECT job_id FROM errand_job_deps WHERE depends_on = NEW.id AND on_failure = 'cancel');
END;
