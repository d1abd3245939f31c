//! errand's job protocol as a [`stateright`] model, checked in every interleaving.
//!
//! The state is the job rows and the effect ledger ([`StoreSpec`]), and per worker its running
//! registry, its completions not yet written, its death handlers and its shutdown. Each action
//! is one SQL statement a store runs, or one thing that happens to a worker (a run reaches a
//! step, time passes, the process dies). The checker explores every order in which they can
//! happen, within [`Bounds`], and holds every named property in every state reached.
//!
//! | model action | store method | statement (`store/sql.rs` field) |
//! | --- | --- | --- |
//! | `Enqueue` (each step: insert, look-up) | `Store::enqueue` | `expire_key` and `insert`, `key_holder` (`replace`: not modelled) |
//! | `Claim` | `Store::claim` | `claim` |
//! | `Promote` | `Store::promote` | `promote` |
//! | `TakeRunningKey` | `Store::take_running_key` | `expire_running_key`, `take_running_key` |
//! | `ReadStep`, `Effect`, `RecordStep` | `Store::step_result`, the user's code, `Store::record_step` | `step_result`, `record_step` |
//! | `Finish` | `Store::finish` | `finish` |
//! | `QueueCompletion`, `WriteCompletions` | `Store::complete_many` | `complete_many` |
//! | `CompleteIn` | `sql::complete` in the user's transaction | `complete` |
//! | `Renew` | `Store::renew` | `renew` |
//! | `ExpireLease`, `LoseRun` | (time; the lease keeper's local timer) | — |
//! | `Rescue` | `Store::rescue` | `rescue` |
//! | `BeginShutdown`, `EndShutdown` | `Store::complete_many`, `Store::release` | `complete_many`, `release` |
//! | `Crash` | (the process dies) | — |
//! | `Cancel` | `Store::cancel` | `cancel`, `request_cancel` |
//! | `ClaimDeaths`, `HandleDeath`, `ExpireDeathLease` | `Store::claim_deaths`, the handler, `Store::death_delivered` | `claim_deaths`, `death_delivered` |
//! | `RetryDead` | `Store::retry_dead` | `retry_dead` |
//!
//! A change to one of these statements changes [`StoreSpec`] in the same commit, or says in its
//! message why it need not.
//!
//! The workflow rules ([`flow::FlowSpec`], checked by [`flow_model::Flow`]) and cron slots
//! ([`cron::ScheduleSpec`], checked by [`cron::Cron`]) keep the same rule: each rule has one
//! home in each dialect, named here, and one in the spec.
//!
//! | spec method | what runs it | statement or trigger (both dialects unless named) |
//! | --- | --- | --- |
//! | `FlowSpec::insert`, `lock_parents`, `waiting_at_insert` | `sql::insert` | `lock_parents`, `insert`, `add_deps`, `cancel`; the Rust mirror `waiting_at_insert` in `store/sql.rs` |
//! | `FlowSpec::add_to_batch` | `Store::add_to_batch` | `wait_for_one_more`, `count_steps`, `add_dependents` |
//! | `FlowSpec::claim`, `claimable`, `fair_turn` | the worker's claim loop (`worker/claim.rs`) | `claim` (plain), `claim_fair` and `fair_served`, `limit_candidates`, `limit_free_slots`, `limit_add_slots`, `limit_take_slots` (`store/sql/claims.rs`) |
//! | `FlowSpec::startable` | `Runner::recheck` | `STARTABLE` (`store/sql/claims.rs`) |
//! | `FlowSpec::mark_started`, `pass_window` | the run's beginning; time | `MARK_STARTED` (`store/sql/claims.rs`); `limit_free_slots` reads the window |
//! | `FlowSpec::finish` | `Store::finish` | `finish` |
//! | `FlowSpec::set_paused` | `Store::set_paused` | `pause_queue`, `resume_queue` |
//! | `FlowSpec::promote` | `Store::promote` | `expire`, `promote` |
//! | `FlowSpec::rescue`, `release`, `cancel` | as in the table above | `rescue`, `release`, `cancel`, `request_cancel` |
//! | `FlowSpec::retry_dead`, `death_settled` | `Store::retry_dead` | `retry_dead` (`death_settled!`); trigger `errand_jobs_reopen_dependents` (migration 17) |
//! | `FlowSpec::adopt` | `Worker` adoption (`worker/adopt.rs`) | `UNKEYED`, `ADOPT` (`store/sql/kinds.rs`) |
//! | `FlowSpec::set_state`: the slots | every statement that ends a run | trigger `errand_jobs_limit_slot`, function `errand_free_limit_slot` (migrations 12, 15: a running slot, and a start slot reserved by a run that never began) |
//! | `FlowSpec::settle` | every statement that finishes a job with dependents | trigger `errand_jobs_settle_dependents`, function `errand_settle_dependents` (migrations 13 to 17); the deferred rounds of deep cascades (migration 16: PostgreSQL's loop, SQLite's `errand_settle_round`, `errand_settle_batch`, `errand_jobs_settle_deferred`) are not modelled, and are tested by `tests/suite/long_workflows.rs` |
//! | `ScheduleSpec::register` | `Store::register_schedule` | `register_schedule` |
//! | `ScheduleSpec::enqueue_slot`, `cron::due` | the scheduler (`worker/schedule.rs`), `Schedule::due` | `advance_schedule`, `insert`, `schedule_job` |
//!
//! Priority aging (an order, not a safety rule) and the burial of unknown kinds are outside the
//! models; their tests are in the suite.
//!
//! [`StoreSpec`] serves three times. It is the model's database here; in `tests/conformance.rs`
//! it is the reference that random sequences of store operations (`proptest-state-machine`)
//! are checked against on a real SQLite file and a real PostgreSQL schema, comparing every
//! return value and every row after each step and shrinking a divergence to a minimal
//! sequence. The stores are driven through `errand::conformance` (cargo feature
//! `conformance`, hidden: not an API). Time is the test's: "a lease runs out" moves that
//! job's `lease_until` into the past, exactly as the spec's `expire_lease` does for one job.
//! And in `tests/linearizability.rs` it is the sequential specification that concurrent
//! histories on a real PostgreSQL (an enqueuer of one key, two workers claiming, renewing,
//! finishing and completing in batches, a rescuer expiring leases and rescuing, all at once)
//! must be linearizable to, checked with stateright's `LinearizabilityTester`.

pub mod cron;
pub mod flow;
pub mod flow_model;
pub mod spec;

use stateright::{Checker, HasDiscoveries, Model, Property};

pub use spec::{Faults, JobState, Lease, Outcome, StoreSpec, Strategy};

/// How far the checker looks.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub workers: u8,
    /// How many runs a worker executes at once.
    pub concurrency: usize,
    /// Jobs enqueued, all with one key.
    pub jobs: u8,
    pub max_attempts: u8,
    /// No job is claimed once its fence reaches this.
    pub max_fence: u8,
}

impl Bounds {
    /// Small enough to close in CI's time on two cores: 2 workers running one job at a time,
    /// 2 jobs sharing a key, 2 attempts, fences up to 3. `ERRAND_MODEL_DEEP=1` lets each worker
    /// run 2 jobs at once, so that a worker can claim its own rescued job while its old run
    /// still runs (the core under `until_executed`: 8.0M states, about 2 minutes here; more
    /// jobs or attempts do not close on this machine).
    pub fn from_env() -> Bounds {
        if std::env::var_os("ERRAND_MODEL_DEEP").is_some() {
            Bounds {
                workers: 2,
                concurrency: 2,
                jobs: 2,
                max_attempts: 2,
                max_fence: 3,
            }
        } else {
            Bounds {
                workers: 2,
                concurrency: 1,
                jobs: 2,
                max_attempts: 2,
                max_fence: 3,
            }
        }
    }
}

/// Where a run is in the job's body: one ledger step, then the job's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Claimed; a `while_executing` job must take its running key first.
    Claimed,
    /// About to read the step's record.
    Ready,
    /// The step was not recorded: its effect runs next.
    Effect,
    /// The effect ran; its result is recorded next.
    Record,
    /// The (broken) ledger recorded the step first; the effect runs next.
    EffectAfterRecord,
    /// The step is done; the job's outcome comes next.
    Body,
    /// The user's transaction was rolled back: the job returns its error.
    MustFail,
}

/// One run a worker executes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    pub id: usize,
    pub fence: u8,
    pub attempt: u8,
    pub phase: Phase,
    /// The lease keeper gave the run up: its outcome is not written.
    pub lost: bool,
}

/// A worker process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Worker {
    /// The running registry, keyed by (id, fence).
    pub runs: Vec<Run>,
    /// Completions not yet written.
    pub pending: Vec<(usize, u8)>,
    /// Deaths whose handler runs here.
    pub deaths: Vec<usize>,
    /// Shutting down: the unfinished runs as seen when the grace period ended.
    pub stopping: Option<Vec<(usize, u8)>>,
    /// Completions of runs that ended after that snapshot.
    pub late: Vec<(usize, u8)>,
    /// Stopped or crashed: does nothing more.
    pub gone: bool,
}

/// What happened that the rows do not show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct History {
    /// How many times the step's effect ran.
    pub effects: u8,
    /// Two runs of the step's scope were between their read and their record at once (a run
    /// whose lease was lost beside its successor): both may run the effect.
    pub effects_overlapped: bool,
    /// A run died between its effect and its record: the next run runs the effect again.
    pub effect_unrecorded: bool,
    /// Per job: the user's writes committed with `complete_in`.
    pub user_writes: Vec<u8>,
    /// Per job: completed by `complete_in`.
    pub completed_in_tx: Vec<bool>,
    /// Per job: a death handler returned `Ok`.
    pub handled: Vec<bool>,
    /// A shutdown put back a job whose run had finished.
    pub released_finished: bool,
    /// Reachability marks.
    pub step_skipped: bool,
    pub rolled_back: bool,
    pub lost_run: bool,
    pub released: bool,
    pub retried_dead: bool,
    pub retried_insert: bool,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub store: StoreSpec,
    pub workers: Vec<Worker>,
    /// An enqueue between its statements, with how many inserts it has tried.
    pub enqueue: Option<(EnqueueStep, u8)>,
    pub history: History,
}

/// The statement an enqueue runs next: its insert, or (refused) the look-up of the key's
/// holder. A holder that lets the key go in between sends it back to the insert, three tries
/// in all, as `sql::insert` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnqueueStep {
    Insert,
    LookUp,
}

/// One statement, or one thing that happens to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// An enqueue runs its next statement.
    Enqueue,
    Claim {
        worker: u8,
        id: usize,
    },
    Promote {
        id: usize,
    },
    TakeRunningKey {
        worker: u8,
        run: usize,
    },
    ReadStep {
        worker: u8,
        run: usize,
    },
    Effect {
        worker: u8,
        run: usize,
    },
    RecordStep {
        worker: u8,
        run: usize,
    },
    /// The run ends with a failure or a snooze, written at once.
    Finish {
        worker: u8,
        run: usize,
        outcome: Outcome,
    },
    /// The run ends well; its completion waits for the next batch.
    QueueCompletion {
        worker: u8,
        run: usize,
    },
    WriteCompletions {
        worker: u8,
    },
    /// The user's transaction with `complete_in`: committed, or rolled back.
    CompleteIn {
        worker: u8,
        run: usize,
        commit: bool,
    },
    Renew {
        worker: u8,
    },
    ExpireLease {
        id: usize,
    },
    LoseRun {
        worker: u8,
        run: usize,
    },
    Rescue,
    /// The grace period ends: the runs still registered are unfinished.
    BeginShutdown {
        worker: u8,
    },
    /// Running tasks are aborted, completions written, the unfinished put back.
    EndShutdown {
        worker: u8,
    },
    Crash {
        worker: u8,
    },
    Cancel {
        id: usize,
    },
    ClaimDeaths {
        worker: u8,
    },
    HandleDeath {
        worker: u8,
        id: usize,
        ok: bool,
    },
    ExpireDeathLease {
        id: usize,
    },
    RetryDead {
        id: usize,
    },
}

/// Defects of the worker's side, as [`Faults`] are of the store's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkerFaults {
    /// The ledger records a step before running its effect.
    pub record_before_effect: bool,
    /// A shutdown drops the completions of runs that end after the grace period's snapshot,
    /// and puts their jobs back (errand before this model found it).
    pub shutdown_drops_late_completions: bool,
    /// A run never reads the ledger: every run runs the step's effect.
    pub ledger_unread: bool,
    /// The user's code commits its transaction whether or not `complete_in` succeeded (the
    /// README's pattern before errand's reliability work).
    pub complete_in_error_ignored: bool,
}

/// Which actions beyond the core (enqueue, claim, promote, the running key, the ledger step,
/// finishing, batched completion, renewal, lease expiry and loss, rescue, crash) a check
/// explores. Each check adds the parts its properties are about: all at once would not close
/// in CI's time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts {
    pub shutdown: bool,
    pub cancel: bool,
    pub deaths: bool,
    pub retry_dead: bool,
    pub complete_in: bool,
}

impl Parts {
    pub fn all() -> Parts {
        Parts {
            shutdown: true,
            cancel: true,
            deaths: true,
            retry_dead: true,
            complete_in: true,
        }
    }
}

/// The protocol under one unique strategy, within bounds, with or without defects.
#[derive(Clone, Debug)]
pub struct Protocol {
    pub strategy: Strategy,
    pub bounds: Bounds,
    pub parts: Parts,
    /// Enqueue statement by statement (the core checks), or as one step (the checks of
    /// [`Parts`], whose properties do not depend on the enqueue's inner race, and which would
    /// not close in CI's time with it).
    pub enqueue_steps: bool,
    pub faults: Faults,
    pub worker_faults: WorkerFaults,
}

impl Protocol {
    /// The core protocol under `strategy`; add [`Parts`] with [`Protocol::with`].
    pub fn new(strategy: Strategy) -> Protocol {
        Protocol {
            strategy,
            bounds: Bounds::from_env(),
            parts: Parts::default(),
            enqueue_steps: true,
            faults: Faults::default(),
            worker_faults: WorkerFaults::default(),
        }
    }

    pub fn with(mut self, parts: Parts) -> Protocol {
        self.parts = parts;
        self.enqueue_steps = false;
        self
    }

    fn worker_runs(state: &State, worker: u8) -> impl Iterator<Item = (usize, &Run)> {
        state.workers[usize::from(worker)].runs.iter().enumerate()
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let workers = usize::from(self.bounds.workers);
        vec![State {
            store: StoreSpec::new(self.strategy, self.bounds.max_attempts, self.faults),
            workers: vec![Worker::default(); workers],
            enqueue: None,
            history: History::default(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let store = &state.store;
        if state.enqueue.is_some() || store.rows.len() < usize::from(self.bounds.jobs) {
            actions.push(Action::Enqueue);
        }
        for (id, row) in store.rows.iter().enumerate() {
            match row.state {
                JobState::Retryable => actions.push(Action::Promote { id }),
                JobState::Running if row.lease == Some(Lease::Live) => {
                    actions.push(Action::ExpireLease { id })
                }
                // An operator may ask to retry any finished job; the store retries dead ones.
                state if state.is_final() && self.parts.retry_dead => {
                    actions.push(Action::RetryDead { id })
                }
                _ => {}
            }
            if self.parts.cancel && !row.state.is_final() {
                actions.push(Action::Cancel { id });
            }
            if row.death_leased {
                actions.push(Action::ExpireDeathLease { id });
            }
        }
        if store
            .rows
            .iter()
            .any(|row| row.state == JobState::Running && row.lease == Some(Lease::Expired))
        {
            actions.push(Action::Rescue);
        }
        for w in 0..self.bounds.workers {
            let worker = &state.workers[usize::from(w)];
            if worker.gone {
                continue;
            }
            actions.push(Action::Crash { worker: w });
            if worker.stopping.is_some() {
                actions.push(Action::EndShutdown { worker: w });
            } else {
                if self.parts.shutdown {
                    actions.push(Action::BeginShutdown { worker: w });
                }
                // A run holds its slot until its task ends, lost or not.
                let free = worker.runs.len() < self.bounds.concurrency;
                for (id, row) in store.rows.iter().enumerate().filter(|_| free) {
                    if row.state == JobState::Available && row.fence < self.bounds.max_fence {
                        actions.push(Action::Claim { worker: w, id });
                    }
                }
                if self.parts.deaths
                    && store
                        .rows
                        .iter()
                        .any(|row| row.death_pending && !row.death_leased)
                {
                    actions.push(Action::ClaimDeaths { worker: w });
                }
                if !worker.pending.is_empty() {
                    actions.push(Action::WriteCompletions { worker: w });
                }
            }
            if !worker.runs.is_empty() {
                actions.push(Action::Renew { worker: w });
            }
            for &id in &worker.deaths {
                for ok in [true, false] {
                    actions.push(Action::HandleDeath { worker: w, id, ok });
                }
            }
            for (run, r) in Self::worker_runs(state, w) {
                let row = &store.rows[r.id];
                // The keeper gives a run up only once its lease has surely run out: no renewal
                // reached the database for a whole lease.
                let surely_expired = !(row.state == JobState::Running
                    && row.fence == r.fence
                    && row.lease == Some(Lease::Live));
                if !r.lost && surely_expired {
                    actions.push(Action::LoseRun { worker: w, run });
                }
                match r.phase {
                    Phase::Claimed => actions.push(Action::TakeRunningKey { worker: w, run }),
                    Phase::Ready => actions.push(Action::ReadStep { worker: w, run }),
                    Phase::Effect | Phase::EffectAfterRecord => {
                        actions.push(Action::Effect { worker: w, run })
                    }
                    Phase::Record => actions.push(Action::RecordStep { worker: w, run }),
                    Phase::Body => {
                        actions.push(Action::QueueCompletion { worker: w, run });
                        let failure = if r.attempt >= self.bounds.max_attempts {
                            Outcome::Die
                        } else {
                            Outcome::Retry
                        };
                        for outcome in [failure, Outcome::Snooze] {
                            actions.push(Action::Finish {
                                worker: w,
                                run,
                                outcome,
                            });
                        }
                        for commit in [true, false].into_iter().filter(|_| self.parts.complete_in) {
                            actions.push(Action::CompleteIn {
                                worker: w,
                                run,
                                commit,
                            });
                        }
                    }
                    Phase::MustFail => {
                        let failure = if r.attempt >= self.bounds.max_attempts {
                            Outcome::Die
                        } else {
                            Outcome::Retry
                        };
                        actions.push(Action::Finish {
                            worker: w,
                            run,
                            outcome: failure,
                        });
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let s = &mut state;
        match action {
            Action::Enqueue if !self.enqueue_steps => {
                s.store.enqueue();
            }
            Action::Enqueue => {
                let (step, tries) = s.enqueue.unwrap_or((EnqueueStep::Insert, 0));
                s.enqueue = match step {
                    EnqueueStep::Insert => match s.store.insert() {
                        Some(_) => {
                            s.history.retried_insert |= tries > 0;
                            None
                        }
                        None => Some((EnqueueStep::LookUp, tries + 1)),
                    },
                    EnqueueStep::LookUp if s.store.key_holder().is_some() => {
                        s.store.duplicate_refused = true;
                        None
                    }
                    // The holder let go: insert again, or give up (`Error::KeyContended`).
                    EnqueueStep::LookUp if tries < 3 => Some((EnqueueStep::Insert, tries)),
                    EnqueueStep::LookUp => None,
                };
            }
            Action::Claim { worker, id } => {
                let (fence, attempt) = s.store.claim(id, worker)?;
                let phase = if self.strategy == Strategy::WhileExecuting {
                    Phase::Claimed
                } else {
                    Phase::Ready
                };
                s.workers[usize::from(worker)].runs.push(Run {
                    id,
                    fence,
                    attempt,
                    phase,
                    lost: false,
                });
            }
            Action::Promote { id } => {
                s.store.promote(id);
            }
            Action::TakeRunningKey { worker, run } => {
                let r = s.workers[usize::from(worker)].runs[run].clone();
                if s.store.take_running_key(r.id, r.fence) {
                    s.workers[usize::from(worker)].runs[run].phase = Phase::Ready;
                } else {
                    // Another run holds the key: this one is snoozed without running.
                    end_run(s, worker, run, Some(Outcome::Snooze));
                }
            }
            Action::ReadStep { worker, run } => {
                let recorded = s.store.step_result() && !self.worker_faults.ledger_unread;
                let next = if recorded {
                    s.history.step_skipped = true;
                    Phase::Body
                } else if self.worker_faults.record_before_effect {
                    s.store.record_step();
                    Phase::EffectAfterRecord
                } else {
                    s.history.effects_overlapped |= others_mid_step(s, worker, run);
                    Phase::Effect
                };
                s.workers[usize::from(worker)].runs[run].phase = next;
            }
            Action::Effect { worker, run } => {
                // Counting past two tells nothing more.
                s.history.effects = (s.history.effects + 1).min(2);
                let r = &mut s.workers[usize::from(worker)].runs[run];
                r.phase = if r.phase == Phase::EffectAfterRecord {
                    Phase::Body
                } else {
                    Phase::Record
                };
            }
            Action::RecordStep { worker, run } => {
                s.history.effects_overlapped |= others_mid_step(s, worker, run);
                s.store.record_step();
                s.workers[usize::from(worker)].runs[run].phase = Phase::Body;
            }
            Action::Finish {
                worker,
                run,
                outcome,
            } => end_run(s, worker, run, Some(outcome)),
            Action::QueueCompletion { worker, run } => {
                let r = s.workers[usize::from(worker)].runs.remove(run);
                let w = &mut s.workers[usize::from(worker)];
                // A lost run's outcome is discarded.
                if !r.lost {
                    if w.stopping.is_some() {
                        w.late.push((r.id, r.fence));
                    } else {
                        w.pending.push((r.id, r.fence));
                    }
                }
            }
            Action::WriteCompletions { worker } => {
                let pending = std::mem::take(&mut s.workers[usize::from(worker)].pending);
                s.store.complete_many(&pending);
            }
            Action::CompleteIn {
                worker,
                run,
                commit,
            } => {
                let r = s.workers[usize::from(worker)].runs[run].clone();
                // `complete_in` refuses a lost run before touching the transaction.
                if commit && !r.lost && s.store.complete(r.id, r.fence) {
                    s.history.user_writes[r.id] += 1;
                    s.history.completed_in_tx[r.id] = true;
                    s.workers[usize::from(worker)].runs.remove(run);
                } else if commit && self.worker_faults.complete_in_error_ignored {
                    // The error is dropped and the transaction committed anyway.
                    s.history.user_writes[r.id] += 1;
                    s.workers[usize::from(worker)].runs.remove(run);
                } else {
                    // Rolled back (the user's code failed, or the job was lost and `?` returned
                    // the error): nothing was written, and the job fails.
                    s.history.rolled_back = true;
                    s.workers[usize::from(worker)].runs[run].phase = Phase::MustFail;
                }
            }
            Action::Renew { worker } => {
                let runs: Vec<(usize, u8)> = s.workers[usize::from(worker)]
                    .runs
                    .iter()
                    .filter(|r| !r.lost)
                    .map(|r| (r.id, r.fence))
                    .collect();
                s.store.renew(worker, &runs);
            }
            Action::ExpireLease { id } => {
                s.store.expire_lease(id);
            }
            Action::LoseRun { worker, run } => {
                s.workers[usize::from(worker)].runs[run].lost = true;
                s.history.lost_run = true;
            }
            Action::Rescue => {
                s.store.rescue();
            }
            Action::BeginShutdown { worker } => {
                let w = &mut s.workers[usize::from(worker)];
                let unfinished = w.runs.iter().map(|r| (r.id, r.fence)).collect();
                w.stopping = Some(unfinished);
            }
            Action::EndShutdown { worker } => {
                let w = &mut s.workers[usize::from(worker)];
                let snapshot = w.stopping.take().unwrap_or_default();
                let late = std::mem::take(&mut w.late);
                let mut written = std::mem::take(&mut w.pending);
                let unfinished: Vec<(usize, u8)> =
                    if self.worker_faults.shutdown_drops_late_completions {
                        snapshot
                    } else {
                        written.extend(late.iter().copied());
                        snapshot
                            .into_iter()
                            .filter(|run| !late.contains(run))
                            .collect()
                    };
                let aborted_mid_step = w.runs.iter().any(|r| r.phase == Phase::Record);
                w.runs.clear();
                w.gone = true;
                s.history.effect_unrecorded |= aborted_mid_step;
                s.store.complete_many(&written);
                for &(id, fence) in &unfinished {
                    let row = &s.store.rows[id];
                    let finished = late.contains(&(id, fence));
                    if finished
                        && row.state == JobState::Running
                        && row.fence == fence
                        && row.worker == Some(worker)
                    {
                        s.history.released_finished = true;
                    }
                }
                s.history.released |= !unfinished.is_empty();
                s.store.release(worker, &unfinished);
            }
            Action::Crash { worker } => {
                s.history.effect_unrecorded |= s.workers[usize::from(worker)]
                    .runs
                    .iter()
                    .any(|r| r.phase == Phase::Record);
                s.workers[usize::from(worker)] = Worker {
                    gone: true,
                    ..Worker::default()
                };
            }
            Action::Cancel { id } => {
                s.store.cancel(id);
            }
            Action::ClaimDeaths { worker } => {
                let taken = s.store.claim_deaths();
                let deaths = &mut s.workers[usize::from(worker)].deaths;
                deaths.extend(taken);
                // A handler still running for a death whose lease ran out is the same task.
                deaths.sort_unstable();
                deaths.dedup();
            }
            Action::HandleDeath { worker, id, ok } => {
                s.workers[usize::from(worker)].deaths.retain(|&d| d != id);
                if ok {
                    s.history.handled[id] = true;
                    s.store.death_delivered(id);
                }
            }
            Action::ExpireDeathLease { id } => {
                s.store.expire_death_lease(id);
            }
            Action::RetryDead { id } => {
                if s.store.retry_dead(id) {
                    // A retried job's death is a new one.
                    s.history.handled[id] = false;
                    s.history.retried_dead = true;
                } else {
                    return None;
                }
            }
        }
        // The history keeps an entry per job.
        let jobs = state.store.rows.len();
        state.history.user_writes.resize(jobs, 0);
        state.history.completed_in_tx.resize(jobs, false);
        state.history.handled.resize(jobs, false);
        // Orders that mean the same are one state.
        for worker in &mut state.workers {
            worker.runs.sort_by_key(|r| (r.id, r.fence));
            worker.pending.sort_unstable();
            worker.deaths.sort_unstable();
            worker.late.sort_unstable();
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("no job completed twice per enqueue", |_, s: &State| {
                s.store.completions.iter().all(|&n| n <= 1)
            }),
            Property::always("a write carrying a stale fence changes nothing", |_, s: &State| {
                !s.store.stale_write
            }),
            Property::always("no job lost", |_, s: &State| {
                s.store.rows.iter().all(|row| match row.state {
                    JobState::Running => row.lease.is_some() && row.worker.is_some(),
                    _ => row.lease.is_none(),
                })
            }),
            Property::always("the unique strategy's holding rule", |m: &Protocol, s: &State| {
                holding_rule(m.strategy, &s.store)
            }),
            Property::always("a death reaches a handler at least once", |_, s: &State| {
                s.store.rows.iter().enumerate().all(|(id, row)| {
                    row.state != JobState::Dead || s.history.handled[id] || row.death_pending
                })
            }),
            Property::always("a recorded step's effect ran", |_, s: &State| {
                !s.store.step_recorded || s.history.effects >= 1
            }),
            Property::always(
                "a step's effect runs once, unless a run died before recording it or runs overlapped",
                |_, s: &State| {
                    s.history.effects <= 1
                        || s.history.effects_overlapped
                        || s.history.effect_unrecorded
                },
            ),
            Property::always(
                "a cancel answered cancelled or requested is never followed by completion",
                |_, s: &State| {
                    s.store
                        .rows
                        .iter()
                        .zip(&s.store.cancel_answered)
                        .all(|(row, &answered)| !answered || row.state != JobState::Completed)
                },
            ),
            Property::always("renewals extend only the renewing runs' leases", |_, s: &State| {
                !s.store.foreign_renewal
            }),
            Property::always(
                "shutdown releases without spending attempts and never a finished job",
                |_, s: &State| !s.store.bad_release && !s.history.released_finished,
            ),
            Property::always(
                "complete_in completes exactly when the user's transaction commits",
                |_, s: &State| {
                    s.history
                        .user_writes
                        .iter()
                        .zip(&s.history.completed_in_tx)
                        .all(|(&writes, &completed)| writes <= 1 && (writes == 1) == completed)
                },
            ),
        ];
        // Each path the checks rely on is reached, so that none passes vacuously.
        properties.extend([
            Property::sometimes("a rescue", |_, s: &State| s.store.rescued),
            Property::sometimes("a stale write refused", |_, s: &State| {
                s.store.stale_write_refused
            }),
            Property::sometimes("a recorded step skipped", |_, s: &State| {
                s.history.step_skipped
            }),
            Property::sometimes("a run lost by its worker", |_, s: &State| {
                s.history.lost_run
            }),
        ]);
        if self.strategy != Strategy::WhileExecuting && self.bounds.jobs >= 2 {
            properties.push(Property::sometimes(
                "a duplicate refused",
                |_, s: &State| s.store.duplicate_refused,
            ));
            if self.enqueue_steps {
                properties.push(Property::sometimes(
                    "an insert retried after the holder let the key go",
                    |_, s: &State| s.history.retried_insert,
                ));
            }
        }
        if self.parts.deaths {
            properties.push(Property::sometimes("a death handled", |_, s: &State| {
                s.history.handled.iter().any(|&h| h)
            }));
        }
        if self.parts.complete_in {
            properties.push(Property::sometimes(
                "a complete_in rolled back",
                |_, s: &State| s.history.rolled_back,
            ));
            properties.push(Property::sometimes(
                "a job completed in a transaction",
                |_, s: &State| s.history.completed_in_tx.iter().any(|&c| c),
            ));
        }
        if self.parts.shutdown {
            properties.push(Property::sometimes(
                "a shutdown that put a job back",
                |_, s: &State| s.history.released,
            ));
        }
        if self.parts.retry_dead {
            properties.push(Property::sometimes("a dead job retried", |_, s: &State| {
                s.history.retried_dead
            }));
        }
        if self.parts.cancel {
            properties.push(Property::sometimes("a job cancelled", |_, s: &State| {
                s.store.rows.iter().any(|r| r.state == JobState::Cancelled)
            }));
        }
        properties
    }
}

/// Whether a run other than `run` of `worker` is between its step's read and its record.
fn others_mid_step(s: &State, worker: u8, run: usize) -> bool {
    s.workers.iter().enumerate().any(|(w, other)| {
        other.runs.iter().enumerate().any(|(i, r)| {
            (w, i) != (usize::from(worker), run) && matches!(r.phase, Phase::Effect | Phase::Record)
        })
    })
}

/// Ends run `run` of `worker`: writes `outcome` unless the run was lost, and removes it from
/// the registry however it ended.
fn end_run(s: &mut State, worker: u8, run: usize, outcome: Option<Outcome>) {
    let r = s.workers[usize::from(worker)].runs.remove(run);
    if let (false, Some(outcome)) = (r.lost, outcome) {
        s.store.finish(r.id, r.fence, outcome);
    }
}

/// Each strategy's rule, as the README's table states it.
fn holding_rule(strategy: Strategy, store: &StoreSpec) -> bool {
    let holders = store.rows.iter().filter(|row| row.holds_key).count();
    let running_keys = store.rows.iter().filter(|row| row.running_key).count();
    let each = store.rows.iter().all(|row| match strategy {
        // Held from the enqueue until the job finishes.
        Strategy::UntilExecuted => row.holds_key != row.state.is_final(),
        // Held until the job starts (and again by a retry that finds it free).
        Strategy::UntilExecuting => {
            !(row.holds_key && (row.state.is_final() || row.state == JobState::Running))
        }
        // Only running jobs hold it, and only one at a time.
        Strategy::WhileExecuting => {
            !row.holds_key && (!row.running_key || row.state == JobState::Running)
        }
    });
    let no_twins = match strategy {
        // Never two unfinished jobs with the key.
        Strategy::UntilExecuted => {
            store
                .rows
                .iter()
                .filter(|row| !row.state.is_final())
                .count()
                <= 1
        }
        _ => true,
    };
    holders <= 1 && running_keys <= 1 && each && no_twins
}

/// One check at a time: each uses both cores already, and the largest hold millions of states
/// in memory.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Explores `model` breadth first on both cores until `until`, one check at a time, and prints
/// how many states it saw and how long it took (the figures the README quotes).
pub fn explore<M>(model: M, label: &str, until: HasDiscoveries) -> impl Checker<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + std::fmt::Debug + std::hash::Hash + PartialEq + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static,
{
    // A check that failed poisons the lock; the next still runs.
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = std::time::Instant::now();
    let checker = model
        .checker()
        .threads(2)
        .finish_when(until)
        .spawn_bfs()
        .join();
    println!(
        "{label}: {} states ({} unique) in {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed()
    );
    checker
}
