-- Rolling deploys: options change while jobs of a kind wait.
--
-- A job stored before its kind had a limit carries no limit key, but takes its kind's slots
-- when a build with the limit claims it; that claim now writes the key on the job, so that
-- the trigger frees the slot when the job stops running. Slots held by jobs that are no longer
-- running (kept by builds before this migration) are freed here.
UPDATE errand_jobs j SET limit_key = s.limit_key
FROM errand_limit_slots s
WHERE s.job_id = j.id AND s.purpose = 'running' AND j.state = 'running' AND j.limit_key IS NULL;
UPDATE errand_limit_slots s SET job_id = NULL
WHERE s.purpose = 'running' AND s.job_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM errand_jobs j WHERE j.id = s.job_id AND j.state = 'running');

-- The live workers, each with the queues it works and the kinds it knows: a job is buried as
-- of an unknown kind only when no live worker knows its kind. Each worker writes its row as it
-- starts and at every heartbeat, and deletes it as it stops; a row not seen for a while is
-- pruned.
CREATE TABLE errand_workers (
    id          TEXT   PRIMARY KEY,
    host        TEXT   NOT NULL,
    pid         BIGINT NOT NULL,
    queues      TEXT[] NOT NULL,
    kinds       TEXT[] NOT NULL,
    concurrency BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);

-- Cancelling what runs. A cancel asked while a job runs ends it `cancelled` whatever it
-- returns, even when its worker had not read the request yet: the statements that end a run
-- read `cancel_requested` (see the store's statements). A saga step cancelled that way may
-- have acted before it stopped, so each compensation now also waits on its own step
-- ('when_stopped'): released when the step is cancelled while running. Such a step counts as
-- undone, not failed, so the compensations before it wait for its own, in reverse order.
-- (Sagas stored before this migration lack the edge: their step is left as it was.)
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

-- A rate limit holds when jobs start, not when they are claimed: a claim *reserves* a start
-- slot (its job, no time yet), the job's run marks the slot when it begins, and the slot is
-- free again a window after that. A reserved slot is taken until then; if the job stops
-- running without having started (put back at shutdown, rescued, cancelled in the buffer),
-- the trigger frees it. (Before, a start slot counted from the claim, so jobs a busy worker
-- held in its buffer started together in a later window, beside that window's own.)
CREATE OR REPLACE FUNCTION errand_free_limit_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE errand_limit_slots SET job_id = NULL
    WHERE limit_key = OLD.limit_key AND job_id = OLD.id
      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));
    PERFORM pg_notify('errand_' || TG_TABLE_SCHEMA, '+' || OLD.queue);
    RETURN NULL;
END
$$;
