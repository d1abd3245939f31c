//! The scheduling and workflow rules checked in every interleaving within the bounds, one
//! scenario at a time; and each broken variant caught by the property it breaks.

use errand_model::cron::{CatchUp, Cron, CronFaults};
use errand_model::explore;
use errand_model::flow::FlowFaults;
use errand_model::flow_model::{Flow, Scenario};
use stateright::{Checker, HasDiscoveries};

fn holds(scenario: Scenario) {
    let checker = explore(
        Flow::new(scenario),
        &format!("{scenario:?}"),
        HasDiscoveries::AllFailures,
    );
    checker.assert_properties();
}

#[test]
fn limits_hold() {
    holds(Scenario::Limits);
}

#[test]
fn fair_turns_hold() {
    holds(Scenario::Fair);
}

#[test]
fn dependencies_hold() {
    holds(Scenario::Dependencies);
}

#[test]
fn sagas_hold() {
    holds(Scenario::Saga);
}

#[test]
fn rate_limits_hold() {
    holds(Scenario::Rate);
}

#[test]
fn batches_hold() {
    holds(Scenario::Batch);
}

/// Checks `scenario` with `faults` and asserts the checker finds `property` broken.
fn broken(scenario: Scenario, faults: FlowFaults, property: &'static str) {
    let until = HasDiscoveries::AnyOf([property].into_iter().collect());
    let flow = Flow::new(scenario).with_faults(faults);
    let checker = explore(flow, &format!("broken: {property}"), until);
    assert!(
        checker.discovery(property).is_some(),
        "the checker missed `{property}` under {faults:?}"
    );
}

fn faults() -> FlowFaults {
    FlowFaults::default()
}

#[test]
fn a_claim_that_ignores_the_slots_is_caught() {
    let f = FlowFaults {
        claim_ignores_slots: true,
        ..faults()
    };
    broken(
        Scenario::Limits,
        f,
        "limited jobs running never exceed the limit",
    );
}

#[test]
fn a_slot_kept_after_a_death_is_caught() {
    let f = FlowFaults {
        slot_kept_after_death: true,
        ..faults()
    };
    broken(Scenario::Limits, f, "a held slot's job is running");
}

/// Issue 23's defect: a limit added to a kind with a backlog.
#[test]
fn a_claim_that_leaves_the_limit_key_unwritten_is_caught() {
    let f = FlowFaults {
        claim_leaves_key_unwritten: true,
        ..faults()
    };
    broken(Scenario::Limits, f, "a held slot's job is running");
}

#[test]
fn a_start_that_ignores_the_pause_is_caught() {
    let f = FlowFaults {
        start_ignores_pause: true,
        ..faults()
    };
    broken(
        Scenario::Limits,
        f,
        "no run begins in a paused queue or past its deadline",
    );
}

#[test]
fn a_start_that_ignores_the_deadline_is_caught() {
    let f = FlowFaults {
        start_ignores_deadline: true,
        ..faults()
    };
    broken(
        Scenario::Limits,
        f,
        "no run begins in a paused queue or past its deadline",
    );
}

#[test]
fn a_completion_that_ignores_a_cancel_is_caught() {
    let f = FlowFaults {
        completion_ignores_cancel: true,
        ..faults()
    };
    broken(
        Scenario::Limits,
        f,
        "a cancel answered cancelled or requested is never followed by completion",
    );
}

#[test]
fn a_fair_claim_that_ignores_the_turns_is_caught() {
    let f = FlowFaults {
        fair_claim_ignores_turns: true,
        ..faults()
    };
    broken(
        Scenario::Fair,
        f,
        "a fair claim takes the head of the key served longest ago",
    );
}

/// Issue 23's defect: `fair_by` added to a kind with a backlog.
#[test]
fn fair_jobs_never_given_their_key_are_caught() {
    let f = FlowFaults {
        unkeyed_never_adopted: true,
        ..faults()
    };
    broken(Scenario::Fair, f, "no job is stranded");
}

#[test]
fn an_insert_that_does_not_lock_its_parents_is_caught() {
    let f = FlowFaults {
        insert_without_parent_lock: true,
        ..faults()
    };
    broken(Scenario::Dependencies, f, "no job is stranded");
}

#[test]
fn a_run_edge_that_waits_for_completion_is_caught() {
    let f = FlowFaults {
        run_edge_needs_completion: true,
        ..faults()
    };
    broken(
        Scenario::Dependencies,
        f,
        "once all is done, every job ran exactly when what it waits on released it",
    );
}

#[test]
fn a_batch_that_grows_after_its_callbacks_is_caught() {
    let f = FlowFaults {
        batch_add_after_release: true,
        ..faults()
    };
    broken(
        Scenario::Batch,
        f,
        "a batch's callbacks begin only once every job of it has finished",
    );
}

#[test]
fn a_cascade_taken_as_a_failure_is_caught() {
    let f = FlowFaults {
        failed_includes_cascade: true,
        ..faults()
    };
    broken(
        Scenario::Saga,
        f,
        "a compensation begins only for a step that may have acted and a later one that failed",
    );
}

/// Issue 23's defect: "Retry all" re-runs a compensated step.
#[test]
fn retrying_a_step_whose_death_was_acted_on_is_caught() {
    let f = FlowFaults {
        retry_ignores_settled: true,
        ..faults()
    };
    broken(
        Scenario::Saga,
        f,
        "a saga's step never begins once it unwinds",
    );
}

/// Issue 23's defect: a cancelled saga still ships (here: a step cancelled in the buffer).
#[test]
fn a_start_that_ignores_a_cancel_is_caught() {
    let f = FlowFaults {
        start_ignores_cancel: true,
        ..faults()
    };
    broken(
        Scenario::Saga,
        f,
        "a saga's step never begins once it unwinds",
    );
}

/// Found by this model: a step cancelled from `running` before its run began (expired, or
/// cancelled in the buffer) was undone by its compensation.
#[test]
fn a_step_stopped_before_it_began_taken_as_acted_is_caught() {
    let f = FlowFaults {
        stopped_without_run: true,
        ..faults()
    };
    broken(
        Scenario::Saga,
        f,
        "a compensation begins only for a step that may have acted and a later one that failed",
    );
}

/// Found by this model: a step that completed after a later one was cancelled was never
/// undone.
#[test]
fn a_late_completion_left_undone_is_caught() {
    let f = FlowFaults {
        late_completion_not_compensated: true,
        ..faults()
    };
    broken(
        Scenario::Saga,
        f,
        "once all is done, every job ran exactly when what it waits on released it",
    );
}

#[test]
fn schedule_slots_hold_under_every_catch_up() {
    for policy in [CatchUp::None, CatchUp::Latest, CatchUp::All(3)] {
        let label = format!("schedules, catch_up {policy:?}");
        explore(Cron::new(policy), &label, HasDiscoveries::AllFailures).assert_properties();
    }
}

fn cron_broken(policy: CatchUp, faults: CronFaults, property: &'static str) {
    let cron = Cron {
        faults,
        ..Cron::new(policy)
    };
    let until = HasDiscoveries::AnyOf([property].into_iter().collect());
    let checker = explore(cron, &format!("broken: {property}"), until);
    assert!(
        checker.discovery(property).is_some(),
        "the checker missed `{property}` under {faults:?}"
    );
}

#[test]
fn a_slot_statement_without_its_guard_is_caught() {
    let f = CronFaults {
        slot_unguarded: true,
        ..CronFaults::default()
    };
    cron_broken(CatchUp::Latest, f, "a slot is enqueued at most once");
}

#[test]
fn a_registration_that_resets_the_schedule_is_caught() {
    let f = CronFaults {
        registration_resets: true,
        ..CronFaults::default()
    };
    cron_broken(
        CatchUp::All(3),
        f,
        "under catch_up all, every slot since registration within the cap runs once dealt with",
    );
}

#[test]
fn a_late_slot_run_under_catch_up_none_is_caught() {
    let f = CronFaults {
        none_runs_late: true,
        ..CronFaults::default()
    };
    cron_broken(CatchUp::None, f, "under catch_up none, no slot runs late");
}

/// Found by this model: a dead job of a batch, retried while `on_complete` still waited on
/// others, was no longer waited for: `on_complete` could run before it ended again.
#[test]
fn a_retried_job_its_dependents_no_longer_wait_for_is_caught() {
    let f = FlowFaults {
        retry_leaves_dependents_counted: true,
        ..faults()
    };
    broken(Scenario::Batch, f, "no job is stranded");
}

/// Issue 21's defect, fixed by migration 15: a start slot that counts from the claim lets runs
/// held in a buffer begin in a later window beside that window's own.
#[test]
fn a_rate_counted_from_the_claim_is_caught() {
    let f = FlowFaults {
        rate_counts_claims: true,
        ..faults()
    };
    broken(
        Scenario::Rate,
        f,
        "runs of a rate-limited kind that begin in a window never exceed the rate",
    );
}

#[test]
fn a_start_slot_kept_by_a_run_that_never_began_is_caught() {
    let f = FlowFaults {
        reserved_start_kept: true,
        ..faults()
    };
    broken(
        Scenario::Rate,
        f,
        "a start slot is reserved only by a running job",
    );
}
