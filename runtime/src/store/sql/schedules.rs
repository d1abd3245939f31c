//! Periodic jobs' schedules in the SQL stores: each slot is enqueued in the transaction that
//! moves the schedule's `done_until` past it, so that of every node that sees the slot due,
//! exactly one enqueues it.

use super::enqueue::insert;
use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::info::{from_millis, CatchUp, ScheduleInfo};
use crate::job::JobId;
use crate::store::{Inserted, NewJob, ScheduleRecord, Slot};

/// `name, cron, timezone, kind, queue, catch_up, now`: records a schedule a worker runs (a
/// new one done until now) and that it was seen; returns `done_until, now`.
pub(super) static REGISTER_SCHEDULE: Named = Named::new(Both {
    postgres: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES ($name, $cron, $timezone, $kind, $queue, $catch_up, errand_now_ms(), errand_now_ms(), errand_now_ms())
        ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
            kind = EXCLUDED.kind, queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up,
            seen_at = EXCLUDED.seen_at
        RETURNING done_until, errand_now_ms()",
    sqlite: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES ($name, $cron, $timezone, $kind, $queue, $catch_up, $now, $now, $now)
        ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
            kind = excluded.kind, queue = excluded.queue, catch_up = excluded.catch_up,
            seen_at = excluded.seen_at
        RETURNING done_until, $now",
});

/// `name, slot, run, next, now`: moves a schedule's `done_until` to `slot` if it is before
/// (setting `last_run` to `slot` if `run`); changes a row when it did.
pub(super) static ADVANCE_SCHEDULE: Named = Named::same("UPDATE errand_schedules
        SET done_until = $slot, last_run = CASE WHEN $run THEN $slot ELSE last_run END, next_run = $next
        WHERE name = $name AND done_until < $slot");

/// `name, job`: the job enqueued for the schedule's last run.
pub(super) static SCHEDULE_JOB: Named =
    Named::same("UPDATE errand_schedules SET last_job = $job WHERE name = $name");

/// `name, next`: the schedule's next slot.
pub(super) static SCHEDULE_NEXT: Named = Named::new(Both {
    postgres: "UPDATE errand_schedules SET next_run = $next
        WHERE name = $name AND next_run IS DISTINCT FROM $next",
    sqlite: "UPDATE errand_schedules SET next_run = $next
        WHERE name = $name AND next_run IS NOT $next",
});

/// No parameters: `name, cron, timezone, kind, queue, catch_up, last_run, last_job,
/// next_run, seen_at` of every schedule, by name.
pub(super) static SCHEDULES: Named = Named::new(Both {
    postgres:
        "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
    sqlite:
        "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
});

impl<D: Dialect> SqlStore<D> {
    /// Records that a worker runs `schedule` (a new one is done until now); returns the time
    /// up to which its slots are dealt with, and the store's time now.
    pub(crate) async fn register_schedule(
        &self,
        schedule: &ScheduleRecord<'_>,
    ) -> Result<(i64, i64), Error> {
        let op = || format!("register schedule `{}`", schedule.name);
        let register = params![name: schedule.name, cron: schedule.cron, timezone: schedule.timezone, kind: schedule.kind, queue: schedule.queue, catch_up: schedule.catch_up.as_str(), now: Value::Now];
        let rows = self.rows(&REGISTER_SCHEDULE, register, op).await?;
        let row = rows
            .first()
            .ok_or_else(|| op_error::<D>(op(), sqlx::Error::RowNotFound))?;
        let read = |column| row.int(column).map_err(|e| op_error::<D>(op(), e));
        Ok((read(0)?, read(1)?))
    }

    /// Deals with `slot` of the schedule named `schedule`, unless another node already did:
    /// moves `done_until` to it and, if it runs, enqueues `job`, in one transaction. Returns what the enqueue did,
    /// or `None` when nothing was enqueued.
    pub(crate) async fn enqueue_slot(
        &self,
        schedule: &str,
        slot: Slot,
        next: Option<i64>,
        job: &NewJob,
    ) -> Result<Option<Inserted>, Error> {
        let op = || format!("enqueue slot {} of schedule `{schedule}`", slot.at);
        let mut tx = self.begin_write().await?;
        let name = schedule;
        let advance = params![name, slot: slot.at, run: slot.run, next, now: Value::Now];
        let moved = ADVANCE_SCHEDULE
            .execute::<D>(&mut tx, advance, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        // Another node dealt with this slot (or a later one): dropping `tx` rolls back.
        if moved == 0 || !slot.run {
            tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
            return Ok(None);
        }
        let inserted = insert::<D>(&mut tx, job, &self.clock).await?;
        let id = inserted.id();
        let ran = params![name, job: id.get()];
        SCHEDULE_JOB
            .execute::<D>(&mut tx, ran, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(Some(inserted))
    }

    /// Records the next slot of schedule `name`, for listings.
    pub(crate) async fn set_next_run(&self, name: &str, next: Option<i64>) -> Result<(), Error> {
        let op = || format!("record the next run of schedule `{name}`");
        self.run(&SCHEDULE_NEXT, params![name, next], op)
            .await
            .map(|_| ())
    }

    /// Every stored schedule, by name.
    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        let op = named("list the schedules");
        let rows = self.rows(&SCHEDULES, vec![], op).await?;
        rows.iter()
            .map(|row| {
                Ok(ScheduleInfo {
                    name: row.text(0)?,
                    cron: row.text(1)?,
                    timezone: row.text(2)?,
                    kind: row.text(3)?,
                    queue: row.text(4)?,
                    catch_up: CatchUp::from_stored(&row.text(5)?),
                    last_run: row.opt_int(6)?.map(from_millis),
                    last_job: row.opt_int(7)?.map(JobId::new),
                    next_run: row.opt_int(8)?.map(from_millis),
                    last_seen: from_millis(row.int(9)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| op_error::<D>(op(), e))
    }
}
