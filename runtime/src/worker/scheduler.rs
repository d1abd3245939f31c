//! The scheduler: enqueues the slots of the worker's periodic jobs as they come due, by the
//! store's clock. Every node that runs a schedule does this; the store lets one of them enqueue
//! each slot (see [`crate::schedule`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;
use crate::schedule::Schedule;

/// The longest the scheduler sleeps: each wake-up marks its schedules as seen.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How soon it looks again after the store failed.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// Added to each wait, so that the store's clock has passed the slot when the worker looks.
const MARGIN: Duration = Duration::from_millis(5);

/// Schedules removed from the code are forgotten by the pruner, which every long-running
/// worker runs (a worker without schedules runs no scheduler).
pub(super) async fn run(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        let wait = tick(&runner).await.unwrap_or(MAX_WAIT);
        tokio::select! {
            () = tokio::time::sleep(wait + MARGIN) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// Deals with every schedule's due slots; returns how long until the next one is due (`None`
/// when the worker has no schedule).
pub(super) async fn tick(runner: &Runner) -> Option<Duration> {
    let mut wait: Option<Duration> = None;
    for schedule in &runner.schedules {
        let until_next = match tick_one(runner, schedule).await {
            Ok(until_next) => until_next.unwrap_or(MAX_WAIT),
            Err(err) => {
                tracing::warn!(worker = %runner.id, schedule = %schedule.name, error = %err, "scheduling a periodic job failed");
                RETRY_WAIT
            }
        };
        wait = Some(wait.map_or(until_next, |w| w.min(until_next)).min(MAX_WAIT));
    }
    wait
}

/// Registers `schedule` as seen and enqueues its due slots, each unless another node did.
async fn tick_one(runner: &Runner, schedule: &Schedule) -> Result<Option<Duration>, Error> {
    let store = runner.client.store();
    let (done_until, now) = store.register_schedule(&schedule.record()).await?;
    let next = schedule.next_after(now);
    let due = schedule.due(done_until, now);
    for slot in &due {
        if let Some(inserted) = store
            .enqueue_slot(&schedule.name, *slot, next, &schedule.job_for(slot.at))
            .await?
        {
            tracing::info!(worker = %runner.id, schedule = %schedule.name, slot = slot.at, outcome = ?inserted, "enqueued a periodic job");
            runner.client.notify_enqueued();
        }
    }
    if due.is_empty() {
        store.set_next_run(&schedule.name, next).await?;
    }
    Ok(next.map(|at| Duration::from_millis(at.saturating_sub(now).max(0).unsigned_abs())))
}
