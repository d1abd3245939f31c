//! [`FlowSpec`]: what a claim may take and how jobs release one another. The rows here carry
//! what [`StoreSpec`](crate::StoreSpec) leaves out (queues and their pause, deadlines, limit
//! slots, fair keys and turns, dependency edges and the settling trigger), and leave out what
//! it is about (unique keys, the ledger, deaths): the two specs meet at the run's fence and
//! lease, which both keep.
//!
//! Each method is the plain meaning of a statement, or of a trigger the statement fires; the
//! crate docs' table says which.

use crate::spec::Lease;

/// A job's state, as the `state` column has it (`scheduled` is `retryable` here, as in
/// [`StoreSpec`](crate::StoreSpec)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowState {
    /// Waiting on other jobs (`waiting_on` > 0).
    Pending,
    Retryable,
    Available,
    Running,
    Completed,
    Dead,
    Cancelled,
}

impl FlowState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            FlowState::Completed | FlowState::Dead | FlowState::Cancelled
        )
    }
}

/// What releases a dependent from its parent (`errand_job_deps.on_failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Edge {
    /// Waits for every parent to complete; cancelled when one dies or is cancelled
    /// (`Request::after`, a saga's next step, a batch's `on_success`).
    Cancel,
    /// Waits for every parent to finish, however (`OnDependencyFailure::Run`, `on_complete`).
    Run,
    /// Released by this parent failing of itself: dead, or cancelled while everything it
    /// waited on had completed (a saga's compensation, by a later step).
    WhenFailed,
    /// Released by this parent having run: completed or dead (a compensation, by the next).
    WhenRan,
    /// Released by this parent cancelled while it ran (a compensation, by its own step).
    WhenStopped,
}

impl Edge {
    /// Released by any one parent, not all.
    pub fn is_any(self) -> bool {
        matches!(self, Edge::WhenFailed | Edge::WhenRan | Edge::WhenStopped)
    }
}

/// How a job carries a key its kind has (a limit's, or `fair_by`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keyed {
    /// The kind has no such option.
    No,
    /// Enqueued with the key (the one limit key, or fair key `n`).
    Yes(u8),
    /// Enqueued before the kind had the option: stored without the key (a rolling deploy).
    Unkeyed(u8),
}

/// What a job is in the scenario, for the properties (the store does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Plain,
    /// Step `n` of the saga.
    Step(u8),
    /// The compensation of step `n`.
    Compensation(u8),
}

/// A job to enqueue: its options and the jobs it waits on (by id, all enqueued before it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowJob {
    pub queue: u8,
    /// Of a kind with a concurrency limit (its running slots).
    pub limited: Keyed,
    /// Of a kind with a rate limit (its start slots).
    pub rated: Keyed,
    pub fair: Keyed,
    pub deadline: bool,
    pub parents: Vec<(usize, Edge)>,
    pub role: Role,
    /// Of a kind that has no limit nor `fair_by` now, stored by a build whose kind had both:
    /// with a limit key and fair key 0 (an option removed).
    pub stale_keys: bool,
}

impl FlowJob {
    pub fn plain() -> FlowJob {
        FlowJob {
            queue: 0,
            limited: Keyed::No,
            rated: Keyed::No,
            fair: Keyed::No,
            deadline: false,
            parents: Vec::new(),
            role: Role::Plain,
            stale_keys: false,
        }
    }

    pub fn in_queue(mut self, queue: u8) -> FlowJob {
        self.queue = queue;
        self
    }

    pub fn limited(mut self, keyed: Keyed) -> FlowJob {
        self.limited = keyed;
        self
    }

    pub fn rated(mut self, keyed: Keyed) -> FlowJob {
        self.rated = keyed;
        self
    }

    /// Of a kind with a limit of either sort.
    pub fn is_limited(&self) -> bool {
        self.limited != Keyed::No || self.rated != Keyed::No
    }

    pub fn fair(mut self, keyed: Keyed) -> FlowJob {
        self.fair = keyed;
        self
    }

    pub fn with_deadline(mut self) -> FlowJob {
        self.deadline = true;
        self
    }

    pub fn after(mut self, parents: &[(usize, Edge)]) -> FlowJob {
        self.parents = parents.to_vec();
        self
    }

    /// Stored with the keys of options its kind no longer has.
    pub fn with_stale_keys(mut self) -> FlowJob {
        self.stale_keys = true;
        self
    }

    pub fn role(mut self, role: Role) -> FlowJob {
        self.role = role;
        self
    }
}

/// One row of `errand_jobs`, with the columns scheduling and settling read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowRow {
    pub job: FlowJob,
    pub state: FlowState,
    pub fence: u8,
    pub attempt: u8,
    pub worker: Option<u8>,
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    /// `limit_key` is set.
    pub limit_key: bool,
    /// `fair_key`, as stored.
    pub fair_key: Option<u8>,
    /// `expires_at` has passed.
    pub expired: bool,
    /// `waiting_on`.
    pub waiting_on: u8,
    /// `has_dependents`.
    pub has_dependents: bool,
    /// Cancelled while a run of it had begun: from `running`, its attempt kept (a run that
    /// ends before it began gives its attempt back).
    pub stopped: bool,
    /// Cancelled by the settling of a job it waited on (`settle_depth` > 0), not of itself.
    pub by_cascade: bool,
}

impl FlowRow {
    /// Carries keys of options its kind no longer has: no claim takes it until a worker
    /// clears them.
    pub fn has_stale_keys(&self) -> bool {
        self.job.stale_keys && (self.limit_key || self.fair_key.is_some())
    }

    /// Lacks a key its kind has, or carries one its kind no longer has: adoption's work.
    pub fn needs_adoption(&self) -> bool {
        (matches!(self.job.fair, Keyed::Unkeyed(_)) && self.fair_key.is_none())
            || ((matches!(self.job.limited, Keyed::Unkeyed(_))
                || matches!(self.job.rated, Keyed::Unkeyed(_)))
                && !self.limit_key)
            || self.has_stale_keys()
    }
}

/// How a claimed job's start check answered (`Store::startable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Startable {
    Yes,
    /// Its queue was paused since the claim: put back.
    Paused,
    /// Its deadline passed: cancelled as expired.
    Expired,
    /// Its cancellation was asked since the claim: cancelled before it began.
    Cancelled,
    /// The run no longer owns the job.
    Lost,
}

/// Deliberate defects, each a broken variant of one statement or trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowFaults {
    /// The limited claim takes a job without a free slot.
    pub claim_ignores_slots: bool,
    /// The slot trigger's `WHEN` without `dead`: a limited job that dies keeps its slot.
    pub slot_kept_after_death: bool,
    /// The limited claim takes a job stored without its limit key (as its kind's) and leaves
    /// the key unwritten (issue 23's defect): the trigger never frees the slot. The claim now
    /// takes only keyed jobs; adoption writes the key first.
    pub claim_leaves_key_unwritten: bool,
    /// The fair claim takes any keyed job, not the head of the key served longest ago.
    pub fair_claim_ignores_turns: bool,
    /// No worker writes the keys of jobs stored before their kind had `fair_by`.
    pub unkeyed_never_adopted: bool,
    /// The start check does not read the queue's pause.
    pub start_ignores_pause: bool,
    /// The start check does not read the deadline.
    pub start_ignores_deadline: bool,
    /// The start check does not read `cancel_requested`.
    pub start_ignores_cancel: bool,
    /// The trigger takes any job cancelled from `running` as stopped, whether or not its run
    /// began (before this model found it).
    pub stopped_without_run: bool,
    /// A step that completes after the step after it was cancelled (not by a cascade) leaves
    /// its compensation waiting (before this model found it).
    pub late_completion_not_compensated: bool,
    /// A dependent's insert reads its parents without locking them: one may finish between
    /// the read and the insert, unseen by both.
    pub insert_without_parent_lock: bool,
    /// The trigger counts a `run` edge down only for a completed parent.
    pub run_edge_needs_completion: bool,
    /// The trigger takes a step cancelled because an earlier one failed as failed itself.
    pub failed_includes_cascade: bool,
    /// `retry_dead` without its `death_settled` condition.
    pub retry_ignores_settled: bool,
    /// The end of a run does not read `cancel_requested`.
    pub completion_ignores_cancel: bool,
    /// A batch takes a job after its callbacks were released.
    pub batch_add_after_release: bool,
    /// A dead job retried is not waited for again by the dependents that counted its death
    /// (before this model found it).
    pub retry_leaves_dependents_counted: bool,
    /// A start slot counts from the claim, not from the run's start (before migration 15).
    pub rate_counts_claims: bool,
    /// The slot trigger keeps a start slot reserved by a run that stopped before it began.
    pub reserved_start_kept: bool,
}

/// What an addition to a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Added {
    /// Added; the callbacks wait for it too.
    Added(usize),
    /// Refused: its callbacks were released (`Error::BatchClosed`).
    Closed,
}

/// The rows, the queues' pauses, the limit's slots and the fair turns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowSpec {
    pub rows: Vec<FlowRow>,
    pub max_attempts: u8,
    /// Per queue: paused.
    pub paused: [bool; 2],
    /// The running slots of the one limit key: the job each holds.
    pub slots: Vec<Option<usize>>,
    /// The start slots of its rate limit (`rate = "n/window"`, `n` slots): the job each is
    /// reserved for or taken by, and whether its run began (then it is free again once the
    /// window passes; before, once its job stops running).
    pub starts: Vec<Option<(usize, bool)>>,
    /// Fair keys in the order last served, least recently first; keys never served are not
    /// listed (`errand_fair_turns`, one queue).
    pub turns: Vec<u8>,
    pub faults: FlowFaults,
    /// Per job: completions the store accepted.
    pub completions: Vec<u8>,
    /// Per job: a cancel was answered `cancelled` or `requested`.
    pub cancel_answered: Vec<bool>,
}

impl FlowSpec {
    /// No jobs; a limit of `limit` running jobs on the one key.
    pub fn new(limit: u8, max_attempts: u8, faults: FlowFaults) -> FlowSpec {
        FlowSpec {
            rows: Vec::new(),
            max_attempts,
            paused: [false; 2],
            slots: vec![None; usize::from(limit)],
            starts: Vec::new(),
            turns: Vec::new(),
            faults,
            completions: Vec::new(),
            cancel_answered: Vec::new(),
        }
    }

    /// The rated kind's limit: `starts` starts a window.
    pub fn with_rate(mut self, starts: u8) -> FlowSpec {
        self.starts = vec![None; usize::from(starts)];
        self
    }

    /// `MARK_STARTED`: the run of job `id` under `fence` begins; the start slot its claim
    /// reserved counts from now.
    pub fn mark_started(&mut self, id: usize, fence: u8) {
        let row = &self.rows[id];
        if row.state != FlowState::Running || row.fence != fence {
            return;
        }
        for slot in self.starts.iter_mut().flatten() {
            if slot.0 == id {
                slot.1 = true;
            }
        }
    }

    /// Time passes a window: the start slots whose runs began are free again.
    pub fn pass_window(&mut self) -> bool {
        let mut freed = false;
        for slot in &mut self.starts {
            if slot.is_some_and(|(_, began)| began) {
                *slot = None;
                freed = true;
            }
        }
        freed
    }

    /// `lock_parents`: the states of `job`'s parents, each now marked as having dependents.
    pub fn lock_parents(&mut self, job: &FlowJob) -> Vec<FlowState> {
        job.parents
            .iter()
            .map(|&(parent, _)| {
                self.rows[parent].has_dependents = true;
                self.rows[parent].state
            })
            .collect()
    }

    /// The whole insert of a job after others (`sql::insert`): its parents locked and read,
    /// its row and edges written, and a job whose dependency already failed cancelled.
    pub fn insert(&mut self, job: FlowJob) -> usize {
        let seen = self.lock_parents(&job);
        self.insert_seen(job, &seen)
    }

    /// The insert's writes, from the parents' states as its read `seen` them.
    pub fn insert_seen(&mut self, job: FlowJob, seen: &[FlowState]) -> usize {
        let (waiting, cancelled) = waiting_at_insert(&job, seen);
        let fair_key = match job.fair {
            Keyed::Yes(key) => Some(key),
            _ if job.stale_keys => Some(0),
            _ => None,
        };
        let limit_key = matches!(job.limited, Keyed::Yes(_))
            || matches!(job.rated, Keyed::Yes(_))
            || job.stale_keys;
        self.rows.push(FlowRow {
            job,
            state: if waiting > 0 {
                FlowState::Pending
            } else {
                FlowState::Available
            },
            fence: 0,
            attempt: 0,
            worker: None,
            lease: None,
            cancel_requested: false,
            limit_key,
            fair_key,
            expired: false,
            waiting_on: waiting,
            has_dependents: false,
            stopped: false,
            by_cascade: false,
        });
        self.completions.push(0);
        self.cancel_answered.push(false);
        let id = self.rows.len() - 1;
        // Inserted waiting on one, then cancelled (the count is left as it was, as the
        // `cancel` statement leaves it).
        if cancelled {
            self.set_state(id, FlowState::Cancelled);
        }
        id
    }

    /// `add_to_batch`: a job added to an open batch, that the callbacks `callbacks` (each
    /// with its edge) wait on too; refused once they were released.
    pub fn add_to_batch(&mut self, job: FlowJob, callbacks: &[(usize, Edge)]) -> Added {
        let open = callbacks
            .iter()
            .any(|&(c, _)| self.rows[c].state == FlowState::Pending);
        if !open && !self.faults.batch_add_after_release {
            return Added::Closed;
        }
        let id = self.insert(job);
        // The callbacks still pending wait for it too.
        for &(callback, edge) in callbacks {
            let row = &mut self.rows[callback];
            if row.state == FlowState::Pending {
                row.job.parents.push((id, edge));
                row.waiting_on += 1;
                self.rows[id].has_dependents = true;
            }
        }
        Added::Added(id)
    }

    /// Whether the claims may take job `id` now, by the rules the claim statements apply:
    /// available, its queue not paused, its deadline not passed; a limited job with its key
    /// written and a free slot; a fair job with its key written, the head of its key, its key
    /// the one served longest ago among the queue's keys with such a head; a job of a kind
    /// without those options with no keys (each claim reads an index of its own jobs only).
    pub fn claimable(&self, id: usize) -> bool {
        let row = &self.rows[id];
        if !self.startable_now(id) {
            return false;
        }
        if row.job.is_limited() && !row.limit_key && !self.faults.claim_leaves_key_unwritten {
            return false;
        }
        if row.has_stale_keys() {
            return false;
        }
        let slots_full = !self.slots.contains(&None);
        let starts_full = !self.starts.contains(&None);
        let held = (row.job.limited != Keyed::No && slots_full)
            || (row.job.rated != Keyed::No && starts_full);
        if held && !self.faults.claim_ignores_slots {
            return false;
        }
        match row.job.fair {
            Keyed::No => true,
            _ if self.faults.fair_claim_ignores_turns => row.fair_key.is_some(),
            _ => self.fair_turn(row.job.queue) == Some(id),
        }
    }

    /// Available, its queue not paused, its deadline not passed.
    fn startable_now(&self, id: usize) -> bool {
        let row = &self.rows[id];
        row.state == FlowState::Available
            && !self.paused[usize::from(row.job.queue)]
            && !row.expired
    }

    /// The fair job whose turn it is in `queue`: the head (lowest id) of each key with an
    /// available keyed job, and of those the key never served, or served longest ago.
    pub fn fair_turn(&self, queue: u8) -> Option<usize> {
        let mut heads: Vec<(usize, u8)> = Vec::new();
        for (id, row) in self.rows.iter().enumerate() {
            // The fair claim reads the jobs of kinds with `fair_by` only.
            let Some(key) = row.fair_key.filter(|_| row.job.fair != Keyed::No) else {
                continue;
            };
            if row.job.queue == queue
                && self.startable_now(id)
                && !heads.iter().any(|&(_, k)| k == key)
            {
                heads.push((id, key));
            }
        }
        heads
            .into_iter()
            .min_by_key(|&(id, key)| (self.served_rank(key), id))
            .map(|(id, _)| id)
    }

    /// A key's place in the turns: never served first, then least recently.
    pub fn served_rank(&self, key: u8) -> Option<usize> {
        // `None` orders first, as `served_at NULLS FIRST`.
        self.turns.iter().position(|&k| k == key)
    }

    /// A claim of job `id` for `worker` (whichever of the plain, fair or limited claims takes
    /// it): running under a new fence, with a slot of its limit, its fair key's turn taken.
    pub fn claim(&mut self, id: usize, worker: u8) -> Option<(u8, u8)> {
        if !self.claimable(id) {
            return None;
        }
        if self.rows[id].job.is_limited() {
            if self.rows[id].job.limited != Keyed::No {
                if let Some(slot) = self.slots.iter().position(Option::is_none) {
                    self.slots[slot] = Some(id);
                }
            }
            if self.rows[id].job.rated != Keyed::No {
                if let Some(slot) = self.starts.iter().position(Option::is_none) {
                    self.starts[slot] = Some((id, self.faults.rate_counts_claims));
                }
            }
        }
        // Only the fair claim serves a key's turn.
        let fair = self.rows[id].job.fair != Keyed::No;
        if let Some(key) = self.rows[id].fair_key.filter(|_| fair) {
            self.turns.retain(|&k| k != key);
            self.turns.push(key);
        }
        let row = &mut self.rows[id];
        row.state = FlowState::Running;
        row.fence += 1;
        row.attempt += 1;
        row.worker = Some(worker);
        row.lease = Some(Lease::Live);
        Some((row.fence, row.attempt))
    }

    /// `startable`: whether the claimed run may begin.
    pub fn startable(&self, id: usize, fence: u8) -> Startable {
        let row = &self.rows[id];
        if row.state != FlowState::Running || row.fence != fence {
            Startable::Lost
        } else if self.paused[usize::from(row.job.queue)] && !self.faults.start_ignores_pause {
            Startable::Paused
        } else if row.expired && !self.faults.start_ignores_deadline {
            Startable::Expired
        } else if row.cancel_requested && !self.faults.start_ignores_cancel {
            Startable::Cancelled
        } else {
            Startable::Yes
        }
    }

    /// `set_paused`: whether it changed.
    pub fn set_paused(&mut self, queue: u8, paused: bool) -> bool {
        let changed = self.paused[usize::from(queue)] != paused;
        self.paused[usize::from(queue)] = paused;
        changed
    }

    /// Time passes job `id`'s deadline.
    pub fn pass_deadline(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if !row.job.deadline || row.expired {
            return false;
        }
        row.expired = true;
        true
    }

    /// `promote`: the waiting jobs past their deadline cancelled as expired, then every
    /// retryable job available. Returns how many of each.
    pub fn promote(&mut self) -> (usize, usize) {
        let expired: Vec<usize> = (0..self.rows.len())
            .filter(|&id| {
                let row = &self.rows[id];
                row.expired
                    && matches!(
                        row.state,
                        FlowState::Pending | FlowState::Retryable | FlowState::Available
                    )
            })
            .collect();
        for &id in &expired {
            self.set_state(id, FlowState::Cancelled);
        }
        let mut promoted = 0;
        for row in &mut self.rows {
            if row.state == FlowState::Retryable {
                row.state = FlowState::Available;
                promoted += 1;
            }
        }
        (expired.len(), promoted)
    }

    /// `finish` under `fence`: completed, retried, snoozed or dead, or cancelled when its
    /// cancellation was asked; `expired` refunds the attempt and cancels.
    pub fn finish(&mut self, id: usize, fence: u8, end: End) -> bool {
        let row = &self.rows[id];
        if row.state != FlowState::Running || row.fence != fence {
            return false;
        }
        let asked = row.cancel_requested;
        let state = match end {
            End::Die => FlowState::Dead,
            End::Expired | End::Unstarted => FlowState::Cancelled,
            End::Complete if asked && !self.faults.completion_ignores_cancel => {
                FlowState::Cancelled
            }
            End::Retry | End::Snooze if asked => FlowState::Cancelled,
            End::Complete => FlowState::Completed,
            End::Retry | End::Snooze => FlowState::Retryable,
        };
        let row = &mut self.rows[id];
        // A run that ends before it began gives its attempt back, as a snoozed one does; one
        // whose end the cancellation overrides had begun, and keeps it.
        let refunded = match end {
            End::Expired | End::Unstarted => true,
            End::Snooze => !asked,
            _ => false,
        };
        if refunded {
            row.attempt -= 1;
        }
        row.lease = None;
        row.cancel_requested = false;
        row.stopped =
            state == FlowState::Cancelled && (!refunded || self.faults.stopped_without_run);
        if state == FlowState::Completed {
            self.completions[id] += 1;
        }
        self.set_state(id, state);
        true
    }

    /// Time passes: a running job's lease runs out.
    pub fn expire_lease(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if row.state != FlowState::Running || row.lease != Some(Lease::Live) {
            return false;
        }
        row.lease = Some(Lease::Expired);
        true
    }

    /// `rescue`: running jobs whose lease ran out are retried, die, or end cancelled.
    pub fn rescue(&mut self) -> Vec<usize> {
        let expired: Vec<usize> = (0..self.rows.len())
            .filter(|&id| {
                self.rows[id].state == FlowState::Running
                    && self.rows[id].lease == Some(Lease::Expired)
            })
            .collect();
        for &id in &expired {
            let row = &self.rows[id];
            let state = if row.cancel_requested {
                FlowState::Cancelled
            } else if row.attempt >= self.max_attempts {
                FlowState::Dead
            } else {
                FlowState::Retryable
            };
            let row = &mut self.rows[id];
            row.stopped = state == FlowState::Cancelled;
            row.lease = None;
            row.cancel_requested = false;
            self.set_state(id, state);
        }
        expired
    }

    /// `release`: `worker`'s unfinished runs `ids` go back, their attempts refunded; one whose
    /// cancellation was asked ends cancelled.
    pub fn release(&mut self, worker: u8, ids: &[usize]) {
        for &id in ids {
            let row = &self.rows[id];
            if row.state != FlowState::Running || row.worker != Some(worker) {
                continue;
            }
            let state = if row.cancel_requested {
                FlowState::Cancelled
            } else {
                FlowState::Available
            };
            let row = &mut self.rows[id];
            // A run cancelled as it is put back may have begun: its attempt counts.
            let cancelled = state == FlowState::Cancelled;
            if !cancelled || self.faults.stopped_without_run {
                row.attempt -= 1;
            }
            row.lease = None;
            row.worker = None;
            row.stopped = cancelled;
            row.cancel_requested = false;
            self.set_state(id, state);
        }
    }

    /// `cancel`, then `request_cancel`.
    pub fn cancel(&mut self, id: usize) -> crate::spec::Cancellation {
        use crate::spec::Cancellation;
        match self.rows[id].state {
            FlowState::Pending | FlowState::Retryable | FlowState::Available => {
                self.cancel_answered[id] = true;
                self.set_state(id, FlowState::Cancelled);
                Cancellation::Cancelled
            }
            FlowState::Running => {
                self.rows[id].cancel_requested = true;
                self.cancel_answered[id] = true;
                Cancellation::Requested
            }
            _ => Cancellation::AlreadyFinished,
        }
    }

    /// `retry_dead` of job `id`: available again, attempts reset; never a job whose death was
    /// acted on (a job waiting on it cancelled or released by it).
    pub fn retry_dead(&mut self, id: usize) -> bool {
        if self.rows[id].state != FlowState::Dead {
            return false;
        }
        if self.death_settled(id) && !self.faults.retry_ignores_settled {
            return false;
        }
        let row = &mut self.rows[id];
        row.attempt = 0;
        row.state = FlowState::Available;
        self.cancel_answered[id] = false;
        // `errand_jobs_reopen_dependents`: the jobs still waiting for it to finish (`run`
        // edges) wait for it again.
        if !self.faults.retry_leaves_dependents_counted {
            for dep in &mut self.rows {
                if dep.state == FlowState::Pending && dep.job.parents.contains(&(id, Edge::Run)) {
                    dep.waiting_on += 1;
                }
            }
        }
        true
    }

    /// `death_settled`: a job that waits on `id` through a `cancel`, `run` or `when_failed`
    /// edge is no longer pending.
    fn death_settled(&self, id: usize) -> bool {
        self.rows[id].has_dependents
            && self.rows.iter().any(|dep| {
                dep.state != FlowState::Pending
                    && dep.job.parents.iter().any(|&(p, edge)| {
                        p == id && matches!(edge, Edge::Cancel | Edge::Run | Edge::WhenFailed)
                    })
            })
    }

    /// `adopt`: gives a waiting job the keys its kind has that it lacks, and clears those of
    /// options its kind no longer has; whether it waits.
    pub fn adopt(&mut self, id: usize) -> bool {
        let row = &mut self.rows[id];
        if !matches!(
            row.state,
            FlowState::Pending | FlowState::Retryable | FlowState::Available
        ) {
            return false;
        }
        if let Keyed::Unkeyed(key) = row.job.fair {
            row.fair_key.get_or_insert(key);
        }
        if row.job.stale_keys {
            row.limit_key = false;
            row.fair_key = None;
        }
        if matches!(row.job.limited, Keyed::Unkeyed(_))
            || matches!(row.job.rated, Keyed::Unkeyed(_))
        {
            row.limit_key = true;
        }
        true
    }

    /// Moves job `id` to `state`, and runs what the triggers on `errand_jobs` run: the slot
    /// trigger when it stops running, and the settling of its dependents when it finishes.
    fn set_state(&mut self, id: usize, state: FlowState) {
        let old = self.rows[id].state;
        self.rows[id].state = state;
        if old == FlowState::Running && state != FlowState::Running {
            // The row keeps its last worker's name; the lease goes.
            self.rows[id].lease = None;
            // `errand_jobs_limit_slot`: only a job whose limit key is written.
            let dropped = self.faults.slot_kept_after_death && state == FlowState::Dead;
            if self.rows[id].limit_key && !dropped {
                for slot in &mut self.slots {
                    if *slot == Some(id) {
                        *slot = None;
                    }
                }
                // A start slot reserved by a run that never began.
                for slot in &mut self.starts {
                    if *slot == Some((id, false)) && !self.faults.reserved_start_kept {
                        *slot = None;
                    }
                }
            }
        }
        if state.is_final() && old != state && self.rows[id].has_dependents {
            self.settle(id);
        }
    }

    /// `errand_settle_dependents` for job `id`, which just finished.
    fn settle(&mut self, id: usize) {
        let parent = &self.rows[id];
        let state = parent.state;
        let edges_in = parent.job.parents.clone();
        let stopped = state == FlowState::Cancelled
            && parent.stopped
            && self
                .rows
                .iter()
                .any(|d| d.job.parents.contains(&(id, Edge::WhenStopped)));
        let cascaded = !self.faults.failed_includes_cascade
            && edges_in
                .iter()
                .any(|&(p, e)| e == Edge::Cancel && self.rows[p].state != FlowState::Completed);
        let failed =
            !stopped && (state == FlowState::Dead || (state == FlowState::Cancelled && !cascaded));
        let mut cancel = Vec::new();
        for dep in 0..self.rows.len() {
            if self.rows[dep].state != FlowState::Pending {
                continue;
            }
            let edges: Vec<Edge> = self.rows[dep]
                .job
                .parents
                .iter()
                .filter(|&&(p, _)| p == id)
                .map(|&(_, e)| e)
                .collect();
            let Some(&edge) = edges.first() else {
                continue;
            };
            match edge {
                Edge::Cancel | Edge::Run => {
                    let row = &mut self.rows[dep];
                    let counts = match edge {
                        Edge::Run if !self.faults.run_edge_needs_completion => true,
                        _ => state == FlowState::Completed,
                    };
                    if counts {
                        row.waiting_on -= 1;
                        if row.waiting_on == 0 {
                            row.state = FlowState::Available;
                        }
                    } else {
                        cancel.push(dep);
                    }
                }
                _ => {
                    // A step that completes after a later one was cancelled of itself (while
                    // this one ran, so not taken as failed then) is undone now.
                    let later_cancelled = || {
                        !self.faults.late_completion_not_compensated
                            && self.rows[dep].job.parents.iter().any(|&(p, e)| {
                                e == Edge::WhenFailed
                                    && self.rows[p].state == FlowState::Cancelled
                                    && !self.rows[p].by_cascade
                            })
                    };
                    let releases = match edge {
                        Edge::WhenFailed => failed,
                        Edge::WhenRan => matches!(state, FlowState::Completed | FlowState::Dead),
                        _ => stopped || (state == FlowState::Completed && later_cancelled()),
                    };
                    let row = &mut self.rows[dep];
                    if releases {
                        row.waiting_on = 0;
                        row.state = FlowState::Available;
                    } else {
                        row.waiting_on -= 1;
                        if row.waiting_on == 0 {
                            cancel.push(dep);
                        }
                    }
                }
            }
        }
        // Each cancelled dependent settles its own, as its trigger does.
        for dep in cancel {
            if self.rows[dep].state == FlowState::Pending {
                self.rows[dep].waiting_on = 0;
                self.rows[dep].by_cascade = true;
                self.set_state(dep, FlowState::Cancelled);
            }
        }
    }
}

/// How a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Complete,
    Retry,
    Snooze,
    Die,
    /// Cancelled as expired at its start, its attempt refunded.
    Expired,
    /// Cancelled at its start, before it began, as asked; its attempt refunded.
    Unstarted,
}

/// `waiting_at_insert`: how many parents the new job waits on, and whether it is cancelled at
/// once (a parent it needed failed already, or none left can release it).
pub fn waiting_at_insert(job: &FlowJob, seen: &[FlowState]) -> (u8, bool) {
    let open = seen.iter().filter(|s| !s.is_final()).count() as u8;
    if job.parents.iter().any(|(_, e)| e.is_any()) {
        // A saga's compensations are stored with their steps: none has run. (A parent seen
        // finished here would be read as the store's mirror reads it.)
        let released = job.parents.iter().zip(seen).any(|(&(_, e), &s)| match e {
            Edge::WhenFailed => s == FlowState::Dead,
            Edge::WhenRan => matches!(s, FlowState::Dead | FlowState::Completed),
            _ => false,
        });
        return match (released, open) {
            (true, _) => (0, false),
            (false, 0) => (1, true),
            (false, n) => (n, false),
        };
    }
    let runs_anyway = job.parents.iter().all(|&(_, e)| e == Edge::Run);
    let failed = seen
        .iter()
        .any(|&s| matches!(s, FlowState::Dead | FlowState::Cancelled));
    if failed && !runs_anyway {
        (1, true)
    } else {
        (open, false)
    }
}
