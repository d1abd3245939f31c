//! The [`Worker`]: claims jobs from weighted queues, runs them with a concurrency limit, and
//! records each outcome in the store.
//!
//! A worker is a few supervised tasks with one shutdown signal, each in a file of its own:
//! - the claim loop ([`claim`]) claims jobs, spawns their runs ([`execute`]) and writes their
//!   completions; nothing else awaits in it;
//! - the lease keeper ([`lease`]) renews the lease of every run on time, whatever else is slow;
//! - the rescuer ([`rescue`]) and the pruner ([`prune`]), each on its own timing and on one
//!   node at a time;
//! - the death notifier ([`deaths`]) hands deaths to the handlers, several at once, at least
//!   once each;
//! - the scheduler ([`scheduler`]) enqueues the slots of periodic jobs, once across nodes.
//!
//! [`supervise`] restarts a service that panics or fails, and stops the worker when one keeps
//! failing. Every task belongs to the worker's future: none outlives it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::dead::{Death, Retention};
use crate::error::Error;
use crate::registry::{registry, Registration};
use crate::request::check_queue_name;
use crate::schedule::{Periodic, Schedule};
use crate::store::{BoxFuture, KindLimit};

mod adopt;
mod cancels;
mod claim;
mod deaths;
mod execute;
mod lease;
mod presence;
mod prune;
mod rescue;
mod runs;
mod sample;
mod scheduler;
mod shutdown;
mod supervise;

use runs::Runs;
use supervise::supervise;

/// The most jobs a worker claims beyond its free slots when it sizes its buffer itself (see
/// [`Worker::prefetch`]).
const MAX_PREFETCH: usize = 256;

/// The shortest poll interval a worker accepts: anything shorter busy-polls the database.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Runs jobs.
///
/// ```no_run
/// use std::time::Duration;
/// use errand::{Client, Worker};
///
/// # async fn demo() -> Result<(), errand::Error> {
/// let client = Client::connect("sqlite://jobs.db").await?;
/// Worker::new(client)
///     .queues([("critical", 10), ("default", 5), ("bulk", 1)])
///     .concurrency(16)
///     .grace_period(Duration::from_secs(30))
///     .run() // until Ctrl-C or SIGTERM
///     .await?;
/// # Ok(()) }
/// ```
///
/// Queue weights share the free slots of each claim: with `critical` at 10 and `bulk` at 1, a
/// busy worker gives `critical` about ten times the slots of `bulk`, and `bulk` never starves.
/// Slots a queue cannot fill go to the others.
#[must_use = "a worker does nothing until it runs: call `.run()`, `.run_until(..)` or `.spawn()`"]
pub struct Worker {
    client: Client,
    settings: Settings,
    id: String,
}

/// What a worker was told, shared by the builder and the running worker.
struct Settings {
    queues: Vec<(String, u32)>,
    concurrency: usize,
    /// Jobs claimed beyond the free slots: a fixed number, or `None` to size the buffer by
    /// how fast jobs finish.
    prefetch: Option<usize>,
    grace_period: Duration,
    poll_interval: Duration,
    lease: Duration,
    unknown_kind_grace: Duration,
    retention: Retention,
    prune_every: Duration,
    on_death: Option<DeathHandler>,
    death_handler_timeout: Duration,
    /// Schedules added with [`Worker::schedule`].
    periodic: Vec<Periodic>,
    /// How long a waiting job waits per priority level it moves up.
    priority_aging: Option<Duration>,
    /// How often the queues' gauges are sampled, by one node at a time.
    queue_metrics: Option<Duration>,
}

/// A death handler, boxed: see [`Worker::on_death`].
type DeathHandler =
    Arc<dyn Fn(Death) -> BoxFuture<'static, Result<(), DeathHandlerError>> + Send + Sync>;

/// What a death handler may fail with.
pub type DeathHandlerError = Box<dyn std::error::Error + Send + Sync>;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("queues", &self.settings.queues)
            .field("concurrency", &self.settings.concurrency)
            .field("lease", &self.settings.lease)
            .field("on_death", &self.settings.on_death.is_some())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of queue `default`, 10 jobs at a time.
    pub fn new(client: Client) -> Worker {
        Worker {
            client,
            settings: Settings {
                queues: vec![("default".to_owned(), 1)],
                concurrency: 10,
                prefetch: None,
                grace_period: Duration::from_secs(25),
                poll_interval: Duration::from_secs(1),
                lease: Duration::from_secs(30),
                unknown_kind_grace: Duration::from_secs(3600),
                retention: Retention::default(),
                prune_every: Duration::from_secs(60),
                on_death: None,
                death_handler_timeout: Duration::from_secs(30),
                periodic: Vec::new(),
                priority_aging: None,
                queue_metrics: None,
            },
            id: worker_id(),
        }
    }

    /// The queues to work, each with a weight of at least 1.
    pub fn queues<I, S>(mut self, queues: I) -> Worker
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        self.settings.queues = queues.into_iter().map(|(q, w)| (q.into(), w)).collect();
        self
    }

    /// How many jobs run at once (at least 1).
    pub fn concurrency(mut self, jobs: usize) -> Worker {
        self.settings.concurrency = jobs;
        self
    }

    /// How many jobs the worker claims beyond its free slots, so that a slot that frees up
    /// starts its next job without a round trip to the database, and one round trip claims
    /// more jobs. Such a job is claimed and leased like a running one, and waits in this
    /// worker until a slot frees up. Shutdown puts it back without spending its attempt; a
    /// worker that crashes delays it until its lease runs out, and its attempt counts as
    /// spent, as a running job's does. `0` claims only for free slots.
    ///
    /// Unless told, the worker sizes its buffer by what it sees: it claims beyond its free
    /// slots only what they will finish within the next 100 ms at the pace its recent runs
    /// took (up to 256 jobs), so that short jobs move in large batches and long ones are
    /// claimed only for free slots, never hoarded while another worker sits idle. Until its
    /// first runs finish it claims only for free slots.
    ///
    /// A job enqueued with a higher priority waits behind at most this many claimed jobs. A
    /// job that waited in the buffer (over 100 ms) checks, as it starts, that its queue was not
    /// paused and its deadline did not pass meanwhile: if it was, the job goes back to its
    /// queue; if it did, the job is cancelled as expired; either way spending no attempt.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// // Jobs that wait on a slow service, whatever pace the worker measured: claim only for
    /// // free slots.
    /// errand::Worker::new(client).concurrency(4).prefetch(0).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn prefetch(mut self, jobs: usize) -> Worker {
        self.settings.prefetch = Some(jobs);
        self
    }

    /// On shutdown, how long running jobs may take to finish before they are put back.
    pub fn grace_period(mut self, grace: Duration) -> Worker {
        self.settings.grace_period = grace;
        self
    }

    /// Ages priorities (off by default): a job waiting to run moves up one priority level for
    /// each `step` it has waited since its run time, so that a steady stream of urgent jobs
    /// never starves the others forever: a job of priority 9 waits at most nine steps before
    /// it is taken with the newest jobs of priority 0. The job's
    /// [`JobInfo::priority`](crate::JobInfo::priority) shows where it stands. Each worker ages
    /// the jobs of its queues as it polls, up to 1,000 per level and queue at a time.
    ///
    /// Aging writes: each level a job moves up rewrites its row, so a backlog older than a
    /// step costs up to nine updates a job. Turn it on where a queue mixes priorities and its
    /// backlog can last; with `None` (the default) priority orders strictly.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use std::time::Duration;
    /// errand::Worker::new(client)
    ///     .priority_aging(Some(Duration::from_secs(300))) // a level every five minutes
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn priority_aging(mut self, step: Option<Duration>) -> Worker {
        self.settings.priority_aging = step;
        self
    }

    /// How often an idle worker looks for jobs enqueued by other processes, or come due
    /// (default every second; at least 1 ms, or the worker refuses to start). Jobs enqueued
    /// through this worker's own client wake it at once, and so do PostgreSQL notifications.
    pub fn poll_interval(mut self, interval: Duration) -> Worker {
        self.settings.poll_interval = interval;
        self
    }

    /// How long a claimed job stays this worker's without renewal. The worker renews every
    /// third of it; a job whose worker died is rescued once it runs out.
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.settings.lease = lease;
        self
    }

    /// How long a job of one of this worker's queues whose kind this worker does not know is
    /// left for a worker that knows it (default one hour), measured on the database's clock
    /// from the time the job became due; then it dies with an error that names the kind.
    /// A worker claims only the kinds it knows, so such a job waits untouched, spending no
    /// attempt. Keep the grace longer than a backlog can last on the workers that know it.
    pub fn unknown_kind_grace(mut self, grace: Duration) -> Worker {
        self.settings.unknown_kind_grace = grace;
        self
    }

    /// How long finished jobs are kept; see [`Retention`]. Workers prune every minute (see
    /// [`Worker::prune_every`]), one node at a time.
    pub fn retention(mut self, retention: Retention) -> Worker {
        self.settings.retention = retention;
        self
    }

    /// Samples each queue's counts into the gauges `errand_queue_jobs` and
    /// `errand_queue_oldest_available_seconds` every `every` (off by default; see
    /// [`metrics`](crate::metrics)). Every worker that samples takes a lease in the database
    /// first, so one node at a time reads the counts, whatever the number of workers. One read
    /// counts every job by queue and state: on a large table, sample every 15 s or more.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// use std::time::Duration;
    /// errand::Worker::new(client).queue_metrics(Some(Duration::from_secs(15))).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn queue_metrics(mut self, every: Option<Duration>) -> Worker {
        self.settings.queue_metrics = every;
        self
    }

    /// How often this worker tries to prune finished jobs (default every minute).
    pub fn prune_every(mut self, every: Duration) -> Worker {
        self.settings.prune_every = every;
        self
    }

    /// Calls `handler` for every job death in the cluster (a permanent failure, or no retries
    /// left), with the dead job, its last error and why it died. Handlers run in the
    /// background, several at once, never in the way of running jobs.
    ///
    /// Delivery is at least once: a worker that takes a death leases it for twice the
    /// [handler timeout](Worker::death_handler_timeout), and marks it delivered only when the
    /// handler returns `Ok`. A handler that fails, panics or times out, or whose worker dies
    /// meanwhile, is called again (here or on another worker) once that lease ran out, up to 10
    /// calls per death. So a handler may see a death twice: make it idempotent (the job id is
    /// a good key). The job stays dead whatever the handler does.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// errand::Worker::new(client)
    ///     .on_death(|death: errand::Death| async move {
    ///         eprintln!("job {} ({}) died: {:?}", death.job.id, death.job.kind, death.reason);
    ///         Ok(())
    ///     })
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn on_death<F, Fut>(mut self, handler: F) -> Worker
    where
        F: Fn(Death) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), DeathHandlerError>> + Send + 'static,
    {
        self.settings.on_death = Some(Arc::new(move |death| Box::pin(handler(death))));
        self
    }

    /// Enqueues `request` at each slot of the cron expression `cron` (UTC), once across every
    /// node that runs this schedule: [`Worker::schedule`] with [`Periodic::new`]'s defaults.
    ///
    /// ```no_run
    /// # #[errand::job]
    /// # async fn cleanup(keep_days: u32) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// errand::Worker::new(client)
    ///     .periodic("*/5 * * * *", cleanup::with(30)) // every five minutes
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn periodic<J: crate::Job>(self, cron: &str, request: crate::Request<J>) -> Worker {
        self.schedule(Periodic::new(cron, request))
    }

    /// Runs a periodic job: at each slot of its schedule, the worker that gets there first
    /// enqueues its job (see [`Periodic`]). A bad expression or time zone stops the worker at
    /// start with [`Error::InvalidSchedule`]. Jobs that declare `#[job(cron = ..)]` are
    /// scheduled by every worker of their queue without this call.
    pub fn schedule(mut self, periodic: Periodic) -> Worker {
        self.settings.periodic.push(periodic);
        self
    }

    /// How long one call of the death handler may take (default 30 s) before it counts as
    /// failed and is called again later; see [`Worker::on_death`].
    pub fn death_handler_timeout(mut self, timeout: Duration) -> Worker {
        self.settings.death_handler_timeout = timeout;
        self
    }

    /// This worker's id, recorded with each attempt: `host:pid:random`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until Ctrl-C or SIGTERM, then shuts down gracefully: stops claiming, lets running
    /// jobs finish within the grace period, and puts the rest back without spending an attempt.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown::signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down as [`Worker::run`] does.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let token = CancellationToken::new();
        let runner = self.into_runner()?;
        let work = runner.work(token.clone(), false);
        tokio::pin!(work);
        tokio::select! {
            result = &mut work => return result.map(|_| ()),
            () = shutdown => token.cancel(),
        }
        work.await.map(|_| ())
    }

    /// Starts the worker on its own task and returns a handle to stop it, for programs that
    /// run a worker beside other work (an HTTP server, say), as `tokio::spawn` does for a
    /// future. Must be called within a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// let worker = errand::Worker::new(client).queues([("default", 1)]).spawn();
    /// // ... serve requests ...
    /// worker.shutdown().await?; // graceful: running jobs finish within the grace period
    /// # Ok(()) }
    /// ```
    pub fn spawn(self) -> WorkerHandle {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move { self.run_until(stopped.cancelled_owned()).await });
        WorkerHandle { stop, task }
    }

    /// Runs until nothing is left to run now (jobs due later are left), and returns how many
    /// runs it made. For scripts and tests.
    pub async fn run_until_idle(self) -> Result<usize, Error> {
        self.into_runner()?
            .work(CancellationToken::new(), true)
            .await
    }

    /// Claims one job of this worker's first queue and runs it once, as the claim loop would,
    /// writing its outcome. Returns its id, or `None` when none was due. For
    /// [`TestClient::perform`](crate::testing::TestClient::perform).
    #[cfg(feature = "sqlite")]
    pub(crate) async fn run_one(self) -> Result<Option<crate::job::JobId>, Error> {
        let runner = self.into_runner()?;
        let store = runner.client.store();
        // `into_runner` refuses a worker without queues.
        let Some((queue, _)) = runner.settings.queues.first() else {
            return Ok(None);
        };
        let claimed = store
            .claim(
                &[(queue.as_str(), 1)],
                &runner.kinds,
                &runner.id,
                runner.settings.lease,
            )
            .await?;
        let Some(job) = claimed.into_iter().next() else {
            return Ok(None);
        };
        let id = job.id;
        let signal = runner.runs.insert(job.run(), std::time::Instant::now());
        let guard = runs::RunGuard::new(Arc::clone(&runner.runs), job.run());
        if let execute::TaskEnd::Completed(done) = runner.execute(job, signal, guard, false).await {
            let mut completed = vec![done];
            let written = store.complete_many(&execute::runs(&completed)).await?;
            execute::settle_completions(&runner, &mut completed, written);
        }
        Ok(Some(id))
    }

    fn into_runner(mut self) -> Result<Arc<Runner>, Error> {
        if self.settings.queues.is_empty() {
            return Err(Error::InvalidWorker(
                "no queues to work; call `.queues([(\"default\", 1)])`".to_owned(),
            ));
        }
        for (queue, weight) in &self.settings.queues {
            check_queue_name(queue)?;
            if *weight == 0 {
                return Err(Error::InvalidWorker(format!(
                    "queue `{queue}` has weight 0; weights start at 1"
                )));
            }
        }
        if self.settings.concurrency == 0 {
            return Err(Error::InvalidWorker(
                "concurrency 0 would run nothing; use at least 1".to_owned(),
            ));
        }
        if self.settings.lease < Duration::from_millis(300) {
            return Err(Error::InvalidWorker(format!(
                "a lease of {:?} is too short to renew; use at least 300ms",
                self.settings.lease
            )));
        }
        if self.settings.poll_interval < MIN_POLL_INTERVAL {
            return Err(Error::InvalidWorker(format!(
                "a poll interval of {:?} would busy-poll the database; use at least {MIN_POLL_INTERVAL:?}",
                self.settings.poll_interval
            )));
        }
        let registry = registry()?;
        let mut kinds: Vec<&'static str> = registry.keys().copied().collect();
        kinds.sort_unstable();
        let (limited, others): (Vec<&'static str>, Vec<&'static str>) = kinds
            .iter()
            .partition(|kind| registry[*kind].options.is_limited());
        let (fair_kinds, free_kinds): (Vec<&'static str>, Vec<&'static str>) = others
            .into_iter()
            .partition(|kind| registry[*kind].options.fair);
        let limits = limited
            .iter()
            .map(|kind| {
                let options = &registry[kind].options;
                KindLimit {
                    kind,
                    max_running: options.concurrency,
                    rate: options.rate,
                }
            })
            .collect();
        let schedules = schedules(
            std::mem::take(&mut self.settings.periodic),
            &registry,
            &self.settings.queues,
        )?;
        Ok(Arc::new(Runner {
            registry,
            kinds,
            free_kinds,
            fair_kinds,
            limits,
            schedules,
            client: self.client,
            settings: self.settings,
            id: self.id,
            host: host_name(),
            runs: Arc::default(),
            deaths: Notify::new(),
            quiet: std::sync::Mutex::default(),
        }))
    }
}

/// A worker started with [`Worker::spawn`]. Dropping the handle leaves the worker running,
/// as dropping a `tokio::task::JoinHandle` does.
#[derive(Debug)]
#[must_use = "a dropped handle cannot stop its worker; call `shutdown` to stop it"]
pub struct WorkerHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl WorkerHandle {
    /// Stops the worker gracefully, as Ctrl-C stops [`Worker::run`]: it stops claiming, lets
    /// running jobs finish within the grace period, and puts the rest back without spending
    /// an attempt. Returns once it has stopped, with the error that stopped it earlier, if
    /// any.
    ///
    /// # Panics
    ///
    /// Resumes the worker's panic, if its task panicked.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Aborted: it stopped.
            Err(_) => Ok(()),
        }
    }

    /// Stops the worker at once, as a crash would: running jobs are dropped where they are,
    /// and other workers rescue them when their leases run out. For tests of crashes, and for
    /// a process that must stop now; prefer [`WorkerHandle::shutdown`].
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the worker has stopped (shut down, aborted, or stopped by an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A configured worker at work: what its services share.
pub(crate) struct Runner {
    client: Client,
    registry: HashMap<&'static str, &'static Registration>,
    /// The kinds in the registry: the only ones this worker claims.
    kinds: Vec<&'static str>,
    /// The kinds without limits across the cluster, claimed by the plain claim.
    free_kinds: Vec<&'static str>,
    /// The kinds whose jobs take turns by key, claimed by a fair claim.
    fair_kinds: Vec<&'static str>,
    /// The limits of the other kinds, claimed by a limited claim.
    limits: Vec<KindLimit>,
    settings: Settings,
    id: String,
    /// This machine's name.
    host: String,
    /// Runs being executed, for the lease keeper and shutdown.
    runs: Arc<Runs>,
    /// Wakes the death notifier when a job of this worker died.
    deaths: Notify,
    /// The periodic jobs this worker schedules.
    schedules: Vec<Schedule>,
    /// When the claims of fair and of limited jobs last found none (see [`Quiet`]).
    quiet: std::sync::Mutex<Quiet>,
}

/// When a worker's claims of jobs that take turns (`fair_by`) and of jobs under limits last
/// found none of them: such a claim then waits a poll interval, or a wake-up, before it looks
/// again, so that a worker whose queues hold none of those jobs pays one statement a poll for
/// them, not one an exchange.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    pub fair: Option<std::time::Instant>,
    pub limited: Option<std::time::Instant>,
}

impl Runner {
    /// Whether the claim whose last empty result is `since` should look now.
    fn should_look(&self, since: Option<std::time::Instant>) -> bool {
        since.is_none_or(|at| at.elapsed() >= self.settings.poll_interval)
    }

    /// Something may have been enqueued: every claim looks again.
    fn woken(&self) {
        let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        *quiet = Quiet::default();
    }
}

/// The schedules a worker runs: those it was given, and those `#[job(cron = ..)]` declared for
/// jobs of its queues. Each is checked; two of one name are refused.
fn schedules(
    given: Vec<Periodic>,
    registry: &HashMap<&'static str, &'static Registration>,
    queues: &[(String, u32)],
) -> Result<Vec<Schedule>, Error> {
    let mut declared: Vec<&Registration> = registry
        .values()
        .copied()
        .filter(|r| queues.iter().any(|(q, _)| q == r.options.queue))
        .collect();
    declared.sort_unstable_by_key(|r| r.kind);
    let all = given.into_iter().chain(
        declared
            .iter()
            .filter_map(|r| r.periodic.map(|periodic| periodic())),
    );
    let mut schedules: Vec<Schedule> = Vec::new();
    for periodic in all {
        if schedules.iter().any(|s| s.name == periodic.schedule_name()) {
            return Err(Error::InvalidSchedule {
                name: periodic.schedule_name().to_owned(),
                reason:
                    "two schedules of this worker have this name; name one with `Periodic::name`"
                        .to_owned(),
            });
        }
        schedules.push(periodic.check()?);
    }
    Ok(schedules)
}

/// How long to wait after the store fails, by how many times in a row it has.
fn store_backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(8))).min(Duration::from_secs(30))
}

impl Runner {
    /// Runs the claim loop beside the supervised services until the loop ends (on `shutdown`,
    /// or once idle), then stops the services. The lease keeper outlives the claim loop's
    /// shutdown, so that jobs finishing within the grace period keep their leases.
    async fn work(
        self: Arc<Self>,
        shutdown: CancellationToken,
        until_idle: bool,
    ) -> Result<usize, Error> {
        tracing::info!(worker = %self.id, queues = ?self.settings.queues, concurrency = self.settings.concurrency, "errand worker started");
        let stop_services = CancellationToken::new();
        let mut services = JoinSet::new();
        let mut start = |name: &'static str, service: Service| {
            let runner = Arc::clone(&self);
            let stop = stop_services.clone();
            services.spawn(supervise(name, self.id.clone(), stop.clone(), move || {
                service(Arc::clone(&runner), stop.clone())
            }));
        };
        // What is rescuable or buriable now is dealt with before the first claim: a script or a
        // test that runs until idle expects it, and a worker restarted after a crash takes its
        // own expired jobs back at once. The rescuer carries on from there.
        presence::announce(&self).await;
        rescue::once(&self).await;
        // Slots due now are enqueued before the first claim, for the same reasons.
        let next_slot = scheduler::tick(&self).await;
        start("lease keeper", |r, stop| Box::pin(lease::keep(r, stop)));
        start("presence", |r, stop| Box::pin(presence::keep(r, stop)));
        if !self.client.store().notifies_cancels() {
            start("cancel watcher", |r, stop| {
                Box::pin(cancels::watch(r, stop))
            });
        }
        start("rescuer", |r, stop| Box::pin(rescue::rescue(r, stop)));
        if !until_idle {
            // Short-lived workers (scripts, tests) leave pruning to long-running ones, and
            // deliver deaths once they are idle (below).
            start("pruner", |r, stop| Box::pin(prune::prune(r, stop)));
            if self.settings.queue_metrics.is_some() {
                start("sampler", |r, stop| Box::pin(sample::sample(r, stop)));
            }
            if next_slot.is_some() {
                start("scheduler", |r, stop| Box::pin(scheduler::run(r, stop)));
            }
            if self.settings.on_death.is_some() {
                start("death notifier", |r, stop| {
                    Box::pin(deaths::notify(r, stop))
                });
            }
        }

        let claiming = claim::ClaimLoop::new(Arc::clone(&self)).run(shutdown.clone(), until_idle);
        tokio::pin!(claiming);
        let mut failed = None;
        let result = loop {
            tokio::select! {
                result = &mut claiming => break result,
                Some(ended) = services.join_next() => {
                    if let Ok(Err(err)) = ended {
                        // A service gave up: stop claiming, finish gracefully, then report it.
                        failed.get_or_insert(err);
                        shutdown.cancel();
                    }
                }
            }
        };
        if until_idle && result.is_ok() {
            deaths::deliver_pending(&self).await;
        }
        stop_services.cancel();
        while let Some(ended) = services.join_next().await {
            if let Ok(Err(err)) = ended {
                failed.get_or_insert(err);
            }
        }
        presence::leave(&self).await;
        match failed {
            Some(err) => Err(err),
            None => result,
        }
    }
}

/// A background service: started (and restarted) by the supervisor with the worker and the
/// token that stops it.
type Service = fn(Arc<Runner>, CancellationToken) -> BoxFuture<'static, Result<(), Error>>;
/// `host:pid:random`, unique per worker.
fn worker_id() -> String {
    format!(
        "{}:{}:{:04x}",
        host_name(),
        std::process::id(),
        fastrand::u16(..)
    )
}

/// This machine's name, as the worker's id and its row among the live workers show it.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_backoff_grows_and_caps() {
        assert_eq!(store_backoff(1), Duration::from_millis(200));
        assert_eq!(store_backoff(3), Duration::from_millis(800));
        assert_eq!(store_backoff(50), Duration::from_millis(25_600));
    }
}
