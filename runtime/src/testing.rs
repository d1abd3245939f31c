//! Testing without a database server: [`TestClient`] keeps jobs in a private SQLite database in
//! memory, behind the same store as production's SQLite, with a clock the test can move ahead. It
//! records what was enqueued, and runs jobs inline, retries and scheduled jobs included,
//! without real waiting.
//!
//! ```
//! use errand::{job, testing::TestClient};
//!
//! #[job(key = "welcome-<user_id>")]
//! async fn send_welcome(user_id: i64) -> Result<(), std::io::Error> {
//!     Ok(())
//! }
//!
//! // The code under test enqueues through a `&Client`; a `TestClient` is one.
//! async fn sign_up(client: &errand::Client, user_id: i64) -> Result<(), errand::Error> {
//!     send_welcome::enqueue(client, user_id).await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), errand::Error> {
//! let test = TestClient::new();
//! sign_up(&test, 7).await?;
//!
//! test.assert_enqueued::<send_welcome>(|args| args.user_id == 7).await;
//! test.refute_enqueued::<send_welcome>(|args| args.user_id == 8).await;
//!
//! test.drain().await?;
//! let job = &test.jobs_of::<send_welcome>().await[0];
//! assert_eq!(job.state, errand::JobState::Completed);
//! assert_eq!(job.key.as_deref(), Some("welcome-7"));
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::ops::Deref;
use std::time::{Duration, SystemTime};

use crate::client::{Client, Config};
use crate::context::Context;
use crate::definition::Job;
use crate::error::Error;
use crate::info::{from_millis, to_millis, JobInfo};
use crate::job::{JobId, JobState};
use crate::query::{JobFilter, Page};
use crate::request::Request;
use crate::store::sqlite::SqliteStore;
use crate::store::{Backend, Claimed, Clock};
use crate::worker::Worker;

/// The most runs [`TestClient::drain`] makes before deciding a job will never settle.
const MAX_DRAIN_RUNS: usize = 1_000;

/// A [`Client`] over a private SQLite database in memory, with a clock the test can move ahead.
/// Derefs to `Client`, so code that enqueues through `&Client` takes it as it is.
///
/// Everything goes through the same statements as a SQLite file in production: unique keys,
/// replacements, cancellations and retries behave in a test exactly as they will there. Each
/// `TestClient` has its own database; clones share it.
#[derive(Clone, Debug)]
pub struct TestClient {
    client: Client,
    store: SqliteStore,
}

impl TestClient {
    /// An empty store. Its clock runs with the system's, plus however far the test moved it
    /// ahead ([`TestClient::advance`], or a drain running a job whose time has not come).
    pub fn new() -> TestClient {
        let store = SqliteStore::in_memory(Clock::adjustable());
        TestClient {
            client: Client::from_backend(Backend::Sqlite(store.clone()), Config::default()),
            store,
        }
    }

    /// The client, for code that takes a `Client` by value (a [`Worker`], say).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The time on the store's clock.
    pub fn now(&self) -> SystemTime {
        from_millis(self.store.clock.now_ms())
    }

    /// Moves the store's clock forward by `by`: jobs scheduled within it become due (the next
    /// [`drain`](TestClient::drain) runs them), and unique keys held `unique_for` less than
    /// that are free. What a transaction of your own stores reads the same clock. Leases are
    /// measured in real time: a job a worker is running keeps its lease however far the clock
    /// moves.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use errand::{job, testing::TestClient};
    /// #[job]
    /// async fn remind(user_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), errand::Error> {
    /// let test = TestClient::new();
    /// remind::with(7).delay(Duration::from_secs(3600)).enqueue(&test).await?;
    /// assert_eq!(test.drain_due().await?, 0, "not due yet");
    /// test.advance(Duration::from_secs(3600));
    /// assert_eq!(test.drain_due().await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn advance(&self, by: Duration) {
        self.store.clock.advance(by);
    }

    /// The arguments of every `J` job enqueued so far, oldest first, whatever their state.
    ///
    /// # Panics
    ///
    /// If a stored job's arguments do not decode as `J::Args`, which only happens when two job
    /// functions share one kind name.
    pub async fn enqueued<J: Job>(&self) -> Vec<J::Args> {
        self.jobs_of::<J>().await.iter().map(decode::<J>).collect()
    }

    /// The jobs of queue `queue` that wait to run (pending, scheduled, available or
    /// retryable), oldest first.
    pub async fn enqueued_in(&self, queue: &str) -> Vec<JobInfo> {
        let mut jobs = self.jobs().await;
        jobs.retain(|job| job.queue == queue && waits(job.state));
        jobs
    }

    /// Passes if a `J` job whose arguments satisfy `matches` waits to run (pending, scheduled,
    /// available or retryable).
    ///
    /// # Panics
    ///
    /// If there is none, listing the `J` jobs there are and their states.
    #[track_caller]
    pub fn assert_enqueued<'a, J: Job>(
        &'a self,
        matches: impl Fn(&J::Args) -> bool + Send + 'a,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let (jobs, found) = self.find_waiting::<J>(matches).await;
            if found.is_none() {
                panic!(
                    "{caller}: expected a waiting `{}` job matching the predicate; {}",
                    J::KIND,
                    describe::<J>(&jobs)
                );
            }
        }
    }

    /// Passes unless a `J` job whose arguments satisfy `matches` waits to run.
    ///
    /// # Panics
    ///
    /// If there is one, naming it.
    #[track_caller]
    pub fn refute_enqueued<'a, J: Job>(
        &'a self,
        matches: impl Fn(&J::Args) -> bool + Send + 'a,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let (jobs, found) = self.find_waiting::<J>(matches).await;
            if let Some(job) = found.map(|i| &jobs[i]) {
                panic!(
                    "{caller}: expected no waiting `{}` job matching the predicate, found job {} \
                     ({:?}, arguments {})",
                    J::KIND,
                    job.id,
                    job.state,
                    job.args
                );
            }
        }
    }

    /// Every `J` job, and the index of the first that waits to run with arguments that
    /// satisfy `matches`.
    async fn find_waiting<J: Job>(
        &self,
        matches: impl Fn(&J::Args) -> bool,
    ) -> (Vec<JobInfo>, Option<usize>) {
        let jobs = self.jobs_of::<J>().await;
        let found = jobs
            .iter()
            .position(|job| waits(job.state) && matches(&decode::<J>(job)));
        (jobs, found)
    }

    /// Runs one job once, as a worker would, and returns what the worker recorded: the job
    /// `Completed`; `Retryable` with the retry's time in `run_at` and the error, with its
    /// class, in `errors`; `Scheduled` when it snoozed; `Dead` or `Cancelled`. The arguments
    /// go through serialization and decoding, and the job's `Result` through its error's
    /// classification, exactly as in production; a retry is not run (see
    /// [`drain`](TestClient::drain)). Jobs it enqueues stay in this store.
    ///
    /// The job is stored in a queue of its own for its run, so that other jobs waiting in
    /// its queue are left alone.
    ///
    /// ```
    /// # use errand::{job, testing::TestClient, JobState, FailureKind};
    /// #[derive(Debug, thiserror::Error, errand::JobError)]
    /// enum ChargeError {
    ///     #[error("card declined")]
    ///     #[permanent]
    ///     Declined,
    /// }
    ///
    /// #[job(retry = 3)]
    /// async fn charge(order_id: i64) -> Result<(), ChargeError> {
    ///     Err(ChargeError::Declined)
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), errand::Error> {
    /// let test = TestClient::new();
    /// let run = test.perform(charge::with(7)).await?;
    /// assert_eq!(run.state, JobState::Dead, "a permanent error is not retried");
    /// assert_eq!(run.errors[0].kind, FailureKind::Permanent);
    /// # Ok(()) }
    /// ```
    pub async fn perform<J: Job>(&self, request: Request<J>) -> Result<JobInfo, Error> {
        const QUEUE: &str = "errand-perform";
        let queue = request.queue_name();
        let enqueued = request.queue(QUEUE).enqueue(&self.client).await?;
        if let Some(existing) = enqueued.duplicate_of {
            let key = self.job(existing).await?.and_then(|job| job.key);
            return Err(Error::Duplicate {
                kind: J::KIND,
                key: key.unwrap_or_default(),
                existing,
            });
        }
        let worker = Worker::new(self.client.clone()).queues([(QUEUE, 1)]);
        let ran = worker.run_one().await?;
        debug_assert_eq!(
            ran,
            Some(enqueued.id),
            "the perform queue holds only this job"
        );
        let store_error = |op: &str, source| Error::Store {
            store: "sqlite",
            op: op.to_owned(),
            source,
        };
        let mut info = self
            .job(enqueued.id)
            .await?
            .ok_or_else(|| store_error("read a performed job", sqlx::Error::RowNotFound))?;
        // Out of the store: it ran; it stays only in what this returns.
        sqlx::query("DELETE FROM errand_jobs WHERE id = ?1")
            .bind(enqueued.id.get())
            .execute(&self.store.pool)
            .await
            .map_err(|source| store_error("remove a performed job", source))?;
        info.queue = queue;
        Ok(info)
    }

    /// Every `J` job, oldest first.
    pub async fn jobs_of<J: Job>(&self) -> Vec<JobInfo> {
        self.list(Some(J::KIND)).await
    }

    /// Every job, oldest first.
    pub async fn jobs(&self) -> Vec<JobInfo> {
        self.list(None).await
    }

    async fn list(&self, kind: Option<&str>) -> Vec<JobInfo> {
        let filter = match kind {
            Some(kind) => JobFilter::all().kind(kind),
            None => JobFilter::all(),
        };
        match self.store.list_jobs(&filter, Page::first(usize::MAX)).await {
            Ok(jobs) => jobs,
            // A private database in memory fails only when the process is out of memory.
            Err(err) => panic!("the test store cannot list its jobs: {err}"),
        }
    }

    /// Runs every job until none is left to run: retries and scheduled jobs run at once, the
    /// store's clock moving forward to each one's time (nothing sleeps). Returns how many runs
    /// it made.
    ///
    /// Fails with [`Error::DrainLimit`] after 1,000 runs if jobs keep coming back (a job that
    /// snoozes forever).
    pub async fn drain(&self) -> Result<usize, Error> {
        self.drain_where(None, true, usize::MAX).await
    }

    /// [`drain`](TestClient::drain) for at most `rounds` rounds, then stops, leaving what is
    /// left where it is: a round runs every job that is due, then moves the store's clock to
    /// the next retry or scheduled job. For watching a job's retries one at a time.
    ///
    /// ```
    /// # use errand::{job, testing::TestClient, JobState};
    /// #[job(retry = 3)]
    /// async fn flaky() -> Result<(), std::io::Error> {
    ///     Err(std::io::Error::other("the gateway timed out"))
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), errand::Error> {
    /// let test = TestClient::new();
    /// let id = flaky::with().enqueue(&test).await?.id;
    /// assert_eq!(test.drain_rounds(2).await?, 2, "the first attempt and one retry");
    /// assert_eq!(test.job(id).await?.map(|j| j.state), Some(JobState::Retryable));
    /// # Ok(()) }
    /// ```
    pub async fn drain_rounds(&self, rounds: usize) -> Result<usize, Error> {
        self.drain_where(None, true, rounds).await
    }

    /// [`drain`](TestClient::drain) for the jobs of one queue: the others stay where they are.
    pub async fn drain_queue(&self, queue: &str) -> Result<usize, Error> {
        self.drain_where(Some(queue), true, usize::MAX).await
    }

    /// Runs the jobs that are due on the store's clock, and those their runs enqueue for now,
    /// without moving the clock: a retry or a scheduled job waits for
    /// [`advance`](TestClient::advance). Returns how many runs it made.
    pub async fn drain_due(&self) -> Result<usize, Error> {
        self.drain_where(None, false, usize::MAX).await
    }

    async fn drain_where(
        &self,
        queue: Option<&str>,
        move_clock: bool,
        rounds: usize,
    ) -> Result<usize, Error> {
        let mut runs = 0;
        for _ in 0..rounds {
            let waiting: Vec<JobInfo> = self
                .jobs()
                .await
                .into_iter()
                .filter(|job| queue.is_none_or(|q| q == job.queue) && waits(job.state))
                .collect();
            let queues: BTreeSet<&str> = waiting.iter().map(|job| job.queue.as_str()).collect();
            if !queues.is_empty() {
                let worker = Worker::new(self.client.clone())
                    .queues(queues.into_iter().map(|q| (q.to_owned(), 1)))
                    .concurrency(1);
                runs += worker.run_until_idle().await?;
            }
            let now = self.store.clock.now_ms();
            let next = self
                .jobs()
                .await
                .into_iter()
                .filter(|job| queue.is_none_or(|q| q == job.queue))
                .filter(|job| matches!(job.state, JobState::Scheduled | JobState::Retryable))
                .map(|job| to_millis(job.run_at))
                .min();
            match next {
                Some(_) if runs >= MAX_DRAIN_RUNS => return Err(Error::DrainLimit { steps: runs }),
                Some(at) if move_clock || at <= now => self.store.clock.advance_to(at),
                _ => return Ok(runs),
            }
        }
        Ok(runs)
    }

    /// Forgets every job, and every step the effect ledger recorded.
    pub async fn clear(&self) {
        for table in ["errand_steps", "errand_jobs", "errand_locks"] {
            // The table names are this function's constants.
            let deleted = sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&self.store.pool)
                .await;
            if let Err(err) = deleted {
                // A private database in memory fails only when the process is out of memory.
                panic!("the test store cannot clear {table}: {err}");
            }
        }
    }
}

/// Whether a job in `state` waits to run.
fn waits(state: JobState) -> bool {
    matches!(
        state,
        JobState::Pending | JobState::Scheduled | JobState::Available | JobState::Retryable
    )
}

/// A `J` job's arguments.
fn decode<J: Job>(job: &JobInfo) -> J::Args {
    match job.args_as::<J::Args>() {
        Ok(args) => args,
        Err(err) => panic!(
            "job {} of kind `{}` has arguments that do not decode: {err}",
            job.id,
            J::KIND
        ),
    }
}

/// The `J` jobs there are, for a failed assertion.
fn describe<J: Job>(jobs: &[JobInfo]) -> String {
    if jobs.is_empty() {
        return format!("no `{}` job was enqueued", J::KIND);
    }
    let list: Vec<String> = jobs
        .iter()
        .map(|job| format!("job {} ({:?}): {}", job.id, job.state, job.args))
        .collect();
    format!("the `{}` jobs are: {}", J::KIND, list.join("; "))
}

impl Default for TestClient {
    fn default() -> Self {
        TestClient::new()
    }
}

impl Deref for TestClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A [`Context`] for calling a job function directly in a unit test: job id 0, attempt 1 of 1,
/// with `key` as its idempotency key. Its effect ledger (`ctx.step`) is a private database in
/// memory.
///
/// ```
/// # use errand::{job, Context};
/// #[job]
/// async fn resize(ctx: &Context, image_id: i64) -> Result<(), std::io::Error> {
///     assert_eq!(ctx.idempotency_key(), "resize-test");
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// resize(&errand::testing::context("resize", "resize-test"), 7).await.unwrap();
/// # }
/// ```
pub fn context(kind: &str, key: &str) -> Context {
    let job = Claimed {
        id: JobId::new(0),
        kind: kind.to_owned(),
        queue: "default".to_owned(),
        args: String::new(),
        attempt: 1,
        max_attempts: 1,
        key: Some(key.to_owned()),
        fence: 0,
        timeout: None,
        tags: None,
        meta: None,
        workflow: None,
        run_at: 0,
    };
    Context::new(
        &job,
        tracing::Span::none(),
        Backend::Sqlite(SqliteStore::in_memory(Clock::default())),
        crate::context::RunSignal::default(),
    )
}
