//! The store operations, one call each, for the model crate's conformance tests (cargo feature
//! `conformance`, not for users: nothing here is stable). `errand-model` drives a real store
//! and its spec with the same operations and compares every result and row.

use std::time::{Duration, SystemTime};

use crate::client::{Client, Config};
use crate::error::Error;
use crate::info::{to_millis, AttemptError};
use crate::job::{JobId, OnConflict, Unique, UniqueStrategy};
use crate::store::{Backend, Finish, Inserted, NewJob, RunAt, RunId};
use crate::FailureKind;

/// A job's row, as the spec has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowView {
    pub state: String,
    pub fence: i64,
    pub attempt: i64,
    pub holds_key: bool,
    pub running_key: bool,
    pub worker: Option<String>,
    /// `None`: no lease; `Some(true)`: live; `Some(false)`: run out.
    pub lease_live: Option<bool>,
    pub death_pending: bool,
    pub death_leased: bool,
    pub cancel_requested: bool,
}

/// A store under test.
pub struct ConformanceStore {
    client: Client,
    pub max_attempts: u32,
}

/// How a run ends.
#[derive(Clone, Copy, Debug)]
pub enum End {
    Complete,
    Retry,
    Die,
    Snooze,
    /// Cancelled as expired before it began (the worker's start check).
    Expired,
    /// Cancelled as asked before it began (the worker's start check).
    Unstarted,
}

const KIND: &str = "conformance";
/// The kinds of the workflow rules' conformance test: plain, limited (one running at a time,
/// one key: the kind), and fair by key.
const FLOW: &str = "flow";
const FLOW_LIMITED: &str = "flow_limited";
const FLOW_FAIR: &str = "flow_fair";
/// One start an hour: a window passes only when the test says so.
const FLOW_RATED: &str = "flow_rated";

/// Where a job of a flow group waits: on a stored job, or on an earlier job of its group.
#[derive(Clone, Copy, Debug)]
pub enum FlowParent {
    Stored(i64),
    InGroup(usize),
}

/// A job of the workflow rules' conformance test.
#[derive(Clone, Debug, Default)]
pub struct FlowNew {
    /// Queue `q0` or `q1`.
    pub queue: u8,
    /// Of the limited kind, stored with its limit's key (`true`) or without (before the limit).
    pub limited: Option<bool>,
    /// Of the rate-limited kind (one start an hour), with its key or without.
    pub rated: Option<bool>,
    /// Of the fair kind, with key `k<n>`, or without one (before `fair_by`).
    pub fair: Option<Option<u8>>,
    /// With a deadline (an hour away, until time passes it).
    pub deadline: bool,
    /// Of the plain kind, stored with the limit key and fair key `k0` of options since removed.
    pub stale_keys: bool,
    /// The jobs it waits on, each with its edge: `cancel`, `run`, `when_failed`, `when_ran` or
    /// `when_stopped` (the last three, for a saga's compensation).
    pub parents: Vec<(FlowParent, &'static str)>,
    /// Its step name in its group's workflow.
    pub step: Option<String>,
    /// Its priority: claims take jobs in its order.
    pub priority: u8,
}

/// A job's row, as the flow spec has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRowView {
    pub state: String,
    pub fence: i64,
    pub attempt: i64,
    pub worker: Option<String>,
    pub lease_live: Option<bool>,
    pub cancel_requested: bool,
    pub limit_key: bool,
    pub fair_key: Option<String>,
    pub expired: bool,
    pub waiting_on: i64,
    pub has_dependents: bool,
    /// Cancelled by the settling of a job it waited on (`settle_depth` > 0).
    pub by_cascade: bool,
}

/// The rows and the tables beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowView {
    pub rows: Vec<(i64, FlowRowView)>,
    /// The jobs holding the limit's running slots, ascending.
    pub slots: Vec<i64>,
    /// The jobs holding the rate's start slots, ascending, each with whether its run began.
    pub starts: Vec<(i64, bool)>,
    /// The fair keys served, ascending.
    pub turns: Vec<String>,
    /// The paused queues, ascending.
    pub paused: Vec<String>,
}
const KEY: &str = "the-key";
const RATE_WINDOW: Duration = Duration::from_secs(3600);

fn now_ms() -> i64 {
    to_millis(SystemTime::now())
}

impl ConformanceStore {
    /// Connects to `url` (SQLite, or PostgreSQL in `schema`), migrated and empty.
    pub async fn connect(
        url: &str,
        schema: &str,
        max_attempts: u32,
    ) -> Result<ConformanceStore, Error> {
        let client = Client::connect_with(url, Config::default().schema(schema)).await?;
        Ok(ConformanceStore {
            client,
            max_attempts,
        })
    }

    fn store(&self) -> &Backend {
        self.client.store()
    }

    /// Enqueues a job with the shared key under `strategy`; `Ok((id, new))`.
    pub async fn enqueue(&self, strategy: &str) -> Result<(i64, bool), Error> {
        let strategy = match strategy {
            "until_executing" => UniqueStrategy::UntilExecuting,
            "until_executed" => UniqueStrategy::UntilExecuted,
            _ => UniqueStrategy::WhileExecuting,
        };
        Ok(
            match self.store().enqueue(&self.job(Some(strategy))).await? {
                Inserted::New(id) => (id.get(), true),
                Inserted::Duplicate(id) | Inserted::Replaced(id) => (id.get(), false),
            },
        )
    }

    /// Deals with the slot at `at_ms` (milliseconds since the epoch) of a schedule named
    /// `name` that runs a job every minute, as a worker's scheduler does, registering the
    /// schedule first: whether this call enqueued the slot's job (one call per slot does,
    /// however many race for it).
    pub async fn take_schedule_slot(&self, name: &str, at_ms: i64) -> Result<bool, Error> {
        let schedule =
            crate::schedule::Periodic::of_job(name, "* * * * *", self.job(None)).check()?;
        self.store().register_schedule(&schedule.record()).await?;
        let slot = crate::store::Slot {
            at: at_ms,
            run: true,
        };
        Ok(self
            .store()
            .enqueue_slot(&schedule.name, slot, None, &schedule.job_for(at_ms))
            .await?
            .is_some())
    }

    /// The conformance job, unique under `strategy` when given.
    fn job(&self, strategy: Option<UniqueStrategy>) -> NewJob {
        NewJob {
            kind: KIND,
            queue: "default".to_owned(),
            args: "{}".to_owned(),
            priority: 5,
            max_attempts: self.max_attempts,
            run_at: RunAt::Now,
            key: strategy.map(|_| KEY.to_owned()),
            unique: strategy.map(|strategy| Unique {
                strategy,
                unique_for: None,
                on_conflict: OnConflict::Skip,
            }),
            tags: Vec::new(),
            meta: None,
            timeout_ms: None,
            expires: None,
            limit_key: None,
            fair_key: None,
            after: Vec::new(),
            on_dependency_failure: crate::job::OnDependencyFailure::Cancel,
            any_of: Vec::new(),
            workflow: None,
        }
    }

    /// Claims every available job for `worker`: `(id, fence, attempt)`.
    pub async fn claim(&self, worker: &str) -> Result<Vec<(i64, i64, u32)>, Error> {
        let lease = Duration::from_secs(3600);
        let claimed = self
            .store()
            .claim(&[("default", 100)], &[KIND], worker, lease)
            .await?;
        Ok(claimed
            .into_iter()
            .map(|c| (c.id.get(), c.fence, c.attempt))
            .collect())
    }

    /// Completes `runs` and claims every available job for `worker`, as one operation: the ids
    /// completed, sorted, and the runs claimed, `(id, fence, attempt)`.
    pub async fn complete_and_claim(
        &self,
        runs: &[(i64, i64)],
        worker: &str,
    ) -> Result<(Vec<i64>, Vec<(i64, i64, u32)>), Error> {
        let runs: Vec<(JobId, i64)> = runs.iter().map(|&(id, f)| (JobId::new(id), f)).collect();
        let lease = Duration::from_secs(3600);
        let exchange = self
            .store()
            .complete_and_claim(&runs, &[("default", 100)], &[KIND], worker, lease)
            .await?;
        let mut done: Vec<i64> = exchange.completed.into_iter().map(JobId::get).collect();
        done.sort_unstable();
        let claimed = exchange.claimed.into_iter();
        Ok((
            done,
            claimed.map(|c| (c.id.get(), c.fence, c.attempt)).collect(),
        ))
    }

    pub async fn promote(&self) -> Result<u64, Error> {
        Ok(self.store().promote(100).await?.count)
    }

    pub async fn take_running_key(&self, id: i64, fence: i64) -> Result<bool, Error> {
        self.store()
            .take_running_key(JobId::new(id), fence, None)
            .await
    }

    pub async fn finish(&self, id: i64, fence: i64, end: End) -> Result<bool, Error> {
        let error = || AttemptError {
            attempt: 0,
            kind: FailureKind::Transient,
            message: "conformance".to_owned(),
            at: SystemTime::now(),
            duration: Duration::ZERO,
            worker: "conformance".to_owned(),
        };
        let finish = match end {
            End::Complete => Finish::completed(),
            End::Retry => Finish::retry(Duration::ZERO, error()),
            End::Die => Finish::dead(error()),
            End::Snooze => Finish::snooze(Duration::ZERO),
            End::Expired => Finish::expired(AttemptError {
                kind: FailureKind::Expired,
                ..error()
            }),
            End::Unstarted => Finish::cancelled_unstarted(AttemptError {
                kind: FailureKind::Cancelled,
                ..error()
            }),
        };
        self.store().finish(JobId::new(id), fence, &finish).await
    }

    /// Completes a run in a transaction of the caller's own, as `Context::complete_in` does.
    pub async fn complete_in(&self, id: i64, fence: i64) -> Result<bool, Error> {
        match self.store() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => self.complete_committed::<sqlx::Sqlite>(id, fence).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => self.complete_committed::<sqlx::Postgres>(id, fence).await,
        }
    }

    /// [`ConformanceStore::complete_in`] on a transaction of database `DB`.
    async fn complete_committed<DB>(&self, id: i64, fence: i64) -> Result<bool, Error>
    where
        DB: crate::client::StoreDatabase,
        sqlx::Transaction<'static, DB>: crate::transaction::sealed::Sealed,
    {
        use crate::transaction::sealed::Sealed;
        let mut tx = self.client.begin::<DB>().await?;
        let done = tx.complete_job(JobId::new(id), fence).await?;
        tx.commit().await.map_err(|source| Error::Store {
            store: self.store().name(),
            op: "commit the caller's transaction".to_owned(),
            source,
        })?;
        Ok(done)
    }

    pub async fn complete_many(&self, runs: &[(i64, i64)]) -> Result<Vec<i64>, Error> {
        let runs: Vec<(JobId, i64)> = runs.iter().map(|&(id, f)| (JobId::new(id), f)).collect();
        let mut done: Vec<i64> = self
            .store()
            .complete_many(&runs)
            .await?
            .into_iter()
            .map(JobId::get)
            .collect();
        done.sort_unstable();
        Ok(done)
    }

    pub async fn renew(
        &self,
        worker: &str,
        runs: &[(i64, i64)],
    ) -> Result<Vec<(i64, i64, bool)>, Error> {
        let runs: Vec<RunId> = runs
            .iter()
            .map(|&(id, fence)| RunId {
                id: JobId::new(id),
                fence,
            })
            .collect();
        let mut renewed: Vec<(i64, i64, bool)> = self
            .store()
            .renew(worker, &runs, Duration::from_secs(3600))
            .await?
            .into_iter()
            .map(|(run, cancel)| (run.id.get(), run.fence, cancel))
            .collect();
        renewed.sort_unstable();
        Ok(renewed)
    }

    /// The ids rescued, ascending.
    pub async fn rescue(&self) -> Result<Vec<i64>, Error> {
        let mut ids: Vec<i64> = self
            .store()
            .rescue()
            .await?
            .into_iter()
            .map(JobId::get)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Time passes for every running job's lease: all have run out. Returns their ids.
    pub async fn expire_all_leases(&self) -> Result<Vec<i64>, Error> {
        let sql = "UPDATE errand_jobs SET lease_until = 1 WHERE state = 'running' RETURNING id";
        let failed = |source| Error::Store {
            store: "conformance",
            op: "set every lease in the past".to_owned(),
            source,
        };
        let mut ids: Vec<i64> = match self.store() {
            Backend::Sqlite(s) => sqlx::query_scalar(sql)
                .fetch_all(&s.pool)
                .await
                .map_err(failed)?,
            Backend::Postgres(s) => sqlx::query_scalar(sql)
                .fetch_all(&s.pool)
                .await
                .map_err(failed)?,
        };
        ids.sort_unstable();
        Ok(ids)
    }

    pub async fn release(&self, worker: &str, ids: &[i64]) -> Result<(), Error> {
        let ids: Vec<JobId> = ids.iter().map(|&id| JobId::new(id)).collect();
        self.store().release(worker, &ids).await
    }

    /// `"cancelled"`, `"requested"` or `"finished"`.
    pub async fn cancel(&self, id: i64) -> Result<&'static str, Error> {
        let error = AttemptError {
            attempt: 0,
            kind: FailureKind::Cancelled,
            message: "conformance".to_owned(),
            at: SystemTime::now(),
            duration: Duration::ZERO,
            worker: "conformance".to_owned(),
        };
        Ok(match self.store().cancel(JobId::new(id), &error).await? {
            crate::Cancellation::Cancelled => "cancelled",
            crate::Cancellation::Requested => "requested",
            _ => "finished",
        })
    }

    pub async fn claim_deaths(&self) -> Result<Vec<i64>, Error> {
        let deaths = self
            .store()
            .claim_deaths(100, Duration::from_secs(3600))
            .await?;
        let mut ids: Vec<i64> = deaths.into_iter().map(|(job, _)| job.id.get()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub async fn death_delivered(&self, id: i64) -> Result<(), Error> {
        self.store().death_delivered(JobId::new(id)).await
    }

    pub async fn retry_dead(&self, id: i64) -> Result<u64, Error> {
        let filter = crate::dead::DeadQuery {
            id: Some(JobId::new(id)),
            ..crate::dead::DeadQuery::default()
        };
        self.store().retry_dead(&filter).await
    }

    pub async fn step_result(&self) -> Result<bool, Error> {
        Ok(self.store().step_result(KEY, "step").await?.is_some())
    }

    pub async fn record_step(&self, id: i64) -> Result<(), Error> {
        let owner = crate::store::StepOwner {
            scope: KEY,
            kind: KIND,
            key: Some(KEY),
            job: JobId::new(id),
        };
        self.store().record_step(&owner, "step", "null").await
    }

    /// Time passes for job `id`'s lease: it has run out.
    pub async fn expire_lease(&self, id: i64) -> Result<(), Error> {
        self.set_past("lease_until", id).await
    }

    /// Time passes for job `id`'s death lease: it has run out.
    pub async fn expire_death_lease(&self, id: i64) -> Result<(), Error> {
        self.set_past("death_until", id).await
    }

    async fn set_past(&self, column: &'static str, id: i64) -> Result<(), Error> {
        // `column` is one of the literals above, never input.
        let sql =
            format!("UPDATE errand_jobs SET {column} = 1 WHERE id = $1 AND {column} IS NOT NULL");
        let failed = |source| Error::Store {
            store: "conformance",
            op: format!("set {column} in the past"),
            source,
        };
        match self.store() {
            Backend::Sqlite(s) => sqlx::query(&sql)
                .bind(id)
                .execute(&s.pool)
                .await
                .map(drop)
                .map_err(failed),
            Backend::Postgres(s) => sqlx::query(&sql)
                .bind(id)
                .execute(&s.pool)
                .await
                .map(drop)
                .map_err(failed),
        }
    }

    /// Every row, by id.
    pub async fn rows(&self) -> Result<Vec<(i64, RowView)>, Error> {
        let sql = "SELECT id, state, fence, CAST(attempt AS BIGINT), unique_key IS NOT NULL,
                          running_key IS NOT NULL, worker, lease_until, death_pending,
                          death_until, cancel_requested
                   FROM errand_jobs ORDER BY id";
        let failed = |source| Error::Store {
            store: "conformance",
            op: "read the rows".to_owned(),
            source,
        };
        type Raw = (
            i64,
            String,
            i64,
            i64,
            bool,
            bool,
            Option<String>,
            Option<i64>,
            bool,
            Option<i64>,
            bool,
        );
        let raw: Vec<Raw> = match self.store() {
            Backend::Sqlite(s) => sqlx::query_as(sql)
                .fetch_all(&s.pool)
                .await
                .map_err(failed)?,
            Backend::Postgres(s) => sqlx::query_as(sql)
                .fetch_all(&s.pool)
                .await
                .map_err(failed)?,
        };
        let now = now_ms();
        Ok(raw
            .into_iter()
            .map(|r| {
                let view = RowView {
                    state: r.1,
                    fence: r.2,
                    attempt: r.3,
                    holds_key: r.4,
                    running_key: r.5,
                    worker: r.6,
                    lease_live: r.7.map(|until| until >= now),
                    death_pending: r.8,
                    death_leased: r.9.is_some_and(|until| until >= now),
                    cancel_requested: r.10,
                };
                (r.0, view)
            })
            .collect())
    }

    /// Enqueues `group` in one transaction, in a workflow of kind `workflow` when given (its
    /// jobs named by their `step`): the ids, and the workflow's.
    pub async fn flow_enqueue(
        &self,
        group: &[FlowNew],
        workflow: Option<&'static str>,
    ) -> Result<(Vec<i64>, Option<i64>), Error> {
        match self.store() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => self.flow_insert::<sqlx::Sqlite>(group, workflow).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => self.flow_insert::<sqlx::Postgres>(group, workflow).await,
        }
    }

    async fn flow_insert<DB>(
        &self,
        group: &[FlowNew],
        workflow: Option<&'static str>,
    ) -> Result<(Vec<i64>, Option<i64>), Error>
    where
        DB: crate::client::StoreDatabase,
        sqlx::Transaction<'static, DB>: crate::transaction::sealed::Sealed,
    {
        use crate::transaction::sealed::Sealed;
        let mut tx = self.client.begin::<DB>().await?;
        let workflow_id = match workflow {
            Some(kind) => Some(tx.insert_workflow("flow", kind).await?),
            None => None,
        };
        let mut ids: Vec<i64> = Vec::with_capacity(group.len());
        for new in group {
            let job = self.flow_job(new, &ids, workflow_id);
            ids.push(tx.insert_job(&job).await?.id().get());
        }
        tx.commit().await.map_err(|source| Error::Store {
            store: self.store().name(),
            op: "commit the flow group".to_owned(),
            source,
        })?;
        Ok((ids, workflow_id))
    }

    /// The stored job of `new`, whose parents in its group have the ids `earlier`.
    fn flow_job(&self, new: &FlowNew, earlier: &[i64], workflow: Option<i64>) -> NewJob {
        let (kind, limit_key, fair_key) = match (new.limited, new.rated, new.fair) {
            (Some(keyed), _, _) => (FLOW_LIMITED, keyed.then(|| FLOW_LIMITED.to_owned()), None),
            (None, Some(keyed), _) => (FLOW_RATED, keyed.then(|| FLOW_RATED.to_owned()), None),
            (None, None, Some(key)) => (FLOW_FAIR, None, key.map(|k| format!("k{k}"))),
            (None, None, None) => (FLOW, None, None),
        };
        let parent = |p: &FlowParent| {
            JobId::new(match *p {
                FlowParent::Stored(id) => id,
                FlowParent::InGroup(index) => earlier[index],
            })
        };
        let (limit_key, fair_key) = if new.stale_keys {
            (Some(FLOW_LIMITED.to_owned()), Some("k0".to_owned()))
        } else {
            (limit_key, fair_key)
        };
        let any = new
            .parents
            .iter()
            .any(|(_, edge)| edge.starts_with("when_"));
        let mut job = NewJob {
            kind,
            queue: format!("q{}", new.queue),
            priority: new.priority,
            limit_key,
            fair_key,
            expires: new
                .deadline
                .then_some(crate::store::Expiry::After(Duration::from_secs(3600))),
            workflow: workflow.map(|id| (id, new.step.clone().unwrap_or_default())),
            ..self.job(None)
        };
        if any {
            job.any_of = new
                .parents
                .iter()
                .map(|(p, edge)| {
                    let release = match *edge {
                        "when_failed" => crate::store::Release::Failed,
                        "when_ran" => crate::store::Release::Ran,
                        _ => crate::store::Release::Stopped,
                    };
                    (parent(p), release)
                })
                .collect();
        } else {
            job.after = new.parents.iter().map(|(p, _)| parent(p)).collect();
            if new.parents.iter().any(|(_, edge)| *edge == "run") {
                job.on_dependency_failure = crate::job::OnDependencyFailure::Run;
            }
        }
        job
    }

    /// Adds a plain job to batch `batch`: its id, or `None` when the batch is closed.
    pub async fn flow_add_to_batch(&self, batch: i64) -> Result<Option<i64>, Error> {
        let job = self.flow_job(&FlowNew::default(), &[], None);
        let added = self
            .store()
            .add_to_batch(
                crate::info::WorkflowId::new(batch),
                job,
                &["on_success", "on_complete"],
            )
            .await;
        match added {
            Ok(id) => Ok(Some(id.get())),
            Err(Error::BatchClosed { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Claims for `worker` as its claim loop does: the plain jobs of both queues, the fair
    /// jobs of each (every key in turn), and the limited jobs (one running at a time); each
    /// `(id, fence, attempt)`, by id.
    pub async fn flow_claim(&self, worker: &str) -> Result<Vec<(i64, i64, u32)>, Error> {
        let lease = Duration::from_secs(3600);
        let store = self.store();
        let queues = [("q0", 100), ("q1", 100)];
        let mut claimed = store.claim(&queues, &[FLOW], worker, lease).await?;
        for (queue, _) in queues {
            claimed.extend(
                store
                    .claim_fair(queue, 100, &[FLOW_FAIR], worker, lease)
                    .await?,
            );
        }
        let limits = [
            crate::store::KindLimit {
                kind: FLOW_LIMITED,
                max_running: Some(1),
                rate: None,
            },
            crate::store::KindLimit {
                kind: FLOW_RATED,
                max_running: None,
                rate: Some(crate::job::Rate {
                    max: 1,
                    per: RATE_WINDOW,
                }),
            },
        ];
        claimed.extend(
            store
                .claim_limited(&["q0", "q1"], &limits, 100, worker, lease)
                .await?,
        );
        let mut runs: Vec<(i64, i64, u32)> = claimed
            .into_iter()
            .map(|c| (c.id.get(), c.fence, c.attempt))
            .collect();
        runs.sort_unstable();
        Ok(runs)
    }

    /// The worker's start check of a run that waited in its buffer: `yes`, `paused`,
    /// `expired`, `cancelled` or `lost`.
    pub async fn flow_startable(&self, id: i64, fence: i64) -> Result<&'static str, Error> {
        use crate::store::Startable;
        Ok(match self.store().startable(JobId::new(id), fence).await? {
            Startable::Yes => "yes",
            Startable::Paused => "paused",
            Startable::Expired => "expired",
            Startable::Cancelled => "cancelled",
            Startable::Lost => "lost",
        })
    }

    /// Marks the start of a rate-limited job's run, as its worker does when the run begins.
    pub async fn flow_mark_started(&self, id: i64, fence: i64) -> Result<(), Error> {
        self.store().mark_started(JobId::new(id), fence).await
    }

    /// Time passes the rate's window for every start slot taken.
    pub async fn pass_window(&self) -> Result<(), Error> {
        let sql = "UPDATE errand_limit_slots SET taken_at = 1 WHERE taken_at IS NOT NULL";
        let failed = |source| Error::Store {
            store: "conformance",
            op: "pass the rate's window".to_owned(),
            source,
        };
        match self.store() {
            Backend::Sqlite(s) => sqlx::query(sql)
                .execute(&s.pool)
                .await
                .map(drop)
                .map_err(failed),
            Backend::Postgres(s) => sqlx::query(sql)
                .execute(&s.pool)
                .await
                .map(drop)
                .map_err(failed),
        }
    }

    /// Pauses or resumes queue `q{queue}`: whether that changed it.
    pub async fn flow_set_paused(&self, queue: u8, paused: bool) -> Result<bool, Error> {
        self.store().set_paused(&format!("q{queue}"), paused).await
    }

    /// Time passes job `id`'s deadline.
    pub async fn pass_deadline(&self, id: i64) -> Result<(), Error> {
        self.set_past("expires_at", id).await
    }

    /// Gives job `id` the keys its kind has that it lacks, as a worker that knows the kind
    /// does: the limit's (`limited`) or fair key `k<fair>`.
    pub async fn flow_adopt(
        &self,
        id: i64,
        limit: Option<&'static str>,
        fair: Option<u8>,
    ) -> Result<u64, Error> {
        let keys = crate::store::Keys {
            limit: limit.map(|kind| match kind {
                "rated" => FLOW_RATED.to_owned(),
                _ => FLOW_LIMITED.to_owned(),
            }),
            fair: fair.map(|k| format!("k{k}")),
        };
        self.store().adopt(&[(JobId::new(id), keys)]).await
    }

    /// Every row, by id, with the columns of scheduling and settling; and the limit's held
    /// running slots (their jobs' ids), the fair keys served, and the paused queues.
    pub async fn flow_rows(&self) -> Result<FlowView, Error> {
        let failed = |source| Error::Store {
            store: "conformance",
            op: "read the flow rows".to_owned(),
            source,
        };
        let rows_sql = "SELECT id, state, fence, CAST(attempt AS BIGINT), worker, lease_until,
                               cancel_requested, limit_key IS NOT NULL, fair_key, expires_at,
                               CAST(waiting_on AS BIGINT), has_dependents, settle_depth > 0
                        FROM errand_jobs ORDER BY id";
        let slots_sql = "SELECT job_id FROM errand_limit_slots
                         WHERE purpose = 'running' AND job_id IS NOT NULL ORDER BY job_id";
        // A start slot is held until a window after its run began (`pass_window` moves that
        // time to the epoch).
        let starts_sql = "SELECT job_id, taken_at IS NOT NULL FROM errand_limit_slots
                          WHERE purpose = 'start' AND job_id IS NOT NULL
                            AND (taken_at IS NULL OR taken_at > 1) ORDER BY job_id";
        let turns_sql = "SELECT fair_key FROM errand_fair_turns ORDER BY fair_key";
        let paused_sql =
            "SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL ORDER BY queue";
        type Raw = (
            i64,
            String,
            i64,
            i64,
            Option<String>,
            Option<i64>,
            bool,
            bool,
            Option<String>,
            Option<i64>,
            i64,
            bool,
            bool,
        );
        // One snapshot for the four reads: other nodes may be claiming meanwhile.
        macro_rules! read {
            ($pool:expr, $snapshot:expr) => {{
                let mut tx = $pool.begin().await.map_err(failed)?;
                sqlx::query($snapshot)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                let rows: Vec<Raw> = sqlx::query_as(rows_sql)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
                let slots: Vec<i64> = sqlx::query_scalar(slots_sql)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
                let starts: Vec<(i64, bool)> = sqlx::query_as(starts_sql)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
                let turns: Vec<String> = sqlx::query_scalar(turns_sql)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
                let paused: Vec<String> = sqlx::query_scalar(paused_sql)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
                tx.commit().await.map_err(failed)?;
                (rows, slots, starts, turns, paused)
            }};
        }
        let (raw, slots, starts, turns, paused) = match self.store() {
            // A deferred transaction's first read fixes its snapshot.
            Backend::Sqlite(s) => read!(&s.pool, "SELECT 1"),
            Backend::Postgres(s) => read!(
                &s.pool,
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
            ),
        };
        let now = now_ms();
        let rows = raw
            .into_iter()
            .map(|r| {
                (
                    r.0,
                    FlowRowView {
                        state: r.1,
                        fence: r.2,
                        attempt: r.3,
                        worker: r.4,
                        lease_live: r.5.map(|until| until >= now),
                        cancel_requested: r.6,
                        limit_key: r.7,
                        fair_key: r.8,
                        expired: r.9.is_some_and(|at| at <= now),
                        waiting_on: r.10,
                        has_dependents: r.11,
                        by_cascade: r.12,
                    },
                )
            })
            .collect();
        Ok(FlowView {
            rows,
            slots,
            starts,
            turns,
            paused,
        })
    }

    /// Drops a PostgreSQL schema made for the test; nothing on SQLite.
    pub async fn drop_schema(&self, schema: &str) {
        if let Backend::Postgres(s) = self.store() {
            let drop: Result<String, _> =
                sqlx::query_scalar("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
                    .bind(schema)
                    .fetch_one(&s.pool)
                    .await;
            if let Ok(drop) = drop {
                let _ = sqlx::raw_sql(&drop).execute(&s.pool).await;
            }
        }
    }
}
