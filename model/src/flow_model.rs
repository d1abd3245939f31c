//! [`Flow`]: the scheduling and workflow rules in every interleaving. Workers claim, start
//! and end runs while an operator pauses queues, cancels and retries, deadlines pass, leases
//! run out and jobs are enqueued after others; the rows are a [`FlowSpec`].
//!
//! Each check runs one [`Scenario`]: a few jobs whose options make one feature's hard cases
//! (two limited jobs and one stored before its kind had the limit; two fair keys and a job
//! stored before `fair_by`; dependents enqueued while their parents finish; a saga of three
//! steps; a batch that grows). All at once would not close in CI's time.

use stateright::{Model, Property};

use crate::flow::Startable;
use crate::flow::{Added, Edge, End, FlowFaults, FlowJob, FlowSpec, FlowState, Keyed, Role};
use crate::spec::{Cancellation, Lease};

/// The feature a check is about, as the jobs it enqueues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A limit of one running job: a limited job with a deadline, and one stored before its
    /// kind had the limit; pause, deadlines, every way out of running.
    Limits,
    /// Two fair keys, two jobs of the first; a job stored before its kind had `fair_by`, and one
    /// stored with keys of options its kind no longer has.
    Fair,
    /// Two parents; a dependent of both (cancelled if one fails) and one of the first that
    /// runs anyway, each enqueued while the parents may be finishing.
    Dependencies,
    /// A saga of three steps, the first two with compensations, the second with a deadline.
    Saga,
    /// A batch of two jobs with both callbacks, and a third job added while it runs.
    Batch,
    /// A rate of one start a window: two rate-limited jobs, one stored before the limit.
    Rate,
}

impl Scenario {
    /// The jobs to enqueue, in groups: each group in one transaction, in order.
    pub fn groups(self) -> Vec<Vec<FlowJob>> {
        let job = FlowJob::plain;
        match self {
            Scenario::Limits => vec![
                vec![job().limited(Keyed::Yes(0)).with_deadline()],
                vec![job().limited(Keyed::Unkeyed(0))],
            ],
            Scenario::Rate => vec![
                vec![job().rated(Keyed::Yes(0))],
                vec![job().rated(Keyed::Unkeyed(0))],
            ],
            Scenario::Fair => vec![
                vec![job().fair(Keyed::Yes(0))],
                vec![job().fair(Keyed::Yes(0))],
                vec![job().fair(Keyed::Yes(1))],
                vec![job().fair(Keyed::Unkeyed(1))],
                vec![job().with_stale_keys()],
            ],
            Scenario::Dependencies => vec![
                vec![job()],
                vec![job()],
                vec![job().after(&[(0, Edge::Cancel), (1, Edge::Cancel)])],
                vec![job().after(&[(0, Edge::Run)])],
            ],
            Scenario::Saga => {
                // As `Saga::insert` stores it: steps 0, 1, 2 (ids 0 to 2), then the
                // compensations from the latest back: of step 1 (id 3), of step 0 (id 4).
                let step = |n: u8| job().role(Role::Step(n));
                let undo = |n: u8| job().role(Role::Compensation(n));
                vec![vec![
                    step(0),
                    step(1).after(&[(0, Edge::Cancel)]).with_deadline(),
                    step(2).after(&[(1, Edge::Cancel)]),
                    undo(1).after(&[(2, Edge::WhenFailed), (1, Edge::WhenStopped)]),
                    undo(0).after(&[
                        (1, Edge::WhenFailed),
                        (3, Edge::WhenRan),
                        (0, Edge::WhenStopped),
                    ]),
                ]]
            }
            Scenario::Batch => vec![vec![
                job(),
                job(),
                job().after(&[(0, Edge::Cancel), (1, Edge::Cancel)]),
                job().after(&[(0, Edge::Run), (1, Edge::Run)]),
            ]],
        }
    }

    /// The batch's callbacks, which a job added to it is waited on by.
    fn batch_callbacks(self) -> Option<[(usize, Edge); 2]> {
        (self == Scenario::Batch).then_some([(2, Edge::Cancel), (3, Edge::Run)])
    }

    /// The jobs an operator cancels: the saga's steps (`Client::cancel_saga` cancels the step
    /// the saga is at), every job elsewhere.
    fn cancellable(self, row: &crate::flow::FlowRow) -> bool {
        !matches!(row.job.role, Role::Compensation(_))
    }
}

/// How far the checker looks.
#[derive(Clone, Copy, Debug)]
pub struct FlowBounds {
    pub workers: u8,
    pub concurrency: usize,
    pub max_attempts: u8,
    /// No job is claimed once its fence reaches this.
    pub max_fence: u8,
    pub limit: u8,
}

/// Which actions the operator and time take, beyond workers claiming, starting and ending
/// runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowParts {
    pub pause: bool,
    pub cancel: bool,
    pub retry_dead: bool,
    pub leases: bool,
    pub shutdown: bool,
    pub snooze: bool,
}

/// A run a worker holds: claimed into its buffer, then begun.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowRun {
    pub id: usize,
    pub fence: u8,
    pub begun: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowWorker {
    pub runs: Vec<FlowRun>,
    pub gone: bool,
}

/// What happened that the rows do not show, for the properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowHistory {
    /// Per job: a run of it began (ran the user's code).
    pub began: Vec<bool>,
    /// A run began in a paused queue, or after its deadline.
    pub began_paused: bool,
    pub began_expired: bool,
    /// A job left `pending` (or was inserted `available`) without what it waits on releasing
    /// it.
    pub released_early: bool,
    /// A fair claim took a job other than the one whose turn it was.
    pub unfair_claim: bool,
    /// A saga's step began after one of its compensations had begun, or after a step was
    /// cancelled by an operator.
    pub step_after_unwind: bool,
    /// A compensation began that its saga did not need.
    pub needless_compensation: bool,
    /// A batch's callback began while a job of the batch had not finished.
    pub callback_early: bool,
    /// Runs of rate-limited jobs that began since the window last passed.
    pub began_in_window: u8,
    /// The jobs added to the batch.
    pub batch_added: Vec<usize>,
    /// Reachability marks.
    pub adopted: bool,
    pub batch_grew: bool,
    pub batch_closed: bool,
    pub stopped_step: bool,
    pub put_back_paused: bool,
    pub expired_at_start: bool,
    pub cancelled_at_start: bool,
    /// Per job: cancelled from `running` while its run had begun, or by a rescue or a shutdown
    /// (which cannot tell a run that began from one still in a buffer, and take it as begun).
    pub maybe_acted: Vec<bool>,
    /// Per job: claimed at least once (given its chance to run).
    pub claimed: Vec<bool>,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowSystem {
    pub store: FlowSpec,
    pub workers: Vec<FlowWorker>,
    /// Groups enqueued so far.
    pub enqueued: usize,
    /// A dependent's insert between its read of the parents and its writes (only with the
    /// fault `insert_without_parent_lock`): the states it read.
    pub reading: Option<Vec<FlowState>>,
    /// The job added to the batch, once.
    pub added: bool,
    pub history: FlowHistory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowAction {
    Enqueue,
    /// The insert's writes, after a read of the parents (fault only).
    InsertRead,
    AddToBatch,
    Claim {
        worker: u8,
        id: usize,
    },
    Start {
        worker: u8,
        run: usize,
    },
    End {
        worker: u8,
        run: usize,
        end: End,
    },
    Pause {
        queue: u8,
        paused: bool,
    },
    PassDeadline {
        id: usize,
    },
    Promote,
    /// Time passes a rate limit's window.
    PassWindow,
    ExpireLease {
        id: usize,
    },
    Rescue,
    Shutdown {
        worker: u8,
    },
    Crash {
        worker: u8,
    },
    Cancel {
        id: usize,
    },
    RetryDead {
        id: usize,
    },
    Adopt {
        id: usize,
    },
}

/// The scheduling and workflow rules under one scenario, with or without defects.
#[derive(Clone, Debug)]
pub struct Flow {
    pub scenario: Scenario,
    pub bounds: FlowBounds,
    pub parts: FlowParts,
    pub faults: FlowFaults,
}

impl Flow {
    /// The scenario with the actions its hard cases need, within small bounds.
    pub fn new(scenario: Scenario) -> Flow {
        let bounds = FlowBounds {
            workers: 2,
            concurrency: 1,
            max_attempts: 1,
            max_fence: 2,
            limit: 1,
        };
        let all = FlowParts {
            pause: true,
            cancel: true,
            retry_dead: true,
            leases: true,
            shutdown: true,
            snooze: true,
        };
        let (bounds, parts) = match scenario {
            Scenario::Rate => (
                FlowBounds {
                    workers: 1,
                    concurrency: 2,
                    max_attempts: 2,
                    ..bounds
                },
                FlowParts {
                    pause: false,
                    retry_dead: false,
                    ..all
                },
            ),
            Scenario::Limits => (
                FlowBounds {
                    workers: 1,
                    concurrency: 2,
                    max_attempts: 2,
                    ..bounds
                },
                FlowParts {
                    retry_dead: false,
                    ..all
                },
            ),
            Scenario::Fair => (
                FlowBounds {
                    workers: 1,
                    concurrency: 2,
                    ..bounds
                },
                FlowParts {
                    pause: false,
                    cancel: false,
                    retry_dead: false,
                    leases: false,
                    shutdown: false,
                    snooze: true,
                },
            ),
            Scenario::Dependencies | Scenario::Batch => (
                FlowBounds {
                    workers: 1,
                    ..bounds
                },
                FlowParts {
                    pause: false,
                    snooze: false,
                    shutdown: false,
                    ..all
                },
            ),
            Scenario::Saga => (
                FlowBounds {
                    workers: 1,
                    ..bounds
                },
                FlowParts {
                    pause: false,
                    snooze: false,
                    ..all
                },
            ),
        };
        // Deeper: two workers where one runs the scenario, and a third claim of each job.
        let bounds = if std::env::var_os("ERRAND_MODEL_DEEP").is_some() {
            FlowBounds {
                workers: 2,
                max_fence: bounds.max_fence + 1,
                ..bounds
            }
        } else {
            bounds
        };
        Flow {
            scenario,
            bounds,
            parts,
            faults: FlowFaults::default(),
        }
    }

    pub fn with_faults(mut self, faults: FlowFaults) -> Flow {
        self.faults = faults;
        self
    }
}

impl Model for Flow {
    type State = FlowSystem;
    type Action = FlowAction;

    fn init_states(&self) -> Vec<FlowSystem> {
        vec![FlowSystem {
            store: {
                let spec = FlowSpec::new(self.bounds.limit, self.bounds.max_attempts, self.faults);
                if self.scenario == Scenario::Rate {
                    spec.with_rate(1)
                } else {
                    spec
                }
            },
            workers: vec![FlowWorker::default(); usize::from(self.bounds.workers)],
            enqueued: 0,
            reading: None,
            added: false,
            history: FlowHistory::default(),
        }]
    }

    fn actions(&self, s: &FlowSystem, actions: &mut Vec<FlowAction>) {
        let store = &s.store;
        if s.reading.is_some() {
            actions.push(FlowAction::InsertRead);
        } else if s.enqueued < self.scenario.groups().len() {
            actions.push(FlowAction::Enqueue);
        }
        if self.scenario.batch_callbacks().is_some() && s.enqueued > 0 && !s.added {
            actions.push(FlowAction::AddToBatch);
        }
        if store
            .rows
            .iter()
            .any(|r| r.state == FlowState::Retryable || r.expired)
        {
            actions.push(FlowAction::Promote);
        }
        if store.starts.iter().flatten().any(|&(_, began)| began) {
            actions.push(FlowAction::PassWindow);
        }
        if self.parts.pause {
            for queue in 0..1 {
                let paused = !store.paused[usize::from(queue)];
                actions.push(FlowAction::Pause { queue, paused });
            }
        }
        for (id, row) in store.rows.iter().enumerate() {
            if row.job.deadline && !row.expired && !row.state.is_final() {
                actions.push(FlowAction::PassDeadline { id });
            }
            if self.parts.leases && row.lease == Some(Lease::Live) {
                actions.push(FlowAction::ExpireLease { id });
            }
            if self.parts.cancel && !row.state.is_final() && self.scenario.cancellable(row) {
                actions.push(FlowAction::Cancel { id });
            }
            if self.parts.retry_dead && row.state == FlowState::Dead {
                actions.push(FlowAction::RetryDead { id });
            }
            let unkeyed = row.needs_adoption();
            let waiting = matches!(
                row.state,
                FlowState::Pending | FlowState::Retryable | FlowState::Available
            );
            if unkeyed && waiting && !self.faults.unkeyed_never_adopted {
                actions.push(FlowAction::Adopt { id });
            }
        }
        if store.rows.iter().any(|r| r.lease == Some(Lease::Expired)) {
            actions.push(FlowAction::Rescue);
        }
        for w in 0..self.bounds.workers {
            let worker = &s.workers[usize::from(w)];
            if worker.gone {
                continue;
            }
            if self.parts.leases {
                actions.push(FlowAction::Crash { worker: w });
            }
            if self.parts.shutdown {
                actions.push(FlowAction::Shutdown { worker: w });
            }
            if worker.runs.len() < self.bounds.concurrency {
                for (id, row) in store.rows.iter().enumerate() {
                    if row.fence < self.bounds.max_fence && store.claimable(id) {
                        actions.push(FlowAction::Claim { worker: w, id });
                    }
                }
            }
            for (run, r) in worker.runs.iter().enumerate() {
                if !r.begun {
                    actions.push(FlowAction::Start { worker: w, run });
                    continue;
                }
                let row = &store.rows[r.id];
                let failure = if row.attempt >= self.bounds.max_attempts {
                    End::Die
                } else {
                    End::Retry
                };
                let ends = [End::Complete, failure, End::Snooze];
                for end in ends
                    .into_iter()
                    .filter(|&e| e != End::Snooze || self.parts.snooze)
                {
                    actions.push(FlowAction::End {
                        worker: w,
                        run,
                        end,
                    });
                }
            }
        }
    }

    fn next_state(&self, last: &FlowSystem, action: FlowAction) -> Option<FlowSystem> {
        let mut s = last.clone();
        match action {
            FlowAction::Enqueue => {
                let group = self.scenario.groups()[s.enqueued].clone();
                s.enqueued += 1;
                let split = self.faults.insert_without_parent_lock
                    && group.len() == 1
                    && !group[0].parents.is_empty();
                if split {
                    // Reads the parents' states without locking them.
                    let seen = group[0]
                        .parents
                        .iter()
                        .map(|&(p, _)| s.store.rows[p].state)
                        .collect();
                    s.reading = Some(seen);
                } else {
                    for job in group {
                        s.store.insert(job);
                    }
                }
            }
            FlowAction::InsertRead => {
                let seen = s.reading.take()?;
                let job = self.scenario.groups()[s.enqueued - 1][0].clone();
                for &(p, _) in &job.parents {
                    s.store.rows[p].has_dependents = true;
                }
                s.store.insert_seen(job, &seen);
            }
            FlowAction::AddToBatch => {
                s.added = true;
                let callbacks = self.scenario.batch_callbacks()?;
                match s.store.add_to_batch(FlowJob::plain(), &callbacks) {
                    Added::Added(id) => {
                        s.history.batch_grew = true;
                        s.history.batch_added.push(id);
                    }
                    Added::Closed => s.history.batch_closed = true,
                }
            }
            FlowAction::Claim { worker, id } => {
                let turn = s.store.fair_turn(s.store.rows[id].job.queue);
                let row = &s.store.rows[id];
                let keyed = row.fair_key.is_some() && row.job.fair != Keyed::No;
                if keyed && turn != Some(id) {
                    s.history.unfair_claim = true;
                }
                let (fence, _) = s.store.claim(id, worker)?;
                s.workers[usize::from(worker)].runs.push(FlowRun {
                    id,
                    fence,
                    begun: false,
                });
            }
            FlowAction::Start { worker, run } => {
                let r = s.workers[usize::from(worker)].runs[run].clone();
                match s.store.startable(r.id, r.fence) {
                    Startable::Lost => {
                        s.workers[usize::from(worker)].runs.remove(run);
                    }
                    Startable::Paused => {
                        s.workers[usize::from(worker)].runs.remove(run);
                        s.store.release(worker, &[r.id]);
                        s.history.put_back_paused = true;
                    }
                    Startable::Expired => {
                        s.workers[usize::from(worker)].runs.remove(run);
                        s.store.finish(r.id, r.fence, End::Expired);
                        s.history.expired_at_start = true;
                    }
                    Startable::Cancelled => {
                        s.workers[usize::from(worker)].runs.remove(run);
                        s.store.finish(r.id, r.fence, End::Unstarted);
                        s.history.cancelled_at_start = true;
                    }
                    Startable::Yes => {
                        self.check_start(&mut s, r.id);
                        s.workers[usize::from(worker)].runs[run].begun = true;
                        s.history.began[r.id] = true;
                        if s.store.rows[r.id].job.rated != Keyed::No {
                            s.store.mark_started(r.id, r.fence);
                            s.history.began_in_window = s.history.began_in_window.saturating_add(1);
                        }
                    }
                }
            }
            FlowAction::End { worker, run, end } => {
                let r = s.workers[usize::from(worker)].runs.remove(run);
                let stopping = s.store.rows[r.id].cancel_requested;
                if s.store.finish(r.id, r.fence, end) && stopping {
                    if let Role::Step(_) = s.store.rows[r.id].job.role {
                        s.history.stopped_step = true;
                    }
                }
            }
            FlowAction::Pause { queue, paused } => {
                s.store.set_paused(queue, paused);
            }
            FlowAction::PassDeadline { id } => {
                s.store.pass_deadline(id);
            }
            FlowAction::PassWindow => {
                s.store.pass_window();
                s.history.began_in_window = 0;
            }
            FlowAction::Promote => {
                s.store.promote();
            }
            FlowAction::ExpireLease { id } => {
                s.store.expire_lease(id);
            }
            FlowAction::Rescue => {
                s.store.rescue();
            }
            FlowAction::Shutdown { worker } => {
                let w = &mut s.workers[usize::from(worker)];
                let ids: Vec<usize> = w.runs.iter().map(|r| r.id).collect();
                w.runs.clear();
                w.gone = true;
                s.store.release(worker, &ids);
            }
            FlowAction::Crash { worker } => {
                s.workers[usize::from(worker)] = FlowWorker {
                    gone: true,
                    ..FlowWorker::default()
                };
            }
            FlowAction::Cancel { id } => {
                if s.store.cancel(id) == Cancellation::AlreadyFinished {
                    return None;
                }
            }
            FlowAction::RetryDead { id } => {
                if !s.store.retry_dead(id) {
                    return None;
                }
            }
            FlowAction::Adopt { id } => {
                let unkeyed = s.store.rows[id].fair_key.is_none();
                s.store.adopt(id);
                s.history.adopted |= unkeyed && s.store.rows[id].fair_key.is_some();
            }
        }
        s.history.began.resize(s.store.rows.len(), false);
        s.history.claimed.resize(s.store.rows.len(), false);
        s.history.maybe_acted.resize(s.store.rows.len(), false);
        // A job cancelled from `running` may have acted if its run had begun; a rescue or a
        // shutdown cannot tell a run that began from one still in a buffer, and takes it so.
        let conservative = matches!(action, FlowAction::Rescue | FlowAction::Shutdown { .. });
        for id in 0..last.store.rows.len() {
            let (was, now) = (&last.store.rows[id], &s.store.rows[id]);
            if was.state == FlowState::Running && now.state == FlowState::Cancelled {
                let began = last
                    .workers
                    .iter()
                    .flat_map(|w| &w.runs)
                    .any(|r| r.id == id && r.fence == was.fence && r.begun);
                s.history.maybe_acted[id] = began || conservative;
            }
        }
        if let FlowAction::Claim { id, .. } = action {
            s.history.claimed[id] = true;
        }
        // Each job that became available now was released by its parents as they are now.
        for id in 0..s.store.rows.len() {
            let was_waiting = last
                .store
                .rows
                .get(id)
                .is_none_or(|r| r.state == FlowState::Pending);
            if was_waiting && s.store.rows[id].state == FlowState::Available && !released(&s, id) {
                s.history.released_early = true;
            }
        }
        for worker in &mut s.workers {
            worker.runs.sort_by_key(|r| (r.id, r.fence));
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "limited jobs running never exceed the limit",
                |m: &Flow, s: &FlowSystem| {
                    let running = s.store.rows.iter().filter(|r| {
                        r.state == FlowState::Running && r.job.limited != Keyed::No
                    });
                    running.count() <= usize::from(m.bounds.limit)
                },
            ),
            Property::always("a held slot's job is running", |_, s: &FlowSystem| {
                s.store.slots.iter().flatten().all(|&id| {
                    s.store.rows[id].state == FlowState::Running
                })
            }),
            Property::always(
                "a start slot is reserved only by a running job",
                |_, s: &FlowSystem| {
                    s.store.starts.iter().flatten().all(|&(id, began)| {
                        began || s.store.rows[id].state == FlowState::Running
                    })
                },
            ),
            Property::always(
                "runs of a rate-limited kind that begin in a window never exceed the rate",
                |_, s: &FlowSystem| s.history.began_in_window <= s.store.starts.len().max(1) as u8,
            ),
            Property::always("no job is stranded", |m: &Flow, s: &FlowSystem| {
                (0..s.store.rows.len()).all(|id| waits_for_a_reason(m, s, id))
            }),
            Property::always(
                "no run begins in a paused queue or past its deadline",
                |_, s: &FlowSystem| !s.history.began_paused && !s.history.began_expired,
            ),
            Property::always(
                "a job leaves pending only when what it waits on releases it",
                |_, s: &FlowSystem| !s.history.released_early,
            ),
            Property::always(
                "a fair claim takes the head of the key served longest ago",
                |_, s: &FlowSystem| !s.history.unfair_claim,
            ),
            Property::always(
                "a job completes at most once per run of it asked for",
                |_, s: &FlowSystem| s.store.completions.iter().all(|&n| n <= 1),
            ),
            Property::always(
                "a cancel answered cancelled or requested is never followed by completion",
                |_, s: &FlowSystem| {
                    s.store
                        .rows
                        .iter()
                        .zip(&s.store.cancel_answered)
                        .all(|(row, &answered)| !answered || row.state != FlowState::Completed)
                },
            ),
            Property::always(
                "a saga's step never begins once it unwinds",
                |_, s: &FlowSystem| !s.history.step_after_unwind,
            ),
            Property::always(
                "a compensation begins only for a step that may have acted and a later one that failed",
                |_, s: &FlowSystem| !s.history.needless_compensation,
            ),
            Property::always(
                "a batch's callbacks begin only once every job of it has finished",
                |_, s: &FlowSystem| !s.history.callback_early,
            ),
            Property::always(
                "once all is done, every job ran exactly when what it waits on released it",
                |m: &Flow, s: &FlowSystem| !quiescent(m, s) || released_exactly(s),
            ),
        ];
        properties.push(Property::sometimes("a job ran", |_, s: &FlowSystem| {
            s.history.began.iter().any(|&b| b)
        }));
        match self.scenario {
            Scenario::Limits => {
                properties.push(Property::sometimes(
                    "a run put back at its start, its queue paused",
                    |_, s: &FlowSystem| s.history.put_back_paused,
                ));
                properties.push(Property::sometimes(
                    "a run cancelled at its start, expired",
                    |_, s: &FlowSystem| s.history.expired_at_start,
                ));
                properties.push(Property::sometimes(
                    "the job stored before its limit ran",
                    |_, s: &FlowSystem| s.history.began.get(1) == Some(&true),
                ));
            }
            Scenario::Fair => {
                properties.push(Property::sometimes(
                    "a job stored before fair_by was adopted",
                    |_, s: &FlowSystem| s.history.adopted,
                ));
                properties.push(Property::sometimes(
                    "a job whose options were removed ran as a plain job",
                    |_, s: &FlowSystem| s.history.began.get(4) == Some(&true),
                ));
            }
            Scenario::Dependencies => properties.push(Property::sometimes(
                "a dependent that runs anyway ran after its parent died",
                |_, s: &FlowSystem| {
                    s.store.rows.len() > 3
                        && s.history.began[3]
                        && s.store.rows[0].state == FlowState::Dead
                },
            )),
            Scenario::Saga => {
                properties.push(Property::sometimes(
                    "every compensation ran",
                    |_, s: &FlowSystem| {
                        s.store.rows.len() == 5 && s.history.began[3] && s.history.began[4]
                    },
                ));
                properties.push(Property::sometimes(
                    "a step stopped while it ran",
                    |_, s: &FlowSystem| s.history.stopped_step,
                ));
            }
            Scenario::Rate => properties.push(Property::sometimes(
                "both jobs ran, in two windows",
                |_, s: &FlowSystem| s.history.began.iter().filter(|&&b| b).count() == 2,
            )),
            Scenario::Batch => {
                properties.push(Property::sometimes(
                    "the batch grew",
                    |_, s: &FlowSystem| s.history.batch_grew,
                ));
                properties.push(Property::sometimes(
                    "an addition refused, the batch closed",
                    |_, s: &FlowSystem| s.history.batch_closed,
                ));
            }
        }
        properties
    }
}

impl Flow {
    /// What the properties hold a run to as it begins, read from the rows as they are.
    fn check_start(&self, s: &mut FlowSystem, id: usize) {
        let row = &s.store.rows[id];
        s.history.began_paused |= s.store.paused[usize::from(row.job.queue)];
        s.history.began_expired |= row.expired;
        match row.job.role {
            Role::Step(n) => {
                let unwinding = s.store.rows.iter().enumerate().any(|(other, r)| {
                    matches!(r.job.role, Role::Compensation(_)) && s.history.began[other]
                });
                // Cancelling one step cancels the steps after it; those before it run on, and
                // are undone.
                let cancelled = s.store.rows.iter().enumerate().any(|(other, r)| {
                    matches!(r.job.role, Role::Step(k) if k <= n) && s.store.cancel_answered[other]
                });
                s.history.step_after_unwind |= unwinding || cancelled;
            }
            Role::Compensation(step) => {
                s.history.needless_compensation |= !compensation_needed(s, step);
            }
            Role::Plain => {
                if let Some(callbacks) = self.scenario.batch_callbacks() {
                    if callbacks.iter().any(|&(c, _)| c == id) {
                        let members = [0, 1].iter().chain(&s.history.batch_added);
                        let open = members
                            .into_iter()
                            .any(|&m| !s.store.rows[m].state.is_final());
                        s.history.callback_early |= open;
                    }
                }
            }
        }
    }
}

/// Whether the compensation of the saga's step `n` is needed: the step completed, or was
/// cancelled after its run began (it may have acted), and a step after it died or was
/// cancelled.
fn compensation_needed(s: &FlowSystem, n: u8) -> bool {
    let step = |k: u8| {
        s.store
            .rows
            .iter()
            .position(|r| r.job.role == Role::Step(k))
    };
    let Some(own) = step(n) else { return false };
    let row = &s.store.rows[own];
    let acted = row.state == FlowState::Completed
        || (row.state == FlowState::Cancelled && s.history.maybe_acted[own]);
    let later_failed = s.store.rows.iter().any(|r| match r.job.role {
        Role::Step(k) => k > n && matches!(r.state, FlowState::Dead | FlowState::Cancelled),
        _ => false,
    });
    acted && later_failed
}

/// Whether job `id`'s parents release it: a compensation when its saga needs it (see
/// [`compensation_needed`]); any other job when every parent completed (`cancel` edges) or
/// finished (`run` edges).
fn released(s: &FlowSystem, id: usize) -> bool {
    let rows = &s.store.rows;
    if let Role::Compensation(step) = rows[id].job.role {
        return compensation_needed(s, step);
    }
    rows[id].job.parents.iter().all(|&(p, edge)| match edge {
        Edge::Run => rows[p].state.is_final(),
        _ => rows[p].state == FlowState::Completed,
    })
}

/// Nothing is left to happen: every group enqueued, no run held, every job finished.
fn quiescent(m: &Flow, s: &FlowSystem) -> bool {
    s.enqueued == m.scenario.groups().len()
        && s.reading.is_none()
        && s.workers.iter().all(|w| w.runs.is_empty())
        && s.store.rows.iter().all(|r| r.state.is_final())
}

/// At quiescence: each job with parents that an operator did not cancel, and whose deadline
/// did not pass, was claimed (given its chance to run) if and only if its parents released
/// it.
fn released_exactly(s: &FlowSystem) -> bool {
    (0..s.store.rows.len()).all(|id| {
        let row = &s.store.rows[id];
        if row.job.parents.is_empty() || s.store.cancel_answered[id] || row.expired {
            return true;
        }
        s.history.claimed[id] == released(s, id)
    })
}

/// Whether job `id`, if it waits, waits for a reason a later action removes: pending on
/// parents not finished, counted right; retryable (promotion); available and claimable, or
/// held by its queue's pause, its deadline (promotion cancels it), its limit's slots held by
/// running jobs, another fair key's turn, or a key a worker will write or clear.
fn waits_for_a_reason(m: &Flow, s: &FlowSystem, id: usize) -> bool {
    let store = &s.store;
    let row = &store.rows[id];
    match row.state {
        FlowState::Pending => {
            let open = row
                .job
                .parents
                .iter()
                .filter(|&&(p, _)| !store.rows[p].state.is_final())
                .count();
            row.waiting_on > 0 && usize::from(row.waiting_on) == open
        }
        FlowState::Available => {
            if store.paused[usize::from(row.job.queue)] || row.expired {
                return true;
            }
            // A limited job waits for a free slot, or for a running job to free one; a slot
            // held by a job that does not run is never freed.
            let slots_move = store.slots.iter().all(|slot| {
                slot.is_none_or(|holder| store.rows[holder].state == FlowState::Running)
            });
            let starts_move = store.starts.iter().all(|slot| {
                slot.is_none_or(|(holder, began)| {
                    began || store.rows[holder].state == FlowState::Running
                })
            });
            if (row.job.limited != Keyed::No && !slots_move)
                || (row.job.rated != Keyed::No && !starts_move)
            {
                return false;
            }
            if row.needs_adoption() {
                return !m.faults.unkeyed_never_adopted;
            }
            match row.job.fair {
                Keyed::No => true,
                _ => store.fair_turn(row.job.queue).is_some(),
            }
        }
        FlowState::Running => row.lease.is_some() && row.worker.is_some(),
        _ => true,
    }
}
