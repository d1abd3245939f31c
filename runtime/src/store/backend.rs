//! The store a client was connected to ([`Backend`]), each operation dispatched to it; and its
//! wake-ups from other processes ([`Listener`]).

#[cfg(feature = "postgres")]
use super::postgres;
use super::records::{
    Claimed, Exchange, Finish, Inserted, Keys, KindLimit, NewJob, Presence, Promoted, RunId,
    ScheduleRecord, Slot, Startable, StepOwner,
};
#[cfg(feature = "sqlite")]
use super::sqlite;

use std::time::Duration;

pub(crate) use crate::dead::DeadQuery;
use crate::dead::{Cancellation, Retention};
use crate::error::Error;
use crate::info::{AttemptError, JobInfo};
use crate::job::JobId;
use crate::query::{JobFilter, Page, QueueStats};

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

/// What every store does, on the store at hand. Each method is one atomic operation.
impl Backend {
    /// Inserts a job (`scheduled` if it runs later, `available` otherwise), unless its unique
    /// key is taken.
    pub(crate) async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        dispatch!(self, s => s.enqueue(job).await)
    }

    /// Claims, for each `(queue, limit)`, up to `limit` due jobs of that queue whose kind is
    /// one of `kinds` (those the worker can run), most urgent first, for `worker`, with a lease.
    pub(crate) async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        dispatch!(self, s => s.claim(wanted, kinds, worker, lease).await)
    }

    /// [`Backend::complete_many`] of `done`, then [`Backend::claim`], as one atomic operation: a
    /// worker's claim loop writes the runs that finished and claims for their slots in one
    /// round trip (PostgreSQL: one statement; SQLite: one transaction).
    pub(crate) async fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Exchange, Error> {
        dispatch!(self, s => s.complete_and_claim(done, wanted, kinds, worker, lease).await)
    }

    /// Cancels up to `limit` waiting jobs past their deadline (as expired), makes up to `limit`
    /// `scheduled` or `retryable` jobs whose time has come `available`, where claims find
    /// them, and reads when the next waiting job is due.
    pub(crate) async fn promote(&self, limit: usize) -> Result<Promoted, Error> {
        dispatch!(self, s => s.promote(limit).await)
    }

    /// Pauses (`paused`) or resumes `queue` for every node. Returns whether that changed it.
    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        dispatch!(self, s => s.set_paused(queue, paused).await)
    }

    /// Kills the available jobs of `queues` whose kind is none of `kinds` and that have been due
    /// for `grace` or longer, by the database's clock: no worker that knows their kind took
    /// them. (Waiting jobs become available when due, whatever their kind.) A kind that a live
    /// worker knows (one seen within [`WORKER_STALE`]) is never buried, nor a job of a paused
    /// queue. Buries up to `limit` jobs; returns how many.
    pub(crate) async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
        limit: usize,
    ) -> Result<u64, Error> {
        dispatch!(self, s => s.bury_unknown(queues, kinds, grace, worker, limit).await)
    }

    /// Ends a run, unless the job was taken from this worker (`fence` no longer matches).
    /// Returns whether the change was made.
    pub(crate) async fn finish(
        &self,
        id: JobId,
        fence: i64,
        finish: &Finish,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.finish(id, fence, finish).await)
    }

    /// Extends the leases of runs `worker` still executes, each under its fence; returns the
    /// runs renewed, each with whether its cancellation was requested. Never waits on a job
    /// row another transaction holds (`complete_in`): such a run is left for the next renewal.
    pub(crate) async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        dispatch!(self, s => s.renew(worker, runs, lease).await)
    }

    /// Puts jobs `worker` did not finish back to `available`, refunding the attempt.
    pub(crate) async fn release(&self, worker: &str, ids: &[JobId]) -> Result<(), Error> {
        dispatch!(self, s => s.release(worker, ids).await)
    }

    /// Makes running jobs whose lease ran out retryable (or dead, with no attempts left);
    /// returns their ids.
    pub(crate) async fn rescue(&self) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.rescue().await)
    }

    /// One job, if it exists.
    pub(crate) async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        dispatch!(self, s => s.job(id).await)
    }

    /// One page of the jobs matching `filter`.
    pub(crate) async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: Page,
    ) -> Result<Vec<JobInfo>, Error> {
        dispatch!(self, s => s.list_jobs(filter, page).await)
    }

    /// How many jobs match `filter`.
    pub(crate) async fn count_jobs(&self, filter: &JobFilter) -> Result<u64, Error> {
        dispatch!(self, s => s.count_jobs(filter).await)
    }

    /// Every queue with jobs, by name.
    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        dispatch!(self, s => s.queue_stats().await)
    }

    /// Completes many runs in one statement, each only if its fence still matches. Returns the
    /// ids that were completed.
    pub(crate) async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.complete_many(runs).await)
    }

    /// For a `while_executing` job: takes its key for this run, or returns `false` when another
    /// running job of its kind holds it. With `hold` (the job's `unique_for`), a run that has
    /// held the key that long gives it up first.
    pub(crate) async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.take_running_key(id, fence, hold).await)
    }

    /// The recorded result of step `name` in `scope`, if it succeeded before.
    pub(crate) async fn step_result(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        dispatch!(self, s => s.step_result(scope, name).await)
    }

    /// Records a step's result; the first record of a step wins.
    pub(crate) async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.record_step(owner, name, result).await)
    }

    /// Cancels a job that has not started, or asks a running one to stop.
    pub(crate) async fn cancel(
        &self,
        id: JobId,
        error: &AttemptError,
    ) -> Result<Cancellation, Error> {
        dispatch!(self, s => s.cancel(id, error).await)
    }

    /// Takes up to `limit` deaths not delivered yet and not taken by another worker within
    /// `lease`, leasing each for `lease`; returns each with how many times it has been taken.
    pub(crate) async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        dispatch!(self, s => s.claim_deaths(limit, lease).await)
    }

    /// Marks job `id`'s death delivered: its handler will not be called again.
    pub(crate) async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        dispatch!(self, s => s.death_delivered(id).await)
    }

    /// Makes dead jobs matching `filter` available again, attempts reset, history kept; never
    /// one whose death was acted on (jobs that wait on it were cancelled or released).
    pub(crate) async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.retry_dead(filter).await)
    }

    /// How many dead jobs matching `filter` [`Backend::retry_dead`] refuses.
    pub(crate) async fn refused_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.refused_dead(filter).await)
    }

    /// Deletes dead jobs matching `filter`.
    pub(crate) async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        dispatch!(self, s => s.delete_dead(filter).await)
    }

    /// Takes (or keeps) the lock `name` for `holder` for `ttl`, unless another holder has it.
    pub(crate) async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.try_lock(name, holder, ttl).await)
    }

    /// Deletes up to `batch` jobs that retention lets go; returns how many.
    pub(crate) async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        dispatch!(self, s => s.prune(retention, batch).await)
    }

    /// Inserts jobs that are not unique, in one statement; returns their ids in order.
    pub(crate) async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        dispatch!(self, s => s.enqueue_many(jobs).await)
    }
}

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
    /// [`Backend::complete_and_claim`]). PostgreSQL works on two at once, one committing while
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
