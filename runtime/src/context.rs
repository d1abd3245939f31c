//! What a running job knows about itself: [`Context`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::info::WorkflowId;
use crate::job::JobId;
use crate::store::{Backend, Claimed, StepOwner};
use crate::transaction::Transaction;

/// The running job's identity, handed to a `#[job]` function that takes `ctx: &Context` first.
///
/// ```
/// use errand::{job, Context};
///
/// #[job(key = "charge-<order_id>")]
/// async fn charge_order(ctx: &Context, order_id: i64) -> Result<(), std::io::Error> {
///     // "charge-42" for order 42, on every attempt: pass it to the payment API.
///     let _key = ctx.idempotency_key();
///     tracing::info!(parent: ctx.span(), attempt = ctx.attempt(), "charging");
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: JobId,
    kind: String,
    queue: String,
    attempt: u32,
    max_attempts: u32,
    idempotency_key: String,
    span: tracing::Span,
    fence: i64,
    completed_in_tx: AtomicBool,
    /// Whether the idempotency key is the job's rendered key (not the `<kind>-<id>` stand-in).
    has_key: bool,
    /// The workflow, saga or batch it is a step of, and the step's name.
    workflow: Option<(WorkflowId, String)>,
    store: Backend,
    signal: RunSignal,
}

impl Context {
    pub(crate) fn new(
        job: &Claimed,
        span: tracing::Span,
        store: Backend,
        signal: RunSignal,
    ) -> Context {
        // A job without a key template still gets a key that is the same on every attempt.
        let idempotency_key = job
            .key
            .clone()
            .unwrap_or_else(|| format!("{}-{}", job.kind, job.id));
        Context {
            inner: Arc::new(Inner {
                id: job.id,
                kind: job.kind.clone(),
                queue: job.queue.clone(),
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                idempotency_key,
                span,
                fence: job.fence,
                completed_in_tx: AtomicBool::new(false),
                has_key: job.key.is_some(),
                workflow: job.workflow.clone(),
                store,
                signal,
            }),
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.inner.id
    }

    /// The job's kind name.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The queue the job was claimed from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// This attempt's number: 1 on the first run.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The most attempts the job gets: the first plus its retries.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// Whether a transient failure of this attempt would make the job dead.
    pub fn is_last_attempt(&self) -> bool {
        self.inner.attempt >= self.inner.max_attempts
    }

    /// The job's idempotency key: its rendered `key` template, or `"<kind>-<id>"` for a job
    /// without one. The same on every attempt; pass it to external APIs that deduplicate.
    pub fn idempotency_key(&self) -> &str {
        &self.inner.idempotency_key
    }

    /// The tracing span of this run (job id, kind, queue, attempt, key).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Whether this run should stop: [`Client::cancel`](crate::Client::cancel) asked it to (the
    /// job becomes `cancelled` when it returns, whatever it returns), or its worker could not
    /// renew its lease for a whole lease (another worker may run the job now; whatever this run
    /// returns is discarded). Either way, stop early and return.
    pub fn is_cancelled(&self) -> bool {
        self.inner.signal.is_stopped()
    }

    /// Resolves when this run should stop (see [`Context::is_cancelled`]). Workers notice a
    /// client's request when they renew leases: within a third of the lease.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// #[errand::job]
    /// async fn export(ctx: &errand::Context, report_id: i64) -> Result<(), std::io::Error> {
    ///     tokio::select! {
    ///         () = ctx.cancelled() => Ok(()), // the job ends as `cancelled`
    ///         () = tokio::time::sleep(Duration::from_secs(report_id as u64)) => Ok(()),
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.inner.signal.stopped().await
    }

    /// Marks this job completed inside `tx`, the transaction that holds the job's own database
    /// writes: they commit together or not at all. If the job then returns `Ok`, the worker has
    /// nothing left to record; if `tx` rolls back, the job's own return decides as usual.
    ///
    /// Use `?` on it: on any error, the writes must not commit. It fails with
    /// [`Error::NotRunning`] if this run no longer owns the job (its lease ran out and another
    /// worker took it; this run's outcome is then discarded), and with a store error if `tx`
    /// cannot reach errand's tables.
    ///
    /// It locks the job's row until `tx` ends; keep `tx` shorter than the lease. It expects
    /// READ COMMITTED: under REPEATABLE READ or SERIALIZABLE, a lease renewal after `tx`'s
    /// first statement makes it fail with a serialization error, and the job retries.
    ///
    /// ```no_run
    /// # use errand::{job, Context, JobError};
    /// # static POOL: std::sync::OnceLock<sqlx::PgPool> = std::sync::OnceLock::new();
    /// # fn pool() -> &'static sqlx::PgPool { POOL.get().expect("set at start") }
    /// #[derive(Debug, thiserror::Error, JobError)]
    /// enum PayError {
    ///     #[error(transparent)]
    ///     #[transient]
    ///     Db(#[from] sqlx::Error),
    ///     #[error(transparent)]
    ///     #[transient]
    ///     Errand(#[from] errand::Error),
    /// }
    ///
    /// #[job]
    /// async fn mark_paid(ctx: &Context, order_id: i64) -> Result<(), PayError> {
    ///     let mut tx = pool().begin().await?;
    ///     sqlx::query("UPDATE orders SET paid = true WHERE id = $1").bind(order_id).execute(&mut *tx).await?;
    ///     ctx.complete_in(&mut tx).await?; // on any error, `tx` rolls back and the job fails
    ///     tx.commit().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn complete_in<T: Transaction>(&self, tx: &mut T) -> Result<(), Error> {
        if self.inner.signal.is_lost() {
            // The lease surely ran out: another worker may own the job now.
            return Err(Error::NotRunning { id: self.inner.id });
        }
        if tx.complete_job(self.inner.id, self.inner.fence).await? {
            self.inner.completed_in_tx.store(true, Ordering::SeqCst);
            Ok(())
        } else {
            Err(Error::NotRunning { id: self.inner.id })
        }
    }

    /// Where step results are recorded: per job key, or per job for a job without one.
    fn ledger_scope(&self) -> String {
        let inner = &self.inner;
        let key = inner.has_key.then_some(inner.idempotency_key.as_str());
        crate::store::ledger_scope(&inner.kind, key, inner.id)
    }

    /// The store the job runs on.
    pub(crate) fn store(&self) -> &Backend {
        &self.inner.store
    }

    pub(crate) fn completed_in_tx(&self) -> bool {
        self.inner.completed_in_tx.load(Ordering::SeqCst)
    }

    /// The workflow, saga or batch this job is a step of, with the step's name: `None` for a
    /// job enqueued on its own.
    pub fn workflow(&self) -> Option<(WorkflowId, &str)> {
        let (id, step) = self.inner.workflow.as_ref()?;
        Some((*id, step.as_str()))
    }

    /// The result that step `step` of this job's workflow or saga recorded as `name` with
    /// [`Context::step`]: how a later step reads what an earlier one did (a refund reads the
    /// charge's id). `Ok(None)` when that step recorded no such result (it has not run it yet,
    /// or it never will); an error when this job is not part of a workflow, when no step is
    /// named `step`, or when the result does not decode as `T`.
    ///
    /// ```no_run
    /// use errand::{job, Context};
    ///
    /// #[derive(Debug, thiserror::Error, errand::JobError)]
    /// enum PayError {
    ///     #[error(transparent)]
    ///     #[transient]
    ///     Errand(#[from] errand::Error),
    /// }
    ///
    /// # async fn gateway_charge(_order: i64) -> Result<String, PayError> { Ok("ch_1".into()) }
    /// # async fn gateway_refund(_charge: &str) -> Result<(), PayError> { Ok(()) }
    /// #[job]
    /// async fn charge(ctx: &Context, order_id: i64) -> Result<(), PayError> {
    ///     ctx.step("gateway", gateway_charge(order_id)).await?;
    ///     Ok(())
    /// }
    ///
    /// #[job]
    /// async fn refund(ctx: &Context, order_id: i64) -> Result<(), PayError> {
    ///     // Step `charge` of the same saga recorded the charge's id as `gateway`.
    ///     if let Some(charge_id) = ctx.result_of::<String>("charge", "gateway").await? {
    ///         gateway_refund(&charge_id).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn result_of<T: serde::de::DeserializeOwned>(
        &self,
        step: &str,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let Some((workflow, _)) = self.workflow() else {
            return Err(Error::NotInWorkflow { id: self.inner.id });
        };
        let Some(scope) = self.inner.store.step_scope(workflow, step).await? else {
            return Err(Error::UnknownStep {
                workflow,
                step: step.to_owned(),
            });
        };
        let Some(recorded) = self.inner.store.step_result(&scope, name).await? else {
            return Ok(None);
        };
        serde_json::from_str(&recorded)
            .map(Some)
            .map_err(|e| Error::Step {
                step: name.to_owned(),
                scope,
                reason: format!("its recorded result does not decode: {e}"),
            })
    }

    /// A stable key for step `name` of this job, `"<idempotency key>/<name>"`: pass it to the
    /// external API the step calls, so that the API itself drops a repeat (see [`Context::step`]).
    pub fn step_key(&self, name: &str) -> String {
        format!("{}/{name}", self.inner.idempotency_key)
    }

    /// Runs `effect` once per job key: the first time it succeeds, its result is recorded in the
    /// effect ledger; when the job runs again (a retry, a rescue after a crash, a duplicate with
    /// the same key), the recorded result comes back and `effect` does not run.
    ///
    /// ```no_run
    /// use errand::{job, Context};
    ///
    /// #[derive(Debug, thiserror::Error, errand::JobError)]
    /// enum ChargeError {
    ///     #[error("gateway timed out")]
    ///     #[transient]
    ///     Timeout,
    ///     #[error(transparent)]
    ///     #[transient]
    ///     Errand(#[from] errand::Error),
    /// }
    ///
    /// # async fn gateway_charge(_order: i64, _cents: i64, _key: &str) -> Result<String, ChargeError> { Ok("ch_1".into()) }
    /// #[job(key = "charge-<order_id>")]
    /// async fn charge_order(ctx: &Context, order_id: i64, cents: i64) -> Result<(), ChargeError> {
    ///     let key = ctx.step_key("charge"); // "charge-42/charge"
    ///     let charge_id: String = ctx.step("charge", gateway_charge(order_id, cents, &key)).await?;
    ///     ctx.step("receipt", async { Ok::<_, ChargeError>(format!("receipt for {charge_id}")) }).await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # What is guaranteed
    ///
    /// - A step whose result was recorded never runs again for the same job key (or, for a job
    ///   without a key, the same job).
    /// - A step that fails records nothing, and runs again on the next attempt.
    /// - A crash after the effect happened but before its result was recorded (a narrow window:
    ///   one write) runs the step again. Pass [`Context::step_key`] to the external API so that
    ///   it drops the repeat; with such an API, each effect happens once.
    /// - Database writes need no ledger: make them in one transaction with
    ///   [`Context::complete_in`], and they commit exactly when the job completes.
    ///
    /// # What is not
    ///
    /// - Two runs of one key at the same moment (two jobs with the same key, both running) can
    ///   both run a step that neither has recorded yet: the ledger guards re-runs, not
    ///   concurrent runs. Make such jobs `unique` (`until_executed`, or `while_executing`), so
    ///   that one key runs once at a time.
    /// - An external API that ignores idempotency keys can see the effect twice in the window
    ///   above; nothing on this side of the network can prevent that.
    /// - Results are stored as JSON: a step's result type must read back what it wrote.
    pub async fn step<T, E, F>(&self, name: &str, effect: F) -> Result<T, E>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let scope = &self.ledger_scope();
        let step_error = |reason: String| Error::Step {
            step: name.to_owned(),
            scope: scope.clone(),
            reason,
        };
        if let Some(recorded) = self.inner.store.step_result(scope, name).await? {
            return serde_json::from_str(&recorded).map_err(|e| {
                step_error(format!("its recorded result does not decode: {e}")).into()
            });
        }
        let value = effect.await?;
        let json = serde_json::to_string(&value)
            .map_err(|e| step_error(format!("its result does not encode: {e}")))?;
        let inner = &self.inner;
        let owner = StepOwner {
            scope,
            kind: &inner.kind,
            key: inner.has_key.then_some(inner.idempotency_key.as_str()),
            job: inner.id,
        };
        inner.store.record_step(&owner, name, &json).await?;
        Ok(value)
    }
}

/// What a running job's [`Context`](crate::Context) watches: a token that fires when the run
/// should stop (the client cancelled it, or its lease surely ran out), and which of the two.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunSignal {
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
}

impl RunSignal {
    /// Whether the run should stop, for either reason.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when the run should stop.
    pub(crate) async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// Whether the run's lease surely ran out: another worker may own the job now, so this run
    /// must write nothing more.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub(crate) fn cancel(&self) {
        self.stop.cancel();
    }

    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.stop.cancel();
    }
}
