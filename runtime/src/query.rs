//! Reading jobs: [`JobFilter`] and [`Page`] for [`Client::jobs`](crate::Client::jobs) and
//! [`Client::count`](crate::Client::count), and [`QueueStats`] for
//! [`Client::queue_stats`](crate::Client::queue_stats).
//!
//! ```no_run
//! use errand::{Client, JobFilter, JobState, Page};
//!
//! # async fn demo(client: Client) -> Result<(), errand::Error> {
//! // The newest dead charges, fifty at a time.
//! let filter = JobFilter::all().state(JobState::Dead).kind("charge_order");
//! let mut page = Page::first(50).newest_first();
//! loop {
//!     let jobs = client.jobs(&filter, page).await?;
//!     for job in &jobs {
//!         println!("{} {} {}", job.id, job.state, job.args);
//!     }
//!     match jobs.last() {
//!         Some(last) => page = page.next(last.id),
//!         None => break,
//!     }
//! }
//! println!("{} in all", client.count(&filter).await?);
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use crate::info::to_millis;
use crate::job::{JobId, JobState};

/// Which jobs to list or count: every condition set must hold.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use errand::{JobFilter, JobState};
///
/// let hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// let stuck = JobFilter::all()
///     .states([JobState::Available, JobState::Scheduled])
///     .queue("mail")
///     .created_before(hour_ago);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct JobFilter {
    pub(crate) states: Vec<JobState>,
    pub(crate) queue: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) created_after_ms: Option<i64>,
    pub(crate) created_before_ms: Option<i64>,
    pub(crate) finished_after_ms: Option<i64>,
    pub(crate) finished_before_ms: Option<i64>,
}

impl JobFilter {
    /// Every job.
    pub fn all() -> JobFilter {
        JobFilter::default()
    }

    /// Only jobs in `state` (or in another state given to this or [`JobFilter::states`]).
    pub fn state(mut self, state: JobState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Only jobs in one of `states`.
    pub fn states(self, states: impl IntoIterator<Item = JobState>) -> Self {
        states.into_iter().fold(self, JobFilter::state)
    }

    /// Only jobs of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only jobs of this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only jobs whose rendered key is exactly `key` (the idempotency key). With
    /// [`JobFilter::kind`] too, it is one index look-up; alone, the listing reads jobs newest
    /// or oldest first until it finds them.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only jobs carrying `tag` ([`Request::tags`](crate::Request::tags)). Read through an
    /// index of the jobs' tags: a page reads every job with the tag and keeps the first, so
    /// its cost grows with the jobs that carry the tag, not with the table.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Only jobs enqueued at or after `time`.
    pub fn created_after(mut self, time: SystemTime) -> Self {
        self.created_after_ms = Some(to_millis(time));
        self
    }

    /// Only jobs enqueued before `time`.
    pub fn created_before(mut self, time: SystemTime) -> Self {
        self.created_before_ms = Some(to_millis(time));
        self
    }

    /// Only jobs that completed, were cancelled or died at or after `time`.
    pub fn finished_after(mut self, time: SystemTime) -> Self {
        self.finished_after_ms = Some(to_millis(time));
        self
    }

    /// Only jobs that completed, were cancelled or died before `time`.
    pub fn finished_before(mut self, time: SystemTime) -> Self {
        self.finished_before_ms = Some(to_millis(time));
        self
    }
}

/// A page of a listing, by job id (keyset paging: a page costs the same however deep it is,
/// and jobs added meanwhile never shift it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct Page {
    pub(crate) after: Option<JobId>,
    pub(crate) limit: usize,
    pub(crate) newest_first: bool,
}

impl Page {
    /// The first `limit` jobs, oldest first (lowest id first).
    pub fn first(limit: usize) -> Page {
        Page {
            after: None,
            limit,
            newest_first: false,
        }
    }

    /// The `limit` jobs after job `id`, oldest first: pass the last id of the previous page.
    pub fn after(id: JobId, limit: usize) -> Page {
        Page {
            after: Some(id),
            limit,
            newest_first: false,
        }
    }

    /// The same page, newest first (highest id first): `after` then means older than.
    pub fn newest_first(mut self) -> Page {
        self.newest_first = true;
        self
    }

    /// The page after this one, whose last job was `last`, in the same order.
    pub fn next(mut self, last: JobId) -> Page {
        self.after = Some(last);
        self
    }
}

/// How many jobs are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateCounts {
    /// Waiting for other jobs.
    pub pending: u64,
    /// Waiting for their run time.
    pub scheduled: u64,
    /// Ready to run.
    pub available: u64,
    /// Held by a worker.
    pub running: u64,
    /// Waiting to be retried.
    pub retryable: u64,
    /// Finished successfully (until retention removes them).
    pub completed: u64,
    /// Stopped on purpose (until retention removes them).
    pub cancelled: u64,
    /// In the dead set.
    pub dead: u64,
}

impl StateCounts {
    /// The count of `state`.
    pub fn get(&self, state: JobState) -> u64 {
        let mut counts = *self;
        *counts.slot(state)
    }

    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn add(&mut self, state: JobState, count: u64) {
        *self.slot(state) += count;
    }

    fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Pending => &mut self.pending,
            JobState::Scheduled => &mut self.scheduled,
            JobState::Available => &mut self.available,
            JobState::Running => &mut self.running,
            JobState::Retryable => &mut self.retryable,
            JobState::Completed => &mut self.completed,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Dead => &mut self.dead,
        }
    }
}

/// One queue at a glance, from [`Client::queue_stats`](crate::Client::queue_stats).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Its jobs, by state.
    pub counts: StateCounts,
    /// How long its oldest available job has been ready to run (since its run time), by the
    /// store's clock; `None` when none is available.
    pub oldest_available: Option<Duration>,
    /// Whether it is paused ([`Client::pause_queue`](crate::Client::pause_queue)): its jobs
    /// wait until it is resumed.
    pub paused: bool,
}

impl QueueStats {
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn new(queue: String) -> QueueStats {
        QueueStats {
            queue,
            counts: StateCounts::default(),
            oldest_available: None,
            paused: false,
        }
    }
}

/// How many jobs finished in one minute, from [`Client::throughput`](crate::Client::throughput).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throughput {
    /// The minute's start.
    pub minute: std::time::SystemTime,
    /// Jobs that completed in it.
    pub completed: u64,
    /// Jobs that died in it.
    pub dead: u64,
    /// Jobs that were cancelled in it.
    pub cancelled: u64,
}

impl Throughput {
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn new(minute: std::time::SystemTime) -> Throughput {
        Throughput {
            minute,
            completed: 0,
            dead: 0,
            cancelled: 0,
        }
    }
}

/// What finished when.
impl crate::Client {
    /// The jobs that finished (completed, died, were cancelled) in the last `window`, per
    /// minute, oldest first; minutes in which none finished are left out. Read through the
    /// index of finished jobs by state and time: its cost grows with the jobs that finished in
    /// the window, not with the table.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use std::time::Duration;
    /// for minute in client.throughput(Duration::from_secs(3600)).await? {
    ///     println!("{:?}: {} completed, {} died", minute.minute, minute.completed, minute.dead);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn throughput(&self, window: Duration) -> Result<Vec<Throughput>, crate::Error> {
        let since = std::time::SystemTime::now()
            .checked_sub(window)
            .unwrap_or(std::time::UNIX_EPOCH);
        self.store().throughput(to_millis(since)).await
    }
}
