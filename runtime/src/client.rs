//! The [`Client`]: a handle on a store, for enqueuing jobs and reading them back.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::classify::FailureKind;
use crate::dead::{Cancellation, DeadFilter, DeadQuery, Retried};
use crate::definition::Job;
use crate::error::{redact, Error};
use crate::info::{AttemptError, JobInfo};
use crate::job::{JobId, JobState};
use crate::query::{JobFilter, Page, QueueStats};
use crate::request::{EnqueueOutcome, Enqueued, Request};
use crate::store::{Backend, BoxFuture, NewJob};
use crate::transaction::Transaction;

/// A handle on errand's store. Cheap to clone; clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), errand::Error> {
/// // Embedded: a file next to the program, created if missing.
/// let client = errand::Client::connect("sqlite://jobs.db").await?;
/// // Or in memory, for one process.
/// let scratch = errand::Client::connect("sqlite::memory:").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Backend,
    config: Config,
    /// Bumped on every enqueue through this client, so its local workers wake at once.
    enqueued: watch::Sender<u64>,
    /// Bumped when a job is scheduled for later: workers check when the next one is due.
    scheduled: watch::Sender<u64>,
    /// Set when a job with limits or `fair_by` was enqueued: the woken workers look for such
    /// jobs again.
    special: std::sync::atomic::AtomicBool,
}

/// Client settings.
///
/// ```
/// let config = errand::Config::default().max_args_bytes(64 * 1024);
/// assert_eq!(config.max_args_bytes_limit(), 64 * 1024);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until it is used"]
pub struct Config {
    max_args_bytes: usize,
    schema: String,
    max_connections: u32,
    migrate: bool,
}

impl Config {
    /// The default limit on a job's serialized arguments: 1 MiB.
    pub const DEFAULT_MAX_ARGS_BYTES: usize = crate::request::DEFAULT_MAX_ARGS_BYTES;

    /// Refuse to enqueue jobs whose serialized arguments are larger than this.
    pub fn max_args_bytes(mut self, limit: usize) -> Self {
        self.max_args_bytes = limit;
        self
    }

    /// The current arguments limit.
    pub fn max_args_bytes_limit(&self) -> usize {
        self.max_args_bytes
    }

    /// PostgreSQL only: the schema that holds errand's tables (default `public`), so that two
    /// applications can share one database. `[a-z_][a-z0-9_]*`, at most 56 characters (its
    /// notification channel, `errand_<schema>`, must fit PostgreSQL's 63); created if missing.
    ///
    /// errand's own connections reach the schema through their `search_path`. A transaction you
    /// pass to [`Request::enqueue_tx`](crate::Request::enqueue_tx) must do the same: connect with
    /// `options=-c search_path=<schema>` in its URL, or run `SET LOCAL search_path` first.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether connecting brings errand's schema up to date (default `true`). With `false`,
    /// the client only checks the schema's version, and fails with
    /// [`Error::SchemaBehind`] if it is older than this errand needs: for roles that may read
    /// and write errand's tables but not create them, with the migrations applied by your own
    /// tool (see [`migrations`](crate::migrations)). On PostgreSQL, migrating needs the
    /// database's CREATE privilege (for `CREATE SCHEMA IF NOT EXISTS`) even when the schema
    /// exists.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), errand::Error> {
    /// let config = errand::Config::default().schema("billing_jobs").migrate(false);
    /// let client = errand::Client::connect_with("postgres://app@db/billing", config).await?;
    /// # Ok(()) }
    /// ```
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// PostgreSQL only: the most connections the client's pool opens (default 10). A worker
    /// uses one more, to `LISTEN`.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }
}

/// PostgreSQL schema names errand accepts: plain lowercase identifiers, so they need no quoting
/// anywhere they appear.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn check_schema(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let starts_well = matches!(chars.next(), Some('a'..='z' | '_'));
    if !starts_well
        || schema.len() > MAX_SCHEMA_LEN
        || !chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    {
        return Err(format!(
            "invalid schema name `{schema}`: expected a lowercase letter or `_`, then lowercase letters, digits and `_`, \
             at most {MAX_SCHEMA_LEN} characters (the notification channel `errand_<schema>` must fit PostgreSQL's 63)"
        ));
    }
    Ok(())
}

/// The longest schema name: `errand_` and the name make the notification channel, and
/// PostgreSQL truncates identifiers past 63 bytes.
const MAX_SCHEMA_LEN: usize = 63 - "errand_".len();

impl Default for Config {
    fn default() -> Self {
        Config {
            max_args_bytes: Config::DEFAULT_MAX_ARGS_BYTES,
            schema: "public".to_owned(),
            max_connections: 10,
            migrate: true,
        }
    }
}

/// A database a [`Client`] can open transactions on with [`Client::begin`]: `sqlx::Sqlite`
/// (with the `sqlite` feature) or `sqlx::Postgres` (with `postgres`).
pub trait StoreDatabase: sqlx::Database + begin::Sealed {}

mod begin {
    use super::Client;
    use crate::error::Error;
    use crate::store::BoxFuture;

    pub trait Sealed: sqlx::Database {
        /// A transaction on `client`'s pool, if its store is this database.
        fn begin(client: &Client)
            -> BoxFuture<'_, Result<sqlx::Transaction<'static, Self>, Error>>;
    }
}

/// Implements [`StoreDatabase`] for the database of a store variant.
macro_rules! store_database {
    ($feature:literal, $db:ty, $variant:ident, $name:literal) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl StoreDatabase for $db {}

        #[cfg(feature = $feature)]
        impl begin::Sealed for $db {
            fn begin(
                client: &Client,
            ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, $db>, Error>> {
                Box::pin(async move {
                    match client.store() {
                        Backend::$variant(store) => {
                            store.pool.begin().await.map_err(|source| Error::Store {
                                store: $name,
                                op: "begin a transaction".to_owned(),
                                source,
                            })
                        }
                        #[allow(unreachable_patterns)]
                        other => Err(Error::WrongStore {
                            wanted: $name,
                            found: other.name(),
                        }),
                    }
                })
            }
        }
    };
}

store_database!("sqlite", sqlx::Sqlite, Sqlite, "sqlite");
store_database!("postgres", sqlx::Postgres, Postgres, "postgres");

impl Client {
    /// Opens a transaction on the store's own pool, for the transactional outbox: write your
    /// rows and enqueue jobs ([`Request::enqueue_tx`]) in it, and they commit or roll back
    /// together. Its connection reaches errand's tables whatever [`Config::schema`] says (on
    /// PostgreSQL its `search_path` is the schema alone), so your own tables must be
    /// in the schema or named with theirs (`public.orders`).
    ///
    /// `DB` is `sqlx::Sqlite` or `sqlx::Postgres`, the store's database; another fails with
    /// [`Error::WrongStore`]. With your own pool instead, see the README's outbox section. On
    /// a [`TestClient`](crate::testing::TestClient) the store has one connection: finish the
    /// transaction before using the client otherwise; and a job enqueued in the transaction
    /// takes its times from the system's clock, not from the test's once it was advanced.
    ///
    /// ```no_run
    /// # #[errand::job]
    /// # async fn send_receipt(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = client.begin::<sqlx::Postgres>().await?;
    /// sqlx::query("INSERT INTO public.orders (id) VALUES ($1)").bind(42i64).execute(&mut *tx).await?;
    /// send_receipt::with(42).enqueue_tx(&mut tx).await?;
    /// tx.commit().await?; // the order and its job, or neither
    /// # Ok(()) }
    /// ```
    pub async fn begin<DB: StoreDatabase>(&self) -> Result<sqlx::Transaction<'static, DB>, Error> {
        DB::begin(self).await
    }

    /// Connects to the store at `url` and brings its schema up to date.
    ///
    /// - `sqlite://path/to/jobs.db` (created if missing; add `?mode=rw` to require it exists)
    /// - `sqlite::memory:` (one process, gone when the client is dropped)
    /// - `postgres://user:password@host:5432/database` (with the `postgres` feature)
    pub fn connect(url: &str) -> impl Future<Output = Result<Client, Error>> + Send + 'static {
        Client::connect_with(url, Config::default())
    }

    /// [`Client::connect`] with settings.
    pub fn connect_with(
        url: &str,
        config: Config,
    ) -> impl Future<Output = Result<Client, Error>> + Send + 'static {
        // The future owns its URL: a future that borrowed it could not be `tokio::spawn`ed from
        // a block that owns the `String`, because rustc cannot prove such a future `Send` for
        // every lifetime of the borrow once it holds sqlx's connection borrows across awaits.
        let url = url.to_owned();
        async move {
            let store = if url.starts_with("sqlite:") {
                connect_sqlite(&url, config.migrate).await?
            } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                connect_postgres(&url, &config).await?
            } else {
                return Err(Error::InvalidUrl {
                    url: redact(&url),
                    reason: "expected a URL starting with `sqlite:` (e.g. `sqlite://jobs.db`) or `postgres://`".to_owned(),
                });
            };
            Ok(Client::from_backend(store, config))
        }
    }

    pub(crate) fn from_backend(store: Backend, config: Config) -> Client {
        let (enqueued, _) = watch::channel(0);
        let (scheduled, _) = watch::channel(0);
        Client {
            inner: Arc::new(Inner {
                store,
                config,
                enqueued,
                scheduled,
                special: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Brings the store's schema up to date. [`Client::connect`] already does; this is for
    /// deployments that migrate in a separate step.
    pub async fn migrate(&self) -> Result<(), Error> {
        match &self.inner.store {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(store) => store.migrate().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => store.migrate().await,
            #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
            Backend::None(never) => match *never {},
        }
    }

    /// What is known of job `id`: its state, attempts, arguments, key and every attempt's error.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client, id: errand::JobId) -> Result<(), errand::Error> {
    /// if let Some(job) = client.job(id).await? {
    ///     println!("{} is {} after {} attempts", job.kind, job.state, job.attempt);
    ///     for error in &job.errors {
    ///         println!("  attempt {}: {} ({})", error.attempt, error.message, error.kind);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        self.inner.store.job(id).await
    }

    /// Enqueues many jobs of one kind: in statements of up to 1,000 jobs each (one round trip
    /// per chunk) for jobs without uniqueness, one at a time for unique jobs (each must meet the
    /// unique index). Returns one [`Enqueued`] per request, in order.
    ///
    /// ```no_run
    /// # #[errand::job] async fn reindex(doc_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// let enqueued = client.enqueue_many((0..100_000).map(reindex::with)).await?;
    /// assert_eq!(enqueued.len(), 100_000);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many<J: Job>(
        &self,
        requests: impl IntoIterator<Item = Request<J>>,
    ) -> Result<Vec<Enqueued>, Error> {
        let mut enqueued = Vec::new();
        if J::OPTIONS.unique.is_some() {
            for request in requests {
                enqueued.push(request.enqueue(self).await?);
            }
        } else {
            let limit = self.config().max_args_bytes_limit();
            let mut later = false;
            let mut special = false;
            for chunk in chunks(requests, limit) {
                let chunk = chunk?;
                later |= chunk.iter().any(|job| job.run_at.is_later());
                special |= chunk.iter().any(NewJob::is_special);
                // Jobs that wait on others go one at a time: each locks the jobs it waits on.
                let ids = if chunk.iter().any(|job| !job.after.is_empty()) {
                    let mut ids = Vec::with_capacity(chunk.len());
                    for job in &chunk {
                        ids.push(self.store().enqueue(job).await?.id());
                    }
                    ids
                } else {
                    self.store().enqueue_many(&chunk).await?
                };
                enqueued.extend(new_jobs(ids));
            }
            if later {
                self.notify_scheduled();
            }
            if special {
                self.notify_special();
            }
        }
        self.notify_enqueued();
        Ok(enqueued)
    }

    /// [`Client::enqueue_many`] inside the caller's transaction (the transactional outbox for
    /// a batch): if the transaction rolls back, none of the jobs ever existed; once it
    /// commits, they run. Jobs that are not unique go in one statement per 1,000; unique jobs
    /// one at a time, as [`Request::enqueue_tx`] does. This client's settings (the arguments
    /// limit) apply; the transaction must be on the database the workers use.
    ///
    /// ```no_run
    /// # #[errand::job]
    /// # async fn send_receipt(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = client.begin::<sqlx::Postgres>().await?;
    /// sqlx::query("UPDATE public.orders SET paid = true WHERE batch = 7").execute(&mut *tx).await?;
    /// client
    ///     .enqueue_many_tx(&mut tx, (1..=500).map(send_receipt::with))
    ///     .await?;
    /// tx.commit().await?; // the orders and their 500 jobs, or neither
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many_tx<J: Job, T: Transaction>(
        &self,
        tx: &mut T,
        requests: impl IntoIterator<Item = Request<J>>,
    ) -> Result<Vec<Enqueued>, Error> {
        let mut enqueued = Vec::new();
        if J::OPTIONS.unique.is_some() {
            for request in requests {
                enqueued.push(request.enqueue_tx(tx).await?);
            }
        } else {
            let limit = self.config().max_args_bytes_limit();
            for chunk in chunks(requests, limit) {
                let chunk = chunk?;
                let ids = if chunk.iter().any(|job| !job.after.is_empty()) {
                    let mut ids = Vec::with_capacity(chunk.len());
                    for job in &chunk {
                        ids.push(tx.insert_job(job).await?.id());
                    }
                    ids
                } else {
                    tx.insert_jobs(&chunk).await?
                };
                enqueued.extend(new_jobs(ids));
            }
        }
        Ok(enqueued)
    }

    pub(crate) fn store(&self) -> &Backend {
        &self.inner.store
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Wakes this client's workers: a job was just enqueued.
    pub(crate) fn notify_enqueued(&self) {
        self.inner.enqueued.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe_enqueued(&self) -> watch::Receiver<u64> {
        self.inner.enqueued.subscribe()
    }

    /// Wakes this client's workers: a job with limits or `fair_by` was just enqueued.
    pub(crate) fn notify_special(&self) {
        self.inner
            .special
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify_enqueued();
    }

    /// Whether a job with limits or `fair_by` was enqueued since the last call.
    pub(crate) fn take_special_enqueued(&self) -> bool {
        self.inner
            .special
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Wakes this client's workers: a job was just scheduled for later.
    pub(crate) fn notify_scheduled(&self) {
        self.inner.scheduled.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe_scheduled(&self) -> watch::Receiver<u64> {
        self.inner.scheduled.subscribe()
    }
}

/// The dead set and cancellation (with [`DeadFilter`](crate::DeadFilter), [`Page`](crate::Page)
/// and [`Cancellation`](crate::Cancellation)).
impl Client {
    /// One page of the jobs matching `filter`, oldest or newest first as `page` says.
    /// Paging is by id (keyset): pass the last job's id to [`Page::next`] for the next page.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use errand::{JobFilter, JobState, Page};
    /// let running = client
    ///     .jobs(&JobFilter::all().state(JobState::Running).queue("mail"), Page::first(20))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn jobs(&self, filter: &JobFilter, page: Page) -> Result<Vec<JobInfo>, Error> {
        self.store().list_jobs(filter, page).await
    }

    /// How many jobs match `filter`.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use errand::{JobFilter, JobState};
    /// let dead = client.count(&JobFilter::all().state(JobState::Dead)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn count(&self, filter: &JobFilter) -> Result<u64, Error> {
        self.store().count_jobs(filter).await
    }

    /// Every queue that has jobs, by name: its jobs counted by state, and how long its oldest
    /// available job has waited.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// for queue in client.queue_stats().await? {
    ///     println!(
    ///         "{}: {} available, {} running, {} dead, oldest waiting {:?}",
    ///         queue.queue,
    ///         queue.counts.available,
    ///         queue.counts.running,
    ///         queue.counts.dead,
    ///         queue.oldest_available,
    ///     );
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        self.store().queue_stats().await
    }

    /// Every stored schedule of periodic jobs ([`Periodic`](crate::Periodic),
    /// `#[job(cron = ..)]`), by name, with its last and next run and when a worker last ran
    /// it.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// for schedule in client.schedules().await? {
    ///     println!("{} `{}`: next {:?}", schedule.name, schedule.cron, schedule.next_run);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn schedules(&self) -> Result<Vec<crate::ScheduleInfo>, Error> {
        self.store().schedules().await
    }

    /// Pauses `queue` on every node: from the next claim, no worker starts its jobs until
    /// [`Client::resume_queue`]. Jobs can still be enqueued, and wait. Runs already started
    /// (or claimed into a worker's prefetch buffer) finish. The pause is stored in the
    /// database, so it outlives restarts. Returns whether the queue was running before.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// client.pause_queue("mail").await?; // the mail provider is down
    /// // ...
    /// client.resume_queue("mail").await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause_queue(&self, queue: &str) -> Result<bool, Error> {
        crate::request::check_queue_name(queue)?;
        self.store().set_paused(queue, true).await
    }

    /// Resumes a queue [`Client::pause_queue`] paused, waking its idle workers. Returns whether
    /// it was paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool, Error> {
        crate::request::check_queue_name(queue)?;
        let resumed = self.store().set_paused(queue, false).await?;
        self.notify_enqueued();
        Ok(resumed)
    }

    /// Dead jobs matching `filter`, one page at a time: [`Client::jobs`] with the state
    /// `dead` and `filter`'s conditions.
    pub async fn dead_jobs(&self, filter: &DeadFilter, page: Page) -> Result<Vec<JobInfo>, Error> {
        let query = &filter.query;
        let mut jobs = JobFilter::all().state(JobState::Dead);
        jobs.queue.clone_from(&query.queue);
        jobs.kind.clone_from(&query.kind);
        jobs.finished_after_ms = query.after_ms;
        jobs.finished_before_ms = query.before_ms;
        self.jobs(&jobs, page).await
    }

    /// Makes dead job `id` available again: its attempts start over, its history is kept.
    /// Returns whether it was dead (and its unique key free).
    ///
    /// A job whose death was acted on is refused with [`Error::RetryRefused`], which says why:
    /// a saga step whose death cancelled the steps after it and ran the compensations, a
    /// workflow step whose dependents were cancelled with it, a job whose dependents ran because
    /// it died. Running it again would run it after them. (A saga's dead compensation may be
    /// retried: its death only let the compensation before it run.)
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client, id: errand::JobId) -> Result<(), errand::Error> {
    /// match client.retry_dead(id).await {
    ///     Ok(true) => println!("job {id} runs again"),
    ///     Ok(false) => println!("job {id} is not dead, or its key is taken"),
    ///     Err(errand::Error::RetryRefused { reason, .. }) => println!("not retried: {reason}"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn retry_dead(&self, id: JobId) -> Result<bool, Error> {
        let query = DeadQuery {
            id: Some(id),
            ..DeadQuery::default()
        };
        let retried = self.store().retry_dead(&query).await?;
        if retried == 1 {
            self.notify_enqueued();
            return Ok(true);
        }
        if self.store().refused_dead(&query).await? == 0 {
            return Ok(false);
        }
        Err(Error::RetryRefused {
            id,
            reason: self.why_refused(id).await?,
        })
    }

    /// Why dead job `id`, whose death was acted on, is not retried.
    async fn why_refused(&self, id: JobId) -> Result<String, Error> {
        let job = self.job(id).await?;
        let workflow = match job.as_ref().and_then(|j| j.workflow.zip(j.step.clone())) {
            Some((workflow, step)) => self
                .store()
                .workflow(workflow)
                .await?
                .map(|info| (info, step)),
            None => None,
        };
        Ok(match workflow {
            Some((info, step)) if info.kind == "saga" => {
                let state = self.saga(info.id).await?.map(|saga| saga.state);
                format!(
                    "it is step `{step}` of saga {} (`{}`, {}): its death cancelled the steps \
                     after it and released the compensations; retrying it would run it again \
                     after them",
                    info.id,
                    info.name,
                    state.map_or_else(|| "gone".to_owned(), |s| format!("{s:?}"))
                )
            }
            Some((info, step)) => format!(
                "it is step `{step}` of {} {} (`{}`): its death cancelled or released the \
                 steps that wait on it; enqueue the {} again instead",
                info.kind, info.id, info.name, info.kind
            ),
            None => "its death cancelled or released the jobs that wait on it; retrying it \
                     would run it again after them"
                .to_owned(),
        })
    }

    /// Retries every dead job matching `filter`, but those whose death was acted on (see
    /// [`Client::retry_dead`]): the answer says how many were retried and how many skipped.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// let done = client.retry_all_dead(&errand::DeadFilter::all().kind("charge")).await?;
    /// println!("{} retried, {} skipped", done.retried, done.skipped);
    /// # Ok(()) }
    /// ```
    pub async fn retry_all_dead(&self, filter: &DeadFilter) -> Result<Retried, Error> {
        let skipped = self.store().refused_dead(&filter.query).await?;
        let retried = self.store().retry_dead(&filter.query).await?;
        self.notify_enqueued();
        Ok(Retried { retried, skipped })
    }

    /// Deletes dead job `id`; returns whether it was dead.
    pub async fn delete_dead(&self, id: JobId) -> Result<bool, Error> {
        Ok(self
            .store()
            .delete_dead(&DeadQuery {
                id: Some(id),
                ..DeadQuery::default()
            })
            .await?
            == 1)
    }

    /// Deletes every dead job matching `filter`; returns how many.
    pub async fn delete_all_dead(&self, filter: &DeadFilter) -> Result<u64, Error> {
        self.store().delete_dead(&filter.query).await
    }

    /// Deletes now what `retention` lets go (finished jobs, surplus dead jobs, ledger records no
    /// job needs), in batches of 1,000 rows; returns how many rows went. Workers already prune
    /// in the background ([`Worker::retention`](crate::Worker::retention)); this is for a
    /// one-off clean-up, such as `errand prune`.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use std::time::Duration;
    /// let retention = errand::Retention::default().keep_finished_for(Duration::from_secs(3600));
    /// let deleted = client.prune(&retention).await?;
    /// # Ok(()) }
    /// ```
    pub async fn prune(&self, retention: &crate::Retention) -> Result<u64, Error> {
        const BATCH: usize = 1000;
        let mut deleted = 0;
        loop {
            let batch = self.store().prune(retention, BATCH).await?;
            deleted += batch;
            if batch < BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// Cancels job `id`: a job that has not started becomes `cancelled` at once; a running job
    /// is asked to stop (see [`Cancellation::Requested`]).
    pub async fn cancel(&self, id: JobId) -> Result<Cancellation, Error> {
        let error = AttemptError {
            attempt: 0,
            kind: FailureKind::Cancelled,
            message: "cancelled by the client".to_owned(),
            at: SystemTime::now(),
            duration: Duration::ZERO,
            worker: "client".to_owned(),
        };
        self.store().cancel(id, &error).await
    }
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, migrate: bool) -> Result<Backend, Error> {
    Ok(Backend::Sqlite(
        crate::store::sqlite::SqliteStore::connect(url, migrate).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(url: &str, _migrate: bool) -> Result<Backend, Error> {
    Err(Error::InvalidUrl {
        url: redact(url),
        reason: "errand was built without its `sqlite` feature".to_owned(),
    })
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, config: &Config) -> Result<Backend, Error> {
    check_schema(&config.schema).map_err(|reason| Error::InvalidUrl {
        url: redact(url),
        reason,
    })?;
    let store = crate::store::postgres::PostgresStore::connect(
        url,
        &config.schema,
        config.max_connections,
        config.migrate,
    )
    .await?;
    Ok(Backend::Postgres(store))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(url: &str, _config: &Config) -> Result<Backend, Error> {
    Err(Error::InvalidUrl {
        url: redact(url),
        reason: "errand was built without its `postgres` feature; enable it in Cargo.toml"
            .to_owned(),
    })
}

/// `requests` as jobs to insert, 1,000 to a statement, for jobs that are not unique. An
/// invalid request ends the iteration with its error.
fn chunks<J: Job>(
    requests: impl IntoIterator<Item = Request<J>>,
    limit: usize,
) -> impl Iterator<Item = Result<Vec<NewJob>, Error>> {
    const CHUNK: usize = 1000;
    let mut requests = requests.into_iter();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut chunk = Vec::new();
        for request in requests.by_ref() {
            match request.into_new_job(limit) {
                Ok(job) => chunk.push(job),
                Err(err) => {
                    failed = true;
                    return Some(Err(err));
                }
            }
            if chunk.len() == CHUNK {
                break;
            }
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    })
}

/// What [`Client::enqueue_many`] reports for jobs it inserted.
fn new_jobs(ids: Vec<JobId>) -> impl Iterator<Item = Enqueued> {
    ids.into_iter().map(|id| Enqueued {
        id,
        duplicate_of: None,
        outcome: EnqueueOutcome::New,
    })
}

impl<J: Job> Request<J> {
    /// Stores the job; a worker of its queue runs it.
    ///
    /// For a unique job whose key is taken, `on_conflict` decides: `skip` returns the existing
    /// job in [`Enqueued::duplicate_of`], `replace` also replaces its arguments and schedule if
    /// it has not started, `reject` fails with [`Error::Duplicate`].
    pub async fn enqueue(self, client: &Client) -> Result<Enqueued, Error> {
        let job = self.into_new_job(client.config().max_args_bytes_limit())?;
        let inserted = client.store().enqueue(&job).await?;
        if job.run_at.is_later() {
            client.notify_scheduled();
        } else if job.is_special() {
            client.notify_special();
        } else {
            client.notify_enqueued();
        }
        crate::request::enqueued(&job, inserted)
    }
}

#[cfg(test)]
mod tests {
    use super::check_schema;

    #[test]
    fn schema_names_need_no_quoting() {
        assert!(check_schema("public").is_ok());
        assert!(check_schema("_app_jobs2").is_ok());
        assert!(check_schema("").is_err());
        assert!(check_schema("2fast").is_err());
        assert!(check_schema("App").is_err());
        assert!(check_schema("a; DROP TABLE x").is_err());
        assert!(check_schema(&"a".repeat(56)).is_ok());
        assert!(check_schema(&"a".repeat(57)).is_err(), "errand_ + 57 > 63");
    }
}
