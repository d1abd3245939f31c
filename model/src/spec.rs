//! [`StoreSpec`]: the job rows and the effect ledger, one method per store operation, each the
//! plain meaning of one SQL statement (see the crate docs for the table of which).
//!
//! Every job of the model shares one key, so they contend for one unique slot and one ledger
//! scope, which is where the protocol's hard cases live.

/// A job's state, as the `state` column has it (`scheduled` is `retryable` here: both wait for
/// their time and are promoted alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Available,
    Running,
    Retryable,
    Completed,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

/// A running job's lease: still live, or run out (time passed without a renewal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lease {
    Live,
    Expired,
}

/// The unique strategies the model checks (`until_expired` differs from `until_executed` only
/// by a clock that frees the key, which the model does not have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    UntilExecuting,
    UntilExecuted,
    WhileExecuting,
}

/// How a run ends, as the worker writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Complete,
    /// A failure with attempts left.
    Retry,
    /// A failure with none left, or a permanent one.
    Die,
    /// Run again later; the attempt is given back.
    Snooze,
}

/// One row of `errand_jobs`, with only the columns the protocol reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Row {
    pub state: JobState,
    pub fence: u8,
    pub attempt: u8,
    /// `unique_key` is set: this job holds the key against duplicates.
    pub holds_key: bool,
    /// `running_key` is set (`while_executing`).
    pub running_key: bool,
    pub worker: Option<u8>,
    /// `lease_until`, for a running job.
    pub lease: Option<Lease>,
    pub death_pending: bool,
    /// `death_until` is in the future: a handler has the death.
    pub death_leased: bool,
    pub cancel_requested: bool,
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inserted {
    New(usize),
    Duplicate(usize),
}

/// What a cancellation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cancellation {
    Cancelled,
    Requested,
    AlreadyFinished,
}

/// Deliberate defects, each a broken variant of one statement, for showing that the checks
/// catch what they claim to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    /// `finish` without `AND fence = $2`.
    pub finish_ignores_fence: bool,
    /// The rescue gives a retried `until_executing` job its key back without asking whether
    /// another job holds it.
    pub rescue_takes_key_back: bool,
    /// `claim_deaths` clears `death_pending` instead of leasing the death.
    pub deaths_cleared_when_claimed: bool,
    /// `retry_dead` without `state = 'dead'`: a completed job can be retried.
    pub retry_any_state: bool,
    /// The rescue clears the lease but leaves the job `running`.
    pub rescue_leaves_running: bool,
    /// `renew` by id alone, without the worker and the fence.
    pub renew_by_id_only: bool,
    /// The completion without its `cancel_requested` case: a run that returns `Ok` after its
    /// cancellation was asked completes.
    pub completion_ignores_cancel: bool,
}

/// The rows, the ledger, and what the statements did that no row shows (for the properties).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreSpec {
    pub strategy: Strategy,
    pub max_attempts: u8,
    pub faults: Faults,
    /// Indexed by job id.
    pub rows: Vec<Row>,
    /// The ledger's one step (scope: the shared key) is recorded.
    pub step_recorded: bool,
    /// Per job: how many completions the store accepted.
    pub completions: Vec<u8>,
    /// Per job: a cancel was answered `Cancelled` or `Requested` (since its last retry from the
    /// dead set).
    pub cancel_answered: Vec<bool>,
    /// A write carrying a fence other than the row's changed the row.
    pub stale_write: bool,
    /// A renewal extended a lease under a fence no run of the renewing worker had.
    pub foreign_renewal: bool,
    /// A release put back a job that had finished, or spent an attempt.
    pub bad_release: bool,
    /// Reachability marks: a rescue, a refused duplicate, a refused stale write.
    pub rescued: bool,
    pub duplicate_refused: bool,
    pub stale_write_refused: bool,
}

impl StoreSpec {
    pub fn new(strategy: Strategy, max_attempts: u8, faults: Faults) -> StoreSpec {
        StoreSpec {
            strategy,
            max_attempts,
            faults,
            rows: Vec::new(),
            step_recorded: false,
            completions: Vec::new(),
            cancel_answered: Vec::new(),
            stale_write: false,
            foreign_renewal: false,
            bad_release: false,
            rescued: false,
            duplicate_refused: false,
            stale_write_refused: false,
        }
    }

    /// `errand_key_after`: whether a job that held `held` still holds its key once it moves to
    /// `state`.
    pub fn key_after(&self, state: JobState, held: bool) -> bool {
        if state.is_final() {
            false
        } else if state == JobState::Running {
            held && self.strategy != Strategy::UntilExecuting
        } else {
            held
        }
    }

    /// The job holding the key, if any.
    pub fn key_holder(&self) -> Option<usize> {
        self.rows.iter().position(|row| row.holds_key)
    }

    /// The whole of `Store::enqueue`: a new job, unless the key is held.
    pub fn enqueue(&mut self) -> Inserted {
        match self.insert() {
            Some(id) => Inserted::New(id),
            None => {
                self.duplicate_refused = true;
                // The store's loop looks the holder up at once; here nothing ran between.
                Inserted::Duplicate(self.key_holder().unwrap_or(0))
            }
        }
    }

    /// `insert` (after `expire_key`, which never fires without a clock): the new job's id, or
    /// `None` when the unique index refused it (`ON CONFLICT DO NOTHING`).
    pub fn insert(&mut self) -> Option<usize> {
        let unique = self.strategy != Strategy::WhileExecuting;
        if unique && self.key_holder().is_some() {
            return None;
        }
        self.rows.push(Row {
            state: JobState::Available,
            fence: 0,
            attempt: 0,
            holds_key: unique,
            running_key: false,
            worker: None,
            lease: None,
            death_pending: false,
            death_leased: false,
            cancel_requested: false,
        });
        self.completions.push(0);
        self.cancel_answered.push(false);
        Some(self.rows.len() - 1)
    }

    /// `claim`: an available job becomes `worker`'s, under a new fence. Returns the fence and
    /// the attempt.
    pub fn claim(&mut self, id: usize, worker: u8) -> Option<(u8, u8)> {
        let row = &self.rows[id];
        if row.state != JobState::Available {
            return None;
        }
        let holds = self.key_after(JobState::Running, row.holds_key);
        let row = &mut self.rows[id];
        row.state = JobState::Running;
        row.fence += 1;
        row.attempt += 1;
        row.lease = Some(Lease::Live);
        row.worker = Some(worker);
        row.holds_key = holds;
        Some((row.fence, row.attempt))
    }

    /// `promote`: a waiting job whose time came becomes available.
    pub fn promote(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if row.state != JobState::Retryable {
            return false;
        }
        row.state = JobState::Available;
        true
    }

    /// `take_running_key`: the run takes the key for as long as it runs, unless another
    /// running job has it (the unique index refuses).
    pub fn take_running_key(&mut self, id: usize, fence: u8) -> bool {
        let held_elsewhere = self
            .rows
            .iter()
            .enumerate()
            .any(|(other, row)| other != id && row.running_key);
        let row = &mut self.rows[id];
        if held_elsewhere || row.state != JobState::Running || row.fence != fence {
            return false;
        }
        row.running_key = true;
        true
    }

    /// Whether a write under `fence` may change row `id`: it is running under that fence (or,
    /// broken, running at all). Marks a stale write, refused or not.
    fn fenced(&mut self, id: usize, fence: u8) -> bool {
        let row = &self.rows[id];
        if row.state != JobState::Running {
            return false;
        }
        if row.fence == fence {
            return true;
        }
        if self.faults.finish_ignores_fence {
            self.stale_write = true;
            return true;
        }
        self.stale_write_refused = true;
        false
    }

    /// `finish`: ends a run as the worker decided, if the run still owns the job.
    pub fn finish(&mut self, id: usize, fence: u8, outcome: Outcome) -> bool {
        if !self.fenced(id, fence) {
            return false;
        }
        // A run that returns (or is to go again) after its cancellation was asked ends
        // cancelled, whether or not its worker had read the request.
        let asked = self.rows[id].cancel_requested;
        let state = match outcome {
            Outcome::Die => JobState::Dead,
            Outcome::Complete if asked && !self.faults.completion_ignores_cancel => {
                JobState::Cancelled
            }
            Outcome::Retry | Outcome::Snooze if asked => JobState::Cancelled,
            Outcome::Complete => JobState::Completed,
            Outcome::Retry | Outcome::Snooze => JobState::Retryable,
        };
        // A retried or snoozed `until_executing` job takes its key back if it is free.
        let takes_back = !state.is_final()
            && self.strategy == Strategy::UntilExecuting
            && self.key_holder().is_none();
        let holds = takes_back || self.key_after(state, self.rows[id].holds_key);
        let row = &mut self.rows[id];
        row.state = state;
        // A snooze gives its attempt back, unless the cancellation turns it into the run's
        // end: that run had begun, and its attempt counts (migration 17).
        if outcome == Outcome::Snooze && !asked {
            row.attempt -= 1;
        }
        row.lease = None;
        row.running_key = false;
        row.holds_key = holds;
        row.cancel_requested = false;
        row.death_pending = state == JobState::Dead;
        if state == JobState::Completed {
            self.completions[id] += 1;
        }
        true
    }

    /// `complete` (in the caller's transaction) for one run.
    pub fn complete(&mut self, id: usize, fence: u8) -> bool {
        self.finish(id, fence, Outcome::Complete)
    }

    /// `complete_many`: each run completed if it still owns its job; returns the ids.
    pub fn complete_many(&mut self, runs: &[(usize, u8)]) -> Vec<usize> {
        runs.iter()
            .filter(|&&(id, fence)| self.complete(id, fence))
            .map(|&(id, _)| id)
            .collect()
    }

    /// `renew`: extends the lease of each run `worker` still owns, under its fence; returns
    /// those renewed, each with whether its cancellation was requested.
    pub fn renew(&mut self, worker: u8, runs: &[(usize, u8)]) -> Vec<(usize, u8, bool)> {
        let mut renewed = Vec::new();
        for &(id, fence) in runs {
            let by_id_only = self.faults.renew_by_id_only;
            let row = &mut self.rows[id];
            let owned = row.worker == Some(worker) && row.fence == fence;
            if row.state == JobState::Running && (owned || by_id_only) {
                row.lease = Some(Lease::Live);
                renewed.push((id, fence, row.cancel_requested));
            }
        }
        for (id, row) in self.rows.iter().enumerate() {
            let renewed_here = renewed.iter().any(|&(r, _, _)| r == id);
            if renewed_here && (!runs.contains(&(id, row.fence)) || row.worker != Some(worker)) {
                self.foreign_renewal = true;
            }
        }
        renewed
    }

    /// Time passes: a running job's lease runs out unless renewed.
    pub fn expire_lease(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if row.state != JobState::Running || row.lease != Some(Lease::Live) {
            return false;
        }
        row.lease = Some(Lease::Expired);
        true
    }

    /// `rescue`: every running job whose lease ran out is retried, or dies with no attempts
    /// left. Returns the ids.
    pub fn rescue(&mut self) -> Vec<usize> {
        let expired: Vec<usize> = (0..self.rows.len())
            .filter(|&id| self.rows[id].state == JobState::Running)
            .filter(|&id| self.rows[id].lease == Some(Lease::Expired))
            .collect();
        self.rescue_only(&expired);
        expired
    }

    /// The rescue of exactly `ids`, as PostgreSQL's may be when it skips rows other
    /// statements hold: false (and nothing changed) unless each is running with its lease run
    /// out.
    pub fn rescue_only(&mut self, ids: &[usize]) -> bool {
        let expired =
            |row: &Row| row.state == JobState::Running && row.lease == Some(Lease::Expired);
        if !ids.iter().all(|&id| self.rows.get(id).is_some_and(expired)) {
            return false;
        }
        let mut rescued = Vec::new();
        for &id in ids {
            let row = &self.rows[id];
            // A job whose cancellation was asked before its worker stopped ends cancelled.
            let state = if row.cancel_requested {
                JobState::Cancelled
            } else if row.attempt >= self.max_attempts {
                JobState::Dead
            } else {
                JobState::Retryable
            };
            let mut holds = self.key_after(state, row.holds_key);
            if self.faults.rescue_takes_key_back
                && self.strategy == Strategy::UntilExecuting
                && state == JobState::Retryable
            {
                holds = true;
            }
            let row = &mut self.rows[id];
            row.state = if self.faults.rescue_leaves_running {
                JobState::Running
            } else {
                state
            };
            row.lease = None;
            row.running_key = false;
            row.holds_key = holds;
            row.death_pending = state == JobState::Dead;
            row.cancel_requested = false;
            rescued.push(id);
        }
        if !rescued.is_empty() {
            self.rescued = true;
        }
        true
    }

    /// `release`: `worker`'s unfinished runs go back to `available`, their attempts refunded;
    /// one whose cancellation was asked ends cancelled instead, its attempt kept.
    pub fn release(&mut self, worker: u8, runs: &[(usize, u8)]) {
        for &(id, _) in runs {
            let row = &self.rows[id];
            if row.state != JobState::Running || row.worker != Some(worker) {
                continue;
            }
            let cancelled = row.cancel_requested;
            let holds = if cancelled {
                self.key_after(JobState::Cancelled, row.holds_key)
            } else {
                row.holds_key
            };
            let row = &mut self.rows[id];
            if row.attempt == 0 {
                self.bad_release = true;
            }
            row.state = if cancelled {
                JobState::Cancelled
            } else {
                JobState::Available
            };
            row.holds_key = holds;
            row.cancel_requested = false;
            // A run cancelled as it is put back may have begun: its attempt counts.
            if !cancelled {
                row.attempt -= 1;
            }
            row.lease = None;
            row.worker = None;
            row.running_key = false;
        }
    }

    /// `cancel`, then `request_cancel`.
    pub fn cancel(&mut self, id: usize) -> Cancellation {
        let row = &self.rows[id];
        match row.state {
            JobState::Available | JobState::Retryable => {
                let holds = self.key_after(JobState::Cancelled, row.holds_key);
                let row = &mut self.rows[id];
                row.state = JobState::Cancelled;
                row.lease = None;
                row.holds_key = holds;
                self.cancel_answered[id] = true;
                Cancellation::Cancelled
            }
            JobState::Running => {
                self.rows[id].cancel_requested = true;
                self.cancel_answered[id] = true;
                Cancellation::Requested
            }
            _ => Cancellation::AlreadyFinished,
        }
    }

    /// `claim_deaths`: leases every pending death no handler has; returns the ids.
    pub fn claim_deaths(&mut self) -> Vec<usize> {
        let mut taken = Vec::new();
        for (id, row) in self.rows.iter_mut().enumerate() {
            if row.death_pending && !row.death_leased {
                if self.faults.deaths_cleared_when_claimed {
                    row.death_pending = false;
                } else {
                    row.death_leased = true;
                }
                taken.push(id);
            }
        }
        taken
    }

    /// Time passes: a death's lease runs out, and another handler may take it.
    pub fn expire_death_lease(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if !row.death_leased {
            return false;
        }
        row.death_leased = false;
        true
    }

    /// `death_delivered`.
    pub fn death_delivered(&mut self, id: usize) {
        let row = &mut self.rows[id];
        row.death_pending = false;
        row.death_leased = false;
    }

    /// `retry_dead` for one job: available again with its attempts reset and, for a unique
    /// job, its key back, unless another job holds the key.
    pub fn retry_dead(&mut self, id: usize) -> bool {
        let unique = matches!(
            self.strategy,
            Strategy::UntilExecuting | Strategy::UntilExecuted
        );
        let retryable = self.rows[id].state == JobState::Dead
            || (self.faults.retry_any_state && self.rows[id].state.is_final());
        if !retryable || (unique && self.key_holder().is_some()) {
            return false;
        }
        let row = &mut self.rows[id];
        row.state = JobState::Available;
        row.attempt = 0;
        row.lease = None;
        row.death_pending = false;
        row.death_leased = false;
        row.cancel_requested = false;
        row.holds_key = unique;
        self.cancel_answered[id] = false;
        true
    }

    /// `step_result`: whether the step was recorded.
    pub fn step_result(&self) -> bool {
        self.step_recorded
    }

    /// `record_step`: the first record wins.
    pub fn record_step(&mut self) {
        self.step_recorded = true;
    }
}
