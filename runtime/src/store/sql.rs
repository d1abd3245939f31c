//! The SQL stores' control flow, written once for every dialect.
//!
//! A [`Dialect`] supplies what differs between databases: its statements (hand-written, one
//! [`Statements`] per dialect), how a [`Value`] is bound, and the two operations whose shape
//! differs (a claim across queues, a bulk insert). Everything else — which statement runs when,
//! how a unique key's holder is found, what a cancellation falls back to, how migrations are
//! applied and checked — lives here, so a rule is fixed in one place for both stores.
//!
//! Every statement of one operation takes the same parameters, in the same order, on every
//! dialect; the field docs of [`Statements`] list them. [`Value::Now`] is the current time for a
//! dialect that reads it in Rust: SQLite, whose database runs in this process, binds this
//! process's clock; PostgreSQL's statements call `errand_now_ms()` and leave it unused.

use std::time::Duration;

use crate::dead::{Cancellation, Retention};
use crate::error::Error;
use crate::info::{duration_millis, AttemptError, JobInfo, StoredAttempt};
use crate::job::{JobId, JobState, OnConflict, OnDependencyFailure};
use crate::migrations::Migration;
use crate::query::{JobFilter, Page, QueueStats};
use crate::store::{
    BoxFuture, Claimed, Clock, DeadQuery, Exchange, Finish, Inserted, NewJob, Promoted, RunId,
    StepOwner, Store, DEATH_DELIVERY_WINDOW, KEEP_FIRST_ERRORS, LEASE_LOST_AFTER,
    LEASE_LOST_BEFORE, MAX_ERRORS, UNKNOWN_KIND_AFTER, UNKNOWN_KIND_BEFORE,
};

/// A connection of dialect `D`'s database.
pub(crate) type Conn<D> = <<D as Dialect>::Db as sqlx::Database>::Connection;

/// One bound parameter.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    Int(Option<i64>),
    Bool(bool),
    Text(Option<&'a str>),
    /// A list: a PostgreSQL array, an SQLite JSON array.
    Texts(Vec<&'a str>),
    /// A list: a PostgreSQL array, an SQLite JSON array.
    Ints(Vec<i64>),
    /// A list of texts built for the statement (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OwnedTexts(Vec<String>),
    /// A list with NULLs (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OptTexts(Vec<Option<&'a str>>),
    /// A list with NULLs (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OptInts(Vec<Option<i64>>),
    /// JSON text the dialect built (SQLite's bulk insert).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Json(String),
    /// The current time, in milliseconds since the epoch (see the module docs).
    Now,
    /// The system's time, in milliseconds since the epoch, even on a store whose clock a test
    /// moved ahead: leases measure how long a run has really gone unheard, so moving a test's
    /// clock must not make a live run look lost.
    Wall,
    /// A lease's length, in milliseconds, to be added to [`Value::Now`]: on a store whose clock
    /// a test moved ahead, less that offset, so that the lease ends at a [`Value::Wall`] time.
    Lease(Duration),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Value::Text(value)
    }
}

/// The parameters of a statement, in order.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        vec![$(Value::from($value)),*]
    };
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row a statement returned, read by column position.
pub(crate) trait SqlRow: Send {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error>;
    fn text(&self, column: usize) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: usize) -> Result<Option<String>, sqlx::Error>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, column: usize) -> Result<bool, sqlx::Error>;
    /// A row of [`Statements::select_job`]'s columns.
    fn job(&self, store: &'static str) -> Result<JobInfo, Error>;
}

impl<R> SqlRow for R
where
    R: sqlx::Row + Send,
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn flag(&self, column: usize) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }

    fn job(&self, store: &'static str) -> Result<JobInfo, Error> {
        crate::store::job_from_row(self, store)
    }
}

/// What differs between SQL databases. Implemented by a unit (SQLite) or a small struct
/// (PostgreSQL: what it needs to open a `LISTEN` connection) held by the [`SqlStore`].
pub(crate) trait Dialect: Send + Sync + Sized + 'static {
    type Db: sqlx::Database;
    type Row: SqlRow;

    /// The store's name in errors.
    const STORE: &'static str;
    /// Its statements.
    const SQL: &'static Statements;
    /// Its migrations, oldest first.
    const MIGRATIONS: &'static [Migration];
    /// Whether [`Statements::claim`] claims from every queue at once; otherwise it is run once
    /// per queue, with one-element lists.
    const CLAIMS_ALL_QUEUES: bool;
    /// What opens a transaction that writes: SQLite takes its write lock at once, so that a
    /// transaction that reads first cannot fail to upgrade later.
    const BEGIN_WRITE: &'static str;

    /// Runs one statement, [`Value::Now`] read from `clock`; returns how many rows it
    /// changed.
    fn execute<'c>(
        conn: &'c mut Conn<Self>,
        sql: &'c str,
        values: Vec<Value<'c>>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Runs one statement, [`Value::Now`] read from `clock`; returns the rows it returned.
    fn fetch<'c>(
        conn: &'c mut Conn<Self>,
        sql: &'c str,
        values: Vec<Value<'c>>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;

    /// Runs several statements in one string, unprepared, as migrations are.
    fn raw<'c>(conn: &'c mut Conn<Self>, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Opens the transaction migrations run in, holding whatever lock makes processes that
    /// start together apply each migration once.
    fn begin_migrations<'c>(
        &'c self,
        conn: &'c mut Conn<Self>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// The placeholder of the `n`th parameter, from 1.
    fn param(n: usize) -> String;

    /// SQL that holds when `column` is among the list bound as the `n`th parameter
    /// ([`Value::Texts`] or [`Value::Ints`]).
    fn among(column: &str, n: usize) -> String;

    /// SQL that holds when a job's tags include the text bound as the `n`th parameter.
    fn has_tag(n: usize) -> String;

    /// The parameters of [`Statements::insert_many`] for `jobs`.
    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<Value<'a>>;
}

/// A dialect's statements. Each field names its parameters, in order; every time in them is
/// in milliseconds since the epoch, every duration in milliseconds.
pub(crate) struct Statements {
    /// `kind, key, now`: frees a key whose `unique_for` has passed.
    pub expire_key: &'static str,
    /// `kind, queue, args, priority, max_attempts, key, delay, at, unique_key, strategy,
    /// unique_for, now, tags, meta, timeout, expires_after, expires_at` (one of `delay` and `at`
    /// set; `expires_after` counts from the run time): inserts a job unless its unique key is
    /// taken; returns its id.
    pub insert: &'static str,
    /// `kind, key`: the id of the job holding a unique key.
    pub key_holder: &'static str,
    /// `id, args, queue, priority, delay, at, now`: replaces a job that has not started;
    /// returns its id.
    pub replace: &'static str,
    /// `[jobs] , now` as [`Dialect::many_values`] builds them: inserts jobs that are not
    /// unique; returns their ids.
    pub insert_many: &'static str,
    /// `queues, limits, lease, worker, kinds, now`: claims, returning `id, kind, queue, args,
    /// attempt, max_attempts, idempotency_key, fence, priority, run_at`.
    pub claim: &'static str,
    /// `queues, step, limit, now`: moves up to `limit` available jobs of each priority level of
    /// `queues` up one level for each `step` they have waited since their run time (never below
    /// 0); returns how many it moved.
    pub age: &'static str,
    /// `queue, now`: pauses a queue; changes a row when it was not paused.
    pub pause_queue: &'static str,
    /// `queue, now`: resumes a queue; changes a row when it was paused.
    pub resume_queue: &'static str,
    /// No parameters: `queue` of every paused queue.
    pub paused_queues: &'static str,
    /// `name, cron, timezone, kind, queue, catch_up, now`: records a schedule a worker runs (a
    /// new one done until now) and that it was seen; returns `done_until, now`.
    pub register_schedule: &'static str,
    /// `name, slot, run, next, now`: moves a schedule's `done_until` to `slot` if it is before
    /// (setting `last_run` to `slot` if `run`); changes a row when it did.
    pub advance_schedule: &'static str,
    /// `name, job`: the job enqueued for the schedule's last run.
    pub schedule_job: &'static str,
    /// `name, next`: the schedule's next slot.
    pub schedule_next: &'static str,
    /// No parameters: `name, cron, timezone, kind, queue, catch_up, last_run, last_job,
    /// next_run, seen_at` of every schedule, by name.
    pub schedules: &'static str,
    /// `queues, kinds, max_running, max_starts, windows, scan, now` (the last four lists
    /// parallel to `kinds`, NULL where a kind has no such limit): returns `id, limit_key` of up
    /// to `scan` available jobs of those kinds whose limit is not full, most urgent first,
    /// locked for the transaction where the store locks rows.
    pub limit_candidates: &'static str,
    /// `keys, windows, now`: returns `limit_key, purpose, n` of the free slots of those limit
    /// keys (`windows` parallel to `keys`: each key's rate window, NULL without one), locked.
    pub limit_free_slots: &'static str,
    /// `keys`: returns `limit_key, purpose, max(n)` of the slots those keys have.
    pub limit_slot_counts: &'static str,
    /// `keys, purposes, ns` (parallel): adds slots; returns `limit_key, purpose, n` of those it
    /// added.
    pub limit_add_slots: &'static str,
    /// `keys, purposes, ns, jobs, now` (parallel): takes slots for jobs.
    pub limit_take_slots: &'static str,
    /// `ids, lease, worker, now`: claims these available jobs, returning what
    /// [`Statements::claim`] returns.
    pub claim_ids: &'static str,
    /// `ids`: marks these jobs as having dependents (locking them until the transaction ends);
    /// returns `id, state, step` of each.
    pub lock_parents: &'static str,
    /// `parents, job, on_failures` (parallel): records that `job` waits on each of `parents`.
    pub add_deps: &'static str,
    /// `name, kind, now`: a new workflow; returns its id.
    pub insert_workflow: &'static str,
    /// `id`: `name, created_at, kind` of a workflow.
    pub workflow: &'static str,
    /// `id`: `depends_on, job_id` of every dependency among a workflow's jobs.
    pub workflow_deps: &'static str,
    /// `id`: the columns [`SqlRow::job`] reads of a workflow's jobs, by id.
    pub workflow_jobs: &'static str,
    /// `workflow, steps`: counts one more job for each of the workflow's steps named in `steps`
    /// that still waits; returns `id, step` of each.
    pub wait_for_one_more: &'static str,
    /// `workflow, steps`: how many of the workflow's steps are named in `steps`.
    pub count_steps: &'static str,
    /// `parent, jobs, on_failures` (the last two parallel): records that each of `jobs` waits
    /// on `parent`.
    pub add_dependents: &'static str,
    /// `since`: `state, minute, count` of the jobs that finished (completed, died, were
    /// cancelled) at or after `since` (ms), per minute (its start, in ms).
    pub finished_per_minute: &'static str,
    /// `workflow, step`: the `kind, idempotency_key, id` of the workflow's job of that step.
    pub step_scope: &'static str,
    /// `queue, limit, kinds, lease, worker, now`: claims up to `limit` available jobs of the
    /// fair `kinds` from `queue`, taking each `fair_key`'s jobs in turn (every key's most urgent
    /// before any key's second; among keys, the one served longest ago first), returning what
    /// [`Statements::claim`] returns and the job's `fair_key`.
    pub claim_fair: &'static str,
    /// `queue, keys, now`: records that these keys were served now.
    pub fair_served: &'static str,
    /// `grace, queues, kinds, message_before, message_after, max_errors, keep_first, worker,
    /// now, live, limit`: kills up to `limit` available jobs of unpaused queues due for
    /// `grace` whose kind is none of `kinds` and none of a worker seen within `live` ms.
    pub bury_unknown: &'static str,
    /// `id, fence, state, run_after, refund, is_final, error, max_errors, keep_first, now`.
    pub finish: &'static str,
    /// `id, fence, now`: completes a running job.
    pub complete: &'static str,
    /// `ids, fences, now`: completes running jobs; returns the ids completed.
    pub complete_many: &'static str,
    /// [`Self::claim`]'s parameters, then [`Self::complete_many`]'s `ids, fences`: both in one
    /// statement, returning the claim's columns and an eleventh, `true` on a row that only
    /// names a completed job (in its `id`). `None`: the two run in one transaction.
    pub complete_and_claim: Option<&'static str>,
    /// `lease, worker, ids, fences, now`: returns `id, fence, cancel_requested` of each run
    /// renewed.
    pub renew: &'static str,
    /// `worker, ids, now`: puts running jobs back, refunding the attempt; a job whose
    /// cancellation was asked ends cancelled instead.
    pub release: &'static str,
    /// `message_before, message_after, max_errors, keep_first, now, wall` (leases end in wall
    /// time): returns the ids rescued.
    pub rescue: &'static str,
    /// `id`: the columns [`SqlRow::job`] reads.
    pub job: &'static str,
    /// The columns [`SqlRow::job`] reads, `FROM errand_jobs`: listings add their conditions
    /// ([`job_conditions`]).
    pub select_jobs: &'static str,
    /// No parameters: `queue, state, count` of every queue and state with jobs.
    pub queue_counts: &'static str,
    /// `now`: `queue, age` of each queue's oldest available job, in milliseconds.
    pub oldest_available: &'static str,
    /// `id, hold, now`: frees a running key held for `hold` by another job.
    pub expire_running_key: &'static str,
    /// `id, fence`: takes a running job's key for its run.
    pub take_running_key: &'static str,
    /// `scope, name`: a step's result.
    pub step_result: &'static str,
    /// `scope, name, result, kind, job_key, job_id, now`.
    pub record_step: &'static str,
    /// `id, error, now`: cancels a job that has not started.
    pub cancel: &'static str,
    /// `id`: asks a running job to stop.
    pub request_cancel: &'static str,
    /// `limit, lease, now`: leases pending deaths; returns `id, deliveries`.
    pub claim_deaths: &'static str,
    /// `id`.
    pub death_delivered: &'static str,
    /// The filter's five, then `now`: retries the dead jobs it picks, but those whose death
    /// was acted on (`death_settled!`).
    pub retry_dead: &'static str,
    /// The filter's five: how many of the dead jobs it picks a retry refuses, their death
    /// having been acted on.
    pub refused_dead: &'static str,
    /// The filter's five.
    pub delete_dead: &'static str,
    /// `name, holder, ttl, now`: returns a row when the lock is held by `holder`.
    pub try_lock: &'static str,
    /// Each `keep, batch, now, delivery_window` (keep: a duration, or for surplus dead jobs a
    /// count), with what it does.
    pub prune: [(&'static str, &'static str); 4],
    /// Creates the migrations' bookkeeping table.
    pub bookkeeping: &'static str,
    /// No parameters: `1` when the bookkeeping table exists, else `0`.
    pub has_bookkeeping: &'static str,
    /// No parameters: `1` when the bookkeeping table has its `checksum` column, else `0`.
    pub has_checksums: &'static str,
    /// Adds the `checksum` column to a bookkeeping table that predates it.
    pub add_checksums: &'static str,
    /// No parameters: `version, checksum` of every applied migration.
    pub applied: &'static str,
    /// `version, checksum, now`.
    pub record_migration: &'static str,
    /// `version, checksum`: records the checksum of a migration applied before errand kept
    /// them.
    pub set_checksum: &'static str,
}

/// A dialect's [`Dialect::execute`], [`Dialect::fetch`] and [`Dialect::raw`], given its
/// connection and row types and a function `query(sql, values, clock)` that binds its values.
macro_rules! dialect_io {
    ($conn:ty, $row:ty, $query:ident) => {
        fn execute<'c>(
            conn: &'c mut $conn,
            sql: &'c str,
            values: Vec<Value<'c>>,
            clock: &$crate::store::Clock,
        ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
            let query = $query(sql, values, clock);
            Box::pin(async move {
                let done = query.execute(conn).await?;
                Ok(done.rows_affected())
            })
        }

        fn fetch<'c>(
            conn: &'c mut $conn,
            sql: &'c str,
            values: Vec<Value<'c>>,
            clock: &$crate::store::Clock,
        ) -> BoxFuture<'c, Result<Vec<$row>, sqlx::Error>> {
            Box::pin($query(sql, values, clock).fetch_all(conn))
        }

        fn raw<'c>(conn: &'c mut $conn, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
            Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
        }
    };
}
pub(crate) use dialect_io;

/// The name of an operation in its error, written when it fails.
pub(crate) trait Op: Fn() -> String + Send + Sync {}
impl<F: Fn() -> String + Send + Sync> Op for F {}

/// A fixed operation name.
/// One statement written for each dialect, side by side in the file that runs it, so that a
/// difference between the two is seen rather than hunted.
pub(crate) struct Both {
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

impl Both {
    /// The statement in `D`'s dialect.
    pub(crate) fn of<D: Dialect>(&self) -> &'static str {
        if D::STORE == "postgres" {
            self.postgres
        } else {
            self.sqlite
        }
    }
}

fn named(op: &'static str) -> impl Op + Copy {
    move || op.to_owned()
}

/// A store on a SQL database of dialect `D`.
#[derive(Debug)]
pub(crate) struct SqlStore<D: Dialect> {
    pub(crate) pool: sqlx::Pool<D::Db>,
    /// The pool of the worker's hot path: plain claims, completions and renewals. On
    /// PostgreSQL its connections keep one generic plan per statement (`plan_cache_mode =
    /// force_generic_plan`): these statements run constantly, and PostgreSQL's default, planning
    /// each execution anew with its values, took about as long as running them. Their generic
    /// plans are checked by a test. Other statements (listings whose filters are optional, the
    /// fair and limited claims, whose generic plans read every available job) keep plans made
    /// for their values. On SQLite, the main pool.
    pub(crate) hot: sqlx::Pool<D::Db>,
    pub(crate) dialect: D,
    /// What [`Value::Now`] reads.
    pub(crate) clock: Clock,
}

impl<D: Dialect + Clone> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            hot: self.hot.clone(),
            dialect: self.dialect.clone(),
            clock: self.clock.clone(),
        }
    }
}

pub(crate) fn op_error<D: Dialect>(op: impl Into<String>, source: sqlx::Error) -> Error {
    Error::Store {
        store: D::STORE,
        op: op.into(),
        source,
    }
}

pub(crate) fn encode_error<D: Dialect>(id: JobId, error: &AttemptError) -> Result<String, Error> {
    serde_json::to_string(&StoredAttempt::from(error)).map_err(|e| Error::Corrupt {
        store: D::STORE,
        id,
        reason: format!("cannot encode an attempt error: {e}"),
    })
}

/// The dead-set filter's five parameters.
fn dead_values(filter: &DeadQuery) -> Vec<Value<'_>> {
    values![
        filter.id.map(JobId::get),
        filter.kind.as_deref(),
        filter.queue.as_deref(),
        filter.after_ms,
        filter.before_ms,
    ]
}

/// The conditions of a listing or count by `filter` (its states only `with_states`), `AND`ed (`1 = 1` for none), their values
/// appended to `values`. Only conditions that are set are written, so that the database plans
/// each listing for the indexes it can use; every value is bound.
fn job_conditions<'a, D: Dialect>(
    filter: &'a JobFilter,
    with_states: bool,
    values: &mut Vec<Value<'a>>,
) -> String {
    let mut conditions = Vec::new();
    let bind = |values: &mut Vec<Value<'a>>, value: Value<'a>| {
        values.push(value);
        values.len()
    };
    // One state is an equality, so that an index on `(state, id)` gives the rows in id order.
    let states = if with_states {
        filter.states.as_slice()
    } else {
        &[]
    };
    match states {
        [] => {}
        [state] => {
            let n = bind(values, state.as_str().into());
            conditions.push(format!("state = {}", D::param(n)));
        }
        states => {
            let states = states.iter().map(|s| s.as_str()).collect();
            let n = bind(values, Value::Texts(states));
            conditions.push(D::among("state", n));
        }
    }
    let equal = [
        ("queue", filter.queue.as_deref()),
        ("kind", filter.kind.as_deref()),
        ("idempotency_key", filter.key.as_deref()),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            let n = bind(values, value.into());
            conditions.push(format!("{column} = {}", D::param(n)));
        }
    }
    if let Some(tag) = filter.tag.as_deref() {
        let n = bind(values, tag.into());
        conditions.push(D::has_tag(n));
    }
    let ranges = [
        ("created_at >=", filter.created_after_ms),
        ("created_at <", filter.created_before_ms),
        ("finished_at >=", filter.finished_after_ms),
        ("finished_at <", filter.finished_before_ms),
    ];
    for (condition, value) in ranges {
        if let Some(value) = value {
            let n = bind(values, value.into());
            conditions.push(format!("{condition} {}", D::param(n)));
        }
    }
    if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

/// A page of the jobs matching `filter`: the statement and its values.
///
/// A listing by queue (of any state), or by several states, is read state by state: one branch per state,
/// each the first page of that state's jobs in id order from the index on `(queue, state,
/// id)` or `(state, id)`, then the branches' rows merged. So a page costs a few index reads
/// whatever the table holds, where filtering rows read in id order would walk every job of
/// the other queues and states.
pub(crate) fn listing<D: Dialect>(filter: &JobFilter, page: Page) -> (String, Vec<Value<'_>>) {
    let by_state = filter.kind.is_none()
        && filter.key.is_none()
        && (filter.states.len() > 1 || (filter.queue.is_some() && filter.states.is_empty()));
    let states: &[JobState] = match (by_state, filter.states.is_empty()) {
        (false, _) => &[],
        (true, true) => &JobState::ALL,
        (true, false) => &filter.states,
    };
    let mut values = Vec::new();
    // The branches bind their states themselves.
    let conditions = job_conditions::<D>(filter, !by_state, &mut values);
    let (after, order, start) = if page.newest_first {
        ("id <", "DESC", page.after.map_or(i64::MAX, JobId::get))
    } else {
        ("id >", "ASC", page.after.map_or(0, JobId::get))
    };
    values.push(start.into());
    let after = format!("{after} {}", D::param(values.len()));
    values.push(count(page.limit).into());
    let limit = D::param(values.len());
    let select = D::SQL.select_jobs;
    if states.is_empty() {
        let sql =
            format!("{select} WHERE {conditions} AND {after} ORDER BY id {order} LIMIT {limit}");
        return (sql, values);
    }
    let mut branches = Vec::new();
    for (i, state) in states.iter().enumerate() {
        values.push(state.as_str().into());
        let state = D::param(values.len());
        branches.push(format!(
            "SELECT * FROM ({select} WHERE {conditions} AND state = {state} AND {after}
             ORDER BY id {order} LIMIT {limit}) AS s{i}"
        ));
    }
    let sql = format!(
        "{} ORDER BY id {order} LIMIT {limit}",
        branches.join(" UNION ALL ")
    );
    (sql, values)
}

/// How many jobs match `filter`: the statement and its values.
pub(crate) fn counting<D: Dialect>(filter: &JobFilter) -> (String, Vec<Value<'_>>) {
    let mut values = Vec::new();
    let conditions = job_conditions::<D>(filter, true, &mut values);
    let sql = format!("SELECT count(*) FROM errand_jobs WHERE {conditions}");
    (sql, values)
}

/// Inserts a job on `conn` (the pool's, or the caller's transaction), unless its unique key is
/// taken. The unique index decides, never a check before the insert: of many enqueues of one
/// key at once, from any number of processes, exactly one inserts.
///
/// A job that waits on others ([`NewJob::after`]) must be inserted in a transaction: this locks
/// the jobs it waits on (so that none finishes unseen between their reading and the insert),
/// inserts it `pending` on those not finished, and records its dependencies. One of them dead or
/// cancelled cancels it at once (unless it runs anyway).
pub(crate) fn insert<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    job: &'a NewJob,
    clock: &'a Clock,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        if job.after.is_empty() && job.any_of.is_empty() {
            return insert_one::<D>(conn, job, clock, 0).await;
        }
        let op = |e| op_error::<D>(format!("enqueue a `{}` job after others", job.kind), e);
        // Each parent with the `on_failure` of its edge.
        let edges: Vec<(i64, &'static str)> = if job.any_of.is_empty() {
            let on_failure = job.on_dependency_failure.as_str();
            job.after.iter().map(|id| (id.get(), on_failure)).collect()
        } else {
            let edges = job.any_of.iter();
            edges
                .map(|(id, release)| (id.get(), release.as_str()))
                .collect()
        };
        let parents: Vec<i64> = edges.iter().map(|(id, _)| *id).collect();
        let lock = values![Value::Ints(parents.clone())];
        let rows = D::fetch(conn, D::SQL.lock_parents, lock, clock)
            .await
            .map_err(op)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let (id, state, step) = (row.int(0), row.text(1), row.opt_text(2));
            found.push((id.map_err(op)?, state.map_err(op)?, step.map_err(op)?));
        }
        if let Some(missing) = parents.iter().find(|p| !found.iter().any(|f| f.0 == **p)) {
            return Err(Error::UnknownDependency {
                kind: job.kind,
                depends_on: JobId::new(*missing),
            });
        }
        let (waiting, failed) = waiting_at_insert(job, &found);
        let inserted = insert_one::<D>(conn, job, clock, waiting).await?;
        let Inserted::New(id) = inserted else {
            return Ok(inserted);
        };
        let modes = edges.iter().map(|(_, on_failure)| *on_failure).collect();
        let deps = values![Value::Ints(parents), id.get(), Value::Texts(modes)];
        D::execute(conn, D::SQL.add_deps, deps, clock)
            .await
            .map_err(op)?;
        if let Some(message) = failed {
            let error = AttemptError {
                attempt: 0,
                kind: crate::classify::FailureKind::Cancelled,
                message,
                at: std::time::SystemTime::now(),
                duration: Duration::ZERO,
                worker: String::new(),
            };
            let error = encode_error::<D>(id, &error)?;
            let cancel = values![id.get(), error.as_str(), Value::Now];
            D::execute(conn, D::SQL.cancel, cancel, clock)
                .await
                .map_err(op)?;
        }
        Ok(inserted)
    })
}

/// What the states of the jobs a new job waits on (`id, state, step` of each) mean for it: how
/// many of them it still waits on, and why it is cancelled at once, if it is.
fn waiting_at_insert(
    job: &NewJob,
    parents: &[(i64, String, Option<String>)],
) -> (i64, Option<String>) {
    let ended = |state: &str| match state {
        "completed" => Some("completed"),
        "dead" => Some("died"),
        "cancelled" => Some("was cancelled"),
        _ => None,
    };
    let named = |id: i64, step: &Option<String>| match step {
        Some(step) => format!("job {id} ({step})"),
        None => format!("job {id}"),
    };
    let open = |states: &mut dyn Iterator<Item = &str>| {
        states.filter(|state| ended(state).is_none()).count() as i64
    };
    if !job.any_of.is_empty() {
        // Released by any one of them; cancelled only when each has ended without releasing.
        let releases = |(id, state, _): &&(i64, String, Option<String>)| {
            job.any_of
                .iter()
                .any(|(p, release)| p.get() == *id && release.releases(state))
        };
        if parents.iter().any(|p| releases(&p)) {
            return (0, None);
        }
        let waiting = open(&mut parents.iter().map(|(_, state, _)| state.as_str()));
        let reason = parents.iter().find_map(|(id, state, step)| {
            ended(state).map(|what| format!("not needed: {} {what}", named(*id, step)))
        });
        return match waiting {
            0 => (1, reason),
            n => (n, None),
        };
    }
    let runs_anyway = job.on_dependency_failure == OnDependencyFailure::Run;
    let failed = parents
        .iter()
        .find_map(|(id, state, step)| match ended(state) {
            Some("completed") | None => None,
            Some(_) if runs_anyway => None,
            Some(what) => Some(format!("{} that it depends on {what}", named(*id, step))),
        });
    // A job whose dependency already failed is inserted waiting on one, then cancelled.
    match failed {
        Some(reason) => (1, Some(reason)),
        None => (
            open(&mut parents.iter().map(|(_, state, _)| state.as_str())),
            None,
        ),
    }
}

/// Stores a workflow named `name` of kind `kind` on `conn`; its id.
pub(crate) fn insert_workflow<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    name: &'a str,
    kind: &'static str,
    clock: &'a Clock,
) -> BoxFuture<'a, Result<i64, Error>> {
    Box::pin(async move {
        let op = |e| op_error::<D>(format!("store workflow `{name}`"), e);
        let rows = D::fetch(
            conn,
            D::SQL.insert_workflow,
            values![name, kind, Value::Now],
            clock,
        )
        .await
        .map_err(op)?;
        let row = first(rows).ok_or_else(|| op(sqlx::Error::RowNotFound))?;
        row.int(0).map_err(op)
    })
}

/// Inserts a job (see [`insert`]), `pending` on `waiting` unfinished jobs if any.
fn insert_one<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    job: &'a NewJob,
    clock: &'a Clock,
    waiting: i64,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        let sql = D::SQL;
        let op = |e| op_error::<D>(format!("enqueue a `{}` job", job.kind), e);
        // Relative times are measured on the store's clock; absolute ones are taken as given.
        let (delay, at) = job.run_at.delay_or_at_ms();
        let unique_key = job.unique_key();
        // A holder can release the key between our insert and our look-up; then try again.
        for _ in 0..3 {
            if let Some(key) = unique_key {
                let expire = values![job.kind, key, Value::Now];
                D::execute(conn, sql.expire_key, expire, clock)
                    .await
                    .map_err(op)?;
            }
            let new = values![
                job.kind,
                job.queue.as_str(),
                job.args.as_str(),
                i64::from(job.priority),
                i64::from(job.max_attempts),
                job.key.as_deref(),
                delay,
                at,
                unique_key,
                job.unique_strategy(),
                job.unique_for_ms(),
                Value::Now,
                Value::Texts(job.tags.iter().map(String::as_str).collect()),
                Value::from(job.meta_json()),
                Value::from(job.timeout_ms),
                Value::from(job.expiry_ms().0),
                Value::from(job.expiry_ms().1),
                Value::from(job.limit_key.as_deref()),
                Value::from(job.fair_key.as_deref()),
                waiting,
                Value::from(job.workflow.as_ref().map(|(id, _)| *id)),
                Value::from(job.workflow.as_ref().map(|(_, step)| step.as_str())),
            ];
            if let Some(row) = first(D::fetch(conn, sql.insert, new, clock).await.map_err(op)?) {
                crate::metrics::enqueued(job.kind, &job.queue);
                return Ok(Inserted::New(JobId::new(row.int(0).map_err(op)?)));
            }
            let Some(key) = unique_key else { continue };
            let holder = D::fetch(conn, sql.key_holder, values![job.kind, key], clock).await;
            let Some(holder) = first(holder.map_err(op)?) else {
                continue;
            };
            let holder = JobId::new(holder.int(0).map_err(op)?);
            if job.on_conflict() != OnConflict::Replace {
                return Ok(Inserted::Duplicate(holder));
            }
            let replace = values![
                holder.get(),
                job.args.as_str(),
                job.queue.as_str(),
                i64::from(job.priority),
                delay,
                at,
                Value::Now,
            ];
            let replaced = D::fetch(conn, sql.replace, replace, clock)
                .await
                .map_err(op)?;
            return Ok(if replaced.is_empty() {
                Inserted::Duplicate(holder)
            } else {
                Inserted::Replaced(holder)
            });
        }
        Err(Error::KeyContended {
            kind: job.kind,
            key: job.key.clone().unwrap_or_default(),
        })
    })
}

/// Counts jobs stored by one statement, per kind and queue (most such batches have one of each).
fn count_enqueued(jobs: &[NewJob]) {
    let mut counted = 0;
    while counted < jobs.len() {
        let (kind, queue) = (jobs[counted].kind, &jobs[counted].queue);
        let same = jobs[counted..]
            .iter()
            .take_while(|j| j.kind == kind && j.queue == *queue)
            .count();
        crate::metrics::enqueued_many(kind, queue, same);
        counted += same;
    }
}

/// Inserts jobs that are not unique on `conn` (the pool's, or the caller's transaction), in
/// one statement; returns their ids in the order of `jobs`.
pub(crate) fn insert_many<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    jobs: &'a [NewJob],
    clock: &'a Clock,
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    Box::pin(async move {
        let op = || format!("enqueue {} jobs", jobs.len());
        let rows = D::fetch(conn, D::SQL.insert_many, D::many_values(jobs), clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        let ids: Result<Vec<i64>, _> = rows.iter().map(|row| row.int(0)).collect();
        let mut ids = ids.map_err(|e| op_error::<D>(op(), e))?;
        count_enqueued(jobs);
        // Ids rise in insertion order.
        ids.sort_unstable();
        Ok(ids.into_iter().map(JobId::new).collect())
    })
}

/// Marks a running job completed on `conn`, inside the caller's transaction.
pub(crate) fn complete<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    id: JobId,
    fence: i64,
    clock: &'c Clock,
) -> BoxFuture<'c, Result<bool, Error>> {
    Box::pin(async move {
        let values = values![id.get(), fence, Value::Now];
        let done = D::execute(conn, D::SQL.complete, values, clock)
            .await
            .map_err(|e| op_error::<D>(format!("complete job {id} in a transaction"), e))?;
        Ok(done == 1)
    })
}

/// The error of migration `version` (0: the bookkeeping around them).
fn failed<D: Dialect>(version: i64) -> impl Fn(sqlx::Error) -> Error {
    move |source| Error::Migrate {
        store: D::STORE,
        version,
        source,
    }
}

pub(crate) fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// A claimed row: `id, kind, queue, args, attempt, max_attempts, idempotency_key, fence,
/// priority, run_at, timeout_ms, tags, meta` (these two NULL when empty), `workflow_id, step`,
/// with the order it should start in.
fn claimed_row(row: &impl SqlRow) -> Result<((i64, i64), Claimed), sqlx::Error> {
    let job = Claimed {
        id: JobId::new(row.int(0)?),
        kind: row.text(1)?,
        queue: row.text(2)?,
        args: row.text(3)?,
        attempt: u32::try_from(row.int(4)?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(row.int(5)?).unwrap_or(u32::MAX),
        key: row.opt_text(6)?,
        fence: row.int(7)?,
        timeout: row
            .opt_int(10)?
            .map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        tags: row.opt_text(11)?,
        meta: row.opt_text(12)?,
        workflow: match (row.opt_int(13)?, row.opt_text(14)?) {
            (Some(id), Some(step)) => Some((crate::info::WorkflowId::new(id), step)),
            _ => None,
        },
        run_at: row.int(9)?,
    };
    Ok(((row.int(8)?, job.run_at), job))
}

/// Claimed rows in the order their jobs should start: RETURNING gives them in none.
fn in_start_order(mut claimed: Vec<((i64, i64), Claimed)>) -> Vec<Claimed> {
    claimed.sort_by_key(|(order, job)| (*order, job.id));
    claimed.into_iter().map(|(_, job)| job).collect()
}

/// The name of a claim from `wanted`, for its error.
fn claim_op<'a>(wanted: &'a [(&'a str, usize)]) -> impl Op + 'a {
    move || {
        let queues: Vec<&str> = wanted.iter().map(|(queue, _)| *queue).collect();
        format!("claim jobs from {queues:?}")
    }
}

/// [`Statements::claim`]'s parameters.
fn claim_values<'a>(
    wanted: &[(&'a str, usize)],
    kinds: &[&'a str],
    worker: &'a str,
    lease: Duration,
) -> Vec<Value<'a>> {
    vec![
        Value::Texts(wanted.iter().map(|(queue, _)| *queue).collect()),
        Value::Ints(wanted.iter().map(|(_, n)| count(*n)).collect()),
        Value::Lease(lease),
        worker.into(),
        Value::Texts(kinds.to_vec()),
        Value::Now,
    ]
}

/// [`Statements::complete_many`]'s `ids, fences, now`.
fn completion_values(runs: &[(JobId, i64)]) -> Vec<Value<'static>> {
    vec![
        Value::Ints(runs.iter().map(|(id, _)| id.get()).collect()),
        Value::Ints(runs.iter().map(|(_, fence)| *fence).collect()),
        Value::Now,
    ]
}

/// The ids [`Statements::complete_many`] returned.
fn completed_ids(rows: &[impl SqlRow]) -> Result<Vec<JobId>, sqlx::Error> {
    rows.iter().map(|row| row.int(0).map(JobId::new)).collect()
}

/// Claims on `conn` (the pool's, or a transaction's), the most urgent first; per queue where
/// the dialect cannot claim from every queue at once.
fn claim<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    wanted: &'c [(&'c str, usize)],
    kinds: &'c [&'c str],
    worker: &'c str,
    lease: Duration,
    clock: &'c Clock,
) -> BoxFuture<'c, Result<Vec<Claimed>, Error>> {
    Box::pin(async move {
        let groups: Vec<&[(&str, usize)]> = if D::CLAIMS_ALL_QUEUES {
            vec![wanted]
        } else {
            wanted.chunks(1).collect()
        };
        let mut claimed = Vec::new();
        for group in groups {
            let op = claim_op(group);
            let rows = D::fetch(
                conn,
                D::SQL.claim,
                claim_values(group, kinds, worker, lease),
                clock,
            );
            let rows = rows.await.map_err(|e| op_error::<D>(op(), e))?;
            for row in &rows {
                claimed.push(claimed_row(row).map_err(|e| op_error::<D>(op(), e))?);
            }
        }
        Ok(in_start_order(claimed))
    })
}

async fn acquire<D: Dialect>(
    pool: &sqlx::Pool<D::Db>,
    op: impl Op,
) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
    pool.acquire().await.map_err(|e| op_error::<D>(op(), e))
}

async fn fetch_on<D: Dialect>(
    mut conn: sqlx::pool::PoolConnection<D::Db>,
    sql: &str,
    values: Vec<Value<'_>>,
    clock: &Clock,
    op: impl Op,
) -> Result<Vec<D::Row>, Error> {
    D::fetch(&mut conn, sql, values, clock)
        .await
        .map_err(|e| op_error::<D>(op(), e))
}

impl<D: Dialect> SqlStore<D> {
    // Each operation's name is written only when it fails (`op`): claims, completions and
    // renewals run constantly and must not format a message each time.

    /// A transaction that writes ([`Dialect::BEGIN_WRITE`]), for an operation of several
    /// statements.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, D::Db>, Error> {
        self.pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(|e| op_error::<D>("begin a transaction", e))
    }

    /// A connection from the pool, for `op`.
    async fn conn(&self, op: impl Op) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
        acquire::<D>(&self.pool, op).await
    }

    /// A connection from the hot path's pool ([`SqlStore::hot`]), for `op`.
    async fn hot_conn(&self, op: impl Op) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
        acquire::<D>(&self.hot, op).await
    }

    /// Runs one statement on a pooled connection; returns how many rows it changed.
    async fn execute(&self, sql: &str, values: Vec<Value<'_>>, op: impl Op) -> Result<u64, Error> {
        let mut conn = self.conn(&op).await?;
        D::execute(&mut conn, sql, values, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))
    }

    /// Runs one statement on a pooled connection; returns its rows.
    async fn fetch(
        &self,
        sql: &str,
        values: Vec<Value<'_>>,
        op: impl Op,
    ) -> Result<Vec<D::Row>, Error> {
        let conn = self.conn(&op).await?;
        fetch_on::<D>(conn, sql, values, &self.clock, op).await
    }

    /// Runs one statement of the hot path on its pool; returns its rows.
    async fn fetch_hot(
        &self,
        sql: &str,
        values: Vec<Value<'_>>,
        op: impl Op,
    ) -> Result<Vec<D::Row>, Error> {
        let conn = self.hot_conn(&op).await?;
        fetch_on::<D>(conn, sql, values, &self.clock, op).await
    }

    fn jobs_from(rows: &[D::Row]) -> Result<Vec<JobInfo>, Error> {
        rows.iter().map(|row| row.job(D::STORE)).collect()
    }

    /// Applies the migrations the database lacks, each once, in one transaction.
    pub(crate) fn migrate(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self.conn(named("open a connection to migrate")).await?;
            self.dialect
                .begin_migrations(&mut conn)
                .await
                .map_err(failed::<D>(0))?;
            let result = apply_migrations::<D>(&mut conn).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = D::raw(&mut conn, end).await;
            result?;
            ended.map_err(failed::<D>(0))
        })
    }

    /// Fails unless the database has every migration this errand knows, unchanged.
    pub(crate) async fn check_version(&self) -> Result<(), Error> {
        let mut conn = self.conn(named("read the schema's version")).await?;
        let found = applied::<D>(&mut conn).await?;
        let needed = crate::migrations::latest(D::MIGRATIONS);
        let found = found.last().map_or(0, |(version, _)| *version);
        if found < needed {
            return Err(Error::SchemaBehind {
                store: D::STORE,
                found,
                needed,
            });
        }
        Ok(())
    }
}

/// Whether `sql`, a question about the schema, answers `1`.
fn is_one<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    sql: &'static str,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        let rows = D::fetch(conn, sql, vec![], &Clock::default()).await?;
        Ok(first(rows).map(|row| row.int(0)).transpose()? == Some(1))
    })
}

/// The migrations applied to the database, each with its recorded checksum; none when errand
/// never migrated it. Fails when an applied migration's checksum differs from this errand's.
fn applied<D: Dialect>(conn: &mut Conn<D>) -> BoxFuture<'_, Result<Vec<(i64, String)>, Error>> {
    Box::pin(async move {
        let op = |e| op_error::<D>("read the applied migrations", e);
        if !is_one::<D>(conn, D::SQL.has_bookkeeping)
            .await
            .map_err(op)?
        {
            return Ok(Vec::new());
        }
        if !is_one::<D>(conn, D::SQL.has_checksums).await.map_err(op)? {
            // Recorded before errand kept checksums: nothing to compare against.
            let rows = D::fetch(
                conn,
                "SELECT version FROM errand_migrations ORDER BY version",
                vec![],
                &Clock::default(),
            );
            let rows = rows.await.map_err(op)?;
            return rows
                .iter()
                .map(|r| Ok((r.int(0).map_err(op)?, String::new())))
                .collect();
        }
        let rows = D::fetch(conn, D::SQL.applied, vec![], &Clock::default())
            .await
            .map_err(op)?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let version = row.int(0).map_err(op)?;
            let recorded = row.opt_text(1).map_err(op)?.unwrap_or_default();
            let known = D::MIGRATIONS.iter().find(|m| m.version == version);
            if let Some(migration) = known {
                let expected = migration.checksum();
                if !recorded.is_empty() && recorded != expected {
                    return Err(Error::MigrationChanged {
                        store: D::STORE,
                        version,
                        name: migration.name,
                    });
                }
            }
            applied.push((version, recorded));
        }
        Ok(applied)
    })
}

/// Applies every migration to a connection no other can see (a private database in memory),
/// in one transaction.
#[cfg(feature = "sqlite")]
pub(crate) fn migrate_connection<D: Dialect>(
    conn: &mut Conn<D>,
) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async move {
        D::raw(conn, "BEGIN").await.map_err(failed::<D>(0))?;
        let result = apply_migrations::<D>(conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = D::raw(conn, end).await;
        result?;
        ended.map_err(failed::<D>(0))
    })
}

/// The migrations, inside the migrating transaction.
fn apply_migrations<D: Dialect>(conn: &mut Conn<D>) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async move {
        D::raw(conn, D::SQL.bookkeeping)
            .await
            .map_err(failed::<D>(0))?;
        if !is_one::<D>(conn, D::SQL.has_checksums)
            .await
            .map_err(failed::<D>(0))?
        {
            D::raw(conn, D::SQL.add_checksums)
                .await
                .map_err(failed::<D>(0))?;
        }
        let applied = applied::<D>(conn).await?;
        let current = applied.last().map_or(0, |(version, _)| *version);
        // Migrations recorded before errand kept checksums get theirs now: they were applied
        // from the same text, which a checksum from now on keeps from changing unnoticed.
        for (version, recorded) in &applied {
            if !recorded.is_empty() {
                continue;
            }
            if let Some(migration) = D::MIGRATIONS.iter().find(|m| m.version == *version) {
                let checksum = migration.checksum();
                let record = values![*version, checksum.as_str()];
                D::execute(conn, D::SQL.set_checksum, record, &Clock::default())
                    .await
                    .map_err(failed::<D>(*version))?;
            }
        }
        for migration in D::MIGRATIONS.iter().filter(|m| m.version > current) {
            let version = migration.version;
            D::raw(conn, migration.sql)
                .await
                .map_err(failed::<D>(version))?;
            let checksum = migration.checksum();
            let record = values![version, checksum.as_str(), Value::Now];
            D::execute(conn, D::SQL.record_migration, record, &Clock::default())
                .await
                .map_err(failed::<D>(version))?;
        }
        Ok(())
    })
}

impl<D: Dialect> Store for SqlStore<D> {
    async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        let op = || format!("enqueue a `{}` job", job.kind);
        if job.after.is_empty() && job.any_of.is_empty() {
            let mut conn = self.conn(op).await?;
            return insert::<D>(&mut conn, job, &self.clock).await;
        }
        let mut tx = self.begin_write().await?;
        let inserted = insert::<D>(&mut tx, job, &self.clock).await?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(inserted)
    }

    async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let mut conn = self.hot_conn(claim_op(wanted)).await?;
        claim::<D>(&mut conn, wanted, kinds, worker, lease, &self.clock).await
    }

    async fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Exchange, Error> {
        let op = || {
            format!(
                "mark {} jobs completed and {}",
                done.len(),
                claim_op(wanted)()
            )
        };
        if done.is_empty() {
            let claimed = self.claim(wanted, kinds, worker, lease).await?;
            return Ok(Exchange {
                completed: Vec::new(),
                claimed,
            });
        }
        if let (Some(sql), true) = (D::SQL.complete_and_claim, D::CLAIMS_ALL_QUEUES) {
            let mut values = claim_values(wanted, kinds, worker, lease);
            values.extend(completion_values(done));
            let rows = self.fetch_hot(sql, values, op).await?;
            let mut exchange = Exchange::default();
            let mut claimed = Vec::new();
            for row in &rows {
                if row.flag(15).map_err(|e| op_error::<D>(op(), e))? {
                    let id = row.int(0).map_err(|e| op_error::<D>(op(), e))?;
                    exchange.completed.push(JobId::new(id));
                } else {
                    claimed.push(claimed_row(row).map_err(|e| op_error::<D>(op(), e))?);
                }
            }
            exchange.claimed = in_start_order(claimed);
            return Ok(exchange);
        }
        let mut tx = self.hot.begin().await.map_err(|e| op_error::<D>(op(), e))?;
        let rows = D::fetch(
            &mut tx,
            D::SQL.complete_many,
            completion_values(done),
            &self.clock,
        );
        let rows = rows.await.map_err(|e| op_error::<D>(op(), e))?;
        let completed = completed_ids(&rows).map_err(|e| op_error::<D>(op(), e))?;
        let claimed = claim::<D>(&mut tx, wanted, kinds, worker, lease, &self.clock).await?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(Exchange { completed, claimed })
    }

    async fn promote(&self, limit: usize) -> Result<Promoted, Error> {
        self.promote_due(limit).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        let op = || {
            format!(
                "{} queue `{queue}`",
                if paused { "pause" } else { "resume" }
            )
        };
        let sql = if paused {
            D::SQL.pause_queue
        } else {
            D::SQL.resume_queue
        };
        Ok(self.execute(sql, values![queue, Value::Now], op).await? == 1)
    }

    async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
        limit: usize,
    ) -> Result<u64, Error> {
        let bury = vec![
            duration_millis(grace).into(),
            Value::Texts(queues.to_vec()),
            Value::Texts(kinds.to_vec()),
            UNKNOWN_KIND_BEFORE.into(),
            UNKNOWN_KIND_AFTER.into(),
            count(MAX_ERRORS).into(),
            count(KEEP_FIRST_ERRORS).into(),
            worker.into(),
            Value::Now,
            duration_millis(super::WORKER_STALE).into(),
            count(limit).into(),
        ];
        let op = named("bury jobs of kinds no worker knows");
        self.execute(D::SQL.bury_unknown, bury, op).await
    }

    async fn finish(&self, id: JobId, fence: i64, finish: &Finish) -> Result<bool, Error> {
        let error = finish
            .error
            .as_ref()
            .map(|e| encode_error::<D>(id, e))
            .transpose()?;
        let change = values![
            id.get(),
            fence,
            finish.state.as_str(),
            finish.run_after.map(duration_millis),
            i64::from(finish.refund_attempt),
            finish.state.is_final(),
            error.as_deref(),
            count(MAX_ERRORS),
            count(KEEP_FIRST_ERRORS),
            Value::Now,
        ];
        let op = || format!("mark job {id} {}", finish.state);
        Ok(self.execute(D::SQL.finish, change, op).await? == 1)
    }

    async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        let renew = vec![
            Value::Lease(lease),
            worker.into(),
            Value::Ints(runs.iter().map(|r| r.id.get()).collect()),
            Value::Ints(runs.iter().map(|r| r.fence).collect()),
            Value::Now,
        ];
        let op = || format!("renew the leases of {} jobs", runs.len());
        let rows = self.fetch_hot(D::SQL.renew, renew, op).await?;
        rows.iter()
            .map(|row| {
                let run = RunId {
                    id: JobId::new(row.int(0)?),
                    fence: row.int(1)?,
                };
                Ok((run, row.flag(2)?))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| op_error::<D>(op(), e))
    }

    async fn release(&self, worker: &str, jobs: &[JobId]) -> Result<(), Error> {
        let release = vec![
            worker.into(),
            Value::Ints(jobs.iter().map(|id| id.get()).collect()),
            Value::Now,
        ];
        let op = || format!("put back {} unfinished jobs", jobs.len());
        self.execute(D::SQL.release, release, op).await?;
        Ok(())
    }

    async fn rescue(&self) -> Result<Vec<JobId>, Error> {
        let rescue = values![
            LEASE_LOST_BEFORE,
            LEASE_LOST_AFTER,
            count(MAX_ERRORS),
            count(KEEP_FIRST_ERRORS),
            Value::Now,
            Value::Wall,
        ];
        let op = named("rescue jobs whose lease ran out");
        let rows = self.fetch(D::SQL.rescue, rescue, op).await?;
        let ids: Result<Vec<JobId>, _> =
            rows.iter().map(|row| row.int(0).map(JobId::new)).collect();
        ids.map_err(|e| op_error::<D>(op(), e))
    }

    async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        let op = || format!("read job {id}");
        let rows = self.fetch(D::SQL.job, values![id.get()], op).await?;
        rows.first().map(|row| row.job(D::STORE)).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> Result<Vec<JobInfo>, Error> {
        let (sql, values) = listing::<D>(filter, page);
        let rows = self.fetch(&sql, values, named("list jobs")).await?;
        Self::jobs_from(&rows)
    }

    async fn count_jobs(&self, filter: &JobFilter) -> Result<u64, Error> {
        let (sql, values) = counting::<D>(filter);
        let op = named("count jobs");
        let rows = self.fetch(&sql, values, op).await?;
        let counted = first(rows).map(|row| row.int(0)).transpose();
        let counted = counted.map_err(|e| op_error::<D>(op(), e))?;
        Ok(counted.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let op = named("read the queues' statistics");
        let counts = self.fetch(D::SQL.queue_counts, vec![], op).await?;
        let mut stats: Vec<QueueStats> = Vec::new();
        for row in &counts {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            let state = row.text(1).map_err(|e| op_error::<D>(op(), e))?;
            let count = row.int(2).map_err(|e| op_error::<D>(op(), e))?;
            let Some(state) = JobState::parse(&state) else {
                continue;
            };
            let at = match stats.iter().position(|s| s.queue == queue) {
                Some(at) => at,
                None => {
                    stats.push(QueueStats::new(queue));
                    stats.len() - 1
                }
            };
            stats[at]
                .counts
                .add(state, u64::try_from(count).unwrap_or(0));
        }
        let oldest = self
            .fetch(D::SQL.oldest_available, values![Value::Now], op)
            .await?;
        for row in &oldest {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            let age = row.int(1).map_err(|e| op_error::<D>(op(), e))?;
            if let Some(stats) = stats.iter_mut().find(|s| s.queue == queue) {
                stats.oldest_available = Some(Duration::from_millis(age.max(0).unsigned_abs()));
            }
        }
        let paused = self.fetch(D::SQL.paused_queues, vec![], op).await?;
        for row in &paused {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            match stats.iter_mut().find(|s| s.queue == queue) {
                Some(stats) => stats.paused = true,
                None => stats.push(QueueStats {
                    paused: true,
                    ..QueueStats::new(queue)
                }),
            }
        }
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(stats)
    }

    async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let op = || format!("mark {} jobs completed", runs.len());
        let rows = self
            .fetch_hot(D::SQL.complete_many, completion_values(runs), op)
            .await?;
        completed_ids(&rows).map_err(|e| op_error::<D>(op(), e))
    }

    async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        if let Some(hold) = hold {
            // `unique_for` caps the hold: a run that has held the key that long gives it up.
            let expire = values![id.get(), duration_millis(hold), Value::Now];
            let op = || format!("release an expired running key for job {id}");
            self.execute(D::SQL.expire_running_key, expire, op).await?;
        }
        let op = || format!("take the running key of job {id}");
        let mut conn = self.conn(op).await?;
        let taken = D::execute(
            &mut conn,
            D::SQL.take_running_key,
            values![id.get(), fence],
            &self.clock,
        );
        match taken.await {
            Ok(done) => Ok(done == 1),
            // The unique index refused: another running job of this kind holds the key.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(op_error::<D>(op(), e)),
        }
    }

    async fn step_result(&self, scope: &str, name: &str) -> Result<Option<String>, Error> {
        let op = || format!("read step `{name}` of `{scope}`");
        let rows = self
            .fetch(D::SQL.step_result, values![scope, name], op)
            .await?;
        rows.first()
            .map(|row| row.text(0))
            .transpose()
            .map_err(|e| op_error::<D>(op(), e))
    }

    async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        let scope = owner.scope;
        let record = values![
            scope,
            name,
            result,
            owner.kind,
            owner.key,
            owner.job.get(),
            Value::Now
        ];
        let op = || format!("record step `{name}` of `{scope}`");
        self.execute(D::SQL.record_step, record, op).await?;
        Ok(())
    }

    async fn cancel(&self, id: JobId, error: &AttemptError) -> Result<Cancellation, Error> {
        self.cancel_job(id, error).await
    }

    async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        let op = named("claim deaths for their handlers");
        let claim = values![count(limit), duration_millis(lease), Value::Wall];
        let rows = self.fetch(D::SQL.claim_deaths, claim, op).await?;
        let mut deaths = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, deliveries) = {
                let read = |column| row.int(column).map_err(|e| op_error::<D>(op(), e));
                (read(0)?, read(1)?)
            };
            if let Some(job) = self.job(JobId::new(id)).await? {
                deaths.push((job, u32::try_from(deliveries).unwrap_or(u32::MAX)));
            }
        }
        Ok(deaths)
    }

    async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        let op = || format!("mark the death of job {id} delivered");
        self.execute(D::SQL.death_delivered, values![id.get()], op)
            .await?;
        Ok(())
    }

    async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let mut retry = dead_values(filter);
        retry.push(Value::Now);
        self.execute(D::SQL.retry_dead, retry, named("retry dead jobs"))
            .await
    }

    async fn refused_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let op = named("count the dead jobs a retry refuses");
        let rows = self
            .fetch(D::SQL.refused_dead, dead_values(filter), op)
            .await?;
        let count = match rows.first() {
            Some(row) => row.int(0).map_err(|e| op_error::<D>(op(), e))?,
            None => 0,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let delete = dead_values(filter);
        self.execute(D::SQL.delete_dead, delete, named("delete dead jobs"))
            .await
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let lock = values![name, holder, duration_millis(ttl), Value::Now];
        let op = || format!("take the lock `{name}`");
        Ok(!self.fetch(D::SQL.try_lock, lock, op).await?.is_empty())
    }

    async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        // One statement per kind of row, each a range of one index, so that a backlog of
        // millions costs each batch an index scan, not a table scan (see the PostgreSQL
        // dialect's statements for the plans).
        let keep = [
            duration_millis(retention.finished_for),
            duration_millis(retention.dead_for),
            count(retention.max_dead),
            duration_millis(retention.steps_for),
        ];
        let mut deleted = 0;
        for ((sql, op), keep) in D::SQL.prune.iter().zip(keep) {
            let window = duration_millis(DEATH_DELIVERY_WINDOW);
            let prune = values![keep, count(batch), Value::Now, window];
            deleted += self.execute(sql, prune, named(op)).await?;
        }
        let unseen_for = crate::store::FORGET_AFTER;
        deleted += self
            .prune_bookkeeping(retention.finished_for, unseen_for, batch)
            .await?;
        Ok(deleted)
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        let op = || format!("enqueue {} jobs", jobs.len());
        let mut conn = self.conn(op).await?;
        insert_many::<D>(&mut conn, jobs, &self.clock).await
    }
}

/// What the stores' claim plan tests fill: a backlog held back in each way a job waits, and a
/// few jobs a claim can take.
#[cfg(test)]
pub(crate) mod held_back_cases {
    /// How many jobs each backlog holds.
    pub(crate) const BACKLOG: i64 = 1_000_000;

    /// `kind, queue, state, run_at offset (ms from now), limit_key, fair_key, waiting_on,
    /// count` of the rows to insert: under a limit whose one running slot a running job holds;
    /// one tenant's backlog of a fair kind; a paused queue's; pending on a parent; scheduled
    /// for tomorrow; and ten plain jobs to take.
    #[allow(clippy::type_complexity)]
    pub(crate) const FILL: [(&str, &str, &str, i64, Option<&str>, Option<&str>, i64, i64); 7] = [
        (
            "limited",
            "q",
            "running",
            -1_000,
            Some("limited"),
            None,
            0,
            1,
        ),
        (
            "limited",
            "q",
            "available",
            -1_000,
            Some("limited"),
            None,
            0,
            BACKLOG,
        ),
        (
            "fair",
            "q",
            "available",
            -1_000,
            None,
            Some("tenant-1"),
            0,
            BACKLOG,
        ),
        (
            "plain",
            "paused",
            "available",
            -1_000,
            None,
            None,
            0,
            BACKLOG,
        ),
        ("plain", "q", "pending", -1_000, None, None, 1, BACKLOG),
        (
            "plain",
            "q",
            "scheduled",
            86_400_000,
            None,
            None,
            0,
            BACKLOG,
        ),
        ("plain", "q", "available", -1_000, None, None, 0, 10),
    ];

    /// The running limited job's slot, the limit's only one.
    pub(crate) const HOLD_SLOT: &str =
        "INSERT INTO errand_limit_slots (limit_key, purpose, n, job_id)
        SELECT 'limited', 'running', 1, id FROM errand_jobs WHERE state = 'running'";

    /// The paused queue.
    pub(crate) const PAUSE: &str =
        "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES ('paused', 1, 1)";

    /// One statement to plan: what it is, its text and parameters, how many rows it finds, and
    /// the index it must read.
    pub(crate) struct Case {
        pub(crate) name: &'static str,
        pub(crate) sql: &'static str,
        pub(crate) values: Vec<super::Value<'static>>,
        #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
        pub(crate) rows: u64,
        pub(crate) index: &'static str,
    }

    /// Each claim of dialect `D` (the plain one asking 100 of each queue, the limited one's
    /// search, the fair one asking 10), the promotion, the expiry sweep and the read of when
    /// the next job is due, as the worker runs them.
    pub(crate) fn claims<D: super::Dialect>() -> Vec<Case> {
        use super::Value;
        let queues = || Value::Texts(vec!["q", "paused"]);
        let lease = || Value::Lease(std::time::Duration::from_secs(30));
        let mut cases = vec![
            Case {
                name: "plain claim",
                sql: D::SQL.claim,
                values: vec![
                    queues(),
                    Value::Ints(vec![100, 100]),
                    lease(),
                    Value::from("plan-test"),
                    Value::Texts(vec!["plain"]),
                    Value::Now,
                ],
                rows: 10,
                index: "errand_jobs_plain",
            },
            Case {
                name: "limited claim's search",
                sql: D::SQL.limit_candidates,
                values: vec![
                    queues(),
                    Value::Texts(vec!["limited"]),
                    Value::OptInts(vec![Some(1)]),
                    Value::OptInts(vec![None]),
                    Value::OptInts(vec![None]),
                    Value::from(400),
                    Value::Now,
                ],
                rows: 0,
                index: "errand_jobs_limited",
            },
            Case {
                name: "fair claim",
                sql: D::SQL.claim_fair,
                values: vec![
                    Value::from("q"),
                    Value::from(10),
                    Value::Texts(vec!["fair"]),
                    lease(),
                    Value::from("plan-test"),
                    Value::Now,
                ],
                // The tenant's first jobs, one a turn.
                rows: 10,
                index: "errand_jobs_fair",
            },
            Case {
                // Every 30 s on every worker: the jobs of plain kinds that carry keys.
                name: "adoption's search of plain kinds",
                sql: super::kinds::UNKEYED.of::<D>(),
                values: vec![
                    Value::Texts(Vec::new()),
                    Value::Texts(Vec::new()),
                    Value::Texts(Vec::new()),
                    Value::Texts(vec!["plain"]),
                    Value::from(500),
                ],
                rows: 0,
                index: "errand_jobs_keyed",
            },
            Case {
                // Every 30 s on every worker: its queues' jobs of kinds no live worker knows
                // (here every kind is known but `plain`'s; its jobs are due for a second, the
                // grace a minute).
                name: "burial of unknown kinds",
                sql: D::SQL.bury_unknown,
                values: vec![
                    Value::from(60_000),
                    queues(),
                    Value::Texts(vec!["limited", "fair"]),
                    Value::from("no worker knows `"),
                    Value::from("`"),
                    Value::from(25),
                    Value::from(5),
                    Value::from("plan-test"),
                    Value::Now,
                    Value::from(60_000),
                    Value::from(1000),
                ],
                rows: 0,
                index: "errand_jobs_available_kinds",
            },
        ];
        let error = || Value::from(r#"{"kind": "expired", "message": "plan"}"#);
        if D::STORE == "postgres" {
            cases.push(Case {
                name: "promotion (with the expiry sweep and the next due)",
                sql: super::due::PROMOTE_POSTGRES,
                values: vec![Value::from(1000), error()],
                rows: 1,
                index: "errand_jobs_due",
            });
        } else {
            cases.extend([
                Case {
                    name: "promotion",
                    sql: super::due::PROMOTE_SQLITE,
                    values: vec![Value::from(1000), Value::Now],
                    rows: 0,
                    index: "errand_jobs_due",
                },
                Case {
                    name: "expiry sweep",
                    sql: super::due::EXPIRE_SQLITE,
                    values: vec![Value::from(1000), error(), Value::Now],
                    rows: 0,
                    index: "errand_jobs_expiring",
                },
                Case {
                    name: "next due",
                    sql: super::due::NEXT_DUE_SQLITE,
                    values: vec![Value::Now],
                    rows: 1,
                    index: "errand_jobs_due",
                },
            ]);
        }
        cases
    }
}

/// The burial of unknown kinds, checked on each store: with no live worker at all (so that
/// only the burying worker's own registry spares its kinds), a job of a kind the worker knows
/// is never buried; one of a kind it does not know is, once due for the grace; one due for
/// less is not yet.
#[cfg(test)]
pub(crate) async fn check_burial_spares_known_kinds<D: Dialect>(store: &SqlStore<D>) {
    use crate::store::Store;
    let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                                        run_at, created_at)
                VALUES ('known', 'q', '{}', 'available', 5, 25, 0, 0),
                       ('unknown', 'q', '{}', 'available', 5, 25, 0, 0),
                       ('unknown', 'q', '{}', 'available', 5, 25, 9000000000000, 0)";
    let op = named("set up the burial test");
    store
        .execute(fill, Vec::new(), op)
        .await
        .expect("fill the table");
    let grace = Duration::from_secs(60);
    let buried = store
        .bury_unknown(&["q"], &["known"], grace, "test-worker", 10)
        .await
        .expect("bury");
    assert_eq!(buried, 1, "only the due job of the unknown kind is buried");
    let states = "SELECT kind || ':' || state FROM errand_jobs ORDER BY id";
    let rows = store
        .fetch(states, Vec::new(), op)
        .await
        .expect("read the states");
    let states: Vec<String> = rows.iter().map(|r| r.text(0).expect("a text")).collect();
    assert_eq!(
        states,
        ["known:available", "unknown:dead", "unknown:available"]
    );
}

/// What the stores' plan tests fill and list: a million completed jobs kept by retention, and a
/// few of a rarer kind and queue inserted first, so that a listing that walked the ids from the
/// newest would pass the million before finding them.
#[cfg(test)]
pub(crate) mod listing_cases {
    use crate::job::JobId;
    use crate::job::JobState::{Available, Completed, Dead, Scheduled};
    use crate::query::{JobFilter, Page};

    /// `kind, queue, state, count, tagged` of the rows to insert, in order; each row's key is
    /// `<kind>-<n>`, its times `n`, and a tagged row's tags `["vip"]`.
    pub(crate) const FILL: [(&str, &str, &str, i64, bool); 3] = [
        ("charge", "mail", "dead", 2_000, true),
        ("charge", "mail", "available", 100, false),
        ("k", "bulk", "completed", 1_000_000, false),
    ];

    /// Listings an operator asks for, by name.
    pub(crate) fn listings() -> Vec<(&'static str, JobFilter, Page)> {
        let newest = Page::first(50).newest_first();
        let oldest = Page::first(50);
        vec![
            ("dead, newest", JobFilter::all().state(Dead), newest),
            (
                "dead in a queue",
                JobFilter::all().state(Dead).queue("mail"),
                oldest,
            ),
            ("a kind", JobFilter::all().kind("charge"), newest),
            (
                "waiting",
                JobFilter::all().states([Available, Scheduled]),
                oldest,
            ),
            ("everything, newest", JobFilter::all(), newest),
            (
                "a key",
                JobFilter::all().kind("charge").key("charge-7"),
                oldest,
            ),
            ("a queue", JobFilter::all().queue("mail"), newest),
            ("a tag", JobFilter::all().tag("vip"), newest),
            (
                "finished before",
                JobFilter::all()
                    .state(Completed)
                    .finished_before(std::time::SystemTime::now()),
                newest,
            ),
            (
                "deep page",
                JobFilter::all().state(Completed),
                Page::after(JobId::new(500_000), 50),
            ),
        ]
    }

    /// Counts, by name.
    pub(crate) fn counts() -> Vec<(&'static str, JobFilter)> {
        vec![
            ("count dead", JobFilter::all().state(Dead)),
            ("count a kind", JobFilter::all().kind("charge")),
        ]
    }
}

// After the macros above, which they use.
mod bookkeeping;
mod cancels;
mod claims;
pub(crate) mod due;
mod history;
mod kinds;
mod schedules;
#[cfg(feature = "postgres")]
mod vacuum;
mod workflows;
