//! The dead set and what surrounds it: the filters, pages, deaths, cancellations and retention
//! that [`Client`](crate::Client)'s dead-set methods and the worker's death handlers use.
//!
//! A job dies when it fails with a permanent error, runs out of attempts, or names a kind no
//! worker knows for longer than the grace period. It stays in the dead set, with every
//! attempt's error, until an operator retries or deletes it, or retention lets it go.
//!
//! ```no_run
//! use errand::{Client, DeadFilter, Page};
//!
//! # async fn demo(client: Client) -> Result<(), errand::Error> {
//! let filter = DeadFilter::all().kind("charge_order");
//! for job in client.dead_jobs(&filter, Page::first(50)).await? {
//!     let last = job.errors.last().map(|e| e.message.as_str()).unwrap_or("");
//!     println!("job {} died after {} attempts: {last}", job.id, job.attempt);
//! }
//! client.retry_all_dead(&filter).await?; // the gateway is back
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use crate::classify::FailureKind;
use crate::info::{to_millis, AttemptError, JobInfo};
use crate::job::{JobId, JobState};

/// Which dead jobs to list, retry or clear: every condition set must hold.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let yesterday = SystemTime::now() - Duration::from_secs(86_400);
/// let filter = errand::DeadFilter::all().kind("charge_order").queue("critical").died_after(yesterday);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct DeadFilter {
    pub(crate) query: DeadQuery,
}

impl DeadFilter {
    /// Every dead job.
    pub fn all() -> DeadFilter {
        DeadFilter::default()
    }

    /// Only jobs of this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.query.kind = Some(kind.into());
        self
    }

    /// Only jobs of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.query.queue = Some(queue.into());
        self
    }

    /// Only jobs that died at or after `time`.
    pub fn died_after(mut self, time: SystemTime) -> Self {
        self.query.after_ms = Some(to_millis(time));
        self
    }

    /// Only jobs that died before `time`.
    pub fn died_before(mut self, time: SystemTime) -> Self {
        self.query.before_ms = Some(to_millis(time));
        self
    }
}

/// What [`Client::retry_all_dead`](crate::Client::retry_all_dead) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retried {
    /// Dead jobs made available again.
    pub retried: u64,
    /// Dead jobs left dead because their death was acted on (a saga compensated, a workflow's
    /// dependents cancelled): see [`Client::retry_dead`](crate::Client::retry_dead).
    pub skipped: u64,
}

/// What [`Client::cancel`](crate::Client::cancel) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancellation {
    /// The job had not started; it is `cancelled` and will not run.
    Cancelled,
    /// The job is running: it sees [`Context::is_cancelled`](crate::Context::is_cancelled), and
    /// becomes `cancelled` when it returns, whatever it returns.
    Requested,
    /// The job had already finished in this state.
    AlreadyFinished(JobState),
    /// No job has this id.
    NotFound,
}

/// Why a job died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeathReason {
    /// A failure no retry can help: a permanent error, undecodable arguments, or a kind no
    /// worker knew within the grace period.
    Permanent,
    /// Transient failures used up every attempt.
    RetriesExhausted,
}

/// A job's death, as handed to [`Worker::on_death`](crate::Worker::on_death) handlers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Death {
    /// The dead job, with its whole history.
    pub job: JobInfo,
    /// The failure that killed it.
    pub error: Option<AttemptError>,
    /// Whether it died of a permanent failure or ran out of retries.
    pub reason: DeathReason,
}

impl Death {
    pub(crate) fn of(job: JobInfo) -> Death {
        let error = job.errors.last().cloned();
        let reason = match error.as_ref().map(|e| e.kind) {
            Some(kind) if !kind.is_retryable() => DeathReason::Permanent,
            Some(FailureKind::Cancelled) => DeathReason::Permanent,
            _ => DeathReason::RetriesExhausted,
        };
        Death { job, error, reason }
    }
}

/// How long finished jobs are kept. Workers prune in the background, one node at a time, in
/// small batches.
///
/// ```
/// use std::time::Duration;
/// let retention = errand::Retention::default()
///     .keep_finished_for(Duration::from_secs(3600))
///     .keep_dead_for(Duration::from_secs(30 * 86_400))
///     .max_dead(50_000);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until it is used"]
pub struct Retention {
    pub(crate) finished_for: Duration,
    pub(crate) dead_for: Duration,
    pub(crate) max_dead: usize,
    pub(crate) steps_for: Duration,
}

impl Default for Retention {
    /// Completed and cancelled jobs for a day; dead jobs for 180 days, at most 10,000; ledger
    /// steps for 7 days.
    fn default() -> Self {
        Retention {
            finished_for: Duration::from_secs(86_400),
            dead_for: Duration::from_secs(180 * 86_400),
            max_dead: 10_000,
            steps_for: Duration::from_secs(7 * 86_400),
        }
    }
}

impl Retention {
    /// Keep completed and cancelled jobs this long after they finished.
    pub fn keep_finished_for(mut self, keep: Duration) -> Self {
        self.finished_for = keep;
        self
    }

    /// Keep dead jobs this long after they died.
    pub fn keep_dead_for(mut self, keep: Duration) -> Self {
        self.dead_for = keep;
        self
    }

    /// Keep at most this many dead jobs; the oldest deaths go first.
    pub fn max_dead(mut self, count: usize) -> Self {
        self.max_dead = count;
        self
    }

    /// Keep the effect ledger's records ([`Context::step`](crate::Context::step)) this long
    /// after they were recorded (default 7 days), and in any case while a job that has not
    /// finished holds their key. A key thus names one logical operation for this long: a
    /// job enqueued later with the same key gets the recorded results instead of running its
    /// steps. Put what makes an operation new into its key (a daily digest: the date).
    pub fn keep_steps_for(mut self, keep: Duration) -> Self {
        self.steps_for = keep;
        self
    }
}

/// Which dead jobs an operation is about: every field that is set must match.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeadQuery {
    pub(crate) id: Option<JobId>,
    pub(crate) kind: Option<String>,
    pub(crate) queue: Option<String>,
    /// Died at or after, in ms.
    pub(crate) after_ms: Option<i64>,
    /// Died before, in ms.
    pub(crate) before_ms: Option<i64>,
}
