-- Queue settings every node reads: a paused queue's jobs are not claimed until it is resumed
-- (`Client::pause_queue`). A queue without a row is not paused.
CREATE TABLE errand_queues (
    queue      TEXT   PRIMARY KEY,
    paused_at  BIGINT,
    updated_at BIGINT NOT NULL
);

-- Deadlines (`#[job(expires_in = ..)]`, `Request::expires_at`): a job that has not started by
-- `expires_at` is cancelled as expired and never runs late. The index holds only jobs that
-- have a deadline and are still waiting.
ALTER TABLE errand_jobs ADD COLUMN expires_at BIGINT;
CREATE INDEX errand_jobs_expiring ON errand_jobs (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'available', 'retryable', 'pending');

-- Periodic jobs: one row per schedule, written by the workers that run it. Slots up to
-- `done_until` are dealt with: a node enqueues a slot's job only in the transaction that moves
-- `done_until` past it, so each slot is enqueued once however many nodes run.
CREATE TABLE errand_schedules (
    name       TEXT    PRIMARY KEY,
    cron       TEXT    NOT NULL,
    timezone   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    queue      TEXT    NOT NULL,
    catch_up   TEXT    NOT NULL,
    done_until BIGINT  NOT NULL,
    last_run   BIGINT,
    last_job   BIGINT,
    next_run   BIGINT,
    seen_at    BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL
);

-- Limits across the cluster (`#[job(concurrency = .., rate = .., concurrency_key = ..)]`): a job
-- of a limited kind carries its limit's key, and starts only by taking free slots of that key:
-- a `running` slot, held while the job runs and freed by the trigger below when it stops, and
-- a `start` slot, free again a window after it was taken. A claim locks the slots it takes, so
-- two nodes never take one slot.
ALTER TABLE errand_jobs ADD COLUMN limit_key TEXT;
CREATE TABLE errand_limit_slots (
    limit_key TEXT    NOT NULL,
    purpose   TEXT    NOT NULL,
    n         INTEGER NOT NULL,
    job_id    BIGINT,
    taken_at  BIGINT,
    PRIMARY KEY (limit_key, purpose, n)
);

-- Frees the running slot of a limited job that stopped running, and wakes the idle workers of
-- its queue (`+queue`: they look for limited jobs again): a job waiting for that slot can start.
CREATE FUNCTION errand_free_limit_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE errand_limit_slots SET job_id = NULL
    WHERE limit_key = OLD.limit_key AND purpose = 'running' AND job_id = OLD.id;
    PERFORM pg_notify('errand_' || TG_TABLE_SCHEMA, '+' || OLD.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER errand_jobs_limit_slot
    AFTER UPDATE OF state ON errand_jobs
    FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state <> 'running' AND OLD.limit_key IS NOT NULL)
    EXECUTE FUNCTION errand_free_limit_slot();

-- Fairness within a queue (`#[job(fair_by = "<account_id>")]`): claims take the waiting jobs of
-- each key in turn, the head of every key before the second of any, read per key from this
-- index of fair jobs only; among keys, the one served longest ago (or never) goes first.
ALTER TABLE errand_jobs ADD COLUMN fair_key TEXT;
CREATE INDEX errand_jobs_fair ON errand_jobs (queue, fair_key, priority, run_at, id)
    WHERE state = 'available' AND fair_key IS NOT NULL;
CREATE TABLE errand_fair_turns (
    queue     TEXT NOT NULL,
    fair_key  TEXT NOT NULL,
    served_at BIGINT NOT NULL,
    PRIMARY KEY (queue, fair_key)
);

-- Priority aging: a job waiting to run moves up one priority level for each aging period it
-- has waited since its run time. `base_priority` keeps the priority it was given, once aged.
ALTER TABLE errand_jobs ADD COLUMN base_priority SMALLINT;
