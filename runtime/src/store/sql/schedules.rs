//! Periodic jobs' schedules in the SQL stores: each slot is enqueued in the transaction that
//! moves the schedule's `done_until` past it, so that of every node that sees the slot due,
//! exactly one enqueues it.

use super::{insert, named, op_error, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::{from_millis, CatchUp, ScheduleInfo};
use crate::job::JobId;
use crate::store::{Inserted, NewJob, ScheduleRecord, Slot};

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
        let rows = self.fetch(D::SQL.register_schedule, register, op).await?;
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
        let moved = D::execute(&mut tx, D::SQL.advance_schedule, advance, &self.clock)
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
        D::execute(&mut tx, D::SQL.schedule_job, ran, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(Some(inserted))
    }

    /// Records the next slot of schedule `name`, for listings.
    pub(crate) async fn set_next_run(&self, name: &str, next: Option<i64>) -> Result<(), Error> {
        let op = || format!("record the next run of schedule `{name}`");
        self.execute(D::SQL.schedule_next, values![name, next], op)
            .await
            .map(|_| ())
    }

    /// Every stored schedule, by name.
    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        let op = named("list the schedules");
        let rows = self.fetch(D::SQL.schedules, vec![], op).await?;
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
