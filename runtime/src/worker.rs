//! The [`Worker`]: claims jobs from weighted queues, runs them with a concurrency limit, and
//! records each outcome in the store.
//!
//! One loop claims, renews the leases of running jobs, rescues jobs whose worker died, and waits
//! for a local enqueue, a finished job or the poll interval, whichever comes first. Each claimed
//! job runs in its own task; the loop owns every task, so none outlives the worker.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::classify::FailureKind;
use crate::client::Client;
use crate::context::Context;
use crate::dead::{Death, Retention};
use crate::error::Error;
use crate::info::AttemptError;
use crate::job::{JobId, JobState, Outcome, UniqueStrategy};
use crate::registry::{registry, CatchPanic, Failure, Registration};
use crate::request::check_queue_name;
use crate::retry::{after_failure, AfterFailure, Backoff};
use crate::store::BoxFuture;
use crate::store::{Claimed, Finish, Store};

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
pub struct Worker {
    client: Client,
    settings: Settings,
    id: String,
}

/// What a worker was told, shared by the builder and the running worker.
struct Settings {
    queues: Vec<(String, u32)>,
    concurrency: usize,
    grace_period: Duration,
    poll_interval: Duration,
    lease: Duration,
    unknown_kind_grace: Duration,
    retention: Retention,
    prune_every: Duration,
    on_death: Option<DeathHandler>,
}

/// A death handler, boxed: see [`Worker::on_death`].
type DeathHandler =
    Arc<dyn Fn(Death) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// What a death handler may fail with.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

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
                grace_period: Duration::from_secs(25),
                poll_interval: Duration::from_secs(1),
                lease: Duration::from_secs(30),
                unknown_kind_grace: Duration::from_secs(3600),
                retention: Retention::default(),
                prune_every: Duration::from_secs(60),
                on_death: None,
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

    /// On shutdown, how long running jobs may take to finish before they are put back.
    pub fn grace_period(mut self, grace: Duration) -> Worker {
        self.settings.grace_period = grace;
        self
    }

    /// How often an idle worker looks for jobs enqueued by other processes, or come due.
    /// Jobs enqueued through this worker's own client wake it at once.
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

    /// How long a job whose kind this worker does not know is left for a worker that knows it
    /// (default one hour), before it dies with an error that names the kind. It waits snoozed,
    /// spending no attempt.
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

    /// How often this worker tries to prune finished jobs (default every minute).
    pub fn prune_every(mut self, every: Duration) -> Worker {
        self.settings.prune_every = every;
        self
    }

    /// Calls `handler` once for every job death in the cluster (a permanent failure, or no
    /// retries left), with the dead job, its last error and why it died. Each death goes to one
    /// worker that has a handler. A handler that fails or panics is logged; the job stays dead.
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
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.settings.on_death = Some(Arc::new(move |death| Box::pin(handler(death))));
        self
    }

    /// This worker's id, recorded with each attempt: `host:pid:random`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until Ctrl-C or SIGTERM, then shuts down gracefully: stops claiming, lets running
    /// jobs finish within the grace period, and puts the rest back without spending an attempt.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()).await
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

    /// Runs until nothing is left to run now (jobs due later are left), and returns how many
    /// runs it made. For scripts and tests.
    pub async fn run_until_idle(self) -> Result<usize, Error> {
        self.into_runner()?
            .work(CancellationToken::new(), true)
            .await
    }

    fn into_runner(self) -> Result<Arc<Runner>, Error> {
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
        Ok(Arc::new(Runner {
            registry: registry()?,
            client: self.client,
            settings: self.settings,
            id: self.id,
            running: Mutex::new(HashMap::new()),
        }))
    }
}

/// A configured worker at work.
struct Runner {
    client: Client,
    registry: HashMap<&'static str, &'static Registration>,
    settings: Settings,
    id: String,
    /// Jobs claimed and not yet recorded as finished, for lease renewal and shutdown, each with
    /// the token its context watches for a cancellation.
    running: Mutex<HashMap<JobId, CancellationToken>>,
}

/// How a job's task ended.
enum TaskEnd {
    /// Completed; the claim loop writes it with the others that finished alongside it.
    Completed(PendingCompletion),
    /// Its outcome was written (or given up to the rescue); whether it died.
    Recorded { died: bool },
}

/// A completion waiting for the claim loop's next batch.
struct PendingCompletion {
    id: JobId,
    fence: i64,
    /// `ctx.complete_in` already completed it, with the job's own writes.
    in_tx: bool,
}

/// The longest a free slot waits for others to free up before the worker claims for it.
const CLAIM_WINDOW: Duration = Duration::from_millis(2);

/// Deaths taken for handlers at a time.
const DEATH_BATCH: usize = 100;
/// How long one death handler may take.
const DEATH_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// The lock that keeps pruning to one node at a time.
const PRUNE_LOCK: &str = "errand.prune";
/// Jobs deleted per statement, so that no prune holds locks for long.
const PRUNE_BATCH: usize = 1000;
/// Batches per pruning round; the next round carries on.
const MAX_PRUNE_BATCHES: usize = 100;

/// How long a `while_executing` job waits (snoozed, spending no attempt) while another job with
/// its key runs.
const WHILE_EXECUTING_WAIT: Duration = Duration::from_millis(500);

/// How long to wait after the store fails, by how many times in a row it has.
fn store_backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(8))).min(Duration::from_secs(30))
}

impl Runner {
    fn running(&self) -> MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        // The map holds plain ids; a panic elsewhere cannot leave it half-updated.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The claim loop. With `until_idle`, returns once nothing is running and nothing is due.
    async fn work(
        self: Arc<Self>,
        shutdown: CancellationToken,
        until_idle: bool,
    ) -> Result<usize, Error> {
        tracing::info!(worker = %self.id, queues = ?self.settings.queues, concurrency = self.settings.concurrency, "errand worker started");
        let mut tasks = JoinSet::new();
        // Pruning waits one period after start, so that short-lived workers (scripts, tests)
        // leave it to long-running ones.
        let mut last_prune = Instant::now();
        let mut enqueued = self.client.subscribe_enqueued();
        let mut listener = self.client.store().listener().await;
        let mut heartbeat = tokio::time::interval(self.settings.lease / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runs = 0;
        let mut failures = 0u32;
        self.rescue().await;

        // Claims are batched to free capacity: after a job finishes, the worker waits until half
        // its slots are free, or CLAIM_WINDOW has passed, before it claims again, so that one
        // round trip fetches many jobs instead of one.
        let refill = (self.settings.concurrency / 2).max(1);
        let mut last_claim = Instant::now();
        let mut completed: Vec<PendingCompletion> = Vec::new();
        while !shutdown.is_cancelled() {
            let free = self.settings.concurrency.saturating_sub(tasks.len());
            let batch_ready =
                free >= refill || tasks.is_empty() || last_claim.elapsed() >= CLAIM_WINDOW;
            let mut claimed = 0;
            if free > 0 && batch_ready {
                last_claim = Instant::now();
                match self.claim(free).await {
                    Ok(jobs) => {
                        failures = 0;
                        claimed = jobs.len();
                        runs += claimed;
                        for job in jobs {
                            self.running().insert(job.id, CancellationToken::new());
                            tasks.spawn(Arc::clone(&self).execute(job));
                        }
                    }
                    Err(err) => {
                        failures += 1;
                        let wait = store_backoff(failures);
                        tracing::error!(worker = %self.id, error = %err, retry_in = ?wait, "claiming jobs failed");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = shutdown.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
            // Completions go after the claim, so that a new job does not wait for them.
            if !completed.is_empty() && !self.write_completions(&mut completed).await {
                failures += 1;
                tokio::select! {
                    () = tokio::time::sleep(store_backoff(failures)) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            if until_idle && claimed == 0 && tasks.is_empty() {
                break;
            }
            if claimed > 0 && claimed == free {
                // Every free slot was filled; there may be more where those came from.
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let mut died = false;
                    // Take every job that finished meanwhile, so the next pass writes their
                    // completions together and claims for all their slots.
                    let mut ended = Some(joined);
                    while let Some(joined) = ended {
                        match log_join(joined) {
                            Some(TaskEnd::Completed(done)) => completed.push(done),
                            Some(TaskEnd::Recorded { died: true }) => died = true,
                            _ => {}
                        }
                        ended = tasks.try_join_next();
                    }
                    if died {
                        self.handle_deaths().await;
                    }
                }
                () = tokio::time::sleep_until((last_claim + CLAIM_WINDOW).into()), if free > 0 && !batch_ready => {}
                Ok(()) = enqueued.changed(), if !until_idle => {}
                () = listener.next(), if !until_idle => {}
                () = tokio::time::sleep(self.settings.poll_interval), if !until_idle => {}
                _ = heartbeat.tick() => {
                    self.renew().await;
                    self.rescue().await;
                    self.handle_deaths().await;
                    if last_prune.elapsed() >= self.settings.prune_every {
                        last_prune = Instant::now();
                        self.prune().await;
                    }
                }
            }
        }
        self.shut_down(tasks, completed, &mut heartbeat).await;
        Ok(runs)
    }

    /// Claims up to `free` jobs, sharing the slots among queues by weight: one round trip,
    /// and a second only when some queue could not fill its share.
    async fn claim(&self, free: usize) -> Result<Vec<Claimed>, Error> {
        let store = self.client.store();
        let shares = weighted_shares(&self.settings.queues, free, fastrand::f64);
        let wanted: Vec<(&str, usize)> = self
            .settings
            .queues
            .iter()
            .zip(&shares)
            .filter(|(_, share)| **share > 0)
            .map(|((queue, _), share)| (queue.as_str(), *share))
            .collect();
        let mut jobs = store.claim(&wanted, &self.id, self.settings.lease).await?;
        // A queue that returned fewer jobs than asked for has nothing more due; slots it could
        // not fill go to the others, the heavier first.
        let exhausted = |queue: &str| {
            wanted.iter().any(|(q, share)| {
                *q == queue && jobs.iter().filter(|j| j.queue == queue).count() < *share
            })
        };
        let mut others: Vec<&(String, u32)> = self
            .settings
            .queues
            .iter()
            .filter(|(q, _)| !exhausted(q))
            .collect();
        others.sort_by_key(|(_, weight)| std::cmp::Reverse(*weight));
        for (queue, _) in others {
            let left = free - jobs.len();
            if left == 0 {
                break;
            }
            jobs.extend(
                store
                    .claim(&[(queue.as_str(), left)], &self.id, self.settings.lease)
                    .await?,
            );
        }
        Ok(jobs)
    }

    /// Runs one claimed job and records its outcome.
    async fn execute(self: Arc<Self>, job: Claimed) -> TaskEnd {
        let span = tracing::info_span!(
            "errand.job",
            job.id = %job.id,
            job.kind = %job.kind,
            job.queue = %job.queue,
            job.attempt = job.attempt,
            job.key = job.key.as_deref(),
        );
        let started = Instant::now();
        let registration = self.registry.get(job.kind.as_str()).copied();
        let cancelled = self.running().get(&job.id).cloned().unwrap_or_default();
        let ctx = Context::new(&job, span.clone(), self.client.store().clone(), cancelled);
        let result = self
            .run(&job, registration, ctx.clone())
            .instrument(span.clone())
            .await;
        let backoff = registration.map_or(Backoff::Exponential, |r| r.options.backoff);
        let finish = self.decide(
            &job,
            result,
            started.elapsed(),
            &backoff,
            ctx.is_cancelled(),
        );
        span.in_scope(|| log_finish(&finish));
        if finish.state == JobState::Completed {
            // The claim loop writes completions in batches; the job stays in `running` (its
            // lease renewed) until then.
            return TaskEnd::Completed(PendingCompletion {
                id: job.id,
                fence: job.fence,
                in_tx: ctx.completed_in_tx(),
            });
        }
        self.record(&job, &finish, ctx.completed_in_tx())
            .instrument(span)
            .await;
        self.running().remove(&job.id);
        TaskEnd::Recorded {
            died: finish.state == JobState::Dead,
        }
    }

    async fn run(
        &self,
        job: &Claimed,
        registration: Option<&Registration>,
        ctx: Context,
    ) -> Result<Outcome, Failure> {
        let Some(registration) = registration else {
            let waited =
                Duration::from_millis(u64::try_from(now_ms() - job.created_at).unwrap_or(0));
            if waited < self.settings.unknown_kind_grace {
                // Leave it for a worker that knows the kind; look again later.
                let wait = (self.settings.unknown_kind_grace - waited)
                    .clamp(Duration::from_millis(100), Duration::from_secs(30));
                tracing::warn!(wait = ?wait, "no job of this kind is registered here; leaving it for another worker");
                return Ok(Outcome::Snooze(wait));
            }
            return Err(Failure::new(
                FailureKind::UnknownKind,
                format!(
                    "no worker ran a job of kind `{}` within {:?} of its enqueue (last tried by `{}`); \
                     is the crate that defines it linked into the worker binary?",
                    job.kind, self.settings.unknown_kind_grace, self.id
                ),
            ));
        };
        let while_executing = registration
            .options
            .unique
            .is_some_and(|u| u.strategy == UniqueStrategy::WhileExecuting);
        if while_executing && job.key.is_some() {
            match self
                .client
                .store()
                .take_running_key(job.id, job.fence)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("another job with this key is running; waiting for it");
                    return Ok(Outcome::Snooze(WHILE_EXECUTING_WAIT));
                }
                Err(err) => {
                    // Not knowing whether a duplicate runs, do not run: look again shortly.
                    tracing::warn!(error = %err, "cannot take the job's running key; waiting");
                    return Ok(Outcome::Snooze(WHILE_EXECUTING_WAIT));
                }
            }
        }
        let future = (registration.start)(ctx, &job.args).map_err(|err| {
            Failure::new(
                FailureKind::Undecodable,
                format!("cannot decode the arguments of `{}`: {err}", job.kind),
            )
        })?;
        let future = CatchPanic(future);
        match registration.options.timeout {
            None => future.await,
            Some(limit) => tokio::time::timeout(limit, future)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        FailureKind::Timeout,
                        format!("timed out after {limit:?}"),
                    ))
                }),
        }
    }

    /// The state change that ends this run.
    fn decide(
        &self,
        job: &Claimed,
        result: Result<Outcome, Failure>,
        took: Duration,
        backoff: &Backoff,
        cancelled: bool,
    ) -> Finish {
        let attempt_error = |kind, message| AttemptError {
            attempt: job.attempt,
            kind,
            message,
            at: SystemTime::now(),
            duration: took,
            worker: self.id.clone(),
        };
        if cancelled {
            // The client asked this run to stop: whatever it returned, it ends here.
            let message = "cancelled by the client while running".to_owned();
            return Finish::cancelled(attempt_error(FailureKind::Cancelled, message));
        }
        match result {
            Ok(Outcome::Done) => Finish::completed(),
            Ok(Outcome::Snooze(delay)) => Finish::snooze(delay),
            Ok(Outcome::Cancel(reason)) => {
                Finish::cancelled(attempt_error(FailureKind::Cancelled, reason))
            }
            Err(failure) => {
                let after = after_failure(
                    job.attempt,
                    job.max_attempts,
                    failure.kind,
                    failure.retry_after,
                    backoff,
                );
                let error = attempt_error(failure.kind, failure.message);
                match after {
                    AfterFailure::Retry(delay) => Finish::retry(delay, error),
                    AfterFailure::Dead => Finish::dead(error),
                }
            }
        }
    }

    /// Writes the outcome, retrying while the store is unreachable, for as long as the job's
    /// lease would last. If the store never answers, the lease runs out and any worker rescues
    /// the job.
    async fn record(&self, job: &Claimed, finish: &Finish, completed_in_tx: bool) {
        let deadline = Instant::now() + self.settings.lease;
        let mut failures = 0;
        loop {
            match self.client.store().finish(job.id, job.fence, finish).await {
                Ok(true) => return,
                // `ctx.complete_in` already completed it, with the job's own writes.
                Ok(false) if completed_in_tx => return,
                Ok(false) => {
                    tracing::warn!("job was taken from this worker (its lease ran out); this run's outcome is discarded");
                    return;
                }
                Err(err) => {
                    failures += 1;
                    let wait = store_backoff(failures);
                    if Instant::now() + wait > deadline {
                        tracing::error!(error = %err, "recording the job's outcome failed; it will be rescued when its lease runs out");
                        return;
                    }
                    tracing::warn!(error = %err, retry_in = ?wait, "recording the job's outcome failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn renew(&self) {
        let ids: Vec<JobId> = self.running().keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        match self
            .client
            .store()
            .renew(&self.id, &ids, self.settings.lease)
            .await
        {
            Ok(cancelled) => {
                let running = self.running();
                for id in cancelled {
                    if let Some(token) = running.get(&id) {
                        token.cancel();
                    }
                }
            }
            Err(err) => tracing::warn!(worker = %self.id, error = %err, "renewing leases failed"),
        }
    }

    /// Writes the completions of jobs that finished since the last pass, in one statement.
    /// Returns whether it could; on failure they stay pending (their leases renewed) for the
    /// next pass.
    async fn write_completions(&self, completed: &mut Vec<PendingCompletion>) -> bool {
        let runs: Vec<(JobId, i64)> = completed.iter().map(|c| (c.id, c.fence)).collect();
        match self.client.store().complete_many(&runs).await {
            Ok(written) => {
                let written: std::collections::HashSet<JobId> = written.into_iter().collect();
                let mut running = self.running();
                for done in completed.drain(..) {
                    running.remove(&done.id);
                    if !done.in_tx && !written.contains(&done.id) {
                        tracing::warn!(job.id = %done.id, "job was taken from this worker (its lease ran out); this run's outcome is discarded");
                    }
                }
                true
            }
            Err(err) => {
                tracing::warn!(worker = %self.id, jobs = runs.len(), error = %err, "recording completions failed; will retry");
                false
            }
        }
    }

    /// Hands deaths whose handlers have not run to this worker's handler, if it has one.
    async fn handle_deaths(&self) {
        let Some(handler) = &self.settings.on_death else {
            return;
        };
        loop {
            let deaths = match self.client.store().claim_deaths(DEATH_BATCH).await {
                Ok(deaths) => deaths,
                Err(err) => {
                    tracing::warn!(worker = %self.id, error = %err, "cannot take deaths for their handlers");
                    return;
                }
            };
            let taken = deaths.len();
            for job in deaths {
                let death = Death::of(job);
                let (id, kind, reason) = (death.job.id, death.job.kind.clone(), death.reason);
                // In a task of its own, so that a handler's panic is caught like a job's.
                let called =
                    tokio::spawn(tokio::time::timeout(DEATH_HANDLER_TIMEOUT, handler(death))).await;
                match called {
                    Ok(Ok(Ok(()))) => {
                        tracing::info!(job.id = %id, job.kind = %kind, ?reason, "death handler ran")
                    }
                    Ok(Ok(Err(err))) => {
                        tracing::error!(job.id = %id, job.kind = %kind, error = %err, "death handler failed; the job stays dead")
                    }
                    Ok(Err(_)) => {
                        tracing::error!(job.id = %id, job.kind = %kind, "death handler timed out; the job stays dead")
                    }
                    Err(err) => {
                        tracing::error!(job.id = %id, job.kind = %kind, error = %err, "death handler panicked; the job stays dead")
                    }
                }
            }
            if taken < DEATH_BATCH {
                return;
            }
        }
    }

    /// Deletes what retention lets go, in batches, if no other node is pruning.
    async fn prune(&self) {
        let store = self.client.store();
        match store
            .try_lock(PRUNE_LOCK, &self.id, self.settings.prune_every * 2)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(worker = %self.id, error = %err, "cannot take the pruning lock");
                return;
            }
        }
        let mut pruned = 0;
        for _ in 0..MAX_PRUNE_BATCHES {
            match store.prune(&self.settings.retention, PRUNE_BATCH).await {
                Ok(deleted) => {
                    pruned += deleted;
                    if deleted < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(worker = %self.id, error = %err, "pruning finished jobs failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(worker = %self.id, jobs = pruned, "pruned finished jobs");
        }
    }

    async fn rescue(&self) {
        match self.client.store().rescue().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(worker = %self.id, jobs = n, "rescued jobs whose worker stopped renewing its lease")
            }
            Err(err) => {
                tracing::warn!(worker = %self.id, error = %err, "rescuing jobs with expired leases failed")
            }
        }
    }

    /// Waits up to the grace period for running jobs, then stops the rest and puts them back.
    async fn shut_down(
        &self,
        mut tasks: JoinSet<TaskEnd>,
        mut completed: Vec<PendingCompletion>,
        heartbeat: &mut tokio::time::Interval,
    ) {
        if !tasks.is_empty() {
            tracing::info!(worker = %self.id, running = tasks.len(), grace = ?self.settings.grace_period, "shutting down: waiting for running jobs");
            let deadline = tokio::time::sleep(self.settings.grace_period);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    joined = tasks.join_next() => match joined {
                        Some(joined) => {
                            if let Some(TaskEnd::Completed(done)) = log_join(joined) {
                                completed.push(done);
                            }
                        }
                        None => break,
                    },
                    () = &mut deadline => break,
                    _ = heartbeat.tick() => self.renew().await,
                }
            }
        }
        tasks.abort_all();
        // Jobs that completed before the deadline are recorded as completed, not put back.
        for _ in 0..5 {
            if completed.is_empty() || self.write_completions(&mut completed).await {
                break;
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                if err.is_panic() {
                    tracing::error!(worker = %self.id, "a job task panicked while stopping");
                }
            }
        }
        let unfinished: Vec<JobId> = self.running().drain().map(|(id, _)| id).collect();
        if unfinished.is_empty() {
            tracing::info!(worker = %self.id, "errand worker stopped");
            return;
        }
        for failures in 1..=5 {
            match self.client.store().release(&self.id, &unfinished).await {
                Ok(()) => {
                    tracing::info!(worker = %self.id, jobs = ?unfinished, "put unfinished jobs back");
                    return;
                }
                Err(err) => {
                    tracing::warn!(worker = %self.id, error = %err, "putting unfinished jobs back failed");
                    tokio::time::sleep(store_backoff(failures)).await;
                }
            }
        }
        tracing::error!(worker = %self.id, jobs = ?unfinished, "could not put unfinished jobs back; they will be rescued when their leases run out");
    }
}

/// How a job task ended; logs a task that failed outside its job (its job is then rescued
/// when its lease runs out).
fn log_join(joined: Result<TaskEnd, tokio::task::JoinError>) -> Option<TaskEnd> {
    match joined {
        Ok(end) => Some(end),
        Err(err) => {
            // Job panics are caught inside the task; this is a panic in errand itself.
            tracing::error!(error = %err, "a job task failed outside the job");
            None
        }
    }
}

fn log_finish(finish: &Finish) {
    use crate::job::JobState::*;
    let error = finish.error.as_ref().map(|e| e.message.as_str());
    let kind = finish.error.as_ref().map(|e| e.kind.as_str());
    match finish.state {
        Completed => tracing::info!("job completed"),
        Scheduled => tracing::info!(snooze = ?finish.run_after, "job snoozed"),
        Retryable => {
            tracing::warn!(error, kind, retry_in = ?finish.run_after.unwrap_or_default(), "job failed; will retry")
        }
        Dead => tracing::error!(error, kind, "job died"),
        Cancelled => tracing::info!(reason = error, "job cancelled itself"),
        other => tracing::debug!(state = %other, "job finished"),
    }
}

/// Splits `slots` among queues in proportion to their weights, rounding by chance so that a
/// light queue still gets a slot now and then. `random` yields numbers in `[0, 1)`.
fn weighted_shares(
    queues: &[(String, u32)],
    slots: usize,
    mut random: impl FnMut() -> f64,
) -> Vec<usize> {
    let total: f64 = queues.iter().map(|(_, w)| f64::from(*w)).sum();
    let mut shares = vec![0; queues.len()];
    for _ in 0..slots {
        let mut pick = random() * total;
        let mut chosen = queues.len() - 1;
        for (i, (_, w)) in queues.iter().enumerate() {
            pick -= f64::from(*w);
            if pick < 0.0 {
                chosen = i;
                break;
            }
        }
        shares[chosen] += 1;
    }
    shares
}

fn now_ms() -> i64 {
    crate::info::to_millis(SystemTime::now())
}

/// `host:pid:random`, unique per worker.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let queues = vec![("critical".to_owned(), 10), ("bulk".to_owned(), 1)];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut totals = [0usize; 2];
        for _ in 0..1000 {
            let shares = weighted_shares(&queues, 11, || rng.f64());
            assert_eq!(shares.iter().sum::<usize>(), 11);
            totals[0] += shares[0];
            totals[1] += shares[1];
        }
        let ratio = totals[0] as f64 / totals[1] as f64;
        assert!((8.0..12.5).contains(&ratio), "critical:bulk = {ratio}");
    }

    #[test]
    fn a_single_queue_gets_every_slot() {
        let queues = vec![("default".to_owned(), 1)];
        assert_eq!(weighted_shares(&queues, 16, || 0.99), vec![16]);
    }

    #[test]
    fn store_backoff_grows_and_caps() {
        assert_eq!(store_backoff(1), Duration::from_millis(200));
        assert_eq!(store_backoff(3), Duration::from_millis(800));
        assert_eq!(store_backoff(50), Duration::from_millis(25_600));
    }
}
