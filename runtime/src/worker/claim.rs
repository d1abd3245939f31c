//! The claim loop: claims jobs for free slots, spawns a task per run, and writes the completions
//! of runs that finished. Nothing else awaits in it: leases, rescue, pruning and death handlers
//! are other services' work, so a slow one never delays a claim or a renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::execute::{log_join, write_completions, PendingCompletion, TaskEnd};
use super::runs::{RunGuard, RunId};
use super::{store_backoff, Runner};
use crate::error::Error;
use crate::store::{Claimed, Store};

/// The longest a free slot waits for others to free up before the worker claims for it.
const CLAIM_WINDOW: Duration = Duration::from_millis(2);

pub(super) struct ClaimLoop {
    runner: Arc<Runner>,
    tasks: JoinSet<TaskEnd>,
    /// Runs that completed and whose completion is not written yet.
    completed: Vec<PendingCompletion>,
}

impl ClaimLoop {
    pub(super) fn new(runner: Arc<Runner>) -> ClaimLoop {
        ClaimLoop {
            runner,
            tasks: JoinSet::new(),
            completed: Vec::new(),
        }
    }

    /// Claims and runs jobs until `shutdown` fires (or, with `until_idle`, until nothing is
    /// running and nothing is due), then shuts down gracefully. Returns how many runs it made.
    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
        until_idle: bool,
    ) -> Result<usize, Error> {
        let runner = Arc::clone(&self.runner);
        let settings = &runner.settings;
        let mut enqueued = runner.client.subscribe_enqueued();
        let mut listener = runner.client.store().listener().await;
        let mut runs = 0;
        let mut failures = 0u32;

        // Claims are batched to free capacity: after a job finishes, the worker waits until half
        // its slots are free, or CLAIM_WINDOW has passed, before it claims again, so that one
        // round trip fetches many jobs instead of one.
        let refill = (settings.concurrency / 2).max(1);
        let mut last_claim = Instant::now();
        // Due `scheduled` and `retryable` jobs are made `available` every poll interval, and at
        // once while a promotion finds more than one batch, or before a worker that runs until
        // idle decides it is. A wake-up for a new job claims without promoting first.
        let mut promote_due = true;
        let mut last_promote = Instant::now();
        while !shutdown.is_cancelled() {
            let free = settings.concurrency.saturating_sub(self.tasks.len());
            let batch_ready =
                free >= refill || self.tasks.is_empty() || last_claim.elapsed() >= CLAIM_WINDOW;
            let mut claimed = 0;
            let mut promoted_now = false;
            let mut more_due = false;
            if free > 0 && batch_ready {
                if promote_due || last_promote.elapsed() >= settings.poll_interval {
                    last_promote = Instant::now();
                    promoted_now = true;
                    more_due = self.promote().await;
                }
                last_claim = Instant::now();
                match self.claim(free).await {
                    Ok(jobs) => {
                        failures = 0;
                        claimed = jobs.len();
                        runs += claimed;
                        promote_due = more_due;
                        for job in jobs {
                            self.spawn(job, last_claim);
                        }
                    }
                    Err(err) => {
                        failures += 1;
                        let wait = store_backoff(failures);
                        tracing::error!(worker = %runner.id, error = %err, retry_in = ?wait, "claiming jobs failed");
                        sleep_or_stop(wait, &shutdown).await;
                        continue;
                    }
                }
            }
            // Completions go after the claim, so that a new job does not wait for them.
            if !self.completed.is_empty() && !self.write_completions().await {
                failures += 1;
                sleep_or_stop(store_backoff(failures), &shutdown).await;
                continue;
            }
            if until_idle && claimed == 0 && self.tasks.is_empty() {
                if promoted_now && !more_due {
                    break;
                }
                // Idle only once a promotion found nothing more due.
                promote_due = true;
                continue;
            }
            if claimed > 0 && claimed == free {
                // Every free slot was filled; there may be more where those came from.
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // Take every job that finished meanwhile, so the next pass writes their
                    // completions together and claims for all their slots.
                    let mut ended = Some(joined);
                    while let Some(joined) = ended {
                        self.ended(joined);
                        ended = self.tasks.try_join_next();
                    }
                }
                () = tokio::time::sleep_until((last_claim + CLAIM_WINDOW).into()), if free > 0 && !batch_ready => {}
                Ok(()) = enqueued.changed(), if !until_idle => {}
                () = listener.next(), if !until_idle => {}
                () = tokio::time::sleep(settings.poll_interval), if !until_idle => {}
            }
        }
        super::shutdown::shut_down(&runner, self.tasks, self.completed).await;
        Ok(runs)
    }

    fn spawn(&mut self, job: Claimed, claimed_at: Instant) {
        let run = RunId {
            id: job.id,
            fence: job.fence,
        };
        let signal = self.runner.runs.insert(run, claimed_at);
        let guard = RunGuard::new(Arc::clone(&self.runner.runs), run);
        let runner = Arc::clone(&self.runner);
        self.tasks
            .spawn(async move { runner.execute(job, signal, guard).await });
    }

    /// Takes in a task that ended.
    fn ended(&mut self, joined: Result<TaskEnd, tokio::task::JoinError>) {
        match log_join(joined) {
            Some(TaskEnd::Completed(done)) => self.completed.push(done),
            Some(TaskEnd::Recorded { died: true }) => self.runner.deaths.notify_one(),
            _ => {}
        }
    }

    /// Makes due waiting jobs available. Returns whether there may be more to promote.
    async fn promote(&self) -> bool {
        const BATCH: usize = 1000;
        match self.runner.client.store().promote(BATCH).await {
            Ok(promoted) => promoted >= BATCH as u64,
            Err(err) => {
                tracing::warn!(worker = %self.runner.id, error = %err, "making due jobs available failed");
                false
            }
        }
    }

    /// Claims up to `free` jobs, sharing the slots among queues by weight: one round trip,
    /// and a second only when some queue could not fill its share.
    async fn claim(&self, free: usize) -> Result<Vec<Claimed>, Error> {
        let runner = &self.runner;
        let store = runner.client.store();
        let queues = &runner.settings.queues;
        let lease = runner.settings.lease;
        let shares = weighted_shares(queues, free, fastrand::f64);
        let wanted: Vec<(&str, usize)> = queues
            .iter()
            .zip(&shares)
            .filter(|(_, share)| **share > 0)
            .map(|((queue, _), share)| (queue.as_str(), *share))
            .collect();
        let kinds = &runner.kinds;
        let mut jobs = store.claim(&wanted, kinds, &runner.id, lease).await?;
        // A queue that returned fewer jobs than asked for has nothing more due; slots it could
        // not fill go to the others, the heavier first.
        let exhausted = |queue: &str| {
            wanted.iter().any(|(q, share)| {
                *q == queue && jobs.iter().filter(|j| j.queue == queue).count() < *share
            })
        };
        let mut others: Vec<&(String, u32)> =
            queues.iter().filter(|(q, _)| !exhausted(q)).collect();
        others.sort_by_key(|(_, weight)| std::cmp::Reverse(*weight));
        for (queue, _) in others {
            let left = free - jobs.len();
            if left == 0 {
                break;
            }
            jobs.extend(
                store
                    .claim(&[(queue.as_str(), left)], kinds, &runner.id, lease)
                    .await?,
            );
        }
        Ok(jobs)
    }

    /// Writes the completions of runs that finished since the last pass, in one statement.
    /// Returns whether it could; on failure they stay pending (their leases renewed) for the
    /// next pass.
    async fn write_completions(&mut self) -> bool {
        write_completions(&self.runner, &mut self.completed).await
    }
}

async fn sleep_or_stop(wait: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
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
}
