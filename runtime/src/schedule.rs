//! Periodic jobs: a cron expression, in a time zone, that enqueues a job at each of its slots,
//! once across every node.
//!
//! Each slot is enqueued by whichever node gets there first, in the transaction that moves the
//! schedule's stored `done_until` past it: there is no leader to fail or flap, and the database's
//! clock decides what is due. Slots missed while no worker ran are skipped, or the latest (or
//! all, up to a cap) are run, as the schedule's [`CatchUp`] says.

use std::str::FromStr;

use crate::definition::Job;
use crate::error::Error;
use crate::info::from_millis;
use crate::info::CatchUp;
use crate::request::Request;
use crate::store::{NewJob, RunAt, ScheduleRecord, Slot};

/// A periodic job: a cron expression and the request it enqueues at each slot. Add it to a
/// worker with [`Worker::schedule`](crate::Worker::schedule) (or
/// [`Worker::periodic`](crate::Worker::periodic) for the defaults). A job without arguments can
/// declare its schedule instead: `#[job(cron = "0 */5 * * * *")]`.
///
/// The expression has five fields (minute, hour, day of month, month, day of week) or six with
/// seconds first, as [croner](https://docs.rs/croner) reads them (`L`, `W` and `#` included). It
/// is read in the schedule's time zone (UTC unless set), with daylight saving time handled: a
/// time a spring-forward skips runs once, just after the jump; a time a fall-back repeats runs
/// once, the first time (an interval such as every 15 minutes runs on both passes, as the wall
/// clock does).
///
/// ```no_run
/// use errand::{CatchUp, Periodic, Worker};
///
/// #[errand::job]
/// async fn purge_sessions(older_than_days: u32) -> Result<(), std::io::Error> {
///     Ok(())
/// }
///
/// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
/// Worker::new(client)
///     .periodic("0 3 * * *", purge_sessions::with(30)) // every day at 03:00 UTC
///     .schedule(
///         Periodic::new("0 */5 * * * *", purge_sessions::with(1))
///             .name("purge-recent")
///             .timezone("Europe/Berlin")
///             .catch_up(CatchUp::Latest),
///     )
///     .run()
///     .await
/// # }
/// ```
#[must_use = "a schedule does nothing until a worker runs it: pass it to `Worker::schedule`"]
pub struct Periodic {
    name: String,
    cron: String,
    timezone: String,
    catch_up: CatchUp,
    job: Result<NewJob, Error>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("cron", &self.cron)
            .field("timezone", &self.timezone)
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

impl Periodic {
    /// Enqueues `request` at each slot of `cron`. The schedule is named after the job's kind
    /// unless [`Periodic::name`] names it: a worker refuses two schedules of one name.
    pub fn new<J: Job>(cron: &str, request: Request<J>) -> Periodic {
        Periodic {
            name: J::KIND.to_owned(),
            cron: cron.to_owned(),
            timezone: "UTC".to_owned(),
            catch_up: CatchUp::None,
            job: request.into_new_job(crate::Config::DEFAULT_MAX_ARGS_BYTES),
        }
    }

    /// Names the schedule: its row in the database, shared by every node that runs it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The time zone the expression is read in, by its IANA name (`"Europe/Berlin"`);
    /// `"UTC"` by default.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// What to do with slots missed while no worker ran; [`CatchUp::None`] by default.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// A schedule of `job` on `cron` named `name` (UTC, no catch-up), for the conformance
    /// tests, which store jobs without a job function.
    #[cfg(feature = "conformance")]
    pub(crate) fn of_job(name: &str, cron: &str, job: NewJob) -> Periodic {
        Periodic {
            name: name.to_owned(),
            cron: cron.to_owned(),
            timezone: "UTC".to_owned(),
            catch_up: CatchUp::None,
            job: Ok(job),
        }
    }

    /// The schedule's name.
    pub(crate) fn schedule_name(&self) -> &str {
        &self.name
    }

    /// Parses the expression and the time zone; names what is wrong.
    pub(crate) fn check(self) -> Result<Schedule, Error> {
        let invalid = |reason: String| Error::InvalidSchedule {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() || self.name.len() > 200 {
            return Err(invalid(format!(
                "a schedule's name has 1 to 200 characters, not {}",
                self.name.len()
            )));
        }
        let cron = croner::Cron::from_str(&self.cron).map_err(|e| {
            invalid(format!(
                "`{}` is not a cron expression ({e}); expected 5 fields (minute hour day month weekday) or 6 with seconds first",
                self.cron
            ))
        })?;
        let tz = jiff::tz::TimeZone::get(&self.timezone).map_err(|e| {
            invalid(format!(
                "unknown time zone `{}` ({e}); expected an IANA name such as \"Europe/Berlin\" or \"UTC\"",
                self.timezone
            ))
        })?;
        if let CatchUp::All { max: 0 } = self.catch_up {
            return Err(invalid(
                "`CatchUp::All { max: 0 }` would run nothing; use `CatchUp::None`".to_owned(),
            ));
        }
        let job = self.job.map_err(|e| Error::InvalidSchedule {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Schedule {
            name: self.name,
            cron_text: self.cron,
            tz_name: self.timezone,
            catch_up: self.catch_up,
            cron,
            tz,
            job,
        })
    }
}

/// A checked [`Periodic`], as a worker runs it.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub name: String,
    pub cron_text: String,
    pub tz_name: String,
    pub catch_up: CatchUp,
    cron: croner::Cron,
    tz: jiff::tz::TimeZone,
    job: NewJob,
}

impl Schedule {
    /// What the store records of it.
    pub(crate) fn record(&self) -> ScheduleRecord<'_> {
        ScheduleRecord {
            name: &self.name,
            cron: &self.cron_text,
            timezone: &self.tz_name,
            kind: self.kind(),
            queue: self.queue(),
            catch_up: self.catch_up.as_stored(),
        }
    }

    /// The queue its jobs go to.
    pub(crate) fn queue(&self) -> &str {
        &self.job.queue
    }

    /// Its jobs' kind.
    pub(crate) fn kind(&self) -> &'static str {
        self.job.kind
    }

    fn zoned(&self, ms: i64) -> Option<jiff::Zoned> {
        let instant = jiff::Timestamp::from_millisecond(ms).ok()?;
        Some(instant.to_zoned(self.tz.clone()))
    }

    /// The first slot after `now_ms`.
    pub(crate) fn next_after(&self, now_ms: i64) -> Option<i64> {
        let now = self.zoned(now_ms)?;
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The slots in `(done_until, now]` to deal with, oldest first, as the catch-up policy
    /// says: at most one under `None` and `Latest`, at most `max` under `All`.
    pub(crate) fn due(&self, done_until: i64, now_ms: i64) -> Vec<Slot> {
        let Some(now) = self.zoned(now_ms) else {
            return Vec::new();
        };
        let Ok(latest) = self.cron.find_previous_occurrence(&now, true) else {
            return Vec::new();
        };
        let latest_ms = latest.timestamp().as_millisecond();
        if latest_ms <= done_until {
            return Vec::new();
        }
        match self.catch_up {
            CatchUp::None => {
                let late = now_ms - latest_ms;
                vec![Slot {
                    at: latest_ms,
                    run: late <= crate::info::duration_millis(CatchUp::ON_TIME),
                }]
            }
            CatchUp::Latest => vec![Slot {
                at: latest_ms,
                run: true,
            }],
            CatchUp::All { max } => {
                let mut slots = vec![Slot {
                    at: latest_ms,
                    run: true,
                }];
                let earlier = self.cron.iter_before(latest);
                for slot in earlier.take(max.saturating_sub(1) as usize) {
                    let at = slot.timestamp().as_millisecond();
                    if at <= done_until {
                        break;
                    }
                    slots.push(Slot { at, run: true });
                }
                slots.reverse();
                slots
            }
        }
    }

    /// The job of the slot at `at`: due then, its meta naming the schedule and the slot.
    pub(crate) fn job_for(&self, at: i64) -> NewJob {
        let mut job = self.job.clone();
        job.run_at = RunAt::At(from_millis(at));
        let mut meta = job
            .meta
            .as_deref()
            .and_then(|m| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok()
            })
            .unwrap_or_default();
        meta.insert("schedule".to_owned(), self.name.clone().into());
        meta.insert(
            "slot".to_owned(),
            self.zoned(at)
                .map_or(at.to_string(), |z| z.to_string())
                .into(),
        );
        job.meta = Some(serde_json::Value::Object(meta).to_string());
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[crate::job(crate = "crate")]
    async fn tick() -> Result<(), std::io::Error> {
        Ok(())
    }

    fn schedule(cron: &str, tz: &str, catch_up: CatchUp) -> Schedule {
        Periodic::new(cron, tick::with())
            .timezone(tz)
            .catch_up(catch_up)
            .check()
            .unwrap()
    }

    fn ms(text: &str) -> i64 {
        let zoned: jiff::Zoned = text.parse().unwrap();
        zoned.timestamp().as_millisecond()
    }

    #[test]
    fn a_skipped_local_time_runs_once_after_the_jump() {
        // Europe/Berlin springs from 02:00 to 03:00 on 28 March 2027: 02:30 does not exist.
        let s = schedule("30 2 * * *", "Europe/Berlin", CatchUp::ALL);
        let slots = s.due(
            ms("2027-03-27T00:00:00+01:00[Europe/Berlin]"),
            ms("2027-03-29T12:00:00+02:00[Europe/Berlin]"),
        );
        let at: Vec<i64> = slots.iter().map(|s| s.at).collect();
        assert_eq!(
            at,
            [
                ms("2027-03-27T02:30:00+01:00[Europe/Berlin]"),
                ms("2027-03-28T03:00:00+02:00[Europe/Berlin]"),
                ms("2027-03-29T02:30:00+02:00[Europe/Berlin]"),
            ]
        );
    }

    #[test]
    fn a_repeated_local_time_runs_once() {
        // Europe/Berlin falls back from 03:00 to 02:00 on 31 October 2027: 02:30 happens twice.
        let s = schedule("30 2 * * *", "Europe/Berlin", CatchUp::ALL);
        let slots = s.due(
            ms("2027-10-30T12:00:00+02:00[Europe/Berlin]"),
            ms("2027-11-01T12:00:00+01:00[Europe/Berlin]"),
        );
        let at: Vec<i64> = slots.iter().map(|s| s.at).collect();
        assert_eq!(
            at,
            [
                ms("2027-10-31T02:30:00+02:00[Europe/Berlin]"),
                ms("2027-11-01T02:30:00+01:00[Europe/Berlin]"),
            ]
        );
    }

    #[test]
    fn catch_up_policies() {
        let done = ms("2027-01-01T00:00:00+00:00[UTC]");
        let now = ms("2027-01-01T05:30:00+00:00[UTC]");
        let hourly = |c| schedule("0 * * * *", "UTC", c);
        let five = ms("2027-01-01T05:00:00+00:00[UTC]");
        // Half an hour late: too late to run under `None`, but marked done.
        assert_eq!(
            hourly(CatchUp::None).due(done, now),
            [Slot {
                at: five,
                run: false
            }]
        );
        assert_eq!(
            hourly(CatchUp::None).due(done, five + 30_000),
            [Slot {
                at: five,
                run: true
            }]
        );
        assert_eq!(
            hourly(CatchUp::Latest).due(done, now),
            [Slot {
                at: five,
                run: true
            }]
        );
        let all = hourly(CatchUp::All { max: 3 }).due(done, now);
        let at: Vec<i64> = all.iter().map(|s| s.at).collect();
        assert_eq!(at, [five - 7_200_000, five - 3_600_000, five]);
        assert_eq!(hourly(CatchUp::ALL).due(done, now).len(), 5);
        assert!(hourly(CatchUp::ALL).due(five, now).is_empty());
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let bad = Periodic::new("61 * * * *", tick::with())
            .check()
            .unwrap_err();
        assert!(
            bad.to_string()
                .contains("`61 * * * *` is not a cron expression"),
            "{bad}"
        );
        let bad = Periodic::new("* * * * *", tick::with())
            .timezone("Mars/Olympus")
            .check()
            .unwrap_err();
        assert!(
            bad.to_string().contains("unknown time zone `Mars/Olympus`"),
            "{bad}"
        );
        assert_eq!(
            CatchUp::from_stored(&CatchUp::All { max: 7 }.as_stored()),
            CatchUp::All { max: 7 }
        );
        assert_eq!(CatchUp::from_stored("latest"), CatchUp::Latest);
        assert_eq!(CatchUp::from_stored("none"), CatchUp::None);
    }
}
