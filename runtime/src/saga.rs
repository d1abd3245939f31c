//! Sagas: steps that run in order, each with an optional compensating job that undoes it when a
//! later step dies.
//!
//! A saga is stored as a workflow whose compensations are enqueued with it, `pending`, and
//! released or cancelled by the database in the statement that finishes the job they wait on
//! (the trigger of migration 0014):
//!
//! - step `i + 1` waits on step `i`, as any dependency does: it is cancelled when step `i`
//!   dies;
//! - the compensation of step `i` is released as soon as one of the steps after it, up to the
//!   next step with a compensation, fails (dies, or is cancelled itself, not for a failure
//!   before it), or that next step's compensation has run (completed or died); it is
//!   cancelled, not needed, once none of these can happen.
//!
//! So when step `k` dies or is cancelled, the compensations of the steps before it run one
//! after another, the latest first, and those of the steps after it are cancelled; when every
//! step completes, every compensation is cancelled. No process decides it: a worker killed at any point leaves the
//! saga where the database has it.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::client::Client;
use crate::dead::Cancellation;
use crate::definition::Job;
use crate::error::Error;
use crate::info::JobInfo;
use crate::info::WorkflowId;
use crate::job::{JobId, JobState, OnDependencyFailure};
use crate::request::Request;
use crate::store::{NewJob, Release};
use crate::transaction::Transaction;

/// A job that names its compensation: `#[job(compensate = refund)]` on the job implements it,
/// after checking at compile time that `refund` is a job that takes the same arguments.
/// [`Saga::compensated_step`] uses it.
pub trait Compensated: Job {
    /// The job that undoes this one.
    type Compensation: Job;

    /// The compensation's request for these arguments: the same values.
    fn compensation(args: Self::Args) -> Request<Self::Compensation>;
}

/// Steps that run one after another; when one dies, the compensations of those that completed
/// run in reverse order.
///
/// ```no_run
/// # #[errand::job] async fn reserve_stock(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn release_stock(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn refund(order_id: i64, cents: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job(compensate = refund)] async fn charge(order_id: i64, cents: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn ship(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
/// let checkout = errand::Saga::new("checkout-42")
///     .step(reserve_stock::with(42), release_stock::with(42))
///     .compensated_step(charge::with(42, 1999)) // `refund(42, 1999)` undoes it
///     .step_without_compensation(ship::with(42))
///     .enqueue(&client)
///     .await?;
/// let picture = client.saga(checkout.id).await?;
/// # Ok(()) }
/// ```
///
/// - Steps run in the order they were added; each starts once the one before it completed.
/// - When a step dies (its retries spent, or a permanent error), the steps after it are
///   cancelled, and the compensations of the steps before it run, the latest first, each an
///   ordinary job with its own retries, key and death handlers. A compensation that dies does
///   not stop the ones before it: every completed step is compensated that can be; the saga
///   then ends [`SagaState::Failed`], and the death handlers hear of the compensation.
/// - The last step's compensation never runs (when the last step completes, the saga has
///   completed), so it is not stored.
/// - A step's job reads what an earlier step recorded with
///   [`Context::result_of`](crate::Context::result_of); a compensation reads what its step did
///   the same way. Steps are named by their job's kind (`charge`, or `charge#2` for a second
///   step of the same kind) and compensations `<step>.compensation`.
/// - [`Client::cancel_saga`] cancels the step the saga is at: the steps after it are
///   cancelled, and the completed ones are undone as for a death ([`SagaState::Cancelled`]).
///   ([`Client::cancel_workflow`] instead cancels every waiting job, compensations too.)
///
/// Enqueuing stores every step and compensation in one transaction, or in the caller's with
/// [`Saga::enqueue_tx`]. A saga of `n` steps stores at most `2n - 1` jobs.
#[must_use = "a saga does nothing until it is enqueued"]
pub struct Saga {
    name: String,
    steps: Vec<SagaPart>,
}

struct SagaPart {
    kind: &'static str,
    job: Result<NewJob, Error>,
    compensation: Option<Result<NewJob, Error>>,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<(&str, bool)> = self
            .steps
            .iter()
            .map(|s| (s.kind, s.compensation.is_some()))
            .collect();
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field("steps", &steps)
            .finish()
    }
}

/// How the database's trigger (migration 0014) begins the reason of a compensation it
/// cancelled because no step it could undo failed.
const NOT_NEEDED: &str = "not needed: ";

fn new_job<J: Job>(request: Request<J>) -> Result<NewJob, Error> {
    request.into_new_job(crate::Config::DEFAULT_MAX_ARGS_BYTES)
}

impl Saga {
    /// An empty saga; its name is stored with it, for people.
    pub fn new(name: impl Into<String>) -> Saga {
        Saga {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// The next step, and the job that undoes it if a later step dies.
    pub fn step<J: Job, C: Job>(self, request: Request<J>, compensation: Request<C>) -> Self {
        self.push(J::KIND, new_job(request), Some(new_job(compensation)))
    }

    /// The next step, undone by the compensation its job declares with
    /// `#[job(compensate = ..)]`, called with the same arguments.
    pub fn compensated_step<J: Compensated>(self, request: Request<J>) -> Self {
        // A copy of the arguments through their own encoding, which reads back what it wrote
        // (every `#[job]` argument type round-trips, as jobs are stored this way).
        let copy = serde_json::to_value(request.args())
            .and_then(serde_json::from_value::<J::Args>)
            .map_err(|e| Error::InvalidWorkflow {
                name: self.name.clone(),
                reason: format!("the arguments of step `{}` do not copy: {e}", J::KIND),
            });
        let compensation = copy.and_then(|args| new_job(J::compensation(args)));
        self.push(J::KIND, new_job(request), Some(compensation))
    }

    /// The next step, with nothing to undo it: an email, or a step whose effect stands.
    pub fn step_without_compensation<J: Job>(self, request: Request<J>) -> Self {
        self.push(J::KIND, new_job(request), None)
    }

    fn push(
        mut self,
        kind: &'static str,
        job: Result<NewJob, Error>,
        compensation: Option<Result<NewJob, Error>>,
    ) -> Self {
        self.steps.push(SagaPart {
            kind,
            job,
            compensation,
        });
        self
    }

    /// Stores the saga's steps and compensations in one transaction; see [`Saga`].
    pub async fn enqueue(self, client: &Client) -> Result<EnqueuedSaga, Error> {
        self.check()?;
        let enqueued = crate::store::with_write_transaction!(client.store(), tx => {
            self.insert(&mut tx).await
        })?;
        client.notify_enqueued();
        Ok(enqueued)
    }

    /// Stores the saga inside the caller's transaction (the transactional outbox): if it rolls
    /// back, the saga never existed.
    pub async fn enqueue_tx<T: Transaction>(self, tx: &mut T) -> Result<EnqueuedSaga, Error> {
        self.check()?;
        self.insert(tx).await
    }

    fn check(&self) -> Result<(), Error> {
        if self.steps.is_empty() {
            return Err(Error::InvalidWorkflow {
                name: self.name.clone(),
                reason: "it has no steps".to_owned(),
            });
        }
        Ok(())
    }

    /// Each step's name: its kind, `#2`, `#3` ... for repeats.
    fn names(&self) -> Vec<String> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        self.steps
            .iter()
            .map(|part| {
                let n = seen.entry(part.kind).or_insert(0);
                *n += 1;
                match *n {
                    1 => part.kind.to_owned(),
                    n => format!("{}#{n}", part.kind),
                }
            })
            .collect()
    }

    async fn insert<T: Transaction>(self, tx: &mut T) -> Result<EnqueuedSaga, Error> {
        let names = self.names();
        let id = tx.insert_workflow(&self.name, "saga").await?;
        let last = self.steps.len() - 1;
        let mut steps: Vec<JobId> = Vec::with_capacity(self.steps.len());
        let mut compensations: Vec<Option<NewJob>> = Vec::with_capacity(self.steps.len());
        for (i, part) in self.steps.into_iter().enumerate() {
            let mut job = part.job?;
            job.after = steps.last().copied().into_iter().collect();
            job.on_dependency_failure = OnDependencyFailure::Cancel;
            job.any_of.clear();
            job.workflow = Some((id, names[i].clone()));
            steps.push(tx.insert_job(&job).await?.id());
            // The last step's compensation would never run.
            let compensation = part.compensation.transpose()?.filter(|_| i < last);
            compensations.push(compensation);
        }
        // From the latest compensation back, so that each can wait on the one after it.
        let mut undone: Vec<(String, JobId)> = Vec::new();
        let mut next: Option<(usize, JobId)> = None;
        for i in (0..last).rev() {
            let Some(mut job) = compensations[i].take() else {
                continue;
            };
            // Released by a death of any step after this one up to the next compensated step
            // (or the last), or by that step's compensation having run.
            let through = next.map_or(last, |(j, _)| j);
            // And by this step itself, cancelled while it ran: it may have acted.
            job.any_of = steps[i + 1..=through]
                .iter()
                .map(|step| (*step, Release::Failed))
                .chain(next.map(|(_, c)| (c, Release::Ran)))
                .chain([(steps[i], Release::Stopped)])
                .collect();
            job.after.clear();
            job.workflow = Some((id, format!("{}.compensation", names[i])));
            let compensation = tx.insert_job(&job).await?.id();
            undone.push((names[i].clone(), compensation));
            next = Some((i, compensation));
        }
        let steps = names
            .into_iter()
            .zip(steps)
            .map(|(name, job)| {
                let compensation = undone.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
                EnqueuedSagaStep {
                    name,
                    job,
                    compensation,
                }
            })
            .collect();
        Ok(EnqueuedSaga {
            id: WorkflowId::new(id),
            steps,
        })
    }
}

/// What [`Saga::enqueue`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueuedSaga {
    /// The saga's id, for [`Client::saga`].
    pub id: WorkflowId,
    /// Its steps, in order.
    pub steps: Vec<EnqueuedSagaStep>,
}

/// One step of an [`EnqueuedSaga`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueuedSagaStep {
    /// The step's name: its job's kind (`#2` ... for repeats).
    pub name: String,
    /// Its job.
    pub job: JobId,
    /// Its compensation's job, `pending` until needed; `None` for a step without one, and for
    /// the last step.
    pub compensation: Option<JobId>,
}

/// Where a saga stands, from its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SagaState {
    /// No step has died, and some have not finished.
    Running,
    /// A step died or was cancelled, and compensations are running or waiting to.
    Compensating,
    /// Every step completed.
    Completed,
    /// A step died, and every compensation that was needed completed.
    Compensated,
    /// A step died or was cancelled, and a compensation died (or was cancelled by someone,
    /// as [`Client::cancel_workflow`] does): something is left to undo by hand.
    Failed,
    /// A step was cancelled ([`Client::cancel_saga`]), and every compensation that was needed
    /// completed.
    Cancelled,
}

/// One step of a saga, from [`Client::saga`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SagaStep {
    /// The step's name.
    pub name: String,
    /// Its job: state, attempts, errors.
    pub job: JobInfo,
    /// Its compensation's job; cancelled (not needed) unless a later step died.
    pub compensation: Option<JobInfo>,
}

/// A whole saga, from [`Client::saga`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SagaInfo {
    /// Its id.
    pub id: WorkflowId,
    /// The name it was given.
    pub name: String,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// Where it stands.
    pub state: SagaState,
    /// Its steps, in order.
    pub steps: Vec<SagaStep>,
}

impl SagaInfo {
    /// Step `name`.
    pub fn step(&self, name: &str) -> Option<&SagaStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The compensations that ran (completed or died), in the order they ran.
    pub fn compensations_run(&self) -> Vec<&JobInfo> {
        let mut run: Vec<(usize, &JobInfo)> = self
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.compensation.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| matches!(c.state, JobState::Completed | JobState::Dead))
            .collect();
        // Compensations run the latest step's first, each released by the one after it: two
        // that finished within one millisecond ran in that order.
        run.sort_by_key(|(i, c)| (c.finished_at, std::cmp::Reverse(*i)));
        run.into_iter().map(|(_, c)| c).collect()
    }

    fn state_of(steps: &[SagaStep]) -> SagaState {
        // A compensation that died, or was cancelled by someone (not as not needed), left its
        // step as it was.
        let undone = |c: &JobInfo| match c.state {
            JobState::Dead => true,
            JobState::Cancelled => !c
                .errors
                .last()
                .is_some_and(|e| e.message.starts_with(NOT_NEEDED)),
            _ => false,
        };
        // Steps run in order: the saga stopped at its first step that did not complete, if that
        // one died or was cancelled (the steps after it were cancelled with it).
        let stopped = steps
            .iter()
            .find(|s| s.job.state != JobState::Completed)
            .map(|s| s.job.state);
        let compensations = || steps.iter().filter_map(|s| s.compensation.as_ref());
        match stopped {
            None => SagaState::Completed,
            Some(JobState::Dead | JobState::Cancelled) => {
                if compensations().any(|c| !c.state.is_final()) {
                    SagaState::Compensating
                } else if compensations().any(undone) {
                    SagaState::Failed
                } else if stopped == Some(JobState::Dead) {
                    SagaState::Compensated
                } else {
                    SagaState::Cancelled
                }
            }
            Some(_) => SagaState::Running,
        }
    }
}

/// Sagas (with [`Saga`]).
impl Client {
    /// Saga `id` with every step and compensation, or `None` if no saga has that id.
    pub async fn saga(&self, id: WorkflowId) -> Result<Option<SagaInfo>, Error> {
        let Some(workflow) = self.store().workflow(id).await? else {
            return Ok(None);
        };
        if workflow.kind != "saga" {
            return Ok(None);
        }
        let mut compensations: HashMap<String, JobInfo> = HashMap::new();
        let mut steps = Vec::new();
        for step in workflow.steps {
            match step.name.strip_suffix(".compensation") {
                Some(undone) => {
                    compensations.insert(undone.to_owned(), step.job);
                }
                None => steps.push((step.name, step.job)),
            }
        }
        let steps: Vec<SagaStep> = steps
            .into_iter()
            .map(|(name, job)| SagaStep {
                compensation: compensations.remove(&name),
                name,
                job,
            })
            .collect();
        Ok(Some(SagaInfo {
            id,
            name: workflow.name,
            created_at: workflow.created_at,
            state: SagaInfo::state_of(&steps),
            steps,
        }))
    }

    /// Cancels saga `id` where it stands: the step it is at is cancelled, the steps after it
    /// with it, and the steps that completed are undone by their compensations, the latest
    /// first, as when a step dies. Answers as [`Client::cancel`] does for the step it is at:
    ///
    /// - [`Cancellation::Cancelled`]: the step was waiting; it will not run.
    /// - [`Cancellation::Requested`]: the step is running; it is told
    ///   ([`Context::is_cancelled`](crate::Context::is_cancelled)), and ends cancelled whatever
    ///   it returns. It may have acted before it stopped, so its own compensation undoes it
    ///   too. The saga ends [`SagaState::Cancelled`], never `Completed`.
    /// - [`Cancellation::AlreadyFinished`]: too late; the saga had ended, in the state of the
    ///   step it ended at (`Completed` when every step did).
    /// - [`Cancellation::NotFound`]: no saga has this id.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client, id: errand::WorkflowId) -> Result<(), errand::Error> {
    /// use errand::Cancellation;
    /// match client.cancel_saga(id).await? {
    ///     Cancellation::Cancelled | Cancellation::Requested => {
    ///         // the customer cancelled the order: charged payments are refunded, stock released
    ///     }
    ///     _ => { /* too late: the order shipped */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_saga(&self, id: WorkflowId) -> Result<Cancellation, Error> {
        // The step it is at may complete meanwhile: then the next one is, a few times at most.
        loop {
            let Some(saga) = self.saga(id).await? else {
                return Ok(Cancellation::NotFound);
            };
            let Some(step) = saga.steps.iter().find(|s| !s.job.state.is_final()) else {
                let ended = saga
                    .steps
                    .iter()
                    .find(|s| s.job.state != JobState::Completed)
                    .map_or(JobState::Completed, |s| s.job.state);
                return Ok(Cancellation::AlreadyFinished(ended));
            };
            match self.cancel(step.job.id).await? {
                answer @ (Cancellation::Cancelled | Cancellation::Requested) => return Ok(answer),
                Cancellation::AlreadyFinished(_) | Cancellation::NotFound => continue,
            }
        }
    }
}
