//! The PostgreSQL store: many workers on many machines.
//!
//! Claims take a batch across queues in one statement with `FOR UPDATE SKIP LOCKED`, so workers
//! never wait on each other's rows and never take the same job. Every time comes from the
//! database's clock (`errand_now_ms()`), so machines with skewed clocks agree on what is due and
//! which lease ran out. When a job becomes available, `errand_<schema>` is notified (by the
//! inserting statement itself, once per queue, through `errand_wake`; by a trigger for updates),
//! and workers `LISTEN` on it.
//!
//! The store's tables live in one schema (`public` unless [`Config::schema`](crate::Config::schema)
//! says otherwise), reached through the connections' `search_path`; no statement names it.
//!
//! What happens when lives in [`sql`](super::sql); this module holds PostgreSQL's statements
//! and how to connect.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::PgConnection;

use crate::error::{redact, Error};
use crate::info::duration_millis;
use crate::job::JobId;
use crate::migrations::Migration;
use crate::store::sql::{self, op_error, Dialect, SqlStore, Statements, Value};
use crate::store::{BoxFuture, Clock, Inserted, NewJob, SYSTEM_CLOCK};

/// PostgreSQL, and what it takes to open a connection of errand's own outside the pool.
#[derive(Clone, Debug)]
pub(crate) struct Postgres {
    /// For `LISTEN`. Boxed: the options are large, and the store is one variant of a small enum.
    options: Box<PgConnectOptions>,
    schema: String,
}

pub(crate) type PostgresStore = SqlStore<Postgres>;

/// The notification payload that says a job was scheduled for later; queue names cannot be
/// `*`.
pub(crate) const SCHEDULED: &str = "*";

/// The prefix of a notification's queue that says the job has limits or `fair_by`; queue
/// names cannot contain `+`.
pub(crate) const SPECIAL: &str = "+";

/// The prefix of a notification that names a running job whose cancellation was asked; queue
/// names cannot contain `!`.
pub(crate) const CANCEL: &str = "!";

/// How long connecting may take before `Client::connect` gives up with the cause.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections of the hot path's pool ([`SqlStore::hot`]): each worker's claim loop
/// holds one for a round trip at a time, and its lease keeper one now and then.
const HOT_CONNECTIONS: u32 = 4;

impl SqlStore<Postgres> {
    pub(crate) fn connect<'a>(
        url: &'a str,
        schema: &'a str,
        max_connections: u32,
        migrate: bool,
    ) -> BoxFuture<'a, Result<PostgresStore, Error>> {
        Box::pin(async move {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::InvalidUrl {
                    url: redact(url),
                    reason: e.to_string(),
                })?
                // A startup parameter, not SQL: the schema name never becomes part of a statement.
                .options([("search_path", schema)]);
            let connect_error = |source| Error::Connect {
                store: Postgres::STORE,
                url: format!(
                    "{} ({}:{})",
                    redact(url),
                    options.get_host(),
                    options.get_port()
                ),
                source,
            };
            // One connection first, on its own: a pool retries until its acquire timeout and
            // then reports only that it timed out; this reports the cause (refused, unknown
            // host, authentication failed) at once.
            let probe = tokio::time::timeout(
                CONNECT_TIMEOUT,
                <PgConnection as sqlx::Connection>::connect_with(&options),
            )
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )))
            })?
            .map_err(connect_error)?;
            let _ = sqlx::Connection::close(probe).await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .map_err(connect_error)?;
            // Opened on first use: a client that only enqueues never opens one. Its statements
            // read a few pages each, and never need a plan compiled (see `BEGIN_WRITE`).
            let hot = PgPoolOptions::new()
                .max_connections(max_connections.clamp(1, HOT_CONNECTIONS))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(
                    options
                        .clone()
                        .options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")]),
                );
            let store = SqlStore {
                pool,
                hot,
                dialect: Postgres {
                    options: Box::new(options),
                    schema: schema.to_owned(),
                },
                // PostgreSQL's statements read the database's clock.
                clock: Clock::default(),
            };
            if migrate {
                store.migrate().await?;
            } else {
                store.check_version().await?;
            }
            Ok(store)
        })
    }

    /// A listener for this schema's "job available" notifications.
    ///
    /// The listener holds its connection for as long as it lives, so it gets one of its own,
    /// outside the client's pool: a pool of one connection must still serve claims.
    pub(crate) async fn listen(&self) -> Result<PgListener, Error> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*self.dialect.options).clone());
        let mut listener = PgListener::connect_with(&own)
            .await
            .map_err(|e| op_error::<Postgres>("open a LISTEN connection", e))?;
        listener
            .listen(&format!("errand_{}", self.dialect.schema))
            .await
            .map_err(|e| op_error::<Postgres>("LISTEN for available jobs", e))?;
        Ok(listener)
    }
}

/// Inserts a job in the caller's transaction (see [`sql::insert`]).
pub(crate) fn insert<'a>(
    conn: &'a mut PgConnection,
    job: &'a NewJob,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    sql::insert::<Postgres>(conn, job, &SYSTEM_CLOCK)
}

/// Inserts jobs in the caller's transaction (see [`sql::insert_many`]).
pub(crate) fn insert_many<'a>(
    conn: &'a mut PgConnection,
    jobs: &'a [NewJob],
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    sql::insert_many::<Postgres>(conn, jobs, &SYSTEM_CLOCK)
}

/// Stores a workflow in the caller's transaction; its id.
pub(crate) fn insert_workflow<'a>(
    conn: &'a mut PgConnection,
    name: &'a str,
    kind: &'static str,
) -> BoxFuture<'a, Result<i64, Error>> {
    sql::insert_workflow::<Postgres>(conn, name, kind, &SYSTEM_CLOCK)
}

/// Completes a running job in the caller's transaction (see [`sql::complete`]).
pub(crate) fn complete(
    conn: &mut PgConnection,
    id: JobId,
    fence: i64,
) -> BoxFuture<'_, Result<bool, Error>> {
    sql::complete::<Postgres>(conn, id, fence, &SYSTEM_CLOCK)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn query<'q>(sql: &'q str, values: Vec<Value<'q>>, _clock: &Clock) -> PgQuery<'q> {
    values
        .into_iter()
        .fold(sqlx::query(sql), |query, value| match value {
            Value::Int(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Texts(v) => query.bind(v),
            Value::OwnedTexts(v) => query.bind(v),
            Value::Ints(v) => query.bind(v),
            Value::OptTexts(v) => query.bind(v),
            Value::OptInts(v) => query.bind(v),
            Value::Json(v) => query.bind(v),
            // The statements read the database's clock themselves; the parameter is unused.
            Value::Now | Value::Wall => query.bind(None::<i64>),
            Value::Lease(lease) => query.bind(duration_millis(lease)),
        })
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Row = PgRow;

    const STORE: &'static str = "postgres";
    const SQL: &'static Statements = &STATEMENTS;
    const MIGRATIONS: &'static [Migration] = crate::migrations::POSTGRES;
    const CLAIMS_ALL_QUEUES: bool = true;
    // Sent as one simple query: one round trip. errand's statements read a few pages each,
    // but some are estimated costly (a recursive skip through a million rows' keys is costed
    // as if it read them): with JIT on, PostgreSQL compiled each fair and limited claim, 40 ms
    // of compiling to read 9 pages, and a drain beside a million held-back jobs ran at a tenth
    // of its pace. Users' own transactions (`Client::begin`) keep the server's setting.
    const BEGIN_WRITE: &'static str = "BEGIN; SET LOCAL jit = off";

    sql::dialect_io!(PgConnection, PgRow, query);

    /// A transaction holding an advisory lock per schema, so that processes that start together
    /// wait for one another; the schema is created in it.
    fn begin_migrations<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            Self::raw(conn, "BEGIN").await?;
            let schema = vec![Value::from(self.schema.as_str())];
            let lock = "SELECT pg_advisory_xact_lock(hashtext('errand migrations ' || $1))";
            Self::execute(conn, lock, schema.clone(), &SYSTEM_CLOCK).await?;
            // `format('%I')` quotes the name on the server: it is bound as a value, never spliced.
            let format = "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text)";
            let create = Self::fetch(conn, format, schema, &SYSTEM_CLOCK).await?;
            let create: String = match create.first() {
                Some(row) => sqlx::Row::try_get(row, 0)?,
                None => return Err(sqlx::Error::RowNotFound),
            };
            Self::raw(conn, &create).await
        })
    }

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn among(column: &str, n: usize) -> String {
        format!("{column} = ANY(${n})")
    }

    fn has_tag(n: usize) -> String {
        format!("id IN (SELECT job_id FROM errand_job_tags WHERE tag = ${n})")
    }

    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<Value<'a>> {
        // One array per column.
        let (delays, ats) = jobs.iter().map(|j| j.run_at.delay_or_at_ms()).unzip();
        vec![
            Value::Texts(jobs.iter().map(|j| j.kind).collect()),
            Value::Texts(jobs.iter().map(|j| j.queue.as_str()).collect()),
            Value::Texts(jobs.iter().map(|j| j.args.as_str()).collect()),
            Value::Ints(jobs.iter().map(|j| i64::from(j.priority)).collect()),
            Value::Ints(jobs.iter().map(|j| i64::from(j.max_attempts)).collect()),
            Value::OptTexts(jobs.iter().map(|j| j.key.as_deref()).collect()),
            Value::OptInts(delays),
            Value::OptInts(ats),
            Value::Now,
            // Each job's tags as a JSON array: PostgreSQL has no arrays of arrays of lengths
            // that differ.
            Value::OwnedTexts(jobs.iter().map(NewJob::tags_json).collect()),
            Value::Texts(jobs.iter().map(NewJob::meta_json).collect()),
            Value::OptInts(jobs.iter().map(|j| j.timeout_ms).collect()),
            Value::OptInts(jobs.iter().map(|j| j.expiry_ms().0).collect()),
            Value::OptInts(jobs.iter().map(|j| j.expiry_ms().1).collect()),
            Value::OptTexts(jobs.iter().map(|j| j.limit_key.as_deref()).collect()),
            Value::OptTexts(jobs.iter().map(|j| j.fair_key.as_deref()).collect()),
        ]
    }
}

/// Claims, for each queue `$1[i]`, up to `$2[i]` available jobs of the kinds `$5`, most urgent
/// first, for worker `$4` with a lease of `$3` ms: a `picked` CTE, then the update. It reads
/// only the `errand_jobs_plain` index: jobs waiting for their time are not in it (see
/// [`Statements::promote`]), nor jobs with a limit or fair key, which other claims take. A
/// paused queue gives nothing; a job past its deadline is left for [`Statements::expire`].
macro_rules! claim {
    () => {
        concat!(
            "picked AS (
             SELECT j.id
             FROM unnest($1::text[], $2::bigint[]) AS w(queue, n)
             CROSS JOIN LATERAL (
                 SELECT id FROM errand_jobs
                 WHERE queue = w.queue AND state = 'available' AND kind = ANY($5)
                   AND limit_key IS NULL AND fair_key IS NULL
                   AND (expires_at IS NULL OR expires_at > errand_now_ms())
                   AND NOT EXISTS (SELECT 1 FROM errand_queues p
                                   WHERE p.queue = w.queue AND p.paused_at IS NOT NULL)
                 ORDER BY priority, run_at, id
                 LIMIT w.n
                 FOR UPDATE SKIP LOCKED
             ) j
         )
         UPDATE errand_jobs ",
            claim_set!("$3", "$4"),
            " WHERE id IN (SELECT id FROM picked) ",
            claim_returning!()
        )
    };
}

/// What a claim sets on a job it takes, for worker `$worker` with a lease of `$lease` ms, at
/// `$now` (the transaction's time, unless given).
macro_rules! claim_set {
    ($lease:literal, $worker:literal) => {
        claim_set!($lease, $worker, "errand_now_ms()")
    };
    ($lease:literal, $worker:literal, $now:literal) => {
        concat!(
            "SET state = 'running', attempt = attempt + 1, fence = fence + 1,
             attempted_at = ",
            $now,
            ", lease_until = errand_now_ms() + ",
            $lease,
            ", worker = ",
            $worker,
            ", unique_key = errand_key_after(unique_strategy, 'running', unique_key)"
        )
    };
}

/// What a claim returns of each job it took (see `claimed_row`).
macro_rules! claim_returning {
    () => {
        "RETURNING id, kind, queue, args::text AS args, attempt::bigint, max_attempts::bigint,
                   idempotency_key, fence, priority::bigint, run_at, timeout_ms,
                   CASE WHEN tags <> '{}' THEN array_to_json(tags)::text END AS tags,
                   NULLIF(meta, '{}'::jsonb)::text AS meta, workflow_id, step"
    };
}

/// The state a run that returned `Ok` ends in: `completed`, unless its cancellation was asked
/// meanwhile (its worker may not have read the request yet): then `cancelled`, as
/// [`Cancellation::Requested`](crate::Cancellation::Requested) promised. `$t` qualifies the
/// columns (`"j."`, or `""`).
macro_rules! completed_unless_cancelled {
    ($t:literal) => {
        concat!(
            "(CASE WHEN ",
            $t,
            "cancel_requested THEN 'cancelled' ELSE 'completed' END)"
        )
    };
}

/// A job's errors, with the cancellation's entry added when its cancellation was asked while it
/// ran (see [`completed_unless_cancelled!`]).
macro_rules! with_cancel_error {
    ($t:literal) => {
        concat!(
            "CASE WHEN ",
            $t,
            "cancel_requested THEN ",
            $t,
            "errors || jsonb_build_array(jsonb_build_object('attempt', ",
            $t,
            "attempt, 'kind', 'cancelled', 'message', 'cancelled by the client while running',
             'at', errand_now_ms(), 'duration_ms', errand_now_ms() - COALESCE(",
            $t,
            "attempted_at, errand_now_ms()), 'worker', COALESCE(",
            $t,
            "worker, ''))) ELSE ",
            $t,
            "errors END"
        )
    };
}

/// Completes the running jobs `$ids[i]` whose fence is still `$fences[i]`; returns their ids.
macro_rules! complete_many {
    ($ids:literal, $fences:literal) => {
        concat!(
            "UPDATE errand_jobs j
             SET state = ",
            completed_unless_cancelled!("j."),
            ", finished_at = errand_now_ms(), lease_until = NULL,
                 running_key = NULL, cancel_requested = false,
                 unique_key = errand_key_after(j.unique_strategy, ",
            completed_unless_cancelled!("j."),
            ", j.unique_key),
                 errors = ",
            with_cancel_error!("j."),
            " FROM unnest(",
            $ids,
            "::bigint[], ",
            $fences,
            "::bigint[]) AS d(id, fence)
             WHERE j.id = d.id AND j.fence = d.fence AND j.state = 'running'
             RETURNING j.id"
        )
    };
}

/// The end of an insert whose rows are the CTE `ins` (`id, queue, state`): returns the ids and
/// wakes the idle workers of each queue a job became available in, once per statement, and
/// when it scheduled a job for later, every idle worker to see when the next one is due (the
/// payload [`SCHEDULED`], never a queue's name). The queue of a job with limits or `fair_by`
/// comes as `+queue` ([`SPECIAL`]): its workers look for such jobs again.
macro_rules! wake {
    () => {
        "
        SELECT ins.id, w.woken FROM ins,
            (SELECT errand_wake(array_agg(queue) FILTER (WHERE state = 'available'))
                    + CASE WHEN bool_or(state = 'scheduled') THEN errand_wake(ARRAY['*']) ELSE 0 END
                    AS woken
             FROM ins) w"
    };
}

/// The claim statement; see [`claim!`].
pub(crate) const CLAIM: &str = concat!("WITH ", claim!());

/// The claim (`$1` to `$5`; `$6`, the time, unused) and the completion of the runs `$7` (ids)
/// and `$8` (fences), in
/// one statement: one round trip and one commit per batch of a worker's claim loop. Rows with
/// `done` true only name a completed job. The two parts touch different rows (running ones,
/// available ones), so neither needs to see the other's changes.
const COMPLETE_AND_CLAIM: &str = concat!(
    "WITH done AS (",
    complete_many!("$7", "$8"),
    "), claimed AS (WITH ",
    claim!(),
    ")
     SELECT *, false AS done FROM claimed
     UNION ALL
     SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true
     FROM done"
);

/// The dead jobs a [`DeadQuery`](crate::store::DeadQuery) picks, binding `$1` id, `$2` kind,
/// `$3` queue, `$4` died at or after, `$5` died before: a condition whose value is NULL holds.
macro_rules! dead_filter {
    () => {
        "state = 'dead' AND ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR kind = $2)
         AND ($3::text IS NULL OR queue = $3) AND ($4::bigint IS NULL OR finished_at >= $4)
         AND ($5::bigint IS NULL OR finished_at < $5)"
    };
}

/// The columns [`SqlRow::job`](super::sql::SqlRow::job) reads, as 64-bit integers and text.
macro_rules! select_job {
    () => {
        "SELECT id, kind, queue, args::text AS args, state, priority::bigint AS priority,
         attempt::bigint AS attempt, max_attempts::bigint AS max_attempts, idempotency_key, run_at,
         created_at, attempted_at, finished_at, errors::text AS errors,
         array_to_json(tags)::text AS tags, meta::text AS meta, timeout_ms, expires_at,
         workflow_id, step FROM errand_jobs"
    };
}

/// A job's error history with one more entry, `$entry` (SQL for a JSON object), keeping the
/// first `$keep` and the latest of at most `$max` entries.
macro_rules! append_error {
    ($max:literal, $keep:literal, $entry:literal) => {
        concat!(
            "(CASE WHEN jsonb_array_length(errors) >= ",
            $max,
            " THEN errors - ",
            $keep,
            "::int ELSE errors END) || jsonb_build_array(",
            $entry,
            ")"
        )
    };
}

/// The dead job's death was acted on: a job that waits on it was cancelled with it, or
/// released to run because it died (a saga's compensations, a dependent that runs anyway).
/// Retrying it would run it again after them, so retries refuse it. A compensation's own death
/// only releases the compensation before it ('when_ran'): it may be retried.
macro_rules! death_settled {
    () => {
        "errand_jobs.has_dependents AND EXISTS (
             SELECT 1 FROM errand_job_deps d JOIN errand_jobs dep ON dep.id = d.job_id
             WHERE d.depends_on = errand_jobs.id AND d.on_failure IN ('cancel', 'run', 'when_failed')
               AND dep.state <> 'pending')"
    };
}

static STATEMENTS: Statements = Statements {
    expire_key: "UPDATE errand_jobs SET unique_key = NULL
        WHERE kind = $1 AND unique_key = $2 AND unique_until <= errand_now_ms()",
    // Each insert wakes idle workers of the queues it made jobs available in (`errand_wake`,
    // once per statement); the extra column only makes sure it is called.
    insert: concat!(
        "WITH ins AS (
        INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                 run_at, created_at, unique_key, unique_strategy, unique_until,
                                 tags, meta, timeout_ms, expires_at, limit_key, fair_key,
                                 waiting_on, workflow_id, step)
        SELECT $1, $2, $3::jsonb,
               CASE WHEN $20::int > 0 THEN 'pending'
                    WHEN t.run_at > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
               $4, $5, $6, t.run_at, errand_now_ms(), $9, $10, errand_now_ms() + $11::bigint,
               $13::text[], $14::jsonb, $15::bigint, COALESCE($17::bigint, t.run_at + $16::bigint),
               $18::text, $19::text, $20::int, $21::bigint, $22::text
        FROM (SELECT COALESCE($8::bigint, errand_now_ms() + $7::bigint) AS run_at) t
        ON CONFLICT DO NOTHING
        RETURNING id, CASE WHEN limit_key IS NULL AND fair_key IS NULL THEN queue
                          ELSE '+' || queue END AS queue, state)",
        wake!()
    ),
    key_holder: "SELECT id FROM errand_jobs WHERE kind = $1 AND unique_key = $2",
    replace: "UPDATE errand_jobs
        SET args = $2::jsonb, queue = $3, priority = $4,
            run_at = COALESCE($6::bigint, errand_now_ms() + $5::bigint),
            state = CASE WHEN COALESCE($6::bigint, errand_now_ms() + $5::bigint) > errand_now_ms()
                         THEN 'scheduled' ELSE 'available' END
        WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable')
        RETURNING id",
    insert_many: concat!(
        "WITH ins AS (
        INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at,
                                 tags, meta, timeout_ms, expires_at, limit_key, fair_key)
        SELECT kind, queue, args::jsonb,
               CASE WHEN COALESCE(at, errand_now_ms() + delay) > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
               priority, max_attempts, key, COALESCE(at, errand_now_ms() + delay), errand_now_ms(),
               ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), meta::jsonb, timeout_ms,
               COALESCE(expires_at, COALESCE(at, errand_now_ms() + delay) + expires_after), limit_key,
               fair_key
        FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::int[], $6::text[], $7::bigint[], $8::bigint[],
                    $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::text[],
                    $16::text[])
             AS t(kind, queue, args, priority, max_attempts, key, delay, at, tags, meta, timeout_ms,
                  expires_after, expires_at, limit_key, fair_key)
        RETURNING id, CASE WHEN limit_key IS NULL AND fair_key IS NULL THEN queue
                          ELSE '+' || queue END AS queue, state)",
        wake!()
    ),
    claim: CLAIM,
    // Reads each level of each queue from `errand_jobs_available`, oldest first.
    age: "UPDATE errand_jobs j
        SET base_priority = COALESCE(j.base_priority, j.priority),
            priority = GREATEST(0, COALESCE(j.base_priority, j.priority) - (errand_now_ms() - j.run_at) / $2)
        FROM (
            SELECT a.id FROM unnest($1::text[]) AS q(queue)
            CROSS JOIN generate_series(1, 9) AS p(priority)
            CROSS JOIN LATERAL (
                SELECT id FROM errand_jobs
                WHERE queue = q.queue AND state = 'available' AND priority = p.priority
                  AND run_at <= errand_now_ms() - $2
                  AND COALESCE(base_priority, priority) - (errand_now_ms() - run_at) / $2 < priority
                ORDER BY run_at LIMIT $3
                FOR UPDATE SKIP LOCKED) a
        ) aged
        WHERE j.id = aged.id",
    pause_queue: "INSERT INTO errand_queues (queue, paused_at, updated_at)
        VALUES ($1, errand_now_ms(), errand_now_ms())
        ON CONFLICT (queue) DO UPDATE SET paused_at = errand_now_ms(), updated_at = errand_now_ms()
        WHERE errand_queues.paused_at IS NULL",
    // Wakes the queue's idle workers on every node.
    resume_queue: "UPDATE errand_queues SET paused_at = NULL, updated_at = errand_now_ms()
        WHERE queue = $1 AND paused_at IS NOT NULL
        RETURNING errand_wake(ARRAY[queue])",
    paused_queues: "SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL",
    register_schedule: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, errand_now_ms(), errand_now_ms(), errand_now_ms())
        ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
            kind = EXCLUDED.kind, queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up,
            seen_at = EXCLUDED.seen_at
        RETURNING done_until, errand_now_ms()",
    advance_schedule: "UPDATE errand_schedules
        SET done_until = $2, last_run = CASE WHEN $3 THEN $2 ELSE last_run END, next_run = $4
        WHERE name = $1 AND done_until < $2",
    schedule_job: "UPDATE errand_schedules SET last_job = $2 WHERE name = $1",
    schedule_next: "UPDATE errand_schedules SET next_run = $2
        WHERE name = $1 AND next_run IS DISTINCT FROM $2",
    schedules: "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
    // The keys of each queue's available limited jobs are read by skipping through
    // `errand_jobs_limited` (a recursive CTE: one index probe per key); each key's slots are
    // counted once, and only a key with a free slot has its first jobs read, at most as many
    // as it has free slots: a full key's backlog is never read.
    limit_candidates: "WITH RECURSIVE keys(queue, limit_key) AS (
            SELECT q.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = q.queue AND j.state = 'available'
                               AND j.limit_key IS NOT NULL
                             ORDER BY j.limit_key LIMIT 1)
            FROM unnest($1::text[]) AS q(queue)
            WHERE NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = q.queue AND p.paused_at IS NOT NULL)
            UNION ALL
            SELECT k.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = k.queue AND j.state = 'available'
                               AND j.limit_key > k.limit_key
                             ORDER BY j.limit_key LIMIT 1)
            FROM keys k WHERE k.limit_key IS NOT NULL
        ), room AS (
            SELECT k.queue, k.limit_key, l.kind,
                   LEAST(COALESCE(l.max_running - c.running, $6), COALESCE(l.max_starts - c.starts, $6), $6) AS free
            FROM keys k
            JOIN unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                 AS l(kind, max_running, max_starts, window_ms)
              ON k.limit_key = l.kind OR starts_with(k.limit_key, l.kind || ':')
            CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE s.purpose = 'running' AND s.job_id IS NOT NULL) AS running,
                       count(*) FILTER (WHERE s.purpose = 'start'
                                          AND ((s.taken_at IS NULL AND s.job_id IS NOT NULL)
                                               OR s.taken_at > errand_now_ms() - l.window_ms)) AS starts
                FROM errand_limit_slots s WHERE s.limit_key = k.limit_key) c
        )
        SELECT j.id, j.limit_key, j.kind FROM room r
        CROSS JOIN LATERAL (
            SELECT id, limit_key, kind, priority, run_at FROM errand_jobs
            WHERE queue = r.queue AND state = 'available' AND limit_key = r.limit_key
              AND kind = r.kind AND (expires_at IS NULL OR expires_at > errand_now_ms())
            ORDER BY priority, run_at, id
            LIMIT r.free
            FOR UPDATE SKIP LOCKED) j
        WHERE r.free > 0
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $6",
    limit_free_slots: "SELECT s.limit_key, s.purpose, s.n::bigint FROM errand_limit_slots s
        JOIN unnest($1::text[], $2::bigint[]) AS k(limit_key, window_ms) ON k.limit_key = s.limit_key
        WHERE (s.purpose = 'running' AND s.job_id IS NULL)
           OR (s.purpose = 'start' AND (s.job_id IS NULL OR s.taken_at <= errand_now_ms() - k.window_ms))
        FOR UPDATE OF s SKIP LOCKED",
    limit_slot_counts: "SELECT limit_key, purpose, max(n)::bigint FROM errand_limit_slots
        WHERE limit_key = ANY($1) GROUP BY limit_key, purpose",
    limit_add_slots: "INSERT INTO errand_limit_slots (limit_key, purpose, n)
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[])
        ON CONFLICT DO NOTHING
        RETURNING limit_key, purpose, n::bigint",
    limit_take_slots: "UPDATE errand_limit_slots s
        SET job_id = t.job,
            -- A start slot is reserved, and marked when its job begins (`mark_started`).
            taken_at = CASE WHEN s.purpose = 'start' THEN NULL ELSE s.taken_at END
        FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[]) AS t(limit_key, purpose, n, job)
        WHERE s.limit_key = t.limit_key AND s.purpose = t.purpose AND s.n = t.n",
    // The distinct keys are read by skipping through `errand_jobs_fair` (a recursive CTE:
    // one index probe per key), then each key's first jobs from the same index.
    claim_fair: concat!(
        "WITH RECURSIVE keys AS (
            (SELECT fair_key FROM errand_jobs
             WHERE queue = $1 AND state = 'available' AND fair_key IS NOT NULL
             ORDER BY fair_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.fair_key FROM errand_jobs j
                    WHERE j.queue = $1 AND j.state = 'available' AND j.fair_key IS NOT NULL
                      AND j.fair_key > k.fair_key
                    ORDER BY j.fair_key LIMIT 1)
            FROM keys k WHERE k.fair_key IS NOT NULL
        ), heads AS (
            SELECT h.id, h.priority, h.run_at, t.served_at,
                   row_number() OVER (PARTITION BY h.fair_key ORDER BY h.priority, h.run_at, h.id) AS turn
            FROM keys k CROSS JOIN LATERAL (
                SELECT id, fair_key, priority, run_at FROM errand_jobs
                WHERE queue = $1 AND state = 'available' AND fair_key = k.fair_key AND kind = ANY($3)
                  AND (expires_at IS NULL OR expires_at > errand_now_ms())
                ORDER BY priority, run_at, id LIMIT $2) h
            LEFT JOIN errand_fair_turns t ON t.queue = $1 AND t.fair_key = h.fair_key
            WHERE k.fair_key IS NOT NULL
        ), picked AS (
            SELECT id FROM errand_jobs
            WHERE id IN (SELECT id FROM heads
                         ORDER BY turn, served_at NULLS FIRST, priority, run_at, id LIMIT $2)
              AND state = 'available'
              AND NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = $1 AND p.paused_at IS NOT NULL)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE errand_jobs ",
        claim_set!("$4", "$5"),
        " WHERE id IN (SELECT id FROM picked) ",
        claim_returning!(),
        ", fair_key"
    ),
    fair_served: "INSERT INTO errand_fair_turns (queue, fair_key, served_at)
        SELECT $1, k, errand_now_ms() FROM unnest($2::text[]) AS k
        ON CONFLICT (queue, fair_key) DO UPDATE SET served_at = EXCLUDED.served_at",
    lock_parents: "UPDATE errand_jobs SET has_dependents = true WHERE id = ANY($1)
        RETURNING id, state, step",
    add_deps: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT t.p, $2, t.m FROM unnest($1::bigint[], $3::text[]) AS t(p, m)
        ON CONFLICT DO NOTHING",
    insert_workflow: "INSERT INTO errand_workflows (name, kind, created_at)
        VALUES ($1, $2, errand_now_ms()) RETURNING id",
    workflow: "SELECT name, created_at, kind FROM errand_workflows WHERE id = $1",
    workflow_jobs: concat!(select_job!(), " WHERE workflow_id = $1 ORDER BY id"),
    wait_for_one_more: "UPDATE errand_jobs SET waiting_on = waiting_on + 1
        WHERE workflow_id = $1 AND step = ANY($2) AND state = 'pending'
        RETURNING id, step",
    count_steps: "SELECT count(*) FROM errand_jobs WHERE workflow_id = $1 AND step = ANY($2)",
    // One aggregate per state, each over its range of the finished index (state,
    // finished_at): hashed, not one sort of every job finished in the window.
    finished_per_minute: "SELECT 'completed', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'completed' AND finished_at >= $1 GROUP BY minute
        UNION ALL SELECT 'dead', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'dead' AND finished_at >= $1 GROUP BY minute
        UNION ALL SELECT 'cancelled', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'cancelled' AND finished_at >= $1 GROUP BY minute
        ORDER BY minute",
    step_scope: "SELECT kind, idempotency_key, id FROM errand_jobs
        WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1",
    add_dependents: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT $1, t.job, t.on_failure FROM unnest($2::bigint[], $3::text[]) AS t(job, on_failure)",
    workflow_deps: "SELECT d.depends_on, d.job_id FROM errand_job_deps d
        JOIN errand_jobs j ON j.id = d.job_id WHERE j.workflow_id = $1",
    claim_ids: concat!(
        "UPDATE errand_jobs ",
        // The statement's time: the transaction began before it read which slots were free,
        // and a run that freed one since may have ended after that beginning.
        claim_set!(
            "$2",
            "$3",
            "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
        ),
        "
        WHERE id = ANY($1) AND state = 'available' ",
        claim_returning!()
    ),
    bury_unknown: concat!(
        "UPDATE errand_jobs
        SET state = 'dead', finished_at = errand_now_ms(), lease_until = NULL, death_pending = true,
            unique_key = errand_key_after(unique_strategy, 'dead', unique_key),
            errors = ",
        append_error!(
            "$6",
            "$7",
            "jsonb_build_object('attempt', attempt, 'kind', 'unknown_kind',
                'message', $4 || kind || $5, 'at', errand_now_ms(), 'duration_ms', 0,
                'worker', $8::text)"
        ),
        "
        WHERE state = 'available' AND id IN (
            -- Each kind of available jobs, one probe of `errand_jobs_available_kinds` a kind,
            -- then the jobs of the kinds no live worker knows, queue by unpaused queue.
            WITH RECURSIVE kinds(kind) AS (
                (SELECT kind FROM errand_jobs WHERE state = 'available' ORDER BY kind LIMIT 1)
                UNION ALL
                SELECT (SELECT j.kind FROM errand_jobs j
                        WHERE j.state = 'available' AND j.kind > k.kind ORDER BY j.kind LIMIT 1)
                FROM kinds k WHERE k.kind IS NOT NULL
            )
            SELECT j.id FROM kinds k
            CROSS JOIN unnest($2::text[]) AS q(queue)
            CROSS JOIN LATERAL (
                SELECT id FROM errand_jobs
                WHERE kind = k.kind AND queue = q.queue AND state = 'available'
                  AND run_at <= errand_now_ms() - $1
                LIMIT $11 FOR UPDATE SKIP LOCKED) j
            WHERE k.kind IS NOT NULL AND k.kind <> ALL($3)
              AND NOT EXISTS (SELECT 1 FROM errand_workers w
                              WHERE w.seen_at > errand_now_ms() - $10 AND k.kind = ANY(w.kinds))
              AND NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = q.queue AND p.paused_at IS NOT NULL)
            LIMIT $11)"
    ),
    finish: concat!(
        "UPDATE errand_jobs
        -- A run that completes or is to go again (retried, snoozed) ends cancelled instead when
        -- its cancellation was asked while it ran: its worker may not have read the request yet.
        SET state = CASE WHEN cancel_requested AND $3 <> 'dead' THEN 'cancelled' ELSE $3 END,
            run_at = COALESCE(errand_now_ms() + $4::bigint, run_at),
            -- A run whose end the request overrides had begun: its attempt counts.
            attempt = attempt - CASE WHEN cancel_requested AND $3 NOT IN ('dead', 'cancelled') THEN 0 ELSE $5 END,
            finished_at = CASE WHEN $6 OR cancel_requested THEN errand_now_ms() END,
            lease_until = NULL,
            running_key = NULL,
            -- A retried or snoozed `until_executing` job takes its key back if it is free.
            unique_key = CASE
                WHEN NOT $6 AND NOT cancel_requested AND unique_strategy = 'until_executing' AND NOT EXISTS (
                    SELECT 1 FROM errand_jobs held
                    WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                THEN idempotency_key
                ELSE errand_key_after(unique_strategy,
                    CASE WHEN cancel_requested AND $3 <> 'dead' THEN 'cancelled' ELSE $3 END, unique_key) END,
            cancel_requested = false,
            death_pending = $3 = 'dead',
            errors = CASE WHEN $7::jsonb IS NULL THEN errors ELSE ",
        append_error!(
            "$8",
            "$9",
            "jsonb_set($7::jsonb, '{at}', to_jsonb(errand_now_ms()))"
        ),
        " END
        WHERE id = $1 AND fence = $2 AND state = 'running'"
    ),
    complete: concat!(
        "UPDATE errand_jobs
        SET state = ",
        completed_unless_cancelled!(""),
        ", finished_at = errand_now_ms(), lease_until = NULL, running_key = NULL,
            cancel_requested = false,
            unique_key = errand_key_after(unique_strategy, ",
        completed_unless_cancelled!(""),
        ", unique_key),
            errors = ",
        with_cancel_error!(""),
        " WHERE id = $1 AND fence = $2 AND state = 'running'"
    ),
    complete_and_claim: Some(COMPLETE_AND_CLAIM),
    complete_many: complete_many!("$1", "$2"),
    // SKIP LOCKED: a job row locked by a `complete_in` transaction is not waited for; its run
    // is renewed by the next renewal, after the transaction ended.
    renew: "UPDATE errand_jobs j SET lease_until = errand_now_ms() + $1
        FROM (SELECT e.id FROM errand_jobs e
              WHERE e.id = ANY($3) AND e.state = 'running' AND e.worker = $2
                AND (e.id, e.fence) IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))
              FOR UPDATE OF e SKIP LOCKED) live
        WHERE j.id = live.id
        RETURNING j.id, j.fence, j.cancel_requested",
    // A job whose cancellation was asked is not put back: it ends cancelled.
    release: concat!(
        "UPDATE errand_jobs
        SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
            finished_at = CASE WHEN cancel_requested THEN errand_now_ms() END,
            unique_key = CASE WHEN cancel_requested
                THEN errand_key_after(unique_strategy, 'cancelled', unique_key) ELSE unique_key END,
            errors = ",
        with_cancel_error!(""),
        ", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
            lease_until = NULL, worker = NULL, running_key = NULL,
            cancel_requested = false
        WHERE state = 'running' AND worker = $1 AND id = ANY($2)"
    ),
    rescue: concat!(
        "UPDATE errand_jobs
        -- A job whose cancellation was asked before its worker stopped ends cancelled.
        SET state = CASE WHEN cancel_requested THEN 'cancelled'
                         WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
            finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN errand_now_ms() END,
            run_at = errand_now_ms(),
            lease_until = NULL,
            running_key = NULL,
            unique_key = errand_key_after(unique_strategy,
                CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END, unique_key),
            death_pending = NOT cancel_requested AND attempt >= max_attempts,
            cancel_requested = false,
            errors = ",
        append_error!(
            "$3",
            "$4",
            "jsonb_build_object('attempt', attempt, 'kind', 'lease_lost',
                'message', $1 || COALESCE(worker, '?') || $2, 'at', errand_now_ms(),
                'duration_ms', errand_now_ms() - COALESCE(attempted_at, errand_now_ms()),
                'worker', COALESCE(worker, '?'))"
        ),
        "
        WHERE id IN (
            -- SKIP LOCKED: a job whose row a `complete_in` transaction holds is left alone;
            -- it is about to complete, or its worker still renews it.
            SELECT id FROM errand_jobs WHERE state = 'running' AND lease_until < errand_now_ms()
            FOR UPDATE SKIP LOCKED)
        RETURNING id"
    ),
    job: concat!(select_job!(), " WHERE id = $1"),
    select_jobs: select_job!(),
    queue_counts: "SELECT queue, state, count(*) FROM errand_jobs GROUP BY queue, state",
    oldest_available: "SELECT queue, errand_now_ms() - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
    expire_running_key: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= errand_now_ms() - $2
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = $1)
          AND id <> $1",
    take_running_key: "UPDATE errand_jobs SET running_key = idempotency_key
        WHERE id = $1 AND fence = $2 AND state = 'running'",
    step_result: "SELECT result FROM errand_steps WHERE scope = $1 AND name = $2",
    record_step: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES ($1, $2, $3, errand_now_ms(), $4, $5, $6)
        ON CONFLICT DO NOTHING",
    cancel: "UPDATE errand_jobs
        SET state = 'cancelled', finished_at = errand_now_ms(), lease_until = NULL,
            unique_key = errand_key_after(unique_strategy, 'cancelled', unique_key),
            errors = errors || jsonb_build_array(jsonb_set(jsonb_set($2::jsonb, '{attempt}',
                to_jsonb(attempt)), '{at}', to_jsonb(errand_now_ms())))
        WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'pending')",
    // Tells the job's worker at once: `!id` on the schema's channel (see `Wake::Cancel`).
    request_cancel: "UPDATE errand_jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'
        RETURNING pg_notify('errand_' || current_schema(), '!' || id)",
    claim_deaths: "UPDATE errand_jobs
        SET death_until = errand_now_ms() + $2, death_deliveries = death_deliveries + 1
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE death_pending AND (death_until IS NULL OR death_until < errand_now_ms())
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING id, death_deliveries::bigint",
    death_delivered: "UPDATE errand_jobs SET death_pending = false, death_until = NULL WHERE id = $1",
    // A job unique until executed takes its key back, and is retried only while no other job
    // holds that key (otherwise it would run beside its duplicate); of several dead jobs with
    // one key, a bulk retry takes the oldest.
    retry_dead: concat!(
        "UPDATE errand_jobs
        SET state = 'available', attempt = 0, run_at = errand_now_ms(), finished_at = NULL,
            lease_until = NULL, death_pending = false, death_until = NULL, death_deliveries = 0,
            cancel_requested = false,
            unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                              THEN idempotency_key ELSE unique_key END
        WHERE ",
        dead_filter!(),
        "
          AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
              EXISTS (SELECT 1 FROM errand_jobs held
                      WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
              OR ($1::bigint IS NULL AND EXISTS (
                  SELECT 1 FROM errand_jobs twin
                  WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                    AND twin.state = 'dead' AND twin.id < errand_jobs.id))))
          AND NOT (",
        death_settled!(),
        ")"
    ),
    refused_dead: concat!(
        "SELECT count(*) FROM errand_jobs WHERE ",
        dead_filter!(),
        " AND ",
        death_settled!()
    ),
    delete_dead: concat!("DELETE FROM errand_jobs WHERE ", dead_filter!()),
    try_lock: "INSERT INTO errand_locks (name, holder, until) VALUES ($1, $2, errand_now_ms() + $3)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE errand_locks.until < errand_now_ms() OR errand_locks.holder = excluded.holder
        RETURNING holder",
    // With 1,000,000 jobs and 200,000 ledger records of which 1% are due, `EXPLAIN` shows: a
    // `Bitmap Index Scan on errand_jobs_finished` under the `LIMIT` of the first two; an `Index
    // Only Scan Backward using errand_jobs_finished` for the surplus of dead jobs; and for the
    // ledger, an `Index Scan using errand_steps_created` whose two `NOT EXISTS` are index
    // look-ups (`errand_jobs_key`, `errand_jobs_pkey`), deleted by a `Tid Scan`. (The single
    // statement these replaced, `id IN (..) OR id IN (..)`, could use no index.) Where most
    // rows are due, the planner rightly prefers a sequential scan that stops at the limit.
    prune: [
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state IN ('completed', 'cancelled') AND finished_at < errand_now_ms() - $1
                LIMIT $2)",
            "prune finished jobs",
        ),
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state = 'dead' AND finished_at < errand_now_ms() - $1
                LIMIT $2)",
            "prune old dead jobs",
        ),
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs WHERE state = 'dead'
                ORDER BY finished_at DESC, id DESC OFFSET $1 LIMIT $2)
            -- A death its handlers have not had the delivery window to take is kept until then.
            AND NOT (death_pending AND finished_at > errand_now_ms() - $4)",
            "prune surplus dead jobs",
        ),
        (
            "DELETE FROM errand_steps WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM errand_steps s
                WHERE s.created_at < errand_now_ms() - $1
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE s.job_key IS NULL AND j.id = s.job_id
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                LIMIT $2))",
            "prune the effect ledger",
        ),
    ],
    bookkeeping: crate::migrations::POSTGRES_BOOKKEEPING,
    has_bookkeeping: "SELECT (CASE WHEN to_regclass('errand_migrations') IS NULL THEN 0 ELSE 1 END)::bigint",
    has_checksums: "SELECT count(*) FROM pg_attribute
        WHERE attrelid = to_regclass('errand_migrations') AND attname = 'checksum' AND NOT attisdropped",
    add_checksums: "ALTER TABLE errand_migrations ADD COLUMN IF NOT EXISTS checksum TEXT",
    applied: "SELECT version, checksum FROM errand_migrations ORDER BY version",
    record_migration: "INSERT INTO errand_migrations (version, checksum) VALUES ($1, $2)",
    set_checksum: "UPDATE errand_migrations SET checksum = $2 WHERE version = $1",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_never_buries_a_kind_it_knows() {
        let schema = format!("errand_burial_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        sql::check_burial_spares_known_kinds(&store).await;
        drop_schema(&store, &schema).await;
    }

    /// With 1,000,000 retries backing off (an outage's worth) and a few available jobs, a claim
    /// asking for more than there is reads the available ones through their index and walks
    /// none of the waiting ones. (Before the claim index held only `available` jobs, the same
    /// claim filtered out all 1,000,000 on every poll.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_walks_no_waiting_jobs() {
        let schema = format!("errand_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                    SELECT 'k', 'q', '{}', $1, 5, 25, errand_now_ms() + $2, 0 FROM generate_series(1, $3)";
        for (state, offset, count) in [
            ("retryable", 3_600_000i64, 1_000_000i64),
            ("available", -1000, 10),
        ] {
            sqlx::query(fill)
                .bind(state)
                .bind(offset)
                .bind(count)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::query("ANALYZE errand_jobs")
            .execute(&store.pool)
            .await
            .expect("analyze");
        // With the values (the main pool's custom plans), and as the hot path's pool runs
        // them: one generic plan each, the combined statement also completing three runs.
        let mut plans = Vec::new();
        let mut conn = store.pool.acquire().await.expect("a connection");
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM}");
        let custom = sqlx::query_scalar(&explain)
            .bind(vec!["q"])
            .bind(vec![100i64])
            .bind(30_000i64)
            .bind("plan-test")
            .bind(vec!["k"]);
        plans.push(("custom", in_rollback(&mut conn, custom).await));
        let mut hot = store.hot.acquire().await.expect("a hot connection");
        let types = "text[], bigint[], bigint, text, text[], bigint, bigint[], bigint[]";
        for (name, sql) in [("claim", CLAIM), ("complete_and_claim", COMPLETE_AND_CLAIM)] {
            sqlx::raw_sql(&format!("PREPARE {name}({types}) AS {sql}"))
                .execute(&mut *hot)
                .await
                .expect("prepare");
            let explain = format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE {name}(ARRAY['q'], ARRAY[100],
                 30000, 'plan-test', ARRAY['k'], NULL, ARRAY[1, 2, 3], ARRAY[1, 1, 1])"
            );
            let generic = sqlx::query_scalar(&explain);
            plans.push((name, in_rollback(&mut hot, generic).await));
        }
        drop((conn, hot));
        drop_schema(&store, &schema).await;
        for (name, plan) in plans {
            assert_reads_only_available(name, &plan);
        }
    }

    /// With 1,000,000 jobs held back in each way a job waits (under a limit whose key is
    /// full, one tenant's backlog of a fair kind, in a paused queue, pending on a parent,
    /// scheduled for tomorrow) and ten jobs to take, every claim (plain, limited, fair, and the
    /// worker's combined exchange) and the promotion read a few pages: none walks what it
    /// cannot take. (Before the claims' indexes held only jobs they can take, the plain claim
    /// walked the limited and fair backlogs row by row, and the limited claim counted the
    /// slots of every limited job.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_walk_no_held_back_jobs() {
        use sql::held_back_cases::{FILL, HOLD_SLOT, PAUSE};
        let schema = format!("errand_held_back_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        run_at, created_at, limit_key, fair_key, waiting_on)
                    SELECT $1, $2, '{}', $3, 5, 25, errand_now_ms() + $4, 0, $5, $6, $7
                    FROM generate_series(1, $8)";
        for (kind, queue, state, offset, limit_key, fair_key, waiting_on, count) in FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(offset)
                .bind(limit_key)
                .bind(fair_key)
                .bind(i32::try_from(waiting_on).expect("a small count"))
                .bind(count)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        for setup in [HOLD_SLOT, PAUSE, "VACUUM ANALYZE errand_jobs"] {
            sqlx::raw_sql(setup)
                .execute(&store.pool)
                .await
                .expect("set up the backlog");
        }
        let mut plans = Vec::new();
        let cases = sql::held_back_cases::claims::<Postgres>().into_iter();
        for sql::held_back_cases::Case {
            name,
            sql,
            values,
            rows,
            index,
        } in cases
        {
            let mut conn = store.pool.acquire().await.expect("a connection");
            sqlx::raw_sql("BEGIN")
                .execute(&mut *conn)
                .await
                .expect("begin");
            let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}");
            let plan: Vec<String> = query(&explain, values, &SYSTEM_CLOCK)
                .fetch_all(&mut *conn)
                .await
                .expect("explain")
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, 0))
                .collect();
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut *conn)
                .await
                .expect("roll back");
            plans.push((name, plan.join("\n"), rows, index));
        }
        drop_schema(&store, &schema).await;
        for (name, plan, rows, index) in plans {
            // What finding the jobs read: a claim's `picked` part (the rest writes the rows
            // it found, each a few pages of every index its new state is in), or the whole.
            let read = plan
                .split_once("CTE picked")
                .map_or(pages_read(&plan), |(_, picking)| pages_read(picking));
            let whole = pages_read(&plan);
            eprintln!("{name}: {read} pages to find {rows} rows, {whole} in all");
            assert!(
                !plan.contains("Seq Scan on errand_jobs "),
                "{name} walks the table:\n{plan}"
            );
            assert!(plan.contains(index), "{name} reads no {index}:\n{plan}");
            assert!(read < 100, "{name} read {read} pages:\n{plan}");
            assert!(
                plan.lines()
                    .next()
                    .is_some_and(|l| l.contains(&format!("rows={rows} "))),
                "{name} found {rows} rows:\n{plan}"
            );
        }
    }

    /// With 1,000,000 completed jobs kept by retention, every listing an operator asks for
    /// (by state, queue, kind, key or time, newest or oldest first) and every count of a state
    /// or kind reads an index and a few pages, never the table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_read_an_index_at_a_million_jobs() {
        let schema = format!("errand_listing_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        idempotency_key, run_at, created_at, finished_at, tags)
                    SELECT $1, $2, '{}', $3, 5, 25, $1 || '-' || g, g, g, g,
                           CASE WHEN $5 THEN ARRAY['vip'] ELSE '{}' END
                    FROM generate_series(1, $4) AS g";
        for (kind, queue, state, count, tagged) in sql::listing_cases::FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(count)
                .bind(tagged)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::raw_sql("VACUUM ANALYZE errand_jobs")
            .execute(&store.pool)
            .await
            .expect("vacuum");
        let mut plans = Vec::new();
        for (name, filter, page) in sql::listing_cases::listings() {
            let (sql, values) = sql::listing::<Postgres>(&filter, page);
            plans.push((name, explain(&store, &sql, values).await));
        }
        for (name, filter) in sql::listing_cases::counts() {
            let (sql, values) = sql::counting::<Postgres>(&filter);
            plans.push((name, explain(&store, &sql, values).await));
        }
        drop_schema(&store, &schema).await;
        for (name, plan) in plans {
            assert!(
                !plan.contains("Seq Scan"),
                "{name} walks the table:\n{plan}"
            );
            assert!(plan.contains("Index"), "{name} reads no index:\n{plan}");
            let pages = pages_read(&plan);
            // A listing by tag reads every job with the tag through the tags' index (2,000
            // here, a few pages each), then sorts them: bounded by the tag, not the table.
            let most = if name == "a tag" { 5 * 2_000 } else { 500 };
            assert!(pages < most, "{name} read {pages} pages:\n{plan}");
        }
    }

    /// The plan of `sql` with `values`, run.
    async fn explain(store: &PostgresStore, sql: &str, values: Vec<Value<'_>>) -> String {
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}");
        let rows = query(&explain, values, &SYSTEM_CLOCK)
            .fetch_all(&store.pool)
            .await
            .expect("explain");
        rows.iter()
            .map(|row| sqlx::Row::get::<String, _>(row, 0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The pages a plan's whole statement read, from its top node's `Buffers: shared hit=..
    /// read=..` line (all of them when the line is missing).
    fn pages_read(plan: &str) -> u64 {
        plan.lines()
            .find_map(|line| line.trim().strip_prefix("Buffers: shared "))
            .map(|counts| {
                counts
                    .split_whitespace()
                    .filter_map(|c| c.split_once('='))
                    .filter(|(name, _)| matches!(*name, "hit" | "read"))
                    .filter_map(|(_, n)| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(u64::MAX)
    }

    /// A store in a fresh schema of the test database; `None` (the test skipped) when there is
    /// no PostgreSQL and CI is not set.
    async fn test_store(schema: &str) -> Option<PostgresStore> {
        let url = std::env::var("ERRAND_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        match PostgresStore::connect(&url, schema, 2, true).await {
            Ok(store) => Some(store),
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED (PostgreSQL): {err}");
                None
            }
            Err(err) => panic!("PostgreSQL is required when CI is set: {err}"),
        }
    }

    async fn drop_schema(store: &PostgresStore, schema: &str) {
        let drop =
            sqlx::query_scalar::<_, String>("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
                .bind(schema)
                .fetch_one(&store.pool)
                .await
                .expect("build DROP SCHEMA");
        sqlx::raw_sql(&drop)
            .execute(&store.pool)
            .await
            .expect("drop the test schema");
    }

    /// Runs an EXPLAIN ANALYZE of a claim in a transaction it rolls back; returns the plan.
    async fn in_rollback<'q>(
        conn: &mut PgConnection,
        explain: sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
    ) -> String {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
        let plan = explain.fetch_all(&mut *conn).await.expect("explain");
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *conn)
            .await
            .expect("roll back");
        plan.join("\n")
    }

    /// Fails unless the claim in `plan` read the plain claim's index and little else.
    fn assert_reads_only_available(name: &str, plan: &str) {
        let removed: u64 = plan
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Rows Removed by Filter: "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        // The claim that walked every waiting job touched about 5,000 pages.
        let pages = pages_read(plan);
        assert!(plan.contains("errand_jobs_plain"), "{name}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
        assert!(removed < 1000, "{name} walked {removed} rows:\n{plan}");
        assert!(pages < 500, "{name} read {pages} pages:\n{plan}");
        assert!(
            plan.contains("rows=10 "),
            "{name} claimed the 10 available jobs:\n{plan}"
        );
    }
}
