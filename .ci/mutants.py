#!/usr/bin/env python3
"""errand's own mutation check: applies each named mutation below (the smallest edit a hurried
change could make to a statement, a trigger or a worker decision), runs the tests named for it,
and reports whether they caught it. A mutation the tests pass is a survivor: a rule nothing
checks. Run it before a change to the store or the worker lands:

    python3 .ci/mutants.py            # every mutation
    python3 .ci/mutants.py NAME ...   # some of them
    python3 .ci/mutants.py --list     # their names and what each breaks

Needs PostgreSQL as the tests do (DESIGN.md); each mutation rebuilds the crates it touches, so
the whole list takes a while (about two minutes a mutation on two cores). Exits 1 if any
mutation survives. The tree is restored after each mutation, also when interrupted.
"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITE = ["cargo", "test", "-q", "-p", "errand-tests", "--test", "suite", "--"]
CONFORMANCE = ["cargo", "test", "-q", "-p", "errand-model", "--test", "conformance"]
FLOW = ["cargo", "test", "-q", "-p", "errand-model", "--test", "flow_conformance"]

# (name, what it breaks, file, text, replacement, test command)
MUTATIONS = [
    (
        "complete_many_without_fence",
        "a batched completion writes over a run that is no longer the job's",
        "runtime/src/store/sql/fragments.rs",
        "WHERE j.id = d.id AND j.fence = d.fence AND j.state = 'running'",
        "WHERE j.id = d.id AND j.state = 'running'",
        CONFORMANCE,
    ),
    (
        "complete_in_without_fence",
        "a completion in the caller's transaction completes someone else's run",
        "runtime/src/store/sql/runs.rs",
        "\" WHERE id = $id AND fence = $fence AND state = 'running'\"",
        "\" WHERE id = $id AND $fence = $fence AND state = 'running'\"",
        CONFORMANCE,
    ),
    (
        "renew_without_fence",
        "a lost run keeps renewing the lease of the job's new run",
        "runtime/src/store/sql/runs.rs",
        "AND (e.id, e.fence) IN (SELECT * FROM unnest($ids::bigint[], $fences::bigint[]))",
        "AND e.id IN (SELECT id FROM unnest($ids::bigint[], $fences::bigint[]) AS r(id, fence))",
        CONFORMANCE,
    ),
    (
        "rescue_keeps_running_key",
        "a rescued while_executing job keeps its running key, and no other job of the key runs",
        "runtime/src/store/sql/maintenance.rs",
        "            run_at = errand_now_ms(),\n            lease_until = NULL,\n            running_key = NULL,\n",
        "            run_at = errand_now_ms(),\n            lease_until = NULL,\n",
        CONFORMANCE + ["--", "every_unique_strategy_through_rescue"],
    ),
    (
        "schedule_slot_unguarded",
        "two nodes enqueue the same cron slot: a periodic job runs twice",
        "runtime/src/store/sql/schedules.rs",
        "        WHERE name = $name AND done_until < $slot\");",
        "        WHERE name = $name AND $slot = $slot\");",
        CONFORMANCE + ["--", "one_job_per_schedule_slot"],
    ),
    (
        "locks_kept_at_shutdown",
        "a stopped worker keeps its rescue lock, and nobody rescues for two thirds of its lease",
        "runtime/src/store/sql/kinds.rs",
        "\"DELETE FROM errand_locks WHERE holder = $id\"",
        "\"DELETE FROM errand_locks WHERE holder = $id AND false\"",
        SUITE + ["limits::every_other", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "completion_ignores_cancel",
        "a job cancelled while it ran ends completed (a cancelled saga ships)",
        "runtime/src/store/sql/fragments.rs",
        "$t,\n            \"cancel_requested THEN 'cancelled' ELSE 'completed' END)",
        "$t,\n            \"false THEN 'cancelled' ELSE 'completed' END)",
        SUITE + ["cancel"],
    ),
    (
        "slot_kept_after_death",
        "a limited job that dies keeps its slot, and its kind stops",
        "runtime/migrations/postgres/0015_deploys.sql",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));\n    PERFORM",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL))\n"
        "      AND NOT EXISTS (SELECT 1 FROM errand_jobs d WHERE d.id = OLD.id AND d.state = 'dead');\n    PERFORM",
        SUITE + ["limits::a_limited_job", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "slot_kept_after_retry",
        "a limited job retried or rescued keeps its slot, and its next attempt never starts",
        "runtime/migrations/postgres/0015_deploys.sql",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));\n    PERFORM",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL))\n"
        "      AND NOT EXISTS (SELECT 1 FROM errand_jobs d WHERE d.id = OLD.id AND d.state = 'retryable');\n    PERFORM",
        SUITE + ["limits::every_other", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "slot_kept_after_snooze",
        "a limited job that snoozes keeps its slot",
        "runtime/migrations/postgres/0015_deploys.sql",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));\n    PERFORM",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL))\n"
        "      AND NOT EXISTS (SELECT 1 FROM errand_jobs d WHERE d.id = OLD.id AND d.state = 'scheduled');\n    PERFORM",
        SUITE + ["limits::every_other", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "slot_kept_after_release",
        "a limited job put back at shutdown keeps its slot",
        "runtime/migrations/postgres/0015_deploys.sql",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));\n    PERFORM",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL))\n"
        "      AND NOT EXISTS (SELECT 1 FROM errand_jobs d WHERE d.id = OLD.id AND d.state = 'available');\n    PERFORM",
        SUITE + ["limits::every_other", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "cascade_not_deferred",
        "a saga of 2,000 steps overflows PostgreSQL's stack when it completes",
        "runtime/migrations/postgres/0017_saga_stops.sql",
        "            UPDATE errand_jobs SET settle_depth = 1 WHERE settle_depth >= 100;\n            EXIT WHEN NOT FOUND;",
        "            EXIT;",
        SUITE + ["long_workflows", "--skip", "memory", "--skip", "sqlite"],
    ),
    (
        "sqlite_cascade_unbounded",
        "a chain of 1,001 jobs fails the dying job's statement on SQLite, forever",
        "runtime/migrations/sqlite/0017_saga_stops.sql",
        "AND NEW.settle_depth < 10 AND",
        "AND NEW.settle_depth < 100000 AND",
        SUITE + ["long_workflows::a_chain", "--skip", "postgres"],
    ),
    (
        "sqlite_deferred_never_settled",
        "jobs a deep cascade deferred on SQLite stay pending forever",
        "runtime/migrations/sqlite/0016_long_workflows.sql",
        "         AND EXISTS (SELECT 1 FROM errand_jobs WHERE settle_depth >= 10)\nBEGIN",
        "         AND false\nBEGIN",
        SUITE + ["long_workflows::a_chain", "--skip", "postgres"],
    ),
    (
        "slots_added_unsorted",
        "two claims create the first slots of two keys in opposite orders (a deadlock)",
        "runtime/src/store/sql/limits.rs",
        "    wanted.sort();\n    wanted\n",
        "    wanted\n",
        ["cargo", "test", "-q", "-p", "errand", "--all-features", "--lib", "--", "slots_are_added"],
    ),
    (
        "backoff_stops_the_buffer",
        "jobs claimed already wait out the store's backoff (up to 25.6 s)",
        "runtime/src/worker/claim.rs",
        "                            backoff_until = Some(Instant::now() + wait);\n",
        "                            backoff_until = Some(Instant::now() + wait);\n"
        "                            tokio::time::sleep(wait).await;\n",
        SUITE + ["buffered_jobs_keep_starting"],
    ),
    (
        "leases_on_the_test_clock",
        "advancing a test client's clock makes a live run look lost, and it runs twice",
        "runtime/src/store/sql/maintenance.rs",
        "WHERE state = 'running' AND lease_until < $wall",
        "WHERE state = 'running' AND lease_until < $now",
        SUITE + ["moving_the_clock_under_a_live_run"],
    ),
    (
        "stopped_without_run",
        "a saga step cancelled before its run began (expired, or cancelled in the buffer) is undone",
        "runtime/migrations/postgres/0017_saga_stops.sql",
        "AND OLD.state = 'running' AND NEW.attempt = OLD.attempt",
        "AND OLD.state = 'running'",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "late_completion_not_undone",
        "a saga step that completes after the next was cancelled is never undone",
        "runtime/migrations/postgres/0017_saga_stops.sql",
        "AND later.state = 'cancelled' AND later.settle_depth = 0",
        "AND false",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "start_ignores_cancel",
        "a job cancelled while it waits in a worker's buffer begins anyway (a cancelled saga ships)",
        "runtime/src/store/sql/runs.rs",
        "COALESCE(j.expires_at <= errand_now_ms(), false), j.cancel_requested",
        "COALESCE(j.expires_at <= errand_now_ms(), false), false",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "release_refunds_cancelled",
        "a run cancelled as it is put back at shutdown is taken as never begun, and not undone",
        "runtime/src/store/sql/runs.rs",
        "pg_with_cancel_error!(\"\"),\n        \", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END",
        "pg_with_cancel_error!(\"\"),\n        \", attempt = attempt - 1",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "overridden_snooze_refunded",
        "a run that snoozes after its cancellation was asked is taken as never begun, and not undone",
        "runtime/src/store/sql/runs.rs",
        "run_at = COALESCE(errand_now_ms() + $run_after::bigint, run_at),\n            -- A run whose end the request overrides had begun: its attempt counts.\n            attempt = attempt - CASE WHEN cancel_requested AND $state NOT IN ('dead', 'cancelled') THEN 0 ELSE $refund END",
        "run_at = COALESCE(errand_now_ms() + $run_after::bigint, run_at),\n            -- A run whose end the request overrides had begun: its attempt counts.\n            attempt = attempt - $refund",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "retry_leaves_dependents_counted",
        "a retried dead job of a batch is not waited for, and on_complete runs before it ends",
        "runtime/migrations/postgres/0017_saga_stops.sql",
        "    UPDATE errand_jobs j SET waiting_on = j.waiting_on + 1",
        "    UPDATE errand_jobs j SET waiting_on = j.waiting_on",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "reserved_start_kept",
        "a start slot reserved by a run that never began stays taken, and the rate's next start waits a window",
        "runtime/migrations/postgres/0015_deploys.sql",
        "      AND (purpose = 'running' OR (purpose = 'start' AND taken_at IS NULL));\n    PERFORM",
        "      AND purpose = 'running';\n    PERFORM",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "claim_ignores_pause",
        "a paused queue's jobs are claimed",
        "runtime/src/store/sql/fragments.rs",
        "paused!(\"w.queue\")",
        "paused!(\"NULL\")",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "plain_claim_reads_keyed",
        "the plain claim reads every available job, limited and fair backlogs row by row",
        "runtime/src/store/sql/fragments.rs",
        "                   AND limit_key IS NULL AND fair_key IS NULL\n",
        "",
        ["cargo", "test", "-q", "-p", "errand", "--all-features", "--lib", "--",
         "postgres::tests::claims_walk_no_held_back_jobs"],
    ),
    (
        "limited_claim_skips_valued_keys",
        "jobs of a limit with a concurrency_key (keys `kind:value`) are never claimed",
        "runtime/src/store/sql/limits.rs",
        "              ON k.limit_key = l.kind OR starts_with(k.limit_key, l.kind || ':')\n",
        "              ON k.limit_key = l.kind\n",
        SUITE + ["limits::a_concurrency_key_limits_each_key_apart::postgres"],
    ),
    (
        "limited_claim_ignores_pause",
        "a paused queue's limited jobs are claimed",
        "runtime/src/store/sql/limits.rs",
        "paused!(\"q.queue\"),",
        "paused!(\"NULL\"),",
        FLOW + ["--", "fixed_paths_on_postgres"],
    ),
    (
        "adoption_keeps_stale_keys",
        "jobs of a kind that lost its limit and fair_by keep their keys, and no claim takes them",
        "runtime/src/store/sql/kinds.rs",
        "        SET limit_key = t.limit_key, fair_key = t.fair_key\n        FROM unnest",
        "        SET limit_key = COALESCE(j.limit_key, t.limit_key), fair_key = COALESCE(j.fair_key, t.fair_key)\n        FROM unnest",
        SUITE + ["deploys::options_removed_from_a_backlog_still_run_it::postgres"],
    ),
    (
        "burial_ignores_pause",
        "jobs of an unknown kind in a paused queue are buried",
        "runtime/src/store/sql/maintenance.rs",
        "paused!(\"q.queue\"),",
        "paused!(\"NULL\"),",
        SUITE + ["deploys::a_paused_queue_is_never_buried::postgres"],
    ),
    (
        "burial_ignores_live_workers",
        "jobs of a kind another live worker knows are buried",
        "runtime/src/store/sql/maintenance.rs",
        "WHERE w.seen_at > errand_now_ms() - $live AND k.kind = ANY(w.kinds))",
        "WHERE false AND k.kind = ANY(w.kinds))",
        SUITE + ["deploys::a_kind_a_live_worker_knows_is_never_buried::postgres"],
    ),
    (
        "burial_ignores_grace",
        "a job of an unknown kind is buried the moment it is due, with no grace for a worker that knows it",
        "runtime/src/store/sql/maintenance.rs",
        "                  AND run_at <= errand_now_ms() - $grace\n",
        "",
        SUITE + ["deploys", "bad_input"],
    ),
    (
        "burial_takes_own_kinds",
        "a worker buries jobs of kinds it knows itself",
        "runtime/src/store/sql/maintenance.rs",
        "WHERE k.kind IS NOT NULL AND k.kind <> ALL($kinds)",
        "WHERE k.kind IS NOT NULL",
        ["cargo", "test", "-q", "-p", "errand", "--all-features", "--lib", "--",
         "postgres::tests::a_worker_never_buries_a_kind_it_knows"],
    ),
    (
        "cancel_reads_without_lock",
        "a run that ends while a cancel looks at its job slips between the cancel's reads",
        "runtime/src/store/sql/cancels.rs",
        "WHERE id = $id FOR UPDATE\"",
        "WHERE id = $id\"",
        SUITE + ["a_cancel_racing_a_failing_run_cancels"],
    ),
    (
        "burial_reads_unordered",
        "with a backlog of known kinds older than the grace, burial reads the table every 30 s",
        "runtime/src/store/sql/maintenance.rs",
        "ORDER BY run_at LIMIT $limit FOR UPDATE SKIP LOCKED) j",
        "LIMIT $limit FOR UPDATE SKIP LOCKED) j",
        ["cargo", "test", "-q", "-p", "errand", "--all-features", "--lib", "--",
         "postgres::tests::claims_walk_no_held_back_jobs"],
    ),
    (
        "aging_walks_aged_jobs",
        "aging reads every job it aged before, not due for another step, at every poll",
        "runtime/src/store/sql/claims.rs",
        "                  AND COALESCE(base_priority, priority) - priority = k.aged\n                  AND run_at <= errand_now_ms() - (k.aged + 1) * $step\n",
        "                  AND k.aged = 0 AND run_at <= errand_now_ms() - $step\n                  AND COALESCE(base_priority, priority) - (errand_now_ms() - run_at) / $step < priority\n",
        ["cargo", "test", "-q", "-p", "errand", "--all-features", "--lib", "--",
         "postgres::tests::claims_walk_no_held_back_jobs"],
    ),
    (
        "vacuum_ignores_dead_rows",
        "errand vacuums its tables at every pruning round, however few dead rows they hold",
        "runtime/src/store/sql/vacuum.rs",
        "      AND s.n_dead_tup > $dead_rows + s.n_live_tup / 5\n",
        "",
        SUITE + ["the_pruner_vacuums_a_table_of_dead_rows"],
    ),
    (
        "pruning_skips_vacuum",
        "errand's tables are vacuumed only as autovacuum gets to them, and grow under a fast queue",
        "runtime/src/worker/prune.rs",
        "match store.vacuum_behind().await {",
        "match Ok::<Vec<(&str, i64)>, Error>(Vec::new()) {",
        SUITE + ["the_pruner_vacuums_a_table_of_dead_rows"],
    ),
    (
        "pruning_round_stops_at_renewal",
        "a pruning round deletes a fixed number of batches, and faster completions outgrow it",
        "runtime/src/worker/prune.rs",
        "                Ok(true) => {}\n",
        "                Ok(true) => break,\n",
        ["cargo", "test", "-q", "-p", "errand", "--lib", "--", "a_round_prunes_until_nothing_is_left"],
    ),
]


def run(name, what, path, text, replacement, command):
    full = os.path.join(ROOT, path)
    with open(full, encoding="utf-8") as f:
        original = f.read()
    if original.count(text) != 1:
        return "stale", f"the text to mutate is found {original.count(text)} times in {path}"
    try:
        with open(full, "w", encoding="utf-8") as f:
            f.write(original.replace(text, replacement))
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.time() - started
    finally:
        with open(full, "w", encoding="utf-8") as f:
            f.write(original)
    if done.returncode == 0:
        return "SURVIVED", f"{' '.join(command)} passed ({seconds:.0f} s)"
    output = done.stdout + done.stderr
    if "could not compile" in output:
        # A mutation that does not build says nothing about the tests.
        return "unbuilt", f"the mutant does not compile: {' '.join(command)}"
    failed = [line for line in output.splitlines() if "panicked at" in line or line.startswith("test ") and "FAILED" in line]
    first = failed[0].strip() if failed else "(see the command's output)"
    return "killed", f"{' '.join(command)} failed ({seconds:.0f} s): {first[:160]}"


def main(args):
    if args == ["--list"]:
        for name, what, path, *_ in MUTATIONS:
            print(f"{name}: {what} ({path})")
        return 0
    chosen = [m for m in MUTATIONS if not args or m[0] in args]
    unknown = set(args) - {m[0] for m in MUTATIONS}
    if unknown:
        print(f"unknown mutations: {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
        return 2
    survivors = 0
    for mutation in chosen:
        verdict, detail = run(*mutation)
        survivors += verdict != "killed"
        print(f"{verdict:8} {mutation[0]}: {mutation[1]}\n         {detail}", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} mutations killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
