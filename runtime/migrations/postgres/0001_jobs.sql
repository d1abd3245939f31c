-- Jobs: one row per job, for its whole life. Times are milliseconds since the Unix epoch, read
-- from the database's clock, so that workers on machines with skewed clocks agree.
CREATE FUNCTION errand_now_ms() RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

CREATE TABLE errand_jobs (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT     NOT NULL,
    queue           TEXT     NOT NULL,
    args            JSONB    NOT NULL,
    state           TEXT     NOT NULL,
    priority        SMALLINT NOT NULL,
    attempt         INTEGER  NOT NULL DEFAULT 0,
    max_attempts    INTEGER  NOT NULL,
    -- Bumped on every claim; writes from a worker that lost the job carry an older value.
    fence           BIGINT   NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    run_at          BIGINT   NOT NULL,
    created_at      BIGINT   NOT NULL,
    attempted_at    BIGINT,
    finished_at     BIGINT,
    lease_until     BIGINT,
    worker          TEXT,
    -- One object per failed attempt.
    errors          JSONB    NOT NULL DEFAULT '[]'
);

-- Claiming: the due jobs of a queue, most urgent first.
CREATE INDEX errand_jobs_ready ON errand_jobs (queue, priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retryable');

-- Rescue: running jobs whose lease ran out.
CREATE INDEX errand_jobs_leases ON errand_jobs (lease_until) WHERE state = 'running';

CREATE INDEX errand_jobs_kind ON errand_jobs (kind, id);

-- Wake idle workers when a job becomes available. A trigger also covers jobs enqueued inside a
-- caller's transaction: PostgreSQL delivers the notification when (and only if) it commits.
CREATE FUNCTION errand_notify_available() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('errand_' || TG_TABLE_SCHEMA, NEW.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER errand_jobs_available
    AFTER INSERT OR UPDATE OF state ON errand_jobs
    FOR EACH ROW WHEN (NEW.state = 'available')
    EXECUTE FUNCTION errand_notify_available();
