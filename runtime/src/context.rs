//! What a running job knows about itself: [`Context`].

use std::sync::Arc;

use crate::job::JobId;
use crate::store::Claimed;

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
}

impl Context {
    pub(crate) fn new(job: &Claimed, span: tracing::Span) -> Context {
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
}
