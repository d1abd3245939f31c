//! Queues: pausing and resuming them, and their statistics (counts by state, the oldest
//! available job's wait).

use super::Both;
use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::job::JobState;
use crate::query::QueueStats;
use std::time::Duration;

/// `queue, now`: pauses a queue; changes a row when it was not paused.
pub(super) const PAUSE_QUEUE: Both = Both {
    postgres: "INSERT INTO errand_queues (queue, paused_at, updated_at)
        VALUES ($1, errand_now_ms(), errand_now_ms())
        ON CONFLICT (queue) DO UPDATE SET paused_at = errand_now_ms(), updated_at = errand_now_ms()
        WHERE errand_queues.paused_at IS NULL",
    sqlite: "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES (?1, ?2, ?2)
        ON CONFLICT (queue) DO UPDATE SET paused_at = ?2, updated_at = ?2
        WHERE errand_queues.paused_at IS NULL",
};

/// `queue, now`: resumes a queue; changes a row when it was paused.
pub(super) const RESUME_QUEUE: Both = Both {
    // Wakes the queue's idle workers on every node.
    postgres: "UPDATE errand_queues SET paused_at = NULL, updated_at = errand_now_ms()
        WHERE queue = $1 AND paused_at IS NOT NULL
        RETURNING errand_wake(ARRAY[queue])",
    sqlite: "UPDATE errand_queues SET paused_at = NULL, updated_at = ?2
        WHERE queue = ?1 AND paused_at IS NOT NULL",
};

/// No parameters: `queue` of every paused queue.
pub(super) const PAUSED_QUEUES: Both = Both {
    postgres: "SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL",
    sqlite: "SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL",
};

/// No parameters: `queue, state, count` of every queue and state with jobs.
pub(super) const QUEUE_COUNTS: Both = Both {
    postgres: "SELECT queue, state, count(*) FROM errand_jobs GROUP BY queue, state",
    sqlite: "SELECT queue, state, count(*) FROM errand_jobs GROUP BY queue, state",
};

/// `now`: `queue, age` of each queue's oldest available job, in milliseconds.
pub(super) const OLDEST_AVAILABLE: Both = Both {
    postgres: "SELECT queue, errand_now_ms() - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
    sqlite: "SELECT queue, ?1 - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
};

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        let op = || {
            format!(
                "{} queue `{queue}`",
                if paused { "pause" } else { "resume" }
            )
        };
        let sql = if paused {
            PAUSE_QUEUE.of::<D>()
        } else {
            RESUME_QUEUE.of::<D>()
        };
        Ok(self.execute(sql, values![queue, Value::Now], op).await? == 1)
    }

    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let op = named("read the queues' statistics");
        let counts = self.fetch(QUEUE_COUNTS.of::<D>(), vec![], op).await?;
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
            .fetch(OLDEST_AVAILABLE.of::<D>(), values![Value::Now], op)
            .await?;
        for row in &oldest {
            let queue = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
            let age = row.int(1).map_err(|e| op_error::<D>(op(), e))?;
            if let Some(stats) = stats.iter_mut().find(|s| s.queue == queue) {
                stats.oldest_available = Some(Duration::from_millis(age.max(0).unsigned_abs()));
            }
        }
        let paused = self.fetch(PAUSED_QUEUES.of::<D>(), vec![], op).await?;
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
