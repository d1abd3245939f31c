//! The protocol checked in every interleaving within the bounds, under each unique strategy;
//! and each broken variant caught by the property it breaks.

use errand_model::{explore, Faults, Parts, Protocol, Strategy, WorkerFaults};
use stateright::{Checker, HasDiscoveries};

fn check(protocol: Protocol, label: &str) -> impl Checker<Protocol> {
    explore(protocol, label, HasDiscoveries::AllFailures)
}

#[test]
fn the_core_holds_under_every_strategy() {
    for strategy in [
        Strategy::UntilExecuted,
        Strategy::UntilExecuting,
        Strategy::WhileExecuting,
    ] {
        let checker = check(Protocol::new(strategy), &format!("{strategy:?}"));
        checker.assert_properties();
    }
}

/// Deaths with one job: a second job multiplies the states by a thousand and adds no case of
/// a death's own (deaths never share anything between jobs).
#[test]
fn deaths_hold() {
    let parts = Parts {
        deaths: true,
        ..Parts::default()
    };
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(parts);
    protocol.bounds.jobs = 1;
    check(protocol, "deaths").assert_properties();
}

/// Under `until_executed`, where a retried dead job takes its key back (under
/// `until_executing` the check does not close in CI's time).
#[test]
fn retrying_dead_jobs_holds() {
    let parts = Parts {
        retry_dead: true,
        ..Parts::default()
    };
    let protocol = Protocol::new(Strategy::UntilExecuted).with(parts);
    check(protocol, "retry_dead").assert_properties();
}

#[test]
fn shutdown_holds() {
    let parts = Parts {
        shutdown: true,
        ..Parts::default()
    };
    let protocol = Protocol::new(Strategy::UntilExecuted).with(parts);
    check(protocol, "shutdown").assert_properties();
}

#[test]
fn cancel_and_complete_in_hold() {
    let parts = Parts {
        cancel: true,
        complete_in: true,
        ..Parts::default()
    };
    let protocol = Protocol::new(Strategy::UntilExecuted).with(parts);
    check(protocol, "cancel and complete_in").assert_properties();
}

/// A completion that ignores a requested cancellation completes a job whose cancel was
/// answered `Requested`.
#[test]
fn a_completion_that_ignores_a_cancel_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(Parts {
        cancel: true,
        ..Parts::default()
    });
    protocol.faults = Faults {
        completion_ignores_cancel: true,
        ..Faults::default()
    };
    broken(
        protocol,
        "a cancel answered cancelled or requested is never followed by completion",
    );
}

/// Checks `protocol` and returns the property it broke.
fn broken(protocol: Protocol, property: &'static str) {
    let label = format!("broken: {property}");
    let until = HasDiscoveries::AnyOf([property].into_iter().collect());
    let checker = explore(protocol, &label, until);
    let found = checker.discovery(property);
    assert!(found.is_some(), "the checker missed `{property}`");
}

#[test]
fn a_finish_without_its_fence_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted);
    protocol.faults = Faults {
        finish_ignores_fence: true,
        ..Faults::default()
    };
    broken(protocol, "a write carrying a stale fence changes nothing");
}

#[test]
fn a_rescue_that_takes_an_until_executing_key_back_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuting);
    protocol.faults = Faults {
        rescue_takes_key_back: true,
        ..Faults::default()
    };
    broken(protocol, "the unique strategy's holding rule");
}

#[test]
fn a_death_flag_cleared_before_the_handler_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(Parts {
        deaths: true,
        ..Parts::default()
    });
    protocol.bounds.jobs = 1;
    protocol.faults = Faults {
        deaths_cleared_when_claimed: true,
        ..Faults::default()
    };
    broken(protocol, "a death reaches a handler at least once");
}

#[test]
fn a_step_recorded_before_its_effect_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted);
    protocol.worker_faults = WorkerFaults {
        record_before_effect: true,
        ..WorkerFaults::default()
    };
    broken(protocol, "a recorded step's effect ran");
}

#[test]
fn a_shutdown_that_drops_late_completions_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(Parts {
        shutdown: true,
        ..Parts::default()
    });
    protocol.worker_faults = WorkerFaults {
        shutdown_drops_late_completions: true,
        ..WorkerFaults::default()
    };
    broken(
        protocol,
        "shutdown releases without spending attempts and never a finished job",
    );
}

#[test]
fn retrying_a_completed_job_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(Parts {
        retry_dead: true,
        ..Parts::default()
    });
    protocol.faults = Faults {
        retry_any_state: true,
        ..Faults::default()
    };
    broken(protocol, "no job completed twice per enqueue");
}

#[test]
fn a_rescue_that_leaves_the_job_running_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted);
    protocol.faults = Faults {
        rescue_leaves_running: true,
        ..Faults::default()
    };
    broken(protocol, "no job lost");
}

#[test]
fn a_renewal_by_id_alone_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted);
    protocol.faults = Faults {
        renew_by_id_only: true,
        ..Faults::default()
    };
    broken(protocol, "renewals extend only the renewing runs' leases");
}

#[test]
fn a_run_that_never_reads_the_ledger_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted);
    protocol.worker_faults = WorkerFaults {
        ledger_unread: true,
        ..WorkerFaults::default()
    };
    broken(
        protocol,
        "a step's effect runs once, unless a run died before recording it or runs overlapped",
    );
}

#[test]
fn committing_after_a_refused_complete_in_is_caught() {
    let mut protocol = Protocol::new(Strategy::UntilExecuted).with(Parts {
        complete_in: true,
        ..Parts::default()
    });
    protocol.worker_faults = WorkerFaults {
        complete_in_error_ignored: true,
        ..WorkerFaults::default()
    };
    broken(
        protocol,
        "complete_in completes exactly when the user's transaction commits",
    );
}
