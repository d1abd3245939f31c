//! Periodic jobs' schedules in the SQL stores: each slot is enqueued in the transaction that
//! moves the schedule's `done_until` past it, so that of every node that sees the slot due,
//! exactly one enqueues it.

use super::enqueue::insert;
use super::Both;
use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::{from_millis, CatchUp, ScheduleInfo};
use crate::job::JobId;
use crate::store::{Inserted, NewJob, ScheduleRecord, Slot};

/// `name, cron, timezone, kind, queue, catch_up, now`: records a schedule a worker runs (a
/// new one done until now) and that it was seen; returns `done_until, now`.
pub(super) const REGISTER_SCHEDULE: Both = Both {
    postgres: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, errand_now_ms(), errand_now_ms(), errand_now_ms())
        ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
            kind = EXCLUDED.kind, queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up,
            seen_at = EXCLUDED.seen_at
        RETURNING done_until, errand_now_ms()",
    sqlite: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)
        ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
            kind = excluded.kind, queue = excluded.queue, catch_up = excluded.catch_up,
            seen_at = excluded.seen_at
        RETURNING done_until, ?7",
};

/// `name, slot, run, next, now`: moves a schedule's `done_until` to `slot` if it is before
/// (setting `last_run` to `slot` if `run`); changes a row when it did.
pub(super) const ADVANCE_SCHEDULE: Both = Both {
    postgres: "UPDATE errand_schedules
        SET done_until = $2, last_run = CASE WHEN $3 THEN $2 ELSE last_run END, next_run = $4
        WHERE name = $1 AND done_until < $2",
    sqlite: "UPDATE errand_schedules
        SET done_until = ?2, last_run = CASE WHEN ?3 THEN ?2 ELSE last_run END, next_run = ?4
        WHERE name = ?1 AND done_until < ?2",
};

/// `name, job`: the job enqueued for the schedule's last run.
pub(super) const SCHEDULE_JOB: Both = Both {
    postgres: "UPDATE errand_schedules SET last_job = $2 WHERE name = $1",
    sqlite: "UPDATE errand_schedules SET last_job = ?2 WHERE name = ?1",
};

/// `name, next`: the schedule's next slot.
pub(super) const SCHEDULE_NEXT: Both = Both {
    postgres: "UPDATE errand_schedules SET next_run = $2
        WHERE name = $1 AND next_run IS DISTINCT FROM $2",
    sqlite: "UPDATE errand_schedules SET next_run = ?2
        WHERE name = ?1 AND next_run IS NOT ?2",
};

/// No parameters: `name, cron, timezone, kind, queue, catch_up, last_run, last_job,
/// next_run, seen_at` of every schedule, by name.
pub(super) const SCHEDULES: Both = Both {
    postgres:
        "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
    sqlite:
        "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
};

impl<D: Dialect> SqlStore<D> {
    /// Records that a worker runs `schedule` (a new one is done until now); returns the time
    /// up to which its slots are dealt with, and the store's time now.
    pub(crate) async fn register_schedule(
        &self,
        schedule: &ScheduleRecord<'_>,
    ) -> Result<(i64, i64), Error> {
        let op = || format!("register schedule `{}`", schedule.name);
        let register = values![
            schedule.name,
            schedule.cron,
            schedule.timezone,
            schedule.kind,
            schedule.queue,
            schedule.catch_up.as_str(),
            Value::Now,
        ];
        let rows = self
            .fetch(REGISTER_SCHEDULE.of::<D>(), register, op)
            .await?;
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
        let advance = values![name, slot.at, slot.run, next, Value::Now];
        let moved = D::execute(&mut tx, ADVANCE_SCHEDULE.of::<D>(), advance, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        // Another node dealt with this slot (or a later one): dropping `tx` rolls back.
        if moved == 0 || !slot.run {
            tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
            return Ok(None);
        }
        let inserted = insert::<D>(&mut tx, job, &self.clock).await?;
        let id = inserted.id();
        let ran = values![name, id.get()];
        D::execute(&mut tx, SCHEDULE_JOB.of::<D>(), ran, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(Some(inserted))
    }

    /// Records the next slot of schedule `name`, for listings.
    pub(crate) async fn set_next_run(&self, name: &str, next: Option<i64>) -> Result<(), Error> {
        let op = || format!("record the next run of schedule `{name}`");
        self.execute(SCHEDULE_NEXT.of::<D>(), values![name, next], op)
            .await
            .map(|_| ())
    }

    /// Every stored schedule, by name.
    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        let op = named("list the schedules");
        let rows = self.fetch(SCHEDULES.of::<D>(), vec![], op).await?;
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
