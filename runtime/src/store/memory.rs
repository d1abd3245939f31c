//! The in-memory store behind [`testing::TestClient`](crate::testing::TestClient): the same
//! semantics as the SQL stores, held in a map under a mutex, with a clock the test can move
//! forward so that retries and scheduled jobs run without real waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::classify::FailureKind;
use crate::dead::{Cancellation, Retention};
use crate::error::Error;
use crate::info::{duration_millis, from_millis, to_millis, AttemptError, JobInfo};
use crate::job::{JobId, JobState};
use crate::job::{OnConflict, UniqueStrategy};
use crate::store::{
    Claimed, DeadQuery, Exchange, Finish, Inserted, NewJob, RunId, StepOwner, Store,
    DEATH_DELIVERY_WINDOW, KEEP_FIRST_ERRORS, LEASE_LOST_AFTER, LEASE_LOST_BEFORE, MAX_ERRORS,
    UNKNOWN_KIND_AFTER, UNKNOWN_KIND_BEFORE,
};

#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: i64,
    jobs: BTreeMap<i64, Row>,
    /// The effect ledger: `(scope, step)` to the recorded result.
    steps: HashMap<(String, String), Step>,
    /// How far the test has moved the clock past real time.
    skew_ms: i64,
}

/// A ledger record and whose it is, for pruning.
#[derive(Clone, Debug)]
struct Step {
    result: String,
    created_at: i64,
    kind: String,
    key: Option<String>,
    job: i64,
}

#[derive(Clone, Debug)]
struct Row {
    info: JobInfo,
    args: String,
    fence: i64,
    lease_until: Option<i64>,
    worker: Option<String>,
    /// The key while this job refuses duplicates, as the SQL stores' unique index sees it.
    unique_key: Option<String>,
    unique_strategy: Option<UniqueStrategy>,
    unique_until: Option<i64>,
    /// The key while this `while_executing` job runs.
    running_key: Option<String>,
    /// Died, and no death handler has succeeded yet.
    death_pending: bool,
    /// A worker took the death for its handler until then.
    death_until: Option<i64>,
    /// How many times the death was taken.
    death_deliveries: u32,
    /// `client.cancel` asked this running job to stop.
    cancel_requested: bool,
}

/// Appends to a job's history, keeping the first few and the latest errors.
fn push_error(errors: &mut Vec<AttemptError>, error: AttemptError) {
    if errors.len() >= MAX_ERRORS {
        errors.remove(KEEP_FIRST_ERRORS);
    }
    errors.push(error);
}

impl Row {
    /// Gives up the keys a job holds once it has finished for good.
    fn release_keys_at_end(&mut self) {
        self.running_key = None;
        if self.unique_strategy != Some(UniqueStrategy::UntilExpired) {
            self.unique_key = None;
        }
    }
}

impl Inner {
    fn now(&self) -> i64 {
        to_millis(SystemTime::now()).saturating_add(self.skew_ms)
    }

    /// The job of `kind` whose `key` (unique or running, as `held` picks) is taken.
    fn holder(&self, kind: &str, key: &str, held: impl Fn(&Row) -> Option<&str>) -> Option<i64> {
        self.jobs
            .values()
            .find(|r| r.info.kind == kind && held(r) == Some(key))
            .map(|r| r.info.id.get())
    }
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still consistent per job.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The earliest run time of a job that has not finished and is not running, if any.
    pub(crate) fn next_run_at(&self) -> Option<i64> {
        let inner = self.lock();
        inner
            .jobs
            .values()
            .filter(|r| {
                matches!(
                    r.info.state,
                    JobState::Scheduled | JobState::Available | JobState::Retryable
                )
            })
            .map(|r| to_millis(r.info.scheduled_at))
            .min()
    }

    /// Moves the clock forward so that a job due at `at_ms` is due now.
    pub(crate) fn advance_to(&self, at_ms: i64) {
        let mut inner = self.lock();
        let now = inner.now();
        if at_ms > now {
            inner.skew_ms = inner.skew_ms.saturating_add(at_ms - now);
        }
    }

    /// The queues that hold jobs.
    pub(crate) fn queues(&self) -> Vec<String> {
        let inner = self.lock();
        let mut queues: Vec<String> = inner.jobs.values().map(|r| r.info.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }

    pub(crate) fn clear(&self) {
        self.lock().jobs.clear();
    }
}

impl MemoryStore {
    /// One queue's part of a claim: for SQL stores, one statement.
    async fn claim_queue(
        &self,
        queue: &str,
        limit: usize,
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let mut due: Vec<(u8, i64, i64)> = inner
            .jobs
            .values()
            .filter(|r| {
                r.info.queue == queue
                    && kinds.contains(&r.info.kind.as_str())
                    && matches!(
                        r.info.state,
                        JobState::Scheduled | JobState::Available | JobState::Retryable
                    )
                    && to_millis(r.info.scheduled_at) <= now
            })
            .map(|r| {
                (
                    r.info.priority,
                    to_millis(r.info.scheduled_at),
                    r.info.id.get(),
                )
            })
            .collect();
        due.sort_unstable();
        let mut claimed = Vec::new();
        for (_, _, id) in due.into_iter().take(limit) {
            let Some(row) = inner.jobs.get_mut(&id) else {
                continue;
            };
            row.info.state = JobState::Running;
            row.info.attempt += 1;
            row.info.attempted_at = Some(from_millis(now));
            row.fence += 1;
            row.lease_until = Some(now.saturating_add(duration_millis(lease)));
            row.worker = Some(worker.to_owned());
            if row.unique_strategy == Some(UniqueStrategy::UntilExecuting) {
                row.unique_key = None;
            }
            claimed.push(Claimed {
                id: row.info.id,
                kind: row.info.kind.clone(),
                queue: row.info.queue.clone(),
                args: row.args.clone(),
                attempt: row.info.attempt,
                max_attempts: row.info.max_attempts,
                key: row.info.key.clone(),
                fence: row.fence,
            });
        }
        Ok(claimed)
    }
}

impl Store for MemoryStore {
    async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let run_at = job.run_at.at_ms(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        if let Some(key) = job.unique_key() {
            for row in inner.jobs.values_mut() {
                let expired = row.unique_until.is_some_and(|until| until <= now);
                if row.info.kind == job.kind && row.unique_key.as_deref() == Some(key) && expired {
                    row.unique_key = None;
                }
            }
            if let Some(holder) = inner.holder(job.kind, key, |r| r.unique_key.as_deref()) {
                let Some(row) = inner.jobs.get_mut(&holder) else {
                    unreachable!("holder was just found")
                };
                let waiting = matches!(
                    row.info.state,
                    JobState::Scheduled | JobState::Available | JobState::Retryable
                );
                if job.on_conflict() == OnConflict::Replace && waiting {
                    row.args = job.args.clone();
                    row.info.args =
                        serde_json::from_str(&job.args).unwrap_or(serde_json::Value::Null);
                    row.info.queue = job.queue.clone();
                    row.info.priority = job.priority;
                    row.info.scheduled_at = from_millis(run_at);
                    row.info.state = state;
                    return Ok(Inserted::Replaced(row.info.id));
                }
                return Ok(Inserted::Duplicate(row.info.id));
            }
        }
        inner.next_id += 1;
        let id = JobId::new(inner.next_id);
        let args = serde_json::from_str(&job.args).map_err(|e| Error::Corrupt {
            store: "memory",
            id,
            reason: format!("arguments are not JSON: {e}"),
        })?;
        let info = JobInfo {
            id,
            kind: job.kind.to_owned(),
            queue: job.queue.clone(),
            args,
            state,
            attempt: 0,
            max_attempts: job.max_attempts,
            priority: job.priority,
            key: job.key.clone(),
            created_at: from_millis(now),
            scheduled_at: from_millis(run_at),
            attempted_at: None,
            finished_at: None,
            errors: Vec::new(),
        };
        let row = Row {
            info,
            args: job.args.clone(),
            fence: 0,
            lease_until: None,
            worker: None,
            unique_key: job.unique_key().map(str::to_owned),
            unique_strategy: job.unique.map(|u| u.strategy),
            unique_until: job.unique_for_ms().map(|ms| now.saturating_add(ms)),
            running_key: None,
            death_pending: false,
            death_until: None,
            death_deliveries: 0,
            cancel_requested: false,
        };
        inner.jobs.insert(id.get(), row);
        Ok(Inserted::New(id))
    }

    async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let mut claimed = Vec::new();
        for (queue, limit) in wanted {
            claimed.extend(
                self.claim_queue(queue, *limit, kinds, worker, lease)
                    .await?,
            );
        }
        Ok(claimed)
    }

    async fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Exchange, Error> {
        // Two steps: neither fails in memory, so one is never done without the other.
        let completed = self.complete_many(done).await?;
        let claimed = self.claim(wanted, kinds, worker, lease).await?;
        Ok(Exchange { completed, claimed })
    }

    async fn promote(&self, _limit: usize) -> Result<u64, Error> {
        // The memory store's claim looks at due waiting jobs itself: nothing to walk.
        Ok(0)
    }

    async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
    ) -> Result<u64, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let cut = now.saturating_sub(duration_millis(grace));
        let mut buried = 0;
        for row in inner.jobs.values_mut() {
            let waiting = matches!(
                row.info.state,
                JobState::Scheduled | JobState::Available | JobState::Retryable
            );
            if !waiting
                || !queues.contains(&row.info.queue.as_str())
                || kinds.contains(&row.info.kind.as_str())
                || to_millis(row.info.scheduled_at) > cut
            {
                continue;
            }
            let message = format!("{UNKNOWN_KIND_BEFORE}{}{UNKNOWN_KIND_AFTER}", row.info.kind);
            push_error(
                &mut row.info.errors,
                AttemptError {
                    attempt: row.info.attempt,
                    kind: FailureKind::UnknownKind,
                    message,
                    at: from_millis(now),
                    duration: Duration::ZERO,
                    worker: worker.to_owned(),
                },
            );
            row.info.state = JobState::Dead;
            row.info.finished_at = Some(from_millis(now));
            row.death_pending = true;
            row.release_keys_at_end();
            buried += 1;
        }
        Ok(buried)
    }

    async fn finish(&self, id: JobId, fence: i64, finish: &Finish) -> Result<bool, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let Some(row) = inner.jobs.get_mut(&id.get()) else {
            return Ok(false);
        };
        if row.fence != fence || row.info.state != JobState::Running {
            return Ok(false);
        }
        row.info.state = finish.state;
        if let Some(d) = finish.run_after {
            row.info.scheduled_at = from_millis(now.saturating_add(duration_millis(d)));
        }
        if finish.refund_attempt {
            row.info.attempt = row.info.attempt.saturating_sub(1);
        }
        row.info.finished_at = finish.state.is_final().then(|| from_millis(now));
        row.lease_until = None;
        if let Some(error) = &finish.error {
            let at = from_millis(now);
            push_error(
                &mut row.info.errors,
                AttemptError {
                    at,
                    ..error.clone()
                },
            );
        }
        row.running_key = None;
        row.cancel_requested = false;
        row.death_pending = finish.state == JobState::Dead;
        if finish.state.is_final() {
            row.release_keys_at_end();
        } else if row.unique_strategy == Some(UniqueStrategy::UntilExecuting) {
            // Waiting again: take the key back, unless a duplicate took it meanwhile.
            let (kind, key) = (row.info.kind.clone(), row.info.key.clone());
            if let Some(key) = key {
                if inner
                    .holder(&kind, &key, |r| r.unique_key.as_deref())
                    .is_none()
                {
                    if let Some(row) = inner.jobs.get_mut(&id.get()) {
                        row.unique_key = Some(key);
                    }
                }
            }
        }
        Ok(true)
    }

    async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        let mut inner = self.lock();
        let until = inner.now().saturating_add(duration_millis(lease));
        let mut renewed = Vec::new();
        for run in runs {
            if let Some(row) = inner.jobs.get_mut(&run.id.get()) {
                if row.info.state == JobState::Running
                    && row.worker.as_deref() == Some(worker)
                    && row.fence == run.fence
                {
                    row.lease_until = Some(until);
                    renewed.push((*run, row.cancel_requested));
                }
            }
        }
        Ok(renewed)
    }

    async fn release(&self, worker: &str, ids: &[JobId]) -> Result<(), Error> {
        let mut inner = self.lock();
        for id in ids {
            if let Some(row) = inner.jobs.get_mut(&id.get()) {
                if row.info.state == JobState::Running && row.worker.as_deref() == Some(worker) {
                    row.info.state = JobState::Available;
                    row.info.attempt = row.info.attempt.saturating_sub(1);
                    row.lease_until = None;
                    row.worker = None;
                    row.running_key = None;
                }
            }
        }
        Ok(())
    }

    async fn rescue(&self) -> Result<Vec<JobId>, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let mut rescued = Vec::new();
        for row in inner.jobs.values_mut() {
            if row.info.state != JobState::Running
                || row.lease_until.is_none_or(|until| until >= now)
            {
                continue;
            }
            let worker = row.worker.clone().unwrap_or_else(|| "?".to_owned());
            let started = row.info.attempted_at.map_or(now, to_millis);
            push_error(
                &mut row.info.errors,
                AttemptError {
                    attempt: row.info.attempt,
                    kind: FailureKind::LeaseLost,
                    message: format!("{LEASE_LOST_BEFORE}{worker}{LEASE_LOST_AFTER}"),
                    at: from_millis(now),
                    duration: Duration::from_millis(u64::try_from(now - started).unwrap_or(0)),
                    worker,
                },
            );
            let dead = row.info.attempt >= row.info.max_attempts;
            row.info.state = if dead {
                JobState::Dead
            } else {
                JobState::Retryable
            };
            row.info.finished_at = dead.then(|| from_millis(now));
            row.info.scheduled_at = from_millis(now);
            row.lease_until = None;
            row.running_key = None;
            if dead {
                row.release_keys_at_end();
                row.death_pending = true;
            }
            rescued.push(row.info.id);
        }
        Ok(rescued)
    }

    async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        Ok(self.lock().jobs.get(&id.get()).map(|r| r.info.clone()))
    }

    async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let mut done = Vec::new();
        for (id, fence) in runs {
            if self.finish(*id, *fence, &Finish::completed()).await? {
                done.push(*id);
            }
        }
        Ok(done)
    }

    async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let Some(row) = inner.jobs.get(&id.get()) else {
            return Ok(false);
        };
        if row.fence != fence || row.info.state != JobState::Running {
            return Ok(false);
        }
        let (kind, key) = (
            row.info.kind.clone(),
            row.info.key.clone().unwrap_or_default(),
        );
        if let Some(holder) = inner.holder(&kind, &key, |r| r.running_key.as_deref()) {
            let held_since = inner.jobs.get(&holder).and_then(|r| r.info.attempted_at);
            let expired = hold.zip(held_since).is_some_and(|(hold, since)| {
                to_millis(since).saturating_add(duration_millis(hold)) <= now
            });
            if !expired {
                return Ok(false);
            }
            if let Some(holder) = inner.jobs.get_mut(&holder) {
                holder.running_key = None;
            }
        }
        if let Some(row) = inner.jobs.get_mut(&id.get()) {
            row.running_key = Some(key);
        }
        Ok(true)
    }

    async fn step_result(&self, scope: &str, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .lock()
            .steps
            .get(&(scope.to_owned(), name.to_owned()))
            .map(|step| step.result.clone()))
    }

    async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let created_at = inner.now();
        inner
            .steps
            .entry((owner.scope.to_owned(), name.to_owned()))
            .or_insert_with(|| Step {
                result: result.to_owned(),
                created_at,
                kind: owner.kind.to_owned(),
                key: owner.key.map(str::to_owned),
                job: owner.job.get(),
            });
        Ok(())
    }

    async fn cancel(&self, id: JobId, error: &AttemptError) -> Result<Cancellation, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let Some(row) = inner.jobs.get_mut(&id.get()) else {
            return Ok(Cancellation::NotFound);
        };
        match row.info.state {
            JobState::Scheduled | JobState::Available | JobState::Retryable | JobState::Pending => {
                row.info.state = JobState::Cancelled;
                row.info.finished_at = Some(from_millis(now));
                push_error(
                    &mut row.info.errors,
                    AttemptError {
                        attempt: row.info.attempt,
                        at: from_millis(now),
                        ..error.clone()
                    },
                );
                row.release_keys_at_end();
                Ok(Cancellation::Cancelled)
            }
            JobState::Running => {
                row.cancel_requested = true;
                Ok(Cancellation::Requested)
            }
            finished => Ok(Cancellation::AlreadyFinished(finished)),
        }
    }

    async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let mut deaths = Vec::new();
        for row in inner
            .jobs
            .values_mut()
            .filter(|r| r.death_pending && r.death_until.is_none_or(|until| until < now))
            .take(limit)
        {
            row.death_until = Some(now.saturating_add(duration_millis(lease)));
            row.death_deliveries += 1;
            deaths.push((row.info.clone(), row.death_deliveries));
        }
        Ok(deaths)
    }

    async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        if let Some(row) = self.lock().jobs.get_mut(&id.get()) {
            row.death_pending = false;
            row.death_until = None;
        }
        Ok(())
    }

    async fn dead_jobs(
        &self,
        filter: &DeadQuery,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobInfo>, Error> {
        let inner = self.lock();
        Ok(inner
            .jobs
            .values()
            .filter(|r| after.is_none_or(|a| r.info.id > a) && filter.matches(&r.info))
            .take(limit)
            .map(|r| r.info.clone())
            .collect())
    }

    async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let ids: Vec<i64> = inner
            .jobs
            .values()
            .filter(|r| filter.matches(&r.info))
            .map(|r| r.info.id.get())
            .collect();
        let mut retried = 0;
        for id in ids {
            let Some(row) = inner.jobs.get(&id) else {
                continue;
            };
            // A job unique until executed takes its key back, if no other job holds it now.
            let key = match row.unique_strategy {
                Some(UniqueStrategy::UntilExecuting | UniqueStrategy::UntilExecuted) => {
                    row.info.key.clone()
                }
                _ => None,
            };
            if let Some(key) = &key {
                let kind = row.info.kind.clone();
                if inner
                    .holder(&kind, key, |r| r.unique_key.as_deref())
                    .is_some_and(|holder| holder != id)
                {
                    continue;
                }
            }
            let Some(row) = inner.jobs.get_mut(&id) else {
                continue;
            };
            if key.is_some() {
                row.unique_key = key;
            }
            row.info.state = JobState::Available;
            row.info.attempt = 0;
            row.info.scheduled_at = from_millis(now);
            row.info.finished_at = None;
            row.death_pending = false;
            row.death_until = None;
            row.death_deliveries = 0;
            retried += 1;
        }
        Ok(retried)
    }

    async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let mut inner = self.lock();
        let before = inner.jobs.len();
        inner.jobs.retain(|_, r| !filter.matches(&r.info));
        Ok((before - inner.jobs.len()) as u64)
    }

    async fn try_lock(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool, Error> {
        // One process holds the memory store: nobody else could want the lock.
        Ok(true)
    }

    async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        let mut inner = self.lock();
        let now = inner.now();
        let finished_before = now.saturating_sub(duration_millis(retention.finished_for));
        let dead_before = now.saturating_sub(duration_millis(retention.dead_for));
        let died = |r: &Row| r.info.finished_at.map_or(now, to_millis);
        let mut doomed: Vec<i64> = inner
            .jobs
            .values()
            .filter(|r| match r.info.state {
                JobState::Completed | JobState::Cancelled => died(r) < finished_before,
                JobState::Dead => died(r) < dead_before,
                _ => false,
            })
            .map(|r| r.info.id.get())
            .collect();
        let mut dead: Vec<(i64, i64)> = inner
            .jobs
            .values()
            .filter(|r| r.info.state == JobState::Dead)
            .map(|r| (died(r), r.info.id.get()))
            .collect();
        dead.sort_unstable_by(|a, b| b.cmp(a));
        doomed.extend(
            dead.iter()
                .skip(retention.max_dead)
                .map(|(_, id)| *id)
                // A death its handlers have not had an hour to take is kept until then.
                .filter(|id| {
                    inner.jobs.get(id).is_some_and(|r| {
                        !r.death_pending || died(r) <= now - duration_millis(DEATH_DELIVERY_WINDOW)
                    })
                }),
        );
        doomed.sort_unstable();
        doomed.dedup();
        doomed.truncate(batch);
        for id in &doomed {
            inner.jobs.remove(id);
        }
        let steps_before = now.saturating_sub(duration_millis(retention.steps_for));
        let held = |inner: &Inner, step: &Step| {
            inner.jobs.values().any(|r| {
                !r.info.state.is_final()
                    && r.info.kind == step.kind
                    && match &step.key {
                        Some(key) => r.info.key.as_ref() == Some(key),
                        None => r.info.id.get() == step.job,
                    }
            })
        };
        let stale: Vec<(String, String)> = inner
            .steps
            .iter()
            .filter(|(_, step)| step.created_at < steps_before && !held(&inner, step))
            .map(|(name, _)| name.clone())
            .take(batch)
            .collect();
        for name in &stale {
            inner.steps.remove(name);
        }
        Ok((doomed.len() + stale.len()) as u64)
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.enqueue(job).await? {
                Inserted::New(id) | Inserted::Duplicate(id) | Inserted::Replaced(id) => {
                    ids.push(id)
                }
            }
        }
        Ok(ids)
    }

    async fn jobs(&self, kind: Option<&str>) -> Result<Vec<JobInfo>, Error> {
        let inner = self.lock();
        Ok(inner
            .jobs
            .values()
            .filter(|r| kind.is_none_or(|k| r.info.kind == k))
            .map(|r| r.info.clone())
            .collect())
    }
}
