//! What the store reads and returns: a job to insert and what the insert did, a claimed job,
//! how a run ends, the keys of limits and fairness, schedules' slots; and the constants that
//! fix the store's rules (how long a death waits for its handlers, how many errors a job keeps,
//! when a worker counts as gone).

use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::info::{AttemptError, JobInfo};
use crate::job::{JobId, JobState, OnConflict, Unique, UniqueStrategy};

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

/// What [`Backend::promote`] did.
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

/// What [`Backend::complete_and_claim`] did.
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
