//! Storage: the one module family that knows SQL.
//!
//! A [`Store`] keeps jobs and carries out the worker's decisions, each state change in one atomic
//! statement. The worker decides (complete, retry at, snooze, dead); the store never reads a job,
//! changes it in Rust and writes it back. [`Backend`] picks the store a [`Client`](crate::Client)
//! was connected to.

use std::future::Future;
use std::time::{Duration, SystemTime};

pub(crate) use crate::dead::DeadQuery;
use crate::dead::{Cancellation, Retention};
use crate::error::Error;
use crate::info::{AttemptError, JobInfo};
use crate::job::{JobId, JobState, OnConflict, Unique, UniqueStrategy};
use crate::query::{JobFilter, Page, QueueStats};

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// What time a store reads: the system's, or for a [`TestClient`](crate::testing::TestClient)
/// the system's plus an offset that only the test moves, forward. PostgreSQL always reads its
/// own (`errand_now_ms()`); SQLite binds this clock's time to its statements.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clock {
    /// Milliseconds added to the system's time, when a test can move it.
    offset: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

/// The adjustable clocks of this process's test stores, by the name of their database.
#[cfg(feature = "sqlite")]
type Registered = (String, std::sync::Weak<std::sync::atomic::AtomicI64>);
#[cfg(feature = "sqlite")]
static TEST_CLOCKS: std::sync::Mutex<Vec<Registered>> = std::sync::Mutex::new(Vec::new());

/// The system's clock, for statements run in a caller's own transaction.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const SYSTEM_CLOCK: Clock = Clock { offset: None };

impl Clock {
    /// A clock that reads the system's time until [`Clock::advance`] moves it ahead.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn adjustable() -> Clock {
        Clock {
            offset: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0))),
        }
    }

    /// Now, in milliseconds since the epoch.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn now_ms(&self) -> i64 {
        let system = crate::info::to_millis(SystemTime::now());
        match &self.offset {
            Some(offset) => system.saturating_add(offset.load(std::sync::atomic::Ordering::SeqCst)),
            None => system,
        }
    }

    /// Records that the database in memory named `name` reads this clock, for statements run
    /// in a caller's transaction on it ([`Clock::of_database`]); nothing for the system's.
    #[cfg(feature = "sqlite")]
    pub(crate) fn register_database(&self, name: &str) {
        if let Some(offset) = &self.offset {
            let mut clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
            clocks.retain(|(_, clock)| clock.strong_count() > 0);
            clocks.push((name.to_owned(), std::sync::Arc::downgrade(offset)));
        }
    }

    /// Whether any test clock was registered in this process.
    #[cfg(feature = "sqlite")]
    pub(crate) fn any_registered() -> bool {
        let clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        !clocks.is_empty()
    }

    /// The clock registered for the database named `name`, or the system's.
    #[cfg(feature = "sqlite")]
    pub(crate) fn of_database(name: &str) -> Clock {
        let clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        let offset = clocks
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, clock)| clock.upgrade());
        Clock { offset }
    }

    /// How far ahead of the system's time this clock reads, in milliseconds.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset
            .as_ref()
            .map_or(0, |offset| offset.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Moves an adjustable clock ahead by `by` (the system's clock cannot be moved).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn advance(&self, by: Duration) {
        if let Some(offset) = &self.offset {
            let by = crate::info::duration_millis(by);
            offset.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Moves an adjustable clock ahead to `to_ms`, if it reads earlier.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn advance_to(&self, to_ms: i64) {
        let behind = to_ms.saturating_sub(self.now_ms());
        if behind > 0 {
            self.advance(Duration::from_millis(behind.unsigned_abs()));
        }
    }
}

/// A boxed `Send` future. Store functions that hold a connection borrowed from their caller
/// across awaits return one: rustc cannot prove such futures `Send` for every lifetime once
/// they sit inside another future, which stops users from `tokio::spawn`ing code that awaits
/// them. Boxing checks `Send` once, here, with the lifetimes known.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job about to be inserted. `pub` (in this private module) only because the sealed
/// [`Transaction`](crate::Transaction) trait takes it.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub(crate) kind: &'static str,
    pub(crate) queue: String,
    pub(crate) args: String,
    pub(crate) priority: u8,
    pub(crate) max_attempts: u32,
    pub(crate) run_at: RunAt,
    pub(crate) key: Option<String>,
    /// With a key: whether (and how) duplicates are refused.
    pub(crate) unique: Option<Unique>,
    /// Labels for finding it (`Request::tags`).
    pub(crate) tags: Vec<String>,
    /// A JSON object of the caller's data (`Request::meta`), `None` for `{}`.
    pub(crate) meta: Option<String>,
    /// A run time limit that overrides the job's own, in milliseconds.
    pub(crate) timeout_ms: Option<i64>,
    /// When it is discarded if it has not started.
    pub(crate) expires: Option<Expiry>,
    /// The key of the limits it starts under (`kind`, or `kind:concurrency_key`), for a kind
    /// with `concurrency` or `rate`.
    pub(crate) limit_key: Option<String>,
    /// The key claims take turns between (`#[job(fair_by = ..)]`).
    pub(crate) fair_key: Option<String>,
    /// The jobs it waits on (`Request::after`).
    pub(crate) after: Vec<JobId>,
    /// What it does when one of them dies or is cancelled.
    pub(crate) on_dependency_failure: crate::job::OnDependencyFailure,
    /// The jobs any one of which releases it by ending the way its edge names (a saga's
    /// compensation); it is cancelled once none of them can. Never set with `after`.
    pub(crate) any_of: Vec<(JobId, Release)>,
    /// The workflow it is a step of, and the step's name.
    pub(crate) workflow: Option<(i64, String)>,
}

/// Which end of a job releases a dependent that waits on any one of several
/// ([`NewJob::any_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// It failed of itself: it died, or was cancelled while everything it waited on had
    /// completed (a saga step whose earlier steps must be undone). A parent already cancelled
    /// when the dependent is stored counts as not releasing it.
    Failed,
    /// It completed or died: a compensation that ran, after which the next one runs.
    Ran,
    /// It was cancelled while it ran: a saga step that may have acted before it stopped, undone
    /// by its own compensation.
    Stopped,
}

impl Release {
    /// As stored in `errand_job_deps.on_failure`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Release::Failed => "when_failed",
            Release::Ran => "when_ran",
            Release::Stopped => "when_stopped",
        }
    }

    /// Whether a parent in `state` (as stored) releases the dependent.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn releases(self, state: &str) -> bool {
        match self {
            Release::Failed => state == "dead",
            Release::Ran => state == "dead" || state == "completed",
            // Its parent is the step stored with it, in the same transaction: it has not run.
            Release::Stopped => false,
        }
    }
}

impl NewJob {
    /// Whether it has limits or `fair_by`: workers claim it apart from the others.
    pub(crate) fn is_special(&self) -> bool {
        self.limit_key.is_some() || self.fair_key.is_some()
    }

    /// Its tags as a JSON array.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn tags_json(&self) -> String {
        // Serializing strings cannot fail.
        serde_json::to_string(&self.tags).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Its meta, as JSON text.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn meta_json(&self) -> &str {
        self.meta.as_deref().unwrap_or("{}")
    }

    /// Its meta, as a JSON value.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn meta_value(&self) -> serde_json::Value {
        serde_json::from_str(self.meta_json()).unwrap_or_default()
    }

    /// The key this job holds from its enqueue, when duplicates of it are refused.
    pub(crate) fn unique_key(&self) -> Option<&str> {
        match self.unique {
            Some(u) if u.strategy != UniqueStrategy::WhileExecuting => self.key.as_deref(),
            _ => None,
        }
    }

    /// The strategy's stored name.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn unique_strategy(&self) -> Option<&'static str> {
        self.unique.map(|u| match u.strategy {
            UniqueStrategy::UntilExecuting => "until_executing",
            UniqueStrategy::UntilExecuted => "until_executed",
            UniqueStrategy::WhileExecuting => "while_executing",
            UniqueStrategy::UntilExpired => "until_expired",
        })
    }

    /// How long after the enqueue the key stops being held, if bounded.
    pub(crate) fn unique_for_ms(&self) -> Option<i64> {
        self.unique
            .and_then(|u| u.unique_for)
            .map(crate::info::duration_millis)
    }

    /// What to do when the key is taken.
    pub(crate) fn on_conflict(&self) -> OnConflict {
        self.unique.map_or(OnConflict::Skip, |u| u.on_conflict)
    }
}

/// What an enqueue did. `pub` (in this private module) only because the sealed
/// [`Transaction`](crate::Transaction) trait returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new job.
    New(JobId),
    /// The key was taken by this job; nothing was stored.
    Duplicate(JobId),
    /// The key was taken by this job, which had not started: its arguments and schedule were
    /// replaced.
    Replaced(JobId),
}

/// When a job that has not started is discarded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expiry {
    /// This long after its run time.
    After(Duration),
    /// At this time.
    At(SystemTime),
}

impl NewJob {
    /// Its expiry as `(after, at)`, at most one set: `after` counts from the job's run time.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn expiry_ms(&self) -> (Option<i64>, Option<i64>) {
        match self.expires {
            None => (None, None),
            Some(Expiry::After(d)) => (Some(crate::info::duration_millis(d)), None),
            Some(Expiry::At(t)) => (None, Some(crate::info::to_millis(t))),
        }
    }
}

impl Inserted {
    /// The job that will run: the new one, or the one that holds the key.
    pub(crate) fn id(self) -> JobId {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) | Inserted::Replaced(id) => id,
        }
    }
}

/// When a new job should first run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RunAt {
    Now,
    After(Duration),
    At(SystemTime),
}

impl RunAt {
    /// Whether it may be later than now (a job that waits, scheduled).
    pub(crate) fn is_later(self) -> bool {
        match self {
            RunAt::Now => false,
            RunAt::After(delay) => !delay.is_zero(),
            RunAt::At(_) => true,
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// As `(delay, time)`, one of them set, for SQL that reads the clock itself: a delay is
    /// measured on the database's clock, a time is taken as given.
    pub(crate) fn delay_or_at_ms(self) -> (Option<i64>, Option<i64>) {
        match self {
            RunAt::Now => (Some(0), None),
            RunAt::After(d) => (Some(crate::info::duration_millis(d)), None),
            RunAt::At(t) => (None, Some(crate::info::to_millis(t))),
        }
    }
}

/// One claim of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RunId {
    pub id: JobId,
    pub fence: i64,
}

/// A job a worker has just claimed.
#[derive(Clone, Debug)]
pub(crate) struct Claimed {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub key: Option<String>,
    /// Bumped on every claim: a write carrying an older fence is from a worker that lost the job.
    pub fence: i64,
    /// A run time limit that overrides the job's own.
    pub timeout: Option<Duration>,
    /// Its tags, as a JSON array; `None` when it has none (most jobs: nothing to allocate).
    pub tags: Option<String>,
    /// Its meta, as a JSON object; `None` when empty.
    pub meta: Option<String>,
    /// The workflow (or saga, or batch) it is a step of, and the step's name.
    pub workflow: Option<(crate::info::WorkflowId, String)>,
    /// When it was due (its run time), in milliseconds since the epoch by the store's clock.
    pub run_at: i64,
}

impl Claimed {
    /// This claim of the job.
    pub(crate) fn run(&self) -> RunId {
        RunId {
            id: self.id,
            fence: self.fence,
        }
    }
}

/// The limits across the cluster of one job kind, for a limited claim.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KindLimit {
    pub kind: &'static str,
    /// `#[job(concurrency = ..)]`.
    pub max_running: Option<u32>,
    /// `#[job(rate = ..)]`.
    pub rate: Option<crate::job::Rate>,
}

/// What [`Store::promote`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Promoted {
    /// How many jobs past their deadline it cancelled.
    pub expired: u64,
    /// How many jobs it made available.
    pub count: u64,
    /// How long until the earliest job still waiting is due, by the store's clock (zero when
    /// some are due already); `None` when no job waits.
    pub next_in: Option<Duration>,
}

/// What [`Store::complete_and_claim`] did.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// The runs it completed (a run whose fence no longer matched is not among them).
    pub completed: Vec<JobId>,
    /// The jobs it claimed, the most urgent first.
    pub claimed: Vec<Claimed>,
}

/// The state change that ends a run, decided by the worker.
#[derive(Clone, Debug)]
pub(crate) struct Finish {
    pub state: JobState,
    /// Run again after this long (retryable, scheduled).
    pub run_after: Option<Duration>,
    /// Give back the attempt this run spent (snooze).
    pub refund_attempt: bool,
    /// Appended to the job's history.
    pub error: Option<AttemptError>,
}

impl Finish {
    pub(crate) fn completed() -> Finish {
        Finish {
            state: JobState::Completed,
            run_after: None,
            refund_attempt: false,
            error: None,
        }
    }

    pub(crate) fn retry(delay: Duration, error: AttemptError) -> Finish {
        Finish {
            state: JobState::Retryable,
            run_after: Some(delay),
            refund_attempt: false,
            error: Some(error),
        }
    }

    pub(crate) fn dead(error: AttemptError) -> Finish {
        Finish {
            state: JobState::Dead,
            run_after: None,
            refund_attempt: false,
            error: Some(error),
        }
    }

    pub(crate) fn snooze(delay: Duration) -> Finish {
        Finish {
            state: JobState::Scheduled,
            run_after: Some(delay),
            refund_attempt: true,
            error: None,
        }
    }

    /// Cancelled as expired before it began: the attempt its claim counted is given back.
    pub(crate) fn expired(error: AttemptError) -> Finish {
        Finish {
            refund_attempt: true,
            ..Finish::cancelled(error)
        }
    }

    /// Cancelled as asked before its run began: the attempt its claim counted is given back.
    /// (A run cancelled from `running` with its attempt kept had begun: the database then
    /// takes it as having acted, and a saga undoes it.)
    pub(crate) fn cancelled_unstarted(error: AttemptError) -> Finish {
        Finish {
            refund_attempt: true,
            ..Finish::cancelled(error)
        }
    }

    pub(crate) fn cancelled(error: AttemptError) -> Finish {
        Finish {
            state: JobState::Cancelled,
            run_after: None,
            refund_attempt: false,
            error: Some(error),
        }
    }
}

/// What every store does. Each method is one atomic operation.
pub(crate) trait Store: Send + Sync {
    /// Inserts a job (`scheduled` if it runs later, `available` otherwise), unless its unique
    /// key is taken.
    fn enqueue(&self, job: &NewJob) -> impl Future<Output = Result<Inserted, Error>> + Send;

    /// Claims, for each `(queue, limit)`, up to `limit` due jobs of that queue whose kind is
    /// one of `kinds` (those the worker can run), most urgent first, for `worker`, with a lease.
    fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, Error>> + Send;

    /// [`Store::complete_many`] of `done`, then [`Store::claim`], as one atomic operation: a
    /// worker's claim loop writes the runs that finished and claims for their slots in one
    /// round trip (PostgreSQL: one statement; SQLite: one transaction).
    fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Exchange, Error>> + Send;

    /// Cancels up to `limit` waiting jobs past their deadline (as expired), makes up to `limit`
    /// `scheduled` or `retryable` jobs whose time has come `available`, where claims find
    /// them, and reads when the next waiting job is due.
    fn promote(&self, limit: usize) -> impl Future<Output = Result<Promoted, Error>> + Send;

    /// Pauses (`paused`) or resumes `queue` for every node. Returns whether that changed it.
    fn set_paused(
        &self,
        queue: &str,
        paused: bool,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Kills the available jobs of `queues` whose kind is none of `kinds` and that have been due
    /// for `grace` or longer, by the database's clock: no worker that knows their kind took
    /// them. (Waiting jobs become available when due, whatever their kind.) A kind that a live
    /// worker knows (one seen within [`WORKER_STALE`]) is never buried, nor a job of a paused
    /// queue. Buries up to `limit` jobs; returns how many.
    fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
        limit: usize,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Ends a run, unless the job was taken from this worker (`fence` no longer matches).
    /// Returns whether the change was made.
    fn finish(
        &self,
        id: JobId,
        fence: i64,
        finish: &Finish,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Extends the leases of runs `worker` still executes, each under its fence; returns the
    /// runs renewed, each with whether its cancellation was requested. Never waits on a job
    /// row another transaction holds (`complete_in`): such a run is left for the next renewal.
    fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<(RunId, bool)>, Error>> + Send;

    /// Puts jobs `worker` did not finish back to `available`, refunding the attempt.
    fn release(
        &self,
        worker: &str,
        ids: &[JobId],
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Makes running jobs whose lease ran out retryable (or dead, with no attempts left);
    /// returns their ids.
    fn rescue(&self) -> impl Future<Output = Result<Vec<JobId>, Error>> + Send;

    /// One job, if it exists.
    fn job(&self, id: JobId) -> impl Future<Output = Result<Option<JobInfo>, Error>> + Send;

    /// One page of the jobs matching `filter`.
    fn list_jobs(
        &self,
        filter: &JobFilter,
        page: Page,
    ) -> impl Future<Output = Result<Vec<JobInfo>, Error>> + Send;

    /// How many jobs match `filter`.
    fn count_jobs(&self, filter: &JobFilter) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Every queue with jobs, by name.
    fn queue_stats(&self) -> impl Future<Output = Result<Vec<QueueStats>, Error>> + Send;

    /// Completes many runs in one statement, each only if its fence still matches. Returns the
    /// ids that were completed.
    fn complete_many(
        &self,
        runs: &[(JobId, i64)],
    ) -> impl Future<Output = Result<Vec<JobId>, Error>> + Send;

    /// For a `while_executing` job: takes its key for this run, or returns `false` when another
    /// running job of its kind holds it. With `hold` (the job's `unique_for`), a run that has
    /// held the key that long gives it up first.
    fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The recorded result of step `name` in `scope`, if it succeeded before.
    fn step_result(
        &self,
        scope: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Records a step's result; the first record of a step wins.
    fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Cancels a job that has not started, or asks a running one to stop.
    fn cancel(
        &self,
        id: JobId,
        error: &AttemptError,
    ) -> impl Future<Output = Result<Cancellation, Error>> + Send;

    /// Takes up to `limit` deaths not delivered yet and not taken by another worker within
    /// `lease`, leasing each for `lease`; returns each with how many times it has been taken.
    fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<(JobInfo, u32)>, Error>> + Send;

    /// Marks job `id`'s death delivered: its handler will not be called again.
    fn death_delivered(&self, id: JobId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Makes dead jobs matching `filter` available again, attempts reset, history kept; never
    /// one whose death was acted on (jobs that wait on it were cancelled or released).
    fn retry_dead(&self, filter: &DeadQuery) -> impl Future<Output = Result<u64, Error>> + Send;

    /// How many dead jobs matching `filter` [`Store::retry_dead`] refuses.
    fn refused_dead(&self, filter: &DeadQuery) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Deletes dead jobs matching `filter`.
    fn delete_dead(&self, filter: &DeadQuery) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Takes (or keeps) the lock `name` for `holder` for `ttl`, unless another holder has it.
    fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Deletes up to `batch` jobs that retention lets go; returns how many.
    fn prune(
        &self,
        retention: &Retention,
        batch: usize,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Inserts jobs that are not unique, in one statement; returns their ids in order.
    fn enqueue_many(
        &self,
        jobs: &[NewJob],
    ) -> impl Future<Output = Result<Vec<JobId>, Error>> + Send;
}

/// Whose ledger entry a step is: its scope (the key it is recorded under) and the job that
/// recorded it. Pruning keeps the entry while a job that has not finished holds the key (or,
/// for a keyless job, while that job has not finished).
pub(crate) struct StepOwner<'a> {
    pub(crate) scope: &'a str,
    pub(crate) kind: &'a str,
    /// The job's rendered key, for a job with a key template.
    pub(crate) key: Option<&'a str>,
    pub(crate) job: JobId,
}

/// Reads a row selected by a SQL store's `SELECT_JOB`: the same columns on every SQL store,
/// integers as 64-bit and JSON as text.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn job_from_row<R>(row: &R, store: &'static str) -> Result<JobInfo, Error>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::info::{from_millis, StoredAttempt};

    let id: i64 = row.try_get("id").map_err(|source| Error::Store {
        store,
        op: "read a job's id".to_owned(),
        source,
    })?;
    let id = JobId::new(id);
    let corrupt = |reason: String| Error::Corrupt { store, id, reason };
    let int = |column: &str| {
        row.try_get::<i64, _>(column)
            .map_err(|e| corrupt(e.to_string()))
    };
    let opt_int = |column: &str| {
        row.try_get::<Option<i64>, _>(column)
            .map_err(|e| corrupt(e.to_string()))
    };
    let text = |column: &str| {
        row.try_get::<String, _>(column)
            .map_err(|e| corrupt(e.to_string()))
    };
    let args = text("args")?;
    let state = text("state")?;
    let errors: Vec<StoredAttempt> = serde_json::from_str(&text("errors")?)
        .map_err(|e| corrupt(format!("unreadable error history: {e}")))?;
    Ok(JobInfo {
        id,
        kind: text("kind")?,
        queue: text("queue")?,
        // Arguments that are not JSON (a row written by hand) are shown as they are, so that one
        // bad row never makes a job or a listing unreadable; the job itself dies undecodable.
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args)),
        state: JobState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        attempt: u32::try_from(int("attempt")?).unwrap_or(0),
        max_attempts: u32::try_from(int("max_attempts")?).unwrap_or(0),
        priority: u8::try_from(int("priority")?).unwrap_or(u8::MAX),
        key: row
            .try_get::<Option<String>, _>("idempotency_key")
            .map_err(|e| corrupt(e.to_string()))?,
        created_at: from_millis(int("created_at")?),
        run_at: from_millis(int("run_at")?),
        attempted_at: opt_int("attempted_at")?.map(from_millis),
        finished_at: opt_int("finished_at")?.map(from_millis),
        errors: errors.into_iter().map(Into::into).collect(),
        tags: serde_json::from_str(&text("tags")?)
            .map_err(|e| corrupt(format!("unreadable tags: {e}")))?,
        meta: serde_json::from_str(&text("meta")?)
            .map_err(|e| corrupt(format!("unreadable meta: {e}")))?,
        timeout: opt_int("timeout_ms")?.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        expires_at: opt_int("expires_at")?.map(from_millis),
        workflow: opt_int("workflow_id")?.map(crate::info::WorkflowId::new),
        step: row
            .try_get::<Option<String>, _>("step")
            .map_err(|e| corrupt(e.to_string()))?,
    })
}

/// How long a dead job whose death no handler has taken yet is kept from the pruning of surplus
/// dead jobs (`Retention::max_dead`), so that a burst of deaths reaches its handlers. Past it,
/// the death is taken for one that no handler will take (a deployment without handlers).
pub(crate) const DEATH_DELIVERY_WINDOW: Duration = Duration::from_secs(3600);

/// How many failed attempts a job's history keeps: the first `KEEP_FIRST_ERRORS` and the
/// latest, up to `MAX_ERRORS` in all.
pub(crate) const MAX_ERRORS: usize = 25;
pub(crate) const KEEP_FIRST_ERRORS: usize = 5;

/// The store a client was connected to.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresStore),
    /// Built without a store (neither the `sqlite` nor the `postgres` feature): no client can
    /// connect, but jobs can still be declared.
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

/// Calls the same method on whichever store `self` holds.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($store) => $call,
            #[cfg(feature = "postgres")]
            Backend::Postgres($store) => $call,
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    };
}

impl Store for Backend {
    async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        dispatch!(self, s => s.enqueue(job).await)
    }

    async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        dispatch!(self, s => s.claim(wanted, kinds, worker, lease).await)
    }

    async fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Exchange, Error> {
        dispatch!(self, s => s.complete_and_claim(done, wanted, kinds, worker, lease).await)
    }

    async fn promote(&self, limit: usize) -> Result<Promoted, Error> {
        dispatch!(self, s => s.promote(limit).await)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        dispatch!(self, s => s.set_paused(queue, paused).await)
    }

    async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
        limit: usize,
    ) -> Result<u64, Error> {
        dispatch!(self, s => s.bury_unknown(queues, kinds, grace, worker, limit).await)
    }

    async fn finish(&self, id: JobId, fence: i64, finish: &Finish) -> Result<bool, Error> {
        dispatch!(self, s => s.finish(id, fence, finish).await)
    }

    async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        dispatch!(self, s => s.renew(worker, runs, lease).await)
    }

    async fn release(&self, worker: &str, ids: &[JobId]) -> Result<(), Error> {
        dispatch!(self, s => s.release(worker, ids).await)
    }

    async fn rescue(&self) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.rescue().await)
    }

    async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        dispatch!(self, s => s.job(id).await)
    }

    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> Result<Vec<JobInfo>, Error> {
        dispatch!(self, s => s.list_jobs(filter, page).await)
    }

    async fn count_jobs(&self, filter: &JobFilter) -> Result<u64, Error> {
        dispatch!(self, s => s.count_jobs(filter).await)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        dispatch!(self, s => s.queue_stats().await)
    }

    async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.complete_many(runs).await)
    }

    async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.take_running_key(id, fence, hold).await)
    }

    async fn step_result(&self, scope: &str, name: &str) -> Result<Option<String>, Error> {
        dispatch!(self, s => s.step_result(scope, name).await)
    }

    async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.record_step(owner, name, result).await)
    }

    async fn cancel(&self, id: JobId, error: &AttemptError) -> Result<Cancellation, Error> {
        dispatch!(self, s => s.cancel(id, error).await)
    }

    async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        dispatch!(self, s => s.claim_deaths(limit, lease).await)
    }

    async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        dispatch!(self, s => s.death_delivered(id).await)
    }

    async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.retry_dead(filter).await)
    }

    async fn refused_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.refused_dead(filter).await)
    }

    async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.delete_dead(filter).await)
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        dispatch!(self, s => s.try_lock(name, holder, ttl).await)
    }

    async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        dispatch!(self, s => s.prune(retention, batch).await)
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.enqueue_many(jobs).await)
    }
}

/// Whether a claimed job that waited in its worker's buffer may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Startable {
    Yes,
    /// Its queue was paused meanwhile: it goes back, no attempt spent.
    Paused,
    /// Its deadline passed meanwhile: it is cancelled as expired, no attempt spent.
    Expired,
    /// Its cancellation was asked meanwhile: it is cancelled before it began, no attempt
    /// spent.
    Cancelled,
    /// Its run no longer owns it.
    Lost,
}

/// A live worker as it announces itself: who it is, what it works and which kinds it knows.
#[derive(Debug)]
pub(crate) struct Presence<'a> {
    pub(crate) id: &'a str,
    pub(crate) host: &'a str,
    pub(crate) pid: u32,
    pub(crate) queues: Vec<&'a str>,
    pub(crate) kinds: &'a [&'static str],
    pub(crate) concurrency: usize,
}

/// How long a worker's row among the live workers lasts without a heartbeat: past it, the
/// worker is taken for stopped (killed without saying so), and its row is removed.
pub(crate) const WORKER_STALE: Duration = Duration::from_secs(60);

/// How often a worker renews its row among the live workers.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The message recorded when a job of a kind no worker knows is buried is these two around its
/// kind; SQL stores build it in the statement that buries the job.
pub(crate) const UNKNOWN_KIND_BEFORE: &str = "no worker that knows the kind `";
pub(crate) const UNKNOWN_KIND_AFTER: &str =
    "` took this job within the grace period after it became due; is the crate that defines it linked into the worker binary?";

/// The message recorded when a lease runs out is these two around the worker's id; SQL stores
/// build it in the statement that rescues the job.
pub(crate) const LEASE_LOST_BEFORE: &str = "worker `";
pub(crate) const LEASE_LOST_AFTER: &str = "` stopped renewing its lease (killed, or stalled)";

/// Wake-ups for idle workers from other processes: PostgreSQL's `LISTEN`, or nothing (the
/// worker's poll covers the other stores).
pub(crate) enum Listener {
    None,
    #[cfg(feature = "postgres")]
    Postgres(sqlx::postgres::PgListener),
}

/// What a notification says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A job became available (or a queue was resumed).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Available,
    /// A job was scheduled for later: the next due time may be earlier.
    Scheduled,
    /// A job with limits or `fair_by` became available, or a limit's slot was freed.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Special,
    /// The cancellation of this running job was asked: its worker tells the run at once.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Cancel(JobId),
}

impl Listener {
    /// Resolves at the next notification; never, for a store without them.
    pub(crate) async fn next(&mut self) -> Wake {
        match self {
            Listener::None => std::future::pending().await,
            #[cfg(feature = "postgres")]
            Listener::Postgres(listener) => match listener.recv().await {
                Ok(note) if note.payload() == postgres::SCHEDULED => Wake::Scheduled,
                Ok(note) if note.payload().starts_with(postgres::SPECIAL) => Wake::Special,
                Ok(note) if note.payload().starts_with(postgres::CANCEL) => {
                    match note.payload()[postgres::CANCEL.len()..].parse::<i64>() {
                        Ok(id) => Wake::Cancel(JobId::new(id)),
                        Err(_) => Wake::Available,
                    }
                }
                Ok(_) => Wake::Available,
                Err(err) => {
                    // The listener reconnects on its next call; until then the poll covers it.
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Wake::Available
                }
            },
        }
    }
}

/// Runs `$body` with `$tx` a write transaction of the store `$backend`, committing it when the
/// body returns `Ok` (and rolling it back otherwise).
macro_rules! with_write_transaction {
    ($backend:expr, $tx:ident => $body:expr) => {
        match $backend {
            #[cfg(feature = "sqlite")]
            $crate::store::Backend::Sqlite(store) => {
                let mut $tx = store.begin_write().await?;
                let value = $body?;
                $tx.commit().await.map_err(|source| Error::Store {
                    store: "sqlite",
                    op: "commit".to_owned(),
                    source,
                })?;
                Ok::<_, Error>(value)
            }
            #[cfg(feature = "postgres")]
            $crate::store::Backend::Postgres(store) => {
                let mut $tx = store.begin_write().await?;
                let value = $body?;
                $tx.commit().await.map_err(|source| Error::Store {
                    store: "postgres",
                    op: "commit".to_owned(),
                    source,
                })?;
                Ok::<_, Error>(value)
            }
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            $crate::store::Backend::None(never) => {
                let nothing: Result<_, Error> = match *never {};
                nothing
            }
        }
    };
}
pub(crate) use with_write_transaction;

/// Periodic jobs' schedules (see `crate::schedule`).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_variables)
)]
impl Backend {
    pub(crate) async fn register_schedule(
        &self,
        schedule: &ScheduleRecord<'_>,
    ) -> Result<(i64, i64), Error> {
        dispatch!(self, s => s.register_schedule(schedule).await)
    }

    pub(crate) async fn enqueue_slot(
        &self,
        schedule: &str,
        slot: Slot,
        next: Option<i64>,
        job: &NewJob,
    ) -> Result<Option<Inserted>, Error> {
        dispatch!(self, s => s.enqueue_slot(schedule, slot, next, job).await)
    }

    /// Claims available jobs of limited kinds (see `sql/limits.rs`).
    pub(crate) async fn claim_limited(
        &self,
        queues: &[&str],
        limits: &[KindLimit],
        room: usize,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        dispatch!(self, s => s.claim_limited(queues, limits, room, worker, lease).await)
    }

    /// Waiting jobs of `fair` or `limited` kinds stored without their keys, or of `plain`
    /// kinds stored with keys (see `sql/kinds.rs`).
    pub(crate) async fn unkeyed(
        &self,
        fair: &[&str],
        limited: &[&str],
        plain: &[&str],
        limit: usize,
    ) -> Result<Vec<(JobId, String, String)>, Error> {
        dispatch!(self, s => s.unkeyed(fair, limited, plain, limit).await)
    }

    /// Whether a claimed job that waited in its worker's buffer may start now.
    pub(crate) async fn startable(&self, id: JobId, fence: i64) -> Result<Startable, Error> {
        dispatch!(self, s => s.startable(id, fence).await)
    }

    /// Marks the start of a rate-limited job's run (see `sql/claims.rs`).
    pub(crate) async fn mark_started(&self, id: JobId, fence: i64) -> Result<(), Error> {
        dispatch!(self, s => s.mark_started(id, fence).await)
    }

    /// The running jobs of `worker` whose cancellation was asked.
    pub(crate) async fn cancels_requested(&self, worker: &str) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.cancels_requested(worker).await)
    }

    /// Whether the store tells workers of cancellations itself (PostgreSQL's `NOTIFY`), so that
    /// they need not look.
    pub(crate) fn notifies_cancels(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => true,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => false,
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }

    /// Writes (or renews) a worker's row among the live workers.
    pub(crate) async fn heartbeat(&self, worker: &Presence<'_>) -> Result<(), Error> {
        dispatch!(self, s => s.heartbeat(worker).await)
    }

    /// Removes a stopping worker's row.
    pub(crate) async fn leave(&self, worker: &str) -> Result<(), Error> {
        dispatch!(self, s => s.leave(worker).await)
    }

    /// Removes the rows of workers not seen for `stale`.
    pub(crate) async fn forget_workers(&self, stale: Duration) -> Result<u64, Error> {
        dispatch!(self, s => s.forget_workers(stale).await)
    }

    /// Writes the keys waiting jobs lack (see `sql/kinds.rs`).
    pub(crate) async fn adopt(&self, jobs: &[(JobId, Keys)]) -> Result<u64, Error> {
        dispatch!(self, s => s.adopt(jobs).await)
    }

    /// Claims available jobs of fair kinds from `queue`, each key's in turn.
    pub(crate) async fn claim_fair(
        &self,
        queue: &str,
        room: usize,
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        dispatch!(self, s => s.claim_fair(queue, room, kinds, worker, lease).await)
    }

    /// Ages the priorities of available jobs (see `Worker::priority_aging`).
    pub(crate) async fn age(
        &self,
        queues: &[&str],
        step: Duration,
        limit: usize,
    ) -> Result<u64, Error> {
        dispatch!(self, s => s.age(queues, step, limit).await)
    }

    pub(crate) async fn set_next_run(&self, name: &str, next: Option<i64>) -> Result<(), Error> {
        dispatch!(self, s => s.set_next_run(name, next).await)
    }

    pub(crate) async fn workflow(
        &self,
        id: crate::info::WorkflowId,
    ) -> Result<Option<crate::info::WorkflowInfo>, Error> {
        dispatch!(self, s => s.workflow(id).await)
    }

    /// The jobs that finished since `since_ms`, per minute.
    pub(crate) async fn throughput(
        &self,
        since_ms: i64,
    ) -> Result<Vec<crate::query::Throughput>, Error> {
        dispatch!(self, s => s.throughput(since_ms).await)
    }

    /// Where the effect ledger records the steps of step `step` of workflow `id`; `None` if it
    /// has no such step.
    pub(crate) async fn step_scope(
        &self,
        id: crate::info::WorkflowId,
        step: &str,
    ) -> Result<Option<String>, Error> {
        dispatch!(self, s => s.step_scope(id, step).await)
    }

    pub(crate) async fn add_to_batch(
        &self,
        id: crate::info::WorkflowId,
        job: NewJob,
        callbacks: &[&str],
    ) -> Result<JobId, Error> {
        dispatch!(self, s => s.add_to_batch(id, job, callbacks).await)
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<crate::info::ScheduleInfo>, Error> {
        dispatch!(self, s => s.schedules().await)
    }
}

impl Backend {
    /// The store's name in messages.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }

    /// How many exchanges a worker's claim loop keeps on their way at once (see
    /// [`Store::complete_and_claim`]). PostgreSQL works on two at once, one committing while
    /// the other runs; SQLite writes one transaction at a time, so a second would only wait.
    pub(crate) fn claims_in_flight(&self) -> usize {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => 2,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => 1,
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }

    /// Vacuums errand's tables that hold many dead rows (PostgreSQL; see `sql/vacuum.rs`);
    /// returns each table vacuumed, with its dead rows before.
    pub(crate) async fn vacuum_behind(&self) -> Result<Vec<(&'static str, i64)>, Error> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => store.vacuum_behind().await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Ok(Vec::new()),
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }

    pub(crate) async fn listener(&self) -> Listener {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => match store.listen().await {
                Ok(listener) => Listener::Postgres(listener),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for new jobs; polling only");
                    Listener::None
                }
            },
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Listener::None,
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }
}

/// The keys a job is stored with for its kind's limits and fairness, as this build's options
/// say: written at enqueue, and on jobs stored by a build without those options when a worker
/// of this build adopts them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    /// The limit's key: the kind, or `kind:value` of its `concurrency_key`.
    pub(crate) limit: Option<String>,
    /// The `fair_by` key.
    pub(crate) fair: Option<String>,
}

/// Where the effect ledger records the steps of job `id` of `kind`: per key, `kind:key`, or per
/// job for a job without one, `kind#id`.
pub(crate) fn ledger_scope(kind: &str, key: Option<&str>, id: JobId) -> String {
    match key {
        Some(key) => format!("{kind}:{key}"),
        None => format!("{kind}#{id}"),
    }
}

/// A slot to deal with: enqueue its job, or (missed) only mark it done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its time, in milliseconds since the epoch.
    pub at: i64,
    /// Whether its job runs; a missed slot is only marked done.
    pub run: bool,
}

/// A schedule as the store records it (see `crate::schedule::Schedule`).
#[derive(Debug)]
pub(crate) struct ScheduleRecord<'a> {
    pub name: &'a str,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub kind: &'a str,
    pub queue: &'a str,
    /// The catch-up policy as stored.
    pub catch_up: String,
}

/// How long a schedule no worker runs is kept.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
