-- Rolling deploys: options change while jobs of a kind wait.
--
-- A job stored before its kind had a limit carries no limit key, but takes its kind's slots
-- when a build with the limit claims it; that claim now writes the key on the job, so that
-- the trigger frees the slot when the job stops running. Slots held by jobs that are no longer
-- running (kept by builds before this migration) are freed here.
UPDATE errand_jobs SET limit_key = (
    SELECT s.limit_key FROM errand_limit_slots s
    WHERE s.job_id = errand_jobs.id AND s.purpose = 'running')
WHERE state = 'running' AND limit_key IS NULL
  AND id IN (SELECT job_id FROM errand_limit_slots WHERE purpose = 'running');
UPDATE errand_limit_slots SET job_id = NULL
WHERE purpose = 'running' AND job_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                  WHERE j.id = errand_limit_slots.job_id AND j.state = 'running');

-- The live workers, each with the queues it works and the kinds it knows (JSON arrays): a job
-- is buried as of an unknown kind only when no live worker knows its kind. Each worker writes
-- its row as it starts and at every heartbeat, and deletes it as it stops; a row not seen for a
-- while is pruned.
CREATE TABLE errand_workers (
    id          TEXT    PRIMARY KEY,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT    NOT NULL,
    kinds       TEXT    NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Cancelling what runs. A cancel asked while a job runs ends it `cancelled` whatever it
-- returns, even when its worker had not read the request yet: the statements that end a run
-- read `cancel_requested` (see the store's statements). A saga step cancelled that way may
-- have acted before it stopped, so each compensation now also waits on its own step
-- ('when_stopped'): released when the step is cancelled while running. Such a step counts as
-- undone, not failed, so the compensations before it wait for its own, in reverse order.
-- (Sagas stored before this migration lack the edge: their step is left as it was.)

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
          AND ((on_failure = 'when_failed'
                AND NOT (NEW.state = 'cancelled' AND OLD.state = 'running' AND EXISTS (
                    SELECT 1 FROM errand_job_deps s WHERE s.depends_on = NEW.id AND s.on_failure = 'when_stopped'))
                AND (NEW.state = 'dead' OR (NEW.state = 'cancelled'
                    AND NOT EXISTS (SELECT 1 FROM errand_job_deps d JOIN errand_jobs p ON p.id = d.depends_on
                                    WHERE d.job_id = NEW.id AND d.on_failure = 'cancel'
                                      AND p.state <> 'completed'))))
               OR (on_failure = 'when_ran' AND NEW.state IN ('completed', 'dead'))
               OR (on_failure = 'when_stopped' AND NEW.state = 'cancelled' AND OLD.state = 'running')));
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
        WHERE depends_on = NEW.id AND on_failure IN ('when_failed', 'when_ran', 'when_stopped'));
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

-- A rate limit holds when jobs start, not when they are claimed: a claim *reserves* a start
-- slot (its job, no time yet), the job's run marks the slot when it begins, and the slot is
-- free again a window after that. A reserved slot is taken until then; if the job stops
-- running without having started (put back at shutdown, rescued, cancelled in the buffer),
-- the trigger frees it. (Before, a start slot counted from the claim, so jobs a busy worker
-- held in its buffer started together in a later window, beside that window's own.)
DROP TRIGGER errand_jobs_limit_slot;
CREATE TRIGGER errand_jobs_limit_slot AFTER UPDATE OF state ON errand_jobs
    WHEN OLD.state = 'running' AND NEW.state <> 'running' AND OLD.limit_key IS NOT NULL
BEGIN
    UPDATE errand_limit_slots SET job_id = NULL
    WHERE limit_key = OLD.limit_key AND job_id = OLD.id
      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));
END;
