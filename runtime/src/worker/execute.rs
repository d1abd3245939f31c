//! One run of one claimed job: decode, run under its timeout with panics caught, decide the
//! outcome, and record it (completions are left to the claim loop, which writes them in
//! batches).

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

use super::runs::{RunGuard, RunId};
use super::{store_backoff, Runner};
use crate::classify::Failure;
use crate::classify::FailureKind;
use crate::context::Context;
use crate::context::RunSignal;
use crate::info::AttemptError;
use crate::job::{JobId, JobState, Outcome, UniqueStrategy};
use crate::registry::{CatchPanic, Registration};
use crate::retry::{after_failure, AfterFailure, Backoff};
use crate::store::{Claimed, Finish, Startable};

/// How a job's task ended.
pub(super) enum TaskEnd {
    /// Completed; the claim loop writes it with the others that finished alongside it.
    Completed(PendingCompletion),
    /// Its outcome was written (or given up to the rescue); whether it died.
    Recorded { died: bool },
    /// Its lease surely ran out while it ran: it wrote nothing, and the rescue takes the job.
    Lost,
}

/// A completion waiting for the claim loop's next batch.
pub(super) struct PendingCompletion {
    pub(super) run: RunId,
    /// `ctx.complete_in` already completed it, with the job's own writes.
    pub(super) in_tx: bool,
}

/// How long a `while_executing` job waits (snoozed, spending no attempt) while another job with
/// its key runs.
const WHILE_EXECUTING_WAIT: Duration = Duration::from_millis(500);

impl Runner {
    /// Runs one claimed job and records its outcome. `guard` takes the run out of the registry
    /// when this task ends, unless the run completed and waits for the claim loop. A job that
    /// `waited` in the worker's buffer first checks that it may still start.
    pub(super) async fn execute(
        &self,
        job: Claimed,
        signal: RunSignal,
        guard: RunGuard,
        waited: bool,
    ) -> TaskEnd {
        let span = tracing::info_span!(
            "errand.job",
            job.id = %job.id,
            job.kind = %job.kind,
            job.queue = %job.queue,
            job.attempt = job.attempt,
            job.key = job.key.as_deref(),
            job.tags = tracing::field::Empty,
            job.meta = tracing::field::Empty,
            workflow.id = tracing::field::Empty,
            workflow.step = tracing::field::Empty,
        );
        // Only when set: most jobs have neither.
        if let Some(tags) = &job.tags {
            span.record("job.tags", tags.as_str());
        }
        if let Some(meta) = &job.meta {
            span.record("job.meta", meta.as_str());
        }
        crate::trace::link(&span, job.meta.as_deref());
        if let Some((workflow, step)) = &job.workflow {
            span.record("workflow.id", workflow.get());
            span.record("workflow.step", step.as_str());
        }
        let started = Instant::now();
        let registration = self.registry.get(job.kind.as_str()).copied();
        let ctx = Context::new(
            &job,
            span.clone(),
            self.client.store().clone(),
            signal.clone(),
        );
        // Stopped while it waited for a slot (see `Worker::prefetch`): a lost run writes
        // nothing, and a cancelled one is recorded cancelled; neither runs the job.
        let stopped_before_start = signal.is_stopped();
        if waited && !stopped_before_start {
            if let Some(end) = self.recheck(&job).instrument(span.clone()).await {
                return end;
            }
        }
        let result = if stopped_before_start {
            Ok(Outcome::Done)
        } else {
            crate::metrics::started(&job.kind, &job.queue, waited_since(job.run_at));
            self.run(&job, registration, ctx.clone())
                .instrument(span.clone())
                .await
        };
        if signal.is_lost() {
            span.in_scope(|| tracing::warn!("the job's lease ran out while it ran (the database was unreachable, or this worker stalled); its outcome is discarded and the rescue will retry it"));
            return TaskEnd::Lost;
        }
        let backoff = registration.map_or(Backoff::Exponential, |r| r.options.backoff);
        let cancelled = if stopped_before_start {
            Some("cancelled by the client before it started")
        } else if ctx.is_cancelled() {
            Some("cancelled by the client while running")
        } else {
            None
        };
        let ran = started.elapsed();
        if registration.is_some_and(|r| r.options.is_limited()) {
            // Its slot frees as its end is written, in the next exchange: that exchange's
            // limited claim looks again, rather than waiting for a poll (SQLite has no
            // notification that a slot freed).
            self.woken();
        }
        let finish = self.decide(
            &job,
            result,
            ran,
            &backoff,
            cancelled,
            !stopped_before_start,
        );
        crate::metrics::finished(&job.kind, &job.queue, finish.state, ran);
        span.in_scope(|| log_finish(&finish));
        if finish.state == JobState::Completed {
            // The claim loop writes completions in batches; the run stays registered (its lease
            // renewed) until then.
            guard.keep();
            return TaskEnd::Completed(PendingCompletion {
                run: job.run(),
                in_tx: ctx.completed_in_tx(),
            });
        }
        self.record(&job, &finish, ctx.completed_in_tx())
            .instrument(span)
            .await;
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
            // Workers claim only the kinds they know; this is a registry that changed under us.
            return Err(Failure::new(
                FailureKind::UnknownKind,
                format!("no job of kind `{}` is registered in this worker", job.kind),
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
                .take_running_key(
                    job.id,
                    job.fence,
                    registration.options.unique.and_then(|u| u.unique_for),
                )
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
        if registration.options.rate.is_some() {
            // The rate counts starts: the claim only reserved this job's start slot.
            if let Err(err) = self.client.store().mark_started(job.id, job.fence).await {
                tracing::warn!(error = %err, "cannot mark the start against the rate limit; its slot frees when the job ends");
            }
        }
        let future = (registration.start)(ctx, &job.args).map_err(|err| {
            Failure::new(
                FailureKind::Undecodable,
                format!("cannot decode the arguments of `{}`: {err}", job.kind),
            )
        })?;
        let future = CatchPanic(future);
        match job.timeout.or(registration.options.timeout) {
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
        cancelled: Option<&str>,
        ran_user_code: bool,
    ) -> Finish {
        let attempt_error = |kind, message| AttemptError {
            attempt: job.attempt,
            kind,
            message,
            // A placeholder: the store records its own clock's time when it writes the error.
            at: SystemTime::now(),
            duration: took,
            worker: self.id.clone(),
        };
        if let Some(message) = cancelled {
            // The client asked this run to stop: whatever it returned, it ends here. One that
            // never began gives its attempt back, so that the database does not take it as
            // having acted (a saga would undo it).
            let error = attempt_error(FailureKind::Cancelled, message.to_owned());
            return if ran_user_code {
                Finish::cancelled(error)
            } else {
                Finish::cancelled_unstarted(error)
            };
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

    /// For a job that waited in the buffer: whether its queue was paused (it goes back, no
    /// attempt spent), its deadline passed (cancelled as expired, no attempt spent) or its
    /// cancellation was asked (cancelled, no attempt spent) since its claim; `None` when it may start. A store that cannot answer lets it start, as the
    /// claim did.
    async fn recheck(&self, job: &Claimed) -> Option<TaskEnd> {
        match self.client.store().startable(job.id, job.fence).await {
            Ok(Startable::Yes | Startable::Lost) => None,
            Ok(Startable::Paused) => {
                tracing::info!("its queue was paused while it waited for a slot; putting it back");
                if let Err(err) = self.client.store().release(&self.id, &[job.id]).await {
                    tracing::warn!(error = %err, "putting the job back failed; the rescue will");
                }
                Some(TaskEnd::Recorded { died: false })
            }
            Ok(Startable::Cancelled) => {
                tracing::info!("its cancellation was asked while it waited for a slot; cancelling it before it begins");
                let error = AttemptError {
                    attempt: job.attempt,
                    kind: FailureKind::Cancelled,
                    message: "cancelled by the client before it started".to_owned(),
                    at: SystemTime::now(),
                    duration: Duration::ZERO,
                    worker: self.id.clone(),
                };
                self.record(job, &Finish::cancelled_unstarted(error), false)
                    .await;
                Some(TaskEnd::Recorded { died: false })
            }
            Ok(Startable::Expired) => {
                tracing::info!(
                    "its deadline passed while it waited for a slot; cancelling it as expired"
                );
                let error = AttemptError {
                    attempt: job.attempt,
                    kind: FailureKind::Expired,
                    message: "its deadline passed while it waited for a worker's slot".to_owned(),
                    at: SystemTime::now(),
                    duration: Duration::ZERO,
                    worker: self.id.clone(),
                };
                self.record(job, &Finish::expired(error), false).await;
                Some(TaskEnd::Recorded { died: false })
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot check that the job may still start; starting it");
                None
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
}

/// How long ago `run_at` (milliseconds since the epoch, by the store's clock) was, by this
/// machine's clock: zero if the clocks disagree the other way.
fn waited_since(run_at: i64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let due = Duration::from_millis(u64::try_from(run_at).unwrap_or(0));
    now.saturating_sub(due)
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

/// Writes the completions of runs that finished, in one statement: the claim loop's after
/// each claim, shutdown's last ones. Returns whether it could; on failure they stay pending
/// (their leases renewed) for the next try.
pub(super) async fn write_completions(
    runner: &Runner,
    completed: &mut Vec<PendingCompletion>,
) -> bool {
    match runner.client.store().complete_many(&runs(completed)).await {
        Ok(written) => {
            settle_completions(runner, completed, written);
            true
        }
        Err(err) => {
            tracing::warn!(worker = %runner.id, jobs = completed.len(), error = %err, "recording completions failed; will retry");
            false
        }
    }
}

/// The runs of pending completions, as the store takes them.
pub(super) fn runs(completed: &[PendingCompletion]) -> Vec<(JobId, i64)> {
    completed.iter().map(|c| (c.run.id, c.run.fence)).collect()
}

/// Takes written completions out of the registry; `written` are the ids the store completed,
/// and a run not among them had lost its job (unless `ctx.complete_in` completed it).
pub(super) fn settle_completions(
    runner: &Runner,
    completed: &mut Vec<PendingCompletion>,
    written: Vec<JobId>,
) {
    let written: HashSet<JobId> = written.into_iter().collect();
    for done in completed.drain(..) {
        runner.runs.remove(done.run);
        if !done.in_tx && !written.contains(&done.run.id) {
            tracing::warn!(job.id = %done.run.id, "job was taken from this worker (its lease ran out); this run's outcome is discarded");
        }
    }
}

/// How a job task ended; logs a task that failed outside its job (its run has left the registry
/// through its guard, so its lease runs out and the rescuer takes it).
pub(super) fn log_join(joined: Result<TaskEnd, tokio::task::JoinError>) -> Option<TaskEnd> {
    match joined {
        Ok(end) => Some(end),
        Err(err) => {
            // Job panics are caught inside the task; this is a panic outside the job's own
            // code (a value dropped after a timeout, or errand itself).
            tracing::error!(error = %err, "a job task failed outside the job; the job will be rescued when its lease runs out");
            None
        }
    }
}
