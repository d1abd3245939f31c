//! Pieces of SQL that several statements share, as macros so that `concat!` builds each
//! statement at compile time: `pg_` pieces are PostgreSQL's, `lite_` ones SQLite's, side by
//! side; a piece without a prefix is the same text on both. Declared first in `sql`, so that
//! every statement file after it can use them.

/// Claims, for each queue `$queues[i]`, up to `$limits[i]` available jobs of the kinds
/// `$kinds`, most urgent first, for worker `$worker` with a lease of `$lease` ms: a `picked`
/// CTE, then the update. It reads only the `errand_jobs_plain` index: jobs waiting for their
/// time are not in it (see `due`), nor jobs with a limit or fair key, which other claims take.
/// A paused queue gives nothing; a job past its deadline is left for `due`.
macro_rules! pg_claim {
    () => {
        concat!(
            concat!(
                concat!(
                    "picked AS (
             SELECT j.id
             FROM unnest($queues::text[], $limits::bigint[]) AS w(queue, n)
             CROSS JOIN LATERAL (
                 SELECT id FROM errand_jobs
                 WHERE queue = w.queue AND state = 'available' AND kind = ANY($kinds)
                   AND limit_key IS NULL AND fair_key IS NULL
                   AND ",
                    unexpired!("errand_now_ms()"),
                    "
                   AND NOT "
                ),
                paused!("w.queue"),
                "
                 ORDER BY priority, run_at, id
                 LIMIT w.n
                 FOR UPDATE SKIP LOCKED
             ) j
         )
         UPDATE errand_jobs "
            ),
            pg_claim_set!("$lease", "$worker"),
            " WHERE id IN (SELECT id FROM picked) ",
            pg_claim_returning!()
        )
    };
}

/// What a claim sets on a job it takes, for worker `$worker` with a lease of `$lease` ms, at
/// `$now` (the transaction's time, unless given).
macro_rules! pg_claim_set {
    ($lease:literal, $worker:literal) => {
        pg_claim_set!($lease, $worker, "errand_now_ms()")
    };
    ($lease:literal, $worker:literal, $now:literal) => {
        concat!(
            "SET state = 'running', attempt = attempt + 1, fence = fence + 1,
             attempted_at = ",
            $now,
            ", lease_until = errand_now_ms() + ",
            $lease,
            ", worker = ",
            $worker,
            ", unique_key = errand_key_after(unique_strategy, 'running', unique_key)"
        )
    };
}

/// What a claim sets on a job it takes, at time `$now`, for worker `$worker` with a lease of
/// `$lease` ms.
macro_rules! lite_claim_set {
    ($now:literal, $lease:literal, $worker:literal) => {
        concat!(
            "SET state = 'running', attempt = attempt + 1, fence = fence + 1, attempted_at = ",
            $now,
            ", lease_until = ",
            $now,
            " + ",
            $lease,
            ", worker = ",
            $worker,
            ", unique_key = ",
            lite_key_after!("'running'")
        )
    };
}

/// What a claim returns of each job it took (see `claimed_row`).
macro_rules! pg_claim_returning {
    () => {
        "RETURNING id, kind, queue, args::text AS args, attempt::bigint, max_attempts::bigint,
                   idempotency_key, fence, priority::bigint, run_at, timeout_ms,
                   CASE WHEN tags <> '{}' THEN array_to_json(tags)::text END AS tags,
                   NULLIF(meta, '{}'::jsonb)::text AS meta, workflow_id, step"
    };
}

/// What a claim returns of each job it took (see `claimed_row`).
macro_rules! lite_claim_returning {
    () => {
        "RETURNING id, kind, queue, args, attempt, max_attempts, idempotency_key, fence, priority,
                  run_at, timeout_ms, NULLIF(tags, '[]'), NULLIF(meta, '{}'), workflow_id, step"
    };
}

/// The one rule of unique keys, as PostgreSQL's `errand_key_after` (migration 0007) has it:
/// the key a job holds once it moves to the state `$state` (SQL text), given its `unique_key`.
/// A finished job keeps its key only under `until_expired`; a running `until_executing` job
/// gives it up; every other move keeps it.
macro_rules! lite_key_after {
    ($state:expr) => {
        concat!(
            "CASE WHEN ",
            $state,
            " IN ('completed', 'cancelled', 'dead') THEN ",
            "CASE WHEN unique_strategy = 'until_expired' THEN unique_key END ",
            "WHEN ",
            $state,
            " = 'running' THEN ",
            "CASE WHEN unique_strategy = 'until_executing' THEN NULL ELSE unique_key END ",
            "ELSE unique_key END"
        )
    };
}

/// The state a run that returned `Ok` ends in: `completed`, unless its cancellation was asked
/// meanwhile (its worker may not have read the request yet): then `cancelled`, as
/// [`Cancellation::Requested`](crate::Cancellation::Requested) promised. `$t` qualifies the
/// columns (`"j."`, or `""`).
macro_rules! pg_completed_unless_cancelled {
    ($t:literal) => {
        concat!(
            "(CASE WHEN ",
            $t,
            "cancel_requested THEN 'cancelled' ELSE 'completed' END)"
        )
    };
}

/// The state a run that returned `Ok` ends in: `completed`, unless its cancellation was asked
/// meanwhile (its worker may not have read the request yet): then `cancelled`, as
/// [`Cancellation::Requested`](crate::Cancellation::Requested) promised.
macro_rules! lite_completed_unless_cancelled {
    () => {
        "(CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END)"
    };
}

/// A job's errors, with the cancellation's entry added when its cancellation was asked while it
/// ran (see [`pg_completed_unless_cancelled!`]).
macro_rules! pg_with_cancel_error {
    ($t:literal) => {
        concat!(
            "CASE WHEN ",
            $t,
            "cancel_requested THEN ",
            $t,
            "errors || jsonb_build_array(jsonb_build_object('attempt', ",
            $t,
            "attempt, 'kind', 'cancelled', 'message', 'cancelled by the client while running',
             'at', errand_now_ms(), 'duration_ms', errand_now_ms() - COALESCE(",
            $t,
            "attempted_at, errand_now_ms()), 'worker', COALESCE(",
            $t,
            "worker, ''))) ELSE ",
            $t,
            "errors END"
        )
    };
}

/// A job's errors, with the cancellation's entry added at `$now` when its cancellation was
/// asked while it ran (see [`lite_completed_unless_cancelled!`]).
macro_rules! lite_with_cancel_error {
    ($now:literal) => {
        concat!(
            "CASE WHEN cancel_requested THEN json_insert(errors, '$[#]', json_object(
                'attempt', attempt, 'kind', 'cancelled',
                'message', 'cancelled by the client while running', 'at', ",
            $now,
            ", 'duration_ms', ",
            $now,
            " - COALESCE(attempted_at, ",
            $now,
            "), 'worker', COALESCE(worker, ''))) ELSE errors END"
        )
    };
}

/// Completes the running jobs `$ids[i]` whose fence is still `$fences[i]`; returns their ids.
macro_rules! pg_complete_many {
    ($ids:literal, $fences:literal) => {
        concat!(
            "UPDATE errand_jobs j
             SET state = ",
            pg_completed_unless_cancelled!("j."),
            ", finished_at = errand_now_ms(), lease_until = NULL,
                 running_key = NULL, cancel_requested = false,
                 unique_key = errand_key_after(j.unique_strategy, ",
            pg_completed_unless_cancelled!("j."),
            ", j.unique_key),
                 errors = ",
            pg_with_cancel_error!("j."),
            " FROM unnest(",
            $ids,
            "::bigint[], ",
            $fences,
            "::bigint[]) AS d(id, fence)
             WHERE j.id = d.id AND j.fence = d.fence AND j.state = 'running'
             RETURNING j.id"
        )
    };
}

/// The end of an insert whose rows are the CTE `ins` (`id, queue, state`): returns the ids and
/// wakes the idle workers of each queue a job became available in, once per statement, and
/// when it scheduled a job for later, every idle worker to see when the next one is due (the
/// payload `postgres::SCHEDULED`, never a queue's name). The queue of a job with limits or `fair_by`
/// comes as `+queue` (`postgres::SPECIAL`): its workers look for such jobs again.
macro_rules! pg_wake {
    () => {
        "
        SELECT ins.id, w.woken FROM ins,
            (SELECT errand_wake(array_agg(queue) FILTER (WHERE state = 'available'))
                    + CASE WHEN bool_or(state = 'scheduled') THEN errand_wake(ARRAY['*']) ELSE 0 END
                    AS woken
             FROM ins) w"
    };
}

/// A job's error history with one more entry, `$entry` (SQL for a JSON object), keeping the
/// first `$keep` and the latest of at most `$max` entries.
macro_rules! pg_append_error {
    ($max:literal, $keep:literal, $entry:literal) => {
        concat!(
            "(CASE WHEN jsonb_array_length(errors) >= ",
            $max,
            " THEN errors - ",
            $keep,
            "::int ELSE errors END) || jsonb_build_array(",
            $entry,
            ")"
        )
    };
}

/// A job's error history with one more entry, `$entry` (SQL for a JSON object), keeping the
/// first `$keep` and the latest of at most `$max` entries.
macro_rules! lite_append_error {
    ($max:literal, $keep:literal, $entry:literal) => {
        concat!(
            "json_insert(CASE WHEN json_array_length(errors) >= ",
            $max,
            " THEN json_remove(errors, '$[' || ",
            $keep,
            " || ']') ELSE errors END, '$[#]', ",
            $entry,
            ")"
        )
    };
}

/// The dead jobs a [`DeadQuery`](crate::store::DeadQuery) picks: `$id`, `$kind`, `$queue`,
/// died at or after `$after`, before `$before`; a condition whose value is NULL holds.
macro_rules! pg_dead_filter {
    () => {
        "state = 'dead' AND ($id::bigint IS NULL OR id = $id)
         AND ($kind::text IS NULL OR kind = $kind) AND ($queue::text IS NULL OR queue = $queue)
         AND ($after::bigint IS NULL OR finished_at >= $after)
         AND ($before::bigint IS NULL OR finished_at < $before)"
    };
}

/// The dead jobs a [`DeadQuery`](crate::store::DeadQuery) picks, as [`pg_dead_filter!`].
macro_rules! lite_dead_filter {
    () => {
        "state = 'dead' AND ($id IS NULL OR id = $id) AND ($kind IS NULL OR kind = $kind)
         AND ($queue IS NULL OR queue = $queue) AND ($after IS NULL OR finished_at >= $after)
         AND ($before IS NULL OR finished_at < $before)"
    };
}

/// The dead job's death was acted on: a job that waits on it was cancelled with it, or
/// released to run because it died (a saga's compensations, a dependent that runs anyway).
/// Retrying it would run it again after them, so retries refuse it. A compensation's own death
/// only releases the compensation before it ('when_ran'): it may be retried.
macro_rules! death_settled {
    () => {
        "errand_jobs.has_dependents AND EXISTS (
             SELECT 1 FROM errand_job_deps d JOIN errand_jobs dep ON dep.id = d.job_id
             WHERE d.depends_on = errand_jobs.id AND d.on_failure IN ('cancel', 'run', 'when_failed')
               AND dep.state <> 'pending')"
    };
}

/// The columns [`SqlRow::job`](super::sql::SqlRow::job) reads, as 64-bit integers and text.
macro_rules! pg_select_job {
    () => {
        "SELECT id, kind, queue, args::text AS args, state, priority::bigint AS priority,
         attempt::bigint AS attempt, max_attempts::bigint AS max_attempts, idempotency_key, run_at,
         created_at, attempted_at, finished_at, errors::text AS errors,
         array_to_json(tags)::text AS tags, meta::text AS meta, timeout_ms, expires_at,
         workflow_id, step FROM errand_jobs"
    };
}

/// The columns [`SqlRow::job`](super::sql::SqlRow::job) reads.
macro_rules! lite_select_job {
    () => {
        "SELECT id, kind, queue, args, state, priority, attempt, max_attempts, idempotency_key,
         run_at, created_at, attempted_at, finished_at, errors, tags, meta, timeout_ms, expires_at,
         workflow_id, step FROM errand_jobs"
    };
}

/// The rule of paused queues: holds when the queue `$queue` (SQL naming it) is paused, so
/// that no job of it is claimed, buried or started. `NOT paused!(..)` in a claim's search.
macro_rules! paused {
    ($queue:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM errand_queues p WHERE p.queue = ",
            $queue,
            " AND p.paused_at IS NOT NULL)"
        )
    };
}

/// The rule of deadlines: holds when a job has none or it has not passed at `$now` (SQL for
/// the time), so that a job past its deadline is never claimed (the expiry sweep in `due`
/// cancels it instead).
macro_rules! unexpired {
    ($now:literal) => {
        concat!("(expires_at IS NULL OR expires_at > ", $now, ")")
    };
}
