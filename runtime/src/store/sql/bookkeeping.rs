//! The rows that describe jobs rather than being jobs: workflows, limits' slots, fair turns and
//! schedules. Pruning removes each once nothing refers to it, so that they do not outgrow the
//! jobs that retention deletes: a workflow when all its jobs are gone, a limit key's slots when
//! they are all free and the key was idle for the window, a fair key's turn when it has no
//! available job and was served longer ago than the window, a schedule no worker has run for
//! a day (removed from the code).

use std::time::Duration;

use super::{count, duration_millis, named, Both, Dialect, Named, SqlStore, Value};
use crate::error::Error;

/// `idle, batch, now`: workflows created before the window whose jobs are all gone.
static WORKFLOWS: Named = Named::new(Both {
    postgres: "DELETE FROM errand_workflows WHERE id IN (
        SELECT w.id FROM errand_workflows w
        WHERE w.created_at < errand_now_ms() - $idle
          AND NOT EXISTS (SELECT 1 FROM errand_jobs j WHERE j.workflow_id = w.id)
        ORDER BY w.id LIMIT $batch)",
    sqlite: "DELETE FROM errand_workflows WHERE id IN (
        SELECT w.id FROM errand_workflows w
        WHERE w.created_at < $now - $idle
          AND NOT EXISTS (SELECT 1 FROM errand_jobs j WHERE j.workflow_id = w.id)
        ORDER BY w.id LIMIT $batch)",
});

/// `idle, batch, now`: turns of fair keys served before the window with no available job.
static TURNS: Named = Named::new(Both {
    postgres: "DELETE FROM errand_fair_turns WHERE (queue, fair_key) IN (
        SELECT t.queue, t.fair_key FROM errand_fair_turns t
        WHERE t.served_at < errand_now_ms() - $idle
          AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                          WHERE j.queue = t.queue AND j.fair_key = t.fair_key AND j.state = 'available')
        LIMIT $batch)",
    sqlite: "DELETE FROM errand_fair_turns WHERE (queue, fair_key) IN (
        SELECT t.queue, t.fair_key FROM errand_fair_turns t
        WHERE t.served_at < $now - $idle
          AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                          WHERE j.queue = t.queue AND j.fair_key = t.fair_key AND j.state = 'available')
        LIMIT $batch)",
});

/// Whether a slot is idle, the window `$idle` before `$now`: a running slot no job holds, or
/// a start slot never reserved or marked before the window. A key's slots go only when all of
/// them are idle, and each row is checked again as it is deleted, so that a slot a claim takes
/// meanwhile stays (the claim adds missing slots above the highest it finds, never below).
macro_rules! idle_slot {
    ($now:literal, $idle:literal) => {
        concat!(
            "((purpose = 'running' AND job_id IS NULL)
              OR (purpose = 'start' AND ((job_id IS NULL AND taken_at IS NULL) OR taken_at < ",
            $now,
            " - ",
            $idle,
            ")))"
        )
    };
}

/// The slots of limit keys whose slots are all idle, in one dialect's parameters.
macro_rules! idle_keys_slots {
    ($now:literal, $idle:literal, $batch:literal) => {
        concat!(
            "DELETE FROM errand_limit_slots
            WHERE limit_key IN (
                SELECT limit_key FROM errand_limit_slots GROUP BY limit_key
                HAVING min(CASE WHEN ",
            idle_slot!($now, $idle),
            " THEN 1 ELSE 0 END) = 1
                LIMIT ",
            $batch,
            ")
              AND ",
            idle_slot!($now, $idle)
        )
    };
}

/// `idle, batch, now`: the slots of limit keys whose slots are all idle.
static SLOTS: Named = Named::new(Both {
    postgres: idle_keys_slots!("errand_now_ms()", "$idle", "$batch"),
    sqlite: idle_keys_slots!("$now", "$idle", "$batch"),
});

/// `unseen_for, batch, now`: schedules no worker has run for the window.
static SCHEDULES: Named = Named::new(Both {
    postgres: "DELETE FROM errand_schedules WHERE name IN (
        SELECT name FROM errand_schedules WHERE seen_at < errand_now_ms() - $idle LIMIT $batch)",
    sqlite: "DELETE FROM errand_schedules WHERE name IN (
        SELECT name FROM errand_schedules WHERE seen_at < $now - $idle LIMIT $batch)",
});

impl<D: Dialect> SqlStore<D> {
    /// Deletes up to `batch` rows of each kind of bookkeeping that nothing refers to: idle for
    /// `idle` (workflows, slots, turns), schedules unseen for `unseen_for`. Returns how many.
    pub(crate) async fn prune_bookkeeping(
        &self,
        idle: Duration,
        unseen_for: Duration,
        batch: usize,
    ) -> Result<u64, Error> {
        let mut deleted = 0;
        for (statement, window, op) in [
            (&WORKFLOWS, idle, "prune workflows whose jobs are gone"),
            (&TURNS, idle, "prune the turns of idle fair keys"),
            (&SLOTS, idle, "prune the slots of idle limit keys"),
            (&SCHEDULES, unseen_for, "prune schedules no worker runs"),
        ] {
            let prune = params![
                idle: duration_millis(window),
                batch: count(batch),
                now: Value::Now,
            ];
            deleted += self.run(statement, prune, named(op)).await?;
        }
        Ok(deleted)
    }
}
