-- Workflows deeper than a trigger may nest.
--
-- A job that ends settles its dependents in the same statement, and their cancellation settles
-- theirs, each level a trigger inside the one before. SQLite nests triggers at most 1,000 deep,
-- so a chain of 1,001 jobs whose first died failed the dying job's statement, and the job was
-- rescued and died again, forever; and each level costs more the deeper it nests (a chain of
-- 2,000 took 30 s to cancel). Each job cancelled by a cascade now records how deep in it
-- (`settle_depth`), and one 10 levels deep is cancelled but settles nothing yet: the job whose
-- statement began the cascade (depth 0) then settles those, each from depth 1 again, in rounds,
-- in the same statement, until none is left (a chain of 10,000 is cancelled in about a second).
ALTER TABLE errand_jobs ADD COLUMN settle_depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX errand_jobs_unsettled ON errand_jobs (id) WHERE settle_depth >= 10;

-- The rounds. A trigger cannot loop, but inserting rows into a view runs its INSTEAD OF trigger
-- once for each, one after another (not nested): 200 batches of 100 rounds (180,000 levels), a
-- batch only while something is left to settle.
CREATE VIEW errand_settle_counter AS
    WITH RECURSIVE round(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM round WHERE n < 200)
    SELECT n FROM round;
CREATE VIEW errand_settle_round AS SELECT 0 AS n;
CREATE TRIGGER errand_settle_round INSTEAD OF INSERT ON errand_settle_round
BEGIN
    UPDATE errand_jobs SET settle_depth = 1 WHERE settle_depth >= 10;
END;
CREATE VIEW errand_settle_batch AS SELECT 0 AS n;
CREATE TRIGGER errand_settle_batch INSTEAD OF INSERT ON errand_settle_batch
BEGIN
    INSERT INTO errand_settle_round (n)
    SELECT n FROM errand_settle_counter
    WHERE n <= 100 AND EXISTS (SELECT 1 FROM errand_jobs WHERE settle_depth >= 10);
END;

-- The job whose statement began the cascade (depth 0) settles what was deferred. This trigger
-- fires after the one that settles the job's dependents, which is created after it: SQLite
-- fires a statement's triggers newest first (the long-workflow tests fail otherwise).
CREATE TRIGGER errand_jobs_settle_deferred AFTER UPDATE OF state ON errand_jobs
    WHEN NEW.has_dependents AND NEW.settle_depth = 0 AND OLD.state <> NEW.state
         AND NEW.state IN ('completed', 'dead', 'cancelled')
         AND EXISTS (SELECT 1 FROM errand_jobs WHERE settle_depth >= 10)
BEGIN
    INSERT INTO errand_settle_batch (n) SELECT n FROM errand_settle_counter;
END;

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
