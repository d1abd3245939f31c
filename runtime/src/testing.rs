//! Testing without a database: [`TestClient`] stores jobs in memory, records what was enqueued,
//! and runs jobs inline, retries and scheduled jobs included, without real waiting.
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
//! let enqueued = test.enqueued::<send_welcome>().await;
//! assert_eq!(enqueued.len(), 1);
//! assert_eq!(enqueued[0].user_id, 7);
//!
//! test.drain().await?;
//! let job = &test.jobs_of::<send_welcome>().await[0];
//! assert_eq!(job.state, errand::JobState::Completed);
//! assert_eq!(job.key.as_deref(), Some("welcome-7"));
//! # Ok(()) }
//! ```

use std::ops::Deref;

use crate::client::{Client, Config};
use crate::context::Context;
use crate::error::Error;
use crate::info::JobInfo;
use crate::job::{Job, JobId};
use crate::store::memory::MemoryStore;
use crate::store::{Backend, Claimed, Store};
use crate::worker::Worker;

/// The most runs [`TestClient::drain`] makes before deciding a job will never settle.
const MAX_DRAIN_RUNS: usize = 10_000;

/// A [`Client`] over an in-memory store with its own clock. Derefs to `Client`, so code that
/// enqueues through `&Client` takes it as it is.
#[derive(Clone, Debug)]
pub struct TestClient {
    client: Client,
}

impl TestClient {
    /// An empty store.
    pub fn new() -> TestClient {
        TestClient {
            client: Client::from_backend(
                Backend::Memory(MemoryStore::default()),
                Config::default(),
            ),
        }
    }

    /// The client, for code that takes a `Client` by value (a [`Worker`], say).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn memory(&self) -> &MemoryStore {
        // `new` is the only constructor and always builds a memory backend.
        match self.client.memory() {
            Some(memory) => memory,
            None => unreachable!("a TestClient always holds a memory store"),
        }
    }

    /// The arguments of every `J` job enqueued so far, oldest first, whatever their state.
    ///
    /// # Panics
    ///
    /// If a stored job's arguments do not decode as `J::Args`, which only happens when two job
    /// functions share one kind name.
    pub async fn enqueued<J: Job>(&self) -> Vec<J::Args> {
        self.jobs_of::<J>()
            .await
            .into_iter()
            .map(|job| match job.args_as::<J::Args>() {
                Ok(args) => args,
                Err(err) => panic!(
                    "job {} of kind `{}` has arguments that do not decode: {err}",
                    job.id,
                    J::KIND
                ),
            })
            .collect()
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
        // The memory store's reads cannot fail.
        self.memory().jobs(kind).await.unwrap_or_default()
    }

    /// Runs every job until none is left to run: retries and scheduled jobs run at once, as if
    /// their time had come (the store's clock moves forward; nothing sleeps). Returns how many
    /// runs it made.
    ///
    /// Fails with [`Error::DrainLimit`] if jobs keep coming back (a job that snoozes forever).
    pub async fn drain(&self) -> Result<usize, Error> {
        let mut runs = 0;
        loop {
            let queues = self.memory().queues();
            if !queues.is_empty() {
                let worker = Worker::new(self.client.clone())
                    .queues(queues.into_iter().map(|q| (q, 1)))
                    .concurrency(1);
                runs += worker.run_until_idle().await?;
            }
            match self.memory().next_run_at() {
                Some(_) if runs >= MAX_DRAIN_RUNS => return Err(Error::DrainLimit { steps: runs }),
                Some(at) => self.memory().advance_to(at),
                None => return Ok(runs),
            }
        }
    }

    /// Forgets every job.
    pub fn clear(&self) {
        self.memory().clear();
    }
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
/// with `key` as its idempotency key.
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
    };
    Context::new(
        &job,
        tracing::Span::none(),
        Backend::Memory(MemoryStore::default()),
        crate::context::RunSignal::default(),
    )
}
