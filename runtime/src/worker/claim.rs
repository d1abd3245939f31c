//! The claim loop: claims jobs for free slots, spawns a task per run, and writes the completions
//! of runs that finished. Nothing else awaits in it: leases, rescue, pruning and death handlers
//! are other services' work, so a slow one never delays a claim or a renewal.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::execute::{log_join, runs, settle_completions, PendingCompletion, TaskEnd};
use super::runs::RunGuard;
use super::{store_backoff, Runner, MAX_PREFETCH};
use crate::context::RunSignal;
use crate::error::Error;
use crate::job::JobId;
use crate::store::{Claimed, Wake};

/// A claimed job that waited this long in the buffer checks, as it starts, that it may still
/// (one query). Sooner, a pause or a deadline that came meanwhile is no different from one
/// that came just after the job started: the hot path of a busy worker, whose jobs wait in the
/// buffer for a moment, pays nothing.
const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// The longest a free slot waits for others to free up before the worker claims for it.
const CLAIM_WINDOW: Duration = Duration::from_millis(2);

/// How far ahead a worker that sizes its buffer itself claims: what its slots will finish in
/// this long at the pace of its recent runs.
const HORIZON: Duration = Duration::from_millis(100);

/// How long the worker's recent runs took: a moving average, each run weighing this much.
const PACE_WEIGHT: f64 = 0.1;

/// The pace of a worker's runs, which sizes its buffer when it was not given one.
#[derive(Debug, Default)]
struct Pace {
    /// The average run's length in seconds; `None` until a run finished.
    mean: std::sync::Mutex<Option<f64>>,
}

impl Pace {
    /// Takes in a run that took `took`.
    fn record(&self, took: Duration) {
        let took = took.as_secs_f64();
        let mut mean = self.mean.lock().unwrap_or_else(|e| e.into_inner());
        *mean = Some(mean.map_or(took, |m| m + (took - m) * PACE_WEIGHT));
    }

    /// How many jobs `slots` slots finish within [`HORIZON`] at this pace, up to
    /// [`MAX_PREFETCH`]: none before a run finished, or when a run takes longer than that.
    fn buffer(&self, slots: usize) -> usize {
        let mean = *self.mean.lock().unwrap_or_else(|e| e.into_inner());
        match mean {
            Some(mean) if mean > 0.0 => {
                let ahead = slots as f64 * HORIZON.as_secs_f64() / mean;
                // Saturating: a float past the range casts to the maximum.
                (ahead.floor() as usize).min(MAX_PREFETCH)
            }
            Some(_) => MAX_PREFETCH,
            None => 0,
        }
    }
}

pub(super) struct ClaimLoop {
    runner: Arc<Runner>,
    tasks: JoinSet<TaskEnd>,
    /// Runs that completed and whose completion is not written yet.
    completed: Vec<PendingCompletion>,
    /// Jobs claimed beyond the free slots (at most `prefetch`), waiting for a slot. Each is
    /// registered as a run from its claim: its lease is renewed, and shutdown puts it back.
    /// With when its claim was sent: a job that waited longer than [`RECHECK_AFTER`] checks,
    /// as it starts, that its queue was not paused and its deadline did not pass meanwhile.
    ready: VecDeque<(Claimed, RunSignal, Instant)>,
    /// How long runs take: unless the worker was told its buffer, it is sized by this.
    pace: Arc<Pace>,
}

/// An exchange on its way: the completions it writes, and what it claimed.
type InFlight = Pin<Box<dyn Future<Output = Exchanged> + Send>>;

/// The most exchanges on their way at once, each on its own connection: while one waits for
/// its commit, the database works on the other. The store may allow fewer.
const MAX_IN_FLIGHT: usize = 2;

/// What an exchange did.
struct Exchanged {
    /// The completions it carried: written, or still pending if it failed.
    done: Vec<PendingCompletion>,
    /// How many jobs it asked for.
    room: usize,
    /// When it was sent.
    sent_at: Instant,
    /// What its promotion of due jobs found, if it promoted.
    promoted: Option<Promotion>,
    result: Result<(Vec<JobId>, Vec<Claimed>), Error>,
}

impl ClaimLoop {
    pub(super) fn new(runner: Arc<Runner>) -> ClaimLoop {
        ClaimLoop {
            runner,
            tasks: JoinSet::new(),
            completed: Vec::new(),
            ready: VecDeque::new(),
            pace: Arc::default(),
        }
    }

    /// Claims and runs jobs until `shutdown` fires (or, with `until_idle`, until nothing is
    /// running and nothing is due), then shuts down gracefully. Returns how many runs it made.
    ///
    /// Exchanges with the store (the completions of runs that finished, and a claim for the
    /// free places) go on their way while jobs keep starting from the buffer and finishing,
    /// up to [`MAX_IN_FLIGHT`] at once: the next exchange carries what finished meanwhile.
    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
        until_idle: bool,
    ) -> Result<usize, Error> {
        let runner = Arc::clone(&self.runner);
        let settings = &runner.settings;
        let mut enqueued = runner.client.subscribe_enqueued();
        let mut scheduled = runner.client.subscribe_scheduled();
        let mut listener = runner.client.store().listener().await;
        let mut runs = 0;
        let mut failures = 0u32;

        // Claims are batched: after a job finishes, the worker waits until half its slots and
        // buffer are free, or CLAIM_WINDOW has passed with a slot free, before it claims
        // again, so that one round trip fetches many jobs instead of one. The buffer holds up
        // to `prefetch` jobs beyond the free slots (unless told, what the slots finish within
        // HORIZON), so that a slot freed while an exchange is on its way starts its next job
        // at once.
        let mut last_claim = Instant::now();
        let mut in_flight: [Option<InFlight>; MAX_IN_FLIGHT] = Default::default();
        let slots = runner.client.store().claims_in_flight().min(MAX_IN_FLIGHT);
        // The places asked for by exchanges on their way.
        let mut reserved = 0;
        // Due `scheduled` and `retryable` jobs are made `available` every poll interval, and at
        // once while a promotion finds more than one batch, or before a worker that runs until
        // idle decides it is. A wake-up for a new job claims without promoting first.
        let mut promote_due = true;
        let mut last_promote = Instant::now();
        // When the earliest waiting job is due, as the last promotion found: the worker
        // promotes then, so that a job starts on time rather than at the next poll.
        let mut next_due: Option<Instant> = None;
        // The last exchange found fewer jobs than it asked for.
        let mut starved = false;
        // After a failed exchange, no other is sent before this: the store is backed off, not
        // the running of what is already claimed (jobs in the buffer keep starting as slots
        // free, and finished ones wait to be written).
        let mut backoff_until: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            self.start_ready();
            let prefetch = settings
                .prefetch
                .unwrap_or_else(|| self.pace.buffer(settings.concurrency));
            let capacity = settings.concurrency + prefetch;
            let refill = (capacity / 2).max(1);
            let free = settings.concurrency.saturating_sub(self.tasks.len());
            let room = capacity.saturating_sub(self.tasks.len() + self.ready.len() + reserved);
            let sending = in_flight.iter().any(Option::is_some);
            let window_passed = last_claim.elapsed() >= CLAIM_WINDOW;
            let batch_ready = if starved {
                // The queues had nothing more: until something wakes the worker, only
                // completions to write send an exchange (it claims too), or, for a worker that
                // runs until idle, finding itself idle (to see whether it is done).
                let write = !self.completed.is_empty() && (self.tasks.is_empty() || window_passed);
                !sending && (write || (until_idle && self.is_idle()))
            } else {
                // A second exchange goes out only for a full batch.
                room >= refill || (!sending && (self.is_idle() || (free > 0 && window_passed)))
            };
            // Whether the window's end would send an exchange.
            let window_wait = !sending
                && !batch_ready
                && !window_passed
                && if starved {
                    !self.completed.is_empty()
                } else {
                    free > 0
                };
            let backing_off = backoff_until.is_some_and(|until| Instant::now() < until);
            let slot = in_flight[..slots].iter_mut().find(|slot| slot.is_none());
            if let (Some(slot), true) = (slot, room > 0 && batch_ready && !backing_off) {
                let promote = promote_due || last_promote.elapsed() >= settings.poll_interval;
                if promote {
                    last_promote = Instant::now();
                    promote_due = false;
                }
                last_claim = Instant::now();
                reserved += room;
                let done = std::mem::take(&mut self.completed);
                *slot = Some(Box::pin(exchange(Arc::clone(&runner), done, room, promote)));
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                exchanged = arrival(&mut in_flight), if sending => {
                    let asked = exchanged.room;
                    reserved -= asked;
                    let promoted = exchanged.promoted;
                    // Completions it wrote may have released dependents, which a claim in the
                    // same statement cannot see (PostgreSQL): not idle until one more look.
                    let wrote = !exchanged.done.is_empty();
                    match self.settle(exchanged) {
                        Ok(claimed) => {
                            failures = 0;
                            runs += claimed;
                            starved = claimed < asked;
                            if let Some(promoted) = promoted {
                                promote_due |= promoted.more;
                                next_due = promoted.next_due;
                            }
                            let others = in_flight.iter().any(Option::is_some);
                            if until_idle && claimed == 0 && self.is_idle() && !others && !wrote {
                                if promoted.is_some_and(|p| !p.more) {
                                    break;
                                }
                                // Idle only once a promotion found nothing more due.
                                promote_due = true;
                                starved = false;
                            }
                        }
                        Err(err) => {
                            failures += 1;
                            let wait = store_backoff(failures);
                            tracing::error!(worker = %runner.id, error = %err, retry_in = ?wait, "claiming jobs failed");
                            backoff_until = Some(Instant::now() + wait);
                        }
                    }
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // Take every job that finished meanwhile, so the next exchange writes their
                    // completions together and claims for all their slots.
                    let mut ended = Some(joined);
                    while let Some(joined) = ended {
                        self.ended(joined);
                        ended = self.tasks.try_join_next();
                    }
                }
                () = tokio::time::sleep_until((last_claim + CLAIM_WINDOW).into()), if window_wait => {}
                () = tokio::time::sleep_until(backoff_until.unwrap_or(last_claim).into()), if backing_off => {
                    backoff_until = None;
                }
                Ok(()) = enqueued.changed(), if !until_idle && !sending => {
                    starved = false;
                    if runner.client.take_special_enqueued() {
                        runner.woken();
                    }
                }
                wake = listener.next(), if !until_idle && !sending => match wake {
                    // Not a job to claim: a run to tell.
                    Wake::Cancel(id) => {
                        runner.runs.cancel_job(id);
                    }
                    wake => {
                        starved = false;
                        if wake == Wake::Special {
                            runner.woken();
                        }
                        promote_due |= wake == Wake::Scheduled;
                    }
                },
                () = tokio::time::sleep(settings.poll_interval), if !until_idle && !sending => starved = false,
                () = tokio::time::sleep_until(next_due.unwrap_or(last_claim).into()), if next_due.is_some() && !until_idle && !sending => {
                    next_due = None;
                    promote_due = true;
                    starved = false;
                }
                Ok(()) = scheduled.changed(), if !until_idle && !sending => {
                    // A job was scheduled: it may be due before `next_due`.
                    promote_due = true;
                    starved = false;
                }
            }
        }
        // An exchange on its way may have claimed jobs: take them in, so that shutdown puts
        // them back rather than leaving them to the rescue.
        for exchange in in_flight.into_iter().flatten() {
            if let Err(err) = self.settle(exchange.await) {
                tracing::warn!(worker = %runner.id, error = %err, "a last claim failed while stopping");
            }
        }
        super::shutdown::shut_down(&runner, self.tasks, self.completed).await;
        Ok(runs)
    }

    /// Takes in an exchange's outcome: settles the completions it wrote (or keeps them pending
    /// if it failed) and queues the jobs it claimed, each registered as a run. Returns how many
    /// it claimed.
    fn settle(&mut self, exchanged: Exchanged) -> Result<usize, Error> {
        let Exchanged {
            mut done,
            sent_at,
            result,
            ..
        } = exchanged;
        match result {
            Ok((written, claimed)) => {
                settle_completions(&self.runner, &mut done, written);
                let count = claimed.len();
                for job in claimed {
                    let signal = self.runner.runs.insert(job.run(), sent_at);
                    self.ready.push_back((job, signal, sent_at));
                }
                self.start_ready();
                Ok(count)
            }
            Err(err) => {
                // Not written: they go with the next exchange.
                self.completed.append(&mut done);
                Err(err)
            }
        }
    }

    /// Whether nothing runs and nothing waits for a slot.
    fn is_idle(&self) -> bool {
        self.tasks.is_empty() && self.ready.is_empty()
    }

    /// Starts waiting jobs in the free slots, the earliest claimed first.
    fn start_ready(&mut self) {
        while self.tasks.len() < self.runner.settings.concurrency {
            let Some((job, signal, claimed_at)) = self.ready.pop_front() else {
                return;
            };
            let waited = claimed_at.elapsed() >= RECHECK_AFTER;
            let guard = RunGuard::new(Arc::clone(&self.runner.runs), job.run());
            let runner = Arc::clone(&self.runner);
            let pace = Arc::clone(&self.pace);
            self.tasks.spawn(async move {
                let started = Instant::now();
                let end = runner.execute(job, signal, guard, waited).await;
                pace.record(started.elapsed());
                end
            });
        }
    }

    /// Takes in a task that ended.
    fn ended(&mut self, joined: Result<TaskEnd, tokio::task::JoinError>) {
        match log_join(joined) {
            Some(TaskEnd::Completed(done)) => self.completed.push(done),
            Some(TaskEnd::Recorded { died: true }) => self.runner.deaths.notify_one(),
            _ => {}
        }
    }
}

/// One exchange with the store: optionally promotes due jobs, then writes the completions
/// `done` and claims up to `room` jobs, sharing them among queues by weight: one round trip
/// for both, and another only when some queue could not fill its share.
async fn exchange(
    runner: Arc<Runner>,
    done: Vec<PendingCompletion>,
    room: usize,
    promote: bool,
) -> Exchanged {
    let sent_at = Instant::now();
    let promoted = if promote {
        Some(promote_due(&runner, sent_at).await)
    } else {
        None
    };
    let result = complete_and_claim(&runner, &done, room).await;
    Exchanged {
        done,
        room,
        sent_at,
        promoted,
        result,
    }
}

/// What a promotion found.
#[derive(Clone, Copy, Debug)]
struct Promotion {
    /// More jobs may be due than one promotion takes.
    more: bool,
    /// When the earliest job still waiting is due.
    next_due: Option<Instant>,
}

/// Cancels waiting jobs past their deadline, makes due waiting jobs available, and reads when
/// the next one is due (measured from `sent_at`, so that the timer errs early, never late).
async fn promote_due(runner: &Runner, sent_at: Instant) -> Promotion {
    const BATCH: usize = 1000;
    // A timer never fires sooner than this after a promotion: a due job that the promotion
    // skipped (locked by another node's) is taken by that node, not waited for in a spin.
    const MIN_WAIT: Duration = Duration::from_millis(5);
    if let Some(step) = runner.settings.priority_aging {
        let queues: Vec<&str> = runner
            .settings
            .queues
            .iter()
            .map(|(q, _)| q.as_str())
            .collect();
        if let Err(err) = runner.client.store().age(&queues, step, BATCH).await {
            tracing::warn!(worker = %runner.id, error = %err, "aging priorities failed");
        }
    }
    match runner.client.store().promote(BATCH).await {
        Ok(promoted) => Promotion {
            more: promoted.count.max(promoted.expired) >= BATCH as u64,
            next_due: promoted.next_in.map(|wait| sent_at + wait.max(MIN_WAIT)),
        },
        Err(err) => {
            tracing::warn!(worker = %runner.id, error = %err, "making due jobs available failed");
            Promotion {
                more: false,
                next_due: None,
            }
        }
    }
}

async fn complete_and_claim(
    runner: &Runner,
    done: &[PendingCompletion],
    room: usize,
) -> Result<(Vec<JobId>, Vec<Claimed>), Error> {
    let store = runner.client.store();
    let queues = &runner.settings.queues;
    let lease = runner.settings.lease;
    let (quiet_fair, quiet_limited) = {
        let quiet = runner.quiet.lock().unwrap_or_else(|e| e.into_inner());
        (quiet.fair, quiet.limited)
    };
    // Jobs that take turns by key (`fair_by`) get half the places, and any the others leave;
    // while their last claim found none, the others get every place.
    let fair = !runner.fair_kinds.is_empty() && runner.should_look(quiet_fair);
    let plain_room = if fair { room / 2 } else { room };
    let shares = weighted_shares(queues, plain_room, fastrand::f64);
    let wanted: Vec<(&str, usize)> = queues
        .iter()
        .zip(&shares)
        .filter(|(_, share)| **share > 0)
        .map(|((queue, _), share)| (queue.as_str(), *share))
        .collect();
    let kinds = &runner.free_kinds;
    let exchange = store
        .complete_and_claim(&runs(done), &wanted, kinds, &runner.id, lease)
        .await?;
    let mut jobs = exchange.claimed;
    // A queue that returned fewer jobs than asked for has nothing more due; places it could
    // not fill go to the others, the heavier first.
    let exhausted = |queue: &str| {
        wanted.iter().any(|(q, share)| {
            *q == queue && jobs.iter().filter(|j| j.queue == queue).count() < *share
        })
    };
    let mut others: Vec<&(String, u32)> = queues.iter().filter(|(q, _)| !exhausted(q)).collect();
    others.sort_by_key(|(_, weight)| std::cmp::Reverse(*weight));
    if fair {
        let before = jobs.len();
        for (queue, _) in queues {
            let left = room - jobs.len();
            if left == 0 {
                break;
            }
            let kinds = &runner.fair_kinds;
            match store
                .claim_fair(queue, left, kinds, &runner.id, lease)
                .await
            {
                Ok(more) => jobs.extend(more),
                Err(err) => {
                    tracing::warn!(worker = %runner.id, error = %err, "claiming fair jobs failed");
                    break;
                }
            }
        }
        let found = jobs.len() > before;
        let mut quiet = runner.quiet.lock().unwrap_or_else(|e| e.into_inner());
        quiet.fair = (!found).then(Instant::now);
    }
    for (queue, _) in others {
        let left = room - jobs.len();
        if left == 0 {
            break;
        }
        match store
            .claim(&[(queue.as_str(), left)], kinds, &runner.id, lease)
            .await
        {
            Ok(more) => jobs.extend(more),
            // The completions are written and some jobs claimed: keep them, and claim the
            // rest next time.
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "claiming more jobs failed");
                break;
            }
        }
    }
    // Jobs under limits across the cluster take the places left, each with its limits' slots.
    let left = room - jobs.len();
    if left > 0 && !runner.limits.is_empty() && runner.should_look(quiet_limited) {
        let queues: Vec<&str> = queues.iter().map(|(queue, _)| queue.as_str()).collect();
        let found = match store
            .claim_limited(&queues, &runner.limits, left, &runner.id, lease)
            .await
        {
            Ok(more) => {
                let found = !more.is_empty();
                jobs.extend(more);
                found
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "claiming limited jobs failed");
                false
            }
        };
        let mut quiet = runner.quiet.lock().unwrap_or_else(|e| e.into_inner());
        quiet.limited = (!found).then(Instant::now);
    }
    Ok((exchange.completed, jobs))
}

/// The outcome of the first exchange on its way to arrive, which leaves its slot; never, if
/// there is none.
async fn arrival(in_flight: &mut [Option<InFlight>]) -> Exchanged {
    std::future::poll_fn(|cx| {
        for slot in in_flight.iter_mut() {
            if let Some(exchange) = slot {
                if let Poll::Ready(exchanged) = exchange.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready(exchanged);
                }
            }
        }
        Poll::Pending
    })
    .await
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

    /// Short runs fill the buffer up to its cap; runs longer than the horizon claim only for
    /// free slots; nothing is claimed ahead before a run has finished.
    #[test]
    fn the_buffer_follows_the_pace_of_runs() {
        let pace = Pace::default();
        assert_eq!(pace.buffer(16), 0, "no run finished yet");
        pace.record(Duration::from_millis(10));
        assert_eq!(pace.buffer(16), 160, "16 slots finish 160 jobs in 100 ms");
        pace.record(Duration::ZERO);
        assert_eq!(pace.buffer(256), MAX_PREFETCH);
        let slow = Pace::default();
        slow.record(Duration::from_secs(1));
        assert_eq!(
            slow.buffer(4),
            0,
            "one-second jobs are claimed only for free slots"
        );
        for _ in 0..200 {
            slow.record(Duration::from_micros(200));
        }
        assert_eq!(slow.buffer(16), MAX_PREFETCH, "the pace follows the runs");
    }

    #[test]
    fn a_single_queue_gets_every_slot() {
        let queues = vec![("default".to_owned(), 1)];
        assert_eq!(weighted_shares(&queues, 16, || 0.99), vec![16]);
    }
}
