//! The stores held to the spec: random sequences of store operations run on a real SQLite file
//! and a real PostgreSQL schema and on [`StoreSpec`], comparing every result and every row
//! after each step; a divergence shrinks to a minimal sequence.

mod common;

use common::{postgres_answers, worker_name, Opened, Postgres, Sqlite, Target, MAX_ATTEMPTS};
use errand::conformance::{End, RowView};
use errand_model::spec::{Cancellation, Inserted, Lease, Row};
use errand_model::{Faults, JobState, Outcome, StoreSpec, Strategy};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

const WORKERS: u8 = 2;

/// One store operation, with the spec's ids (0, 1, ...; the store's are 1, 2, ...).
#[derive(Clone, Debug)]
enum Op {
    Enqueue,
    Claim(u8),
    Promote,
    TakeRunningKey(usize),
    /// With the row's fence, or (stale) the one before it.
    Finish(usize, bool, Outcome),
    /// Completes every running job's run (stale: each under the fence before its own, as a
    /// worker whose run was rescued and claimed again would).
    CompleteAll(bool),
    /// Completes every running job's run and claims for the worker, in one operation.
    CompleteAndClaim(u8, bool),
    /// Renews every running job's lease for the worker, with current or stale fences.
    Renew(u8, bool),
    /// Completes one run in a transaction of the caller's own (`Context::complete_in`).
    CompleteIn(usize, bool),
    ExpireLease(usize),
    Rescue,
    Release(u8),
    Cancel(usize),
    ClaimDeaths,
    DeathDelivered(usize),
    ExpireDeathLease(usize),
    RetryDead(usize),
    RecordStep(usize),
}

/// What the spec returned.
#[derive(Clone, Debug, PartialEq)]
enum Returned {
    Nothing,
    Enqueued(usize, bool),
    Runs(Vec<(usize, u8, u8)>),
    Flag(bool),
    Ids(Vec<usize>),
    Renewed(Vec<(usize, u8, bool)>),
    Exchanged(Vec<usize>, Vec<(usize, u8, u8)>),
    Count(u64),
    Cancel(&'static str),
}

#[derive(Clone, Debug)]
struct Reference {
    spec: StoreSpec,
    /// The arguments the last operation took from the rows (fences, ids).
    args: Vec<(usize, u8)>,
    returned: Returned,
}

/// The spec's claim of every available job for `worker`: `(id, fence, attempt)`, by id.
fn claim_all(spec: &mut StoreSpec, worker: u8) -> Vec<(usize, u8, u8)> {
    let available: Vec<usize> = (0..spec.rows.len())
        .filter(|&id| spec.rows[id].state == JobState::Available)
        .collect();
    available
        .into_iter()
        .filter_map(|id| spec.claim(id, worker).map(|(f, a)| (id, f, a)))
        .collect()
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::UntilExecuting => "until_executing",
        Strategy::UntilExecuted => "until_executed",
        Strategy::WhileExecuting => "while_executing",
    }
}

impl ReferenceStateMachine for Reference {
    type State = Reference;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Reference> {
        prop_oneof![
            Just(Strategy::UntilExecuted),
            Just(Strategy::UntilExecuting),
            Just(Strategy::WhileExecuting),
        ]
        .prop_map(|strategy| Reference {
            spec: StoreSpec::new(strategy, MAX_ATTEMPTS, Faults::default()),
            args: Vec::new(),
            returned: Returned::Nothing,
        })
        .boxed()
    }

    fn transitions(state: &Reference) -> BoxedStrategy<Op> {
        let ids = state.spec.rows.len().max(1);
        let id = 0..ids;
        let worker = 0..WORKERS;
        let outcome = prop_oneof![
            Just(Outcome::Complete),
            Just(Outcome::Retry),
            Just(Outcome::Die),
            Just(Outcome::Snooze),
        ];
        prop_oneof![
            3 => Just(Op::Enqueue),
            4 => worker.clone().prop_map(Op::Claim),
            2 => Just(Op::Promote),
            1 => id.clone().prop_map(Op::TakeRunningKey),
            4 => (id.clone(), any::<bool>(), outcome).prop_map(|(i, s, o)| Op::Finish(i, s, o)),
            2 => any::<bool>().prop_map(Op::CompleteAll),
            2 => (worker.clone(), any::<bool>()).prop_map(|(w, s)| Op::CompleteAndClaim(w, s)),
            2 => (worker.clone(), any::<bool>()).prop_map(|(w, s)| Op::Renew(w, s)),
            2 => (id.clone(), any::<bool>()).prop_map(|(i, s)| Op::CompleteIn(i, s)),
            2 => id.clone().prop_map(Op::ExpireLease),
            2 => Just(Op::Rescue),
            1 => worker.prop_map(Op::Release),
            1 => id.clone().prop_map(Op::Cancel),
            2 => Just(Op::ClaimDeaths),
            1 => id.clone().prop_map(Op::DeathDelivered),
            1 => id.clone().prop_map(Op::ExpireDeathLease),
            1 => id.clone().prop_map(Op::RetryDead),
            1 => id.prop_map(Op::RecordStep),
        ]
        .boxed()
    }

    fn preconditions(state: &Reference, op: &Op) -> bool {
        let rows = state.spec.rows.len();
        match *op {
            Op::TakeRunningKey(id)
            | Op::Finish(id, _, _)
            | Op::CompleteIn(id, _)
            | Op::ExpireLease(id)
            | Op::Cancel(id)
            | Op::DeathDelivered(id)
            | Op::ExpireDeathLease(id)
            | Op::RetryDead(id)
            | Op::RecordStep(id) => id < rows,
            Op::Enqueue => rows < 4,
            _ => true,
        }
    }

    fn apply(mut state: Reference, op: &Op) -> Reference {
        let spec = &mut state.spec;
        // Every running job's run, under its fence or (stale) the one before it.
        let running = |spec: &StoreSpec, stale: bool| -> Vec<(usize, u8)> {
            spec.rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == JobState::Running)
                .map(|(id, r)| (id, r.fence.saturating_sub(u8::from(stale))))
                .collect()
        };
        state.args.clear();
        state.returned = match *op {
            Op::Enqueue => match spec.enqueue() {
                Inserted::New(id) => Returned::Enqueued(id, true),
                Inserted::Duplicate(id) => Returned::Enqueued(id, false),
            },
            Op::Claim(worker) => Returned::Runs(claim_all(spec, worker)),
            Op::Promote => {
                let n = (0..spec.rows.len()).filter(|&id| spec.promote(id)).count();
                Returned::Count(n as u64)
            }
            Op::TakeRunningKey(id) => {
                let fence = spec.rows[id].fence;
                state.args.push((id, fence));
                Returned::Flag(spec.take_running_key(id, fence))
            }
            Op::Finish(id, stale, outcome) => {
                let fence = spec.rows[id].fence.saturating_sub(u8::from(stale));
                state.args.push((id, fence));
                Returned::Flag(spec.finish(id, fence, outcome))
            }
            Op::CompleteAll(stale) => {
                let runs = running(spec, stale);
                state.args = runs.clone();
                Returned::Ids(spec.complete_many(&runs))
            }
            Op::CompleteIn(id, stale) => {
                let fence = spec.rows[id].fence.saturating_sub(u8::from(stale));
                state.args.push((id, fence));
                Returned::Flag(spec.complete(id, fence))
            }
            Op::CompleteAndClaim(worker, stale) => {
                let runs = running(spec, stale);
                state.args = runs.clone();
                let done = spec.complete_many(&runs);
                Returned::Exchanged(done, claim_all(spec, worker))
            }
            Op::Renew(worker, stale) => {
                // Every running job's run, this worker's or not: the store must pick its own.
                let runs = running(spec, stale);
                state.args = runs.clone();
                Returned::Renewed(spec.renew(worker, &runs))
            }
            Op::ExpireLease(id) => {
                spec.expire_lease(id);
                Returned::Nothing
            }
            Op::Rescue => Returned::Ids(spec.rescue()),
            Op::Release(worker) => {
                let runs = running(spec, false);
                state.args = runs.clone();
                spec.release(worker, &runs);
                Returned::Nothing
            }
            Op::Cancel(id) => Returned::Cancel(match spec.cancel(id) {
                Cancellation::Cancelled => "cancelled",
                Cancellation::Requested => "requested",
                Cancellation::AlreadyFinished => "finished",
            }),
            Op::ClaimDeaths => Returned::Ids(spec.claim_deaths()),
            Op::DeathDelivered(id) => {
                spec.death_delivered(id);
                Returned::Nothing
            }
            Op::ExpireDeathLease(id) => {
                spec.expire_death_lease(id);
                Returned::Nothing
            }
            Op::RetryDead(id) => Returned::Count(u64::from(spec.retry_dead(id))),
            Op::RecordStep(_) => {
                let before = spec.step_result();
                spec.record_step();
                Returned::Flag(before)
            }
        };
        state
    }
}

/// A real store, and the store's id of each spec job.
struct Sut {
    opened: Opened,
    /// The store's id of each spec job (ids need not be dense: a refused insert may use one).
    ids: Vec<i64>,
}

impl std::ops::Deref for Sut {
    type Target = Opened;

    fn deref(&self) -> &Opened {
        &self.opened
    }
}

impl Sut {
    fn store_id(&self, id: usize) -> i64 {
        self.ids[id]
    }

    fn spec_id(&self, id: i64) -> usize {
        match self.ids.iter().position(|&known| known == id) {
            Some(index) => index,
            None => panic!("the store returned job {id}, which it never enqueued"),
        }
    }

    fn apply(&mut self, reference: &Reference, op: &Op) {
        if let Op::Enqueue = op {
            let (id, new) = self.run(self.store.enqueue(strategy_name(reference.spec.strategy)));
            if new {
                self.ids.push(id);
            }
            let returned = Returned::Enqueued(self.spec_id(id), new);
            assert_eq!(returned, reference.returned, "{op:?} returned differently");
            return;
        }
        let s = &self.store;
        let store_id = |id| self.store_id(id);
        let spec_id = |id| self.spec_id(id);
        let pairs = || -> Vec<(i64, i64)> {
            reference
                .args
                .iter()
                .map(|&(id, fence)| (store_id(id), i64::from(fence)))
                .collect()
        };
        let returned = match *op {
            Op::Enqueue => unreachable!("handled above"),
            Op::Claim(worker) => {
                let mut runs: Vec<(usize, u8, u8)> = self
                    .run(s.claim(&worker_name(worker)))
                    .into_iter()
                    .map(|(id, fence, attempt)| (spec_id(id), fence as u8, attempt as u8))
                    .collect();
                runs.sort_unstable();
                Returned::Runs(runs)
            }
            Op::Promote => Returned::Count(self.run(s.promote())),
            Op::TakeRunningKey(_) => {
                let (id, fence) = pairs()[0];
                Returned::Flag(self.run(s.take_running_key(id, fence)))
            }
            Op::Finish(_, _, outcome) => {
                let (id, fence) = pairs()[0];
                let end = match outcome {
                    Outcome::Complete => End::Complete,
                    Outcome::Retry => End::Retry,
                    Outcome::Die => End::Die,
                    Outcome::Snooze => End::Snooze,
                };
                Returned::Flag(self.run(s.finish(id, fence, end)))
            }
            Op::CompleteIn(..) => {
                let (id, fence) = pairs()[0];
                Returned::Flag(self.run(s.complete_in(id, fence)))
            }
            Op::CompleteAll(_) => Returned::Ids(
                self.run(s.complete_many(&pairs()))
                    .into_iter()
                    .map(spec_id)
                    .collect(),
            ),
            Op::CompleteAndClaim(worker, _) => {
                let (done, claimed) =
                    self.run(s.complete_and_claim(&pairs(), &worker_name(worker)));
                let mut runs: Vec<(usize, u8, u8)> = claimed
                    .into_iter()
                    .map(|(id, fence, attempt)| (spec_id(id), fence as u8, attempt as u8))
                    .collect();
                runs.sort_unstable();
                Returned::Exchanged(done.into_iter().map(spec_id).collect(), runs)
            }
            Op::Renew(worker, _) => Returned::Renewed(
                self.run(s.renew(&worker_name(worker), &pairs()))
                    .into_iter()
                    .map(|(id, fence, cancel)| (spec_id(id), fence as u8, cancel))
                    .collect(),
            ),
            Op::ExpireLease(id) => {
                self.run(s.expire_lease(store_id(id)));
                Returned::Nothing
            }
            Op::Rescue => Returned::Ids(self.run(s.rescue()).into_iter().map(spec_id).collect()),
            Op::Release(worker) => {
                let ids: Vec<i64> = pairs().into_iter().map(|(id, _)| id).collect();
                self.run(s.release(&worker_name(worker), &ids));
                Returned::Nothing
            }
            Op::Cancel(id) => Returned::Cancel(self.run(s.cancel(store_id(id)))),
            Op::ClaimDeaths => Returned::Ids(
                self.run(s.claim_deaths())
                    .into_iter()
                    .map(spec_id)
                    .collect(),
            ),
            Op::DeathDelivered(id) => {
                self.run(s.death_delivered(store_id(id)));
                Returned::Nothing
            }
            Op::ExpireDeathLease(id) => {
                self.run(s.expire_death_lease(store_id(id)));
                Returned::Nothing
            }
            Op::RetryDead(id) => Returned::Count(self.run(s.retry_dead(store_id(id)))),
            Op::RecordStep(id) => {
                let before = self.run(s.step_result());
                self.run(s.record_step(store_id(id)));
                Returned::Flag(before)
            }
        };
        assert_eq!(returned, reference.returned, "{op:?} returned differently");
    }
}

/// The spec's row as the store shows it.
fn expected(row: &Row) -> RowView {
    let state = match row.state {
        JobState::Available => "available",
        JobState::Running => "running",
        JobState::Retryable => "retryable",
        JobState::Completed => "completed",
        JobState::Dead => "dead",
        JobState::Cancelled => "cancelled",
    };
    RowView {
        state: state.to_owned(),
        fence: i64::from(row.fence),
        attempt: i64::from(row.attempt),
        holds_key: row.holds_key,
        running_key: row.running_key,
        worker: row.worker.map(worker_name),
        lease_live: row.lease.map(|lease| lease == Lease::Live),
        death_pending: row.death_pending,
        death_leased: row.death_leased,
        cancel_requested: row.cancel_requested,
    }
}

fn compare_rows(sut: &Sut, reference: &Reference) {
    let rows = sut.run(sut.store.rows());
    assert_eq!(rows.len(), reference.spec.rows.len(), "row count");
    for ((id, mut found), (spec_index, row)) in
        rows.into_iter().zip(reference.spec.rows.iter().enumerate())
    {
        assert_eq!(sut.spec_id(id), spec_index);
        // A snoozed job waits as `scheduled`, a retried one as `retryable`: the spec has one
        // state for both, promoted alike.
        if found.state == "scheduled" {
            found.state = "retryable".to_owned();
        }
        assert_eq!(found, expected(row), "row of job {spec_index}");
    }
}

/// The state-machine test on target `T`.
struct On<T>(std::marker::PhantomData<T>);

impl<T: Target> StateMachineTest for On<T> {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Reference) -> Sut {
        Sut {
            opened: T::open(),
            ids: Vec::new(),
        }
    }

    fn apply(mut sut: Sut, reference: &Reference, op: Op) -> Sut {
        sut.apply(reference, &op);
        sut
    }

    fn check_invariants(sut: &Sut, reference: &Reference) {
        compare_rows(sut, reference);
    }
}

fn config() -> Config {
    Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn sqlite_conforms_to_the_spec(sequential 1..40 => On<Sqlite>);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn postgres_conforms_to_the_spec(
        (initial, transitions, seen) in Reference::sequential_strategy(1..40)
    ) {
        if postgres_answers() {
            On::<Postgres>::test_sequential(config(), initial, transitions, seen);
        }
    }
}

/// Runs `ops` from an empty store under `strategy` on the spec and on `T`, comparing every
/// result and every row after each step.
fn replay<T: Target>(strategy: Strategy, ops: &[Op]) {
    let mut reference = Reference {
        spec: StoreSpec::new(strategy, MAX_ATTEMPTS, Faults::default()),
        args: Vec::new(),
        returned: Returned::Nothing,
    };
    let mut sut = Sut {
        opened: T::open(),
        ids: Vec::new(),
    };
    for op in ops {
        reference = <Reference as ReferenceStateMachine>::apply(reference, op);
        sut.apply(&reference, op);
        compare_rows(&sut, &reference);
    }
}

/// Paths through rescue that random sequences rarely reach, for each unique strategy: a run
/// that took its running key loses its lease and is rescued (the key must go with it), then
/// the job is claimed again, a stale run's writes meet the new run, and a second job waits on
/// the key.
fn through_rescue() -> Vec<Op> {
    vec![
        Op::Enqueue,
        Op::Claim(0),
        Op::TakeRunningKey(0),
        Op::ExpireLease(0),
        Op::Rescue,
        Op::Enqueue,
        Op::Promote,
        Op::Claim(1),
        Op::TakeRunningKey(0),
        Op::Finish(0, true, Outcome::Complete),
        Op::CompleteIn(0, true),
        Op::CompleteAll(true),
        Op::Renew(0, true),
        Op::ExpireLease(0),
        Op::Rescue,
        Op::Promote,
        Op::CompleteAndClaim(0, false),
        Op::CompleteAll(false),
    ]
}

#[test]
fn every_unique_strategy_through_rescue_on_sqlite() {
    for strategy in [
        Strategy::UntilExecuted,
        Strategy::UntilExecuting,
        Strategy::WhileExecuting,
    ] {
        replay::<Sqlite>(strategy, &through_rescue());
    }
}

#[test]
fn every_unique_strategy_through_rescue_on_postgres() {
    if !postgres_answers() {
        return;
    }
    for strategy in [
        Strategy::UntilExecuted,
        Strategy::UntilExecuting,
        Strategy::WhileExecuting,
    ] {
        replay::<Postgres>(strategy, &through_rescue());
    }
}

/// Two nodes racing for one schedule slot: exactly one enqueues its job, a node that comes
/// later finds the slot dealt with, and the next slot is anyone's. (Before this test, a guard
/// dropped from the slot's statement showed only when three worker processes happened to
/// race.)
fn one_job_per_schedule_slot<T: Target>() {
    let sut = T::open();
    // A minute's start, so that the every-minute schedule has a slot there.
    let at = 1_800_000_000_000;
    let store = &sut.store;
    let (a, b) = sut.runtime.block_on(async {
        tokio::join!(
            store.take_schedule_slot("race", at),
            store.take_schedule_slot("race", at)
        )
    });
    let (a, b) = (a.expect("first node"), b.expect("second node"));
    assert!(
        a != b,
        "one node, exactly, enqueues the slot's job ({a}, {b})"
    );
    assert!(
        !sut.run(store.take_schedule_slot("race", at)),
        "a later node"
    );
    assert!(
        sut.run(store.take_schedule_slot("race", at + 60_000)),
        "the next slot"
    );
    assert_eq!(sut.run(store.rows()).len(), 2, "one job per slot");
}

#[test]
fn one_job_per_schedule_slot_on_sqlite() {
    one_job_per_schedule_slot::<Sqlite>();
}

#[test]
fn one_job_per_schedule_slot_on_postgres() {
    if postgres_answers() {
        one_job_per_schedule_slot::<Postgres>();
    }
}
