-- Dependencies (`Request::after`, `Workflow`): a job that waits on others is `pending` until each
-- of them has completed; `waiting_on` counts those not finished yet. When a job that others wait
-- on finishes, the trigger below settles its dependents in the same statement: a completed
-- parent (or, for a dependent that runs anyway, any parent) counts one down, and the last one
-- makes the dependent available; a parent that died or was cancelled cancels its dependents and
-- theirs, naming itself. Only jobs with dependents (`has_dependents`) run the trigger.
ALTER TABLE errand_jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE errand_jobs ADD COLUMN has_dependents BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE errand_jobs ADD COLUMN workflow_id BIGINT;
ALTER TABLE errand_jobs ADD COLUMN step TEXT;
CREATE INDEX errand_jobs_workflow ON errand_jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;

CREATE TABLE errand_job_deps (
    depends_on BIGINT NOT NULL REFERENCES errand_jobs (id) ON DELETE CASCADE,
    job_id     BIGINT NOT NULL REFERENCES errand_jobs (id) ON DELETE CASCADE,
    -- What a parent that died or was cancelled does to the dependent: 'cancel', or 'run'.
    on_failure TEXT   NOT NULL,
    PRIMARY KEY (depends_on, job_id)
);
CREATE INDEX errand_job_deps_job ON errand_job_deps (job_id);

CREATE TABLE errand_workflows (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE FUNCTION errand_settle_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE errand_jobs j
    SET waiting_on = j.waiting_on - 1,
        state = CASE WHEN j.waiting_on > 1 THEN 'pending'
                     WHEN j.run_at > errand_now_ms() THEN 'scheduled'
                     ELSE 'available' END
    FROM errand_job_deps d
    WHERE d.depends_on = NEW.id AND j.id = d.job_id AND j.state = 'pending'
      AND (NEW.state = 'completed' OR d.on_failure = 'run');
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

CREATE TRIGGER errand_jobs_settle_dependents
    AFTER UPDATE OF state ON errand_jobs
    FOR EACH ROW WHEN (NEW.has_dependents AND NEW.state IN ('completed', 'dead', 'cancelled')
                       AND OLD.state <> NEW.state)
    EXECUTE FUNCTION errand_settle_dependents();
