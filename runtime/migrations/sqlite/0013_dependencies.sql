-- Dependencies (`Request::after`, `Workflow`): a job that waits on others is `pending` until each
-- of them has completed; `waiting_on` counts those not finished yet. When a job that others wait
-- on finishes, the triggers below settle its dependents in the same statement: a completed
-- parent (or, for a dependent that runs anyway, any parent) counts one down, and the last one
-- makes the dependent available; a parent that died or was cancelled cancels its dependents,
-- naming itself, and their cancellation cancels theirs (the connections turn on
-- `recursive_triggers`). Only jobs with dependents (`has_dependents`) run the triggers.
ALTER TABLE errand_jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE errand_jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE errand_jobs ADD COLUMN workflow_id INTEGER;
ALTER TABLE errand_jobs ADD COLUMN step TEXT;
CREATE INDEX errand_jobs_workflow ON errand_jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;

CREATE TABLE errand_job_deps (
    depends_on INTEGER NOT NULL REFERENCES errand_jobs (id) ON DELETE CASCADE,
    job_id     INTEGER NOT NULL REFERENCES errand_jobs (id) ON DELETE CASCADE,
    on_failure TEXT    NOT NULL,
    PRIMARY KEY (depends_on, job_id)
) WITHOUT ROWID;
CREATE INDEX errand_job_deps_job ON errand_job_deps (job_id);

CREATE TABLE errand_workflows (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

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
        WHERE depends_on = NEW.id AND (NEW.state = 'completed' OR on_failure = 'run'));
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
