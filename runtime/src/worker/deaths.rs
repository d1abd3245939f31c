//! The death notifier: hands each job death to the worker's death handler, several at once,
//! off the claim path, and at least once.
//!
//! Taking a death leases it for twice the handler's timeout; it is marked delivered only once its handler
//! returned `Ok`. A handler that fails, panics, times out, or whose worker dies meanwhile leaves
//! the death pending, and a worker with a handler (this one or another) takes it again once the
//! lease ran out, up to [`MAX_DELIVERIES`] times. Handlers must therefore tolerate a repeat.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{store_backoff, DeathHandler, Runner};
use crate::dead::Death;
use crate::error::Error;
use crate::info::JobInfo;
use crate::registry::panic_text;

/// Handlers running at once, per worker.
const DEATH_CONCURRENCY: usize = 8;
/// Calls after which a death whose handler keeps failing is given up (and logged).
const MAX_DELIVERIES: u32 = 10;

pub(super) async fn notify(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    let Some(handler) = runner.settings.on_death.clone() else {
        return Ok(());
    };
    let store = runner.client.store();
    let lease = death_lease(&runner);
    let mut handlers = JoinSet::new();
    let mut failures = 0u32;
    loop {
        let free = DEATH_CONCURRENCY - handlers.len();
        let mut taken = 0;
        if free > 0 {
            match store.claim_deaths(free, lease).await {
                Ok(deaths) => {
                    failures = 0;
                    taken = deaths.len();
                    for (job, deliveries) in deaths {
                        handlers.spawn(deliver(
                            Arc::clone(&runner),
                            handler.clone(),
                            job,
                            deliveries,
                        ));
                    }
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(worker = %runner.id, error = %err, "cannot take deaths for their handler");
                }
            }
        }
        if free > 0 && taken == free {
            // There may be more deaths waiting, and room for them once a handler ends.
            if let Some(ended) = handlers.join_next().await {
                log_task_end(&runner, ended);
            }
            continue;
        }
        let wait = if failures > 0 {
            store_backoff(failures)
        } else {
            runner.settings.poll_interval
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            Some(ended) = handlers.join_next(), if !handlers.is_empty() => {
                log_task_end(&runner, ended);
            }
            () = runner.deaths.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Delivers every death pending now, for a worker about to return from `run_until_idle`.
pub(super) async fn deliver_pending(runner: &Arc<Runner>) {
    let Some(handler) = runner.settings.on_death.clone() else {
        return;
    };
    loop {
        let deaths = match runner
            .client
            .store()
            .claim_deaths(DEATH_CONCURRENCY, death_lease(runner))
            .await
        {
            Ok(deaths) => deaths,
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "cannot take deaths for their handler");
                return;
            }
        };
        if deaths.is_empty() {
            return;
        }
        let mut handlers = JoinSet::new();
        for (job, deliveries) in deaths {
            handlers.spawn(deliver(
                Arc::clone(runner),
                handler.clone(),
                job,
                deliveries,
            ));
        }
        while handlers.join_next().await.is_some() {}
    }
}

/// How long a taken death stays this worker's; past it, any worker takes it again.
fn death_lease(runner: &Runner) -> Duration {
    runner.settings.death_handler_timeout.saturating_mul(2)
}

fn log_task_end(runner: &Runner, ended: Result<(), tokio::task::JoinError>) {
    if let Err(err) = ended {
        // `deliver` catches the handler's panics and logs each call; this is errand's own.
        tracing::error!(worker = %runner.id, error = %err, "a death delivery task failed; the death will be delivered again");
    }
}

/// Calls the handler for one death, and marks it delivered once the handler succeeded (or has
/// failed [`MAX_DELIVERIES`] times).
async fn deliver(runner: Arc<Runner>, handler: DeathHandler, job: JobInfo, deliveries: u32) {
    let (id, kind) = (job.id, job.kind.clone());
    let death = Death::of(job);
    let reason = death.reason;
    let timeout = runner.settings.death_handler_timeout;
    let called = tokio::time::timeout(timeout, Unwind(Box::pin(handler(death)))).await;
    let failure = match called {
        Ok(Ok(Ok(()))) => {
            tracing::info!(job.id = %id, job.kind = %kind, ?reason, deliveries, "death handler ran");
            None
        }
        Ok(Ok(Err(err))) => Some(format!("failed: {err}")),
        Ok(Err(panic)) => Some(format!("panicked: {panic}")),
        Err(_) => Some(format!("timed out after {timeout:?}")),
    };
    if let Some(failure) = &failure {
        if deliveries < MAX_DELIVERIES {
            tracing::error!(job.id = %id, job.kind = %kind, deliveries, "death handler {failure}; the job stays dead and the handler is called again once its lease of {:?} ran out", death_lease(&runner));
            return;
        }
        tracing::error!(job.id = %id, job.kind = %kind, deliveries, "death handler {failure}; giving up on this death after {MAX_DELIVERIES} calls (the job stays dead)");
    }
    for failures in 1..=5 {
        match runner.client.store().death_delivered(id).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(job.id = %id, error = %err, "cannot mark the death delivered; retrying");
                tokio::time::sleep(store_backoff(failures)).await;
            }
        }
    }
    tracing::error!(job.id = %id, "cannot mark the death delivered; its handler will be called again");
}

/// A future whose panics become an `Err` with the panic's message, so that a panicking handler
/// is logged like a failing one.
struct Unwind<F>(Pin<Box<F>>);

impl<F: Future> Future for Unwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_text(&*payload).to_owned())),
        }
    }
}
