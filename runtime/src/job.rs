//! What the store and everything above it say about jobs: a kind's [`JobOptions`], a job's id,
//! its states, its uniqueness, and the [`Outcome`] a run can end with. The [`Job`] trait that
//! `#[job]` implements is in `definition.rs`, above the store and the context it runs with.
//!
//! [`Job`]: crate::Job

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::Backoff;

/// The options of a job kind, as written in `#[job(...)]`.
///
/// ```
/// use errand::{Backoff, JobOptions};
/// let options = JobOptions { queue: "critical", retry: 5, ..JobOptions::DEFAULT };
/// assert_eq!(options.max_attempts(), 6);
/// assert!(matches!(options.backoff, Backoff::Exponential));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct JobOptions {
    /// The queue jobs of this kind go to unless a request says otherwise.
    pub queue: &'static str,
    /// Attempts after the first; `retry = false` is 0.
    pub retry: u32,
    /// How long to wait before each retry.
    pub backoff: Backoff,
    /// Uniqueness by key, if any.
    pub unique: Option<Unique>,
    /// 0 runs first, 9 last, within a queue.
    pub priority: u8,
    /// A run that takes longer fails with a transient timeout error.
    pub timeout: Option<Duration>,
    /// A job not started this long after its run time is cancelled as expired.
    pub expires_in: Option<Duration>,
    /// At most this many jobs of the kind (or of one `concurrency_key`) run at once, across
    /// every node.
    pub concurrency: Option<u32>,
    /// At most this many starts of the kind (or of one `concurrency_key`) per window, across
    /// every node.
    pub rate: Option<Rate>,
    /// Whether claims take turns between the values of the job's `fair_by` key.
    pub fair: bool,
}

/// `#[job(rate = "100/1m")]`: at most `max` starts in any window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// The most starts in a window.
    pub max: u32,
    /// The window.
    pub per: Duration,
}

impl JobOptions {
    /// Whether jobs of this kind wait for a limit's slot before they start.
    pub(crate) const fn is_limited(&self) -> bool {
        self.concurrency.is_some() || self.rate.is_some()
    }
}

impl JobOptions {
    /// The defaults: queue `default`, 25 retries, exponential backoff, priority 5, no timeout.
    pub const DEFAULT: JobOptions = JobOptions {
        queue: "default",
        retry: 25,
        backoff: Backoff::Exponential,
        unique: None,
        priority: 5,
        timeout: None,
        expires_in: None,
        concurrency: None,
        rate: None,
        fair: false,
    };

    /// The first attempt plus the retries.
    pub const fn max_attempts(&self) -> u32 {
        self.retry.saturating_add(1)
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions::DEFAULT
    }
}

/// `#[job(unique = ..., unique_for = ..., on_conflict = ...)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unique {
    /// While the key is held.
    pub strategy: UniqueStrategy,
    /// The longest the key is held, if bounded.
    pub unique_for: Option<Duration>,
    /// What an enqueue of a duplicate does.
    pub on_conflict: OnConflict,
}

/// While a unique job's key refuses duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniqueStrategy {
    /// Until the job starts running.
    UntilExecuting,
    /// Until the job completes, is cancelled or dies: a repeat enqueued after that is
    /// accepted and runs. To refuse repeats for a period, use [`UniqueStrategy::UntilExpired`].
    UntilExecuted,
    /// Never refused, but two jobs with the key never run at once.
    WhileExecuting,
    /// Until `unique_for` has passed since the first enqueue, whatever became of the job: what
    /// refuses repeats for a period (one reminder a day).
    UntilExpired,
}

/// What enqueuing a duplicate of a unique job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnConflict {
    /// Return the existing job in [`Enqueued::duplicate_of`](crate::Enqueued::duplicate_of).
    Skip,
    /// Replace the arguments and schedule of a duplicate that has not started.
    Replace,
    /// Fail with an error naming the existing job.
    Reject,
}

/// What a job that waits on others ([`Request::after`](crate::Request::after)) does when one of
/// them dies or is cancelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDependencyFailure {
    /// It is cancelled, with an error that names the job it waited on, and so are the jobs that
    /// wait on it.
    #[default]
    Cancel,
    /// It runs anyway, once every job it waits on has finished, however it finished: a cleanup,
    /// a report, a notification.
    Run,
}

impl OnDependencyFailure {
    /// As stored: `cancel` or `run`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            OnDependencyFailure::Cancel => "cancel",
            OnDependencyFailure::Run => "run",
        }
    }
}

/// A job's id, unique within its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(i64);

impl JobId {
    /// The id as stored.
    pub const fn get(self) -> i64 {
        self.0
    }

    pub(crate) const fn new(id: i64) -> Self {
        JobId(id)
    }
}

impl From<i64> for JobId {
    fn from(id: i64) -> JobId {
        JobId(id)
    }
}

impl From<JobId> for i64 {
    fn from(id: JobId) -> i64 {
        id.0
    }
}

/// Parses an id as printed (`"42"`), e.g. from a log line, a URL or the command line.
///
/// ```
/// let id: errand::JobId = "42".parse()?;
/// assert_eq!(id, errand::JobId::from(42));
/// assert_eq!(id.to_string(), "42");
/// # Ok::<(), std::num::ParseIntError>(())
/// ```
impl std::str::FromStr for JobId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<JobId, Self::Err> {
        s.trim().parse().map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life.
///
/// ```text
/// scheduled ─┐
/// available ─┼─> running ─┬─> completed
/// retryable ─┘      │     ├─> retryable (transient failure, attempts left)
///                   │     ├─> scheduled (snoozed: no attempt spent)
///                   │     ├─> cancelled
///                   │     └─> dead      (permanent failure, or no attempts left)
///                   └─> available       (put back by a graceful shutdown)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waits for its run time.
    Scheduled,
    /// Ready to run.
    Available,
    /// A worker holds it.
    Running,
    /// Failed; will run again at its run time.
    Retryable,
    /// Finished successfully.
    Completed,
    /// Stopped on purpose; will not run.
    Cancelled,
    /// Failed for good; kept in the dead set.
    Dead,
    /// Waits for other jobs to finish.
    Pending,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Dead,
    ];

    /// The state's stored name, e.g. `"retryable"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
            JobState::Pending => "pending",
        }
    }

    /// Whether the job will never run again on its own.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Dead
        )
    }

    pub(crate) fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// A state name that is not one of [`JobState::ALL`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownState(String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        write!(
            f,
            "unknown job state `{}`; expected one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownState {}

/// Parses a state's stored name (`"dead"`), as [`JobState::as_str`] writes it.
///
/// ```
/// use errand::JobState;
/// assert_eq!("dead".parse::<JobState>(), Ok(JobState::Dead));
/// assert!("deceased".parse::<JobState>().is_err());
/// ```
impl std::str::FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<JobState, UnknownState> {
        JobState::parse(s.trim()).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended, for jobs that return `Result<Outcome, E>`.
///
/// ```
/// use std::time::Duration;
/// use errand::{job, Outcome};
///
/// #[job]
/// async fn poll_export(export_id: i64) -> Result<Outcome, std::io::Error> {
///     let ready = export_id % 2 == 0;
///     if !ready {
///         // Not an error: look again in a minute, without spending an attempt.
///         return Ok(Outcome::Snooze(Duration::from_secs(60)));
///     }
///     Ok(Outcome::Done)
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The job is complete.
    Done,
    /// Run again after this long, without spending an attempt.
    Snooze(Duration),
    /// Stop for good with this reason: the job is `cancelled` and not retried.
    Cancel(String),
}
