//! Queues: pausing and resuming them, and their statistics (counts by state, the oldest
//! available job's wait).

use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::job::JobState;
use crate::query::QueueStats;
use std::time::Duration;

/// `queue, now`: pauses a queue; changes a row when it was not paused.
pub(super) static PAUSE_QUEUE: Named = Named::new(Both {
    postgres: "INSERT INTO errand_queues (queue, paused_at, updated_at)
        VALUES ($queue, errand_now_ms(), errand_now_ms())
        ON CONFLICT (queue) DO UPDATE SET paused_at = errand_now_ms(), updated_at = errand_now_ms()
        WHERE errand_queues.paused_at IS NULL",
    sqlite: "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES ($queue, $now, $now)
        ON CONFLICT (queue) DO UPDATE SET paused_at = $now, updated_at = $now
        WHERE errand_queues.paused_at IS NULL",
});

/// `queue, now`: resumes a queue; changes a row when it was paused.
pub(super) static RESUME_QUEUE: Named = Named::new(Both {
    // Wakes the queue's idle workers on every node.
    postgres: "UPDATE errand_queues SET paused_at = NULL, updated_at = errand_now_ms()
        WHERE queue = $queue AND paused_at IS NOT NULL
        RETURNING errand_wake(ARRAY[queue])",
    sqlite: "UPDATE errand_queues SET paused_at = NULL, updated_at = $now
        WHERE queue = $queue AND paused_at IS NOT NULL",
});

/// No parameters: `queue` of every paused queue.
pub(super) static PAUSED_QUEUES: Named =
    Named::same("SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL");

/// No parameters: `queue, state, count` of every queue and state with jobs.
pub(super) static QUEUE_COUNTS: Named =
    Named::same("SELECT queue, state, count(*) FROM errand_jobs GROUP BY queue, state");

/// `now`: `queue, age` of each queue's oldest available job, in milliseconds.
pub(super) static OLDEST_AVAILABLE: Named = Named::new(Both {
    postgres: "SELECT queue, errand_now_ms() - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
    sqlite: "SELECT queue, $now - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
});

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        let op = || {
            format!(
                "{} queue `{queue}`",
                if paused { "pause" } else { "resume" }
            )
        };
        let stmt = if paused { &PAUSE_QUEUE } else { &RESUME_QUEUE };
        Ok(self.run(stmt, params![queue, now: Value::Now], op).await? == 1)
    }

    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let op = named("read the queues' statistics");
        let counts = self.rows(&QUEUE_COUNTS, vec![], op).await?;
        let mut stats: Vec<QueueStats> = Vec::new();
        for row in &counts {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            let state = row.text(1).map_err(|e| op_error::<D>(op(), e))?;
            let count = row.int(2).map_err(|e| op_error::<D>(op(), e))?;
            let Some(state) = JobState::parse(&state) else {
                continue;
            };
            let at = match stats.iter().position(|s| s.queue == queue) {
                Some(at) => at,
                None => {
                    stats.push(QueueStats::new(queue));
                    stats.len() - 1
                }
            };
            stats[at]
                .counts
                .add(state, u64::try_from(count).unwrap_or(0));
        }
        let oldest = self
            .rows(&OLDEST_AVAILABLE, params![now: Value::Now], op)
            .await?;
        for row in &oldest {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            let age = row.int(1).map_err(|e| op_error::<D>(op(), e))?;
            if let Some(stats) = stats.iter_mut().find(|s| s.queue == queue) {
                stats.oldest_available = Some(Duration::from_millis(age.max(0).unsigned_abs()));
            }
        }
        let paused = self.rows(&PAUSED_QUEUES, vec![], op).await?;
        for row in &paused {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            match stats.iter_mut().find(|s| s.queue == queue) {
                Some(stats) => stats.paused = true,
                None => stats.push(QueueStats {
                    paused: true,
                    ..QueueStats::new(queue)
                }),
            }
        }
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(stats)
    }
}
