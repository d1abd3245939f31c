//! Plan tests' cases: a table of held-back jobs, and the claims that must not read them.

/// How many jobs each backlog holds.
pub(crate) const BACKLOG: i64 = 1_000_000;

/// `kind, queue, state, run_at offset (ms from now), limit_key, fair_key, waiting_on,
/// count` of the rows to insert: under a limit whose one running slot a running job holds;
/// one tenant's backlog of a fair kind; a paused queue's; pending on a parent; scheduled
/// for tomorrow; and ten plain jobs to take.
#[allow(clippy::type_complexity)]
pub(crate) const FILL: [(&str, &str, &str, i64, Option<&str>, Option<&str>, i64, i64); 7] = [
    (
        "limited",
        "q",
        "running",
        -1_000,
        Some("limited"),
        None,
        0,
        1,
    ),
    (
        "limited",
        "q",
        "available",
        -1_000,
        Some("limited"),
        None,
        0,
        BACKLOG,
    ),
    (
        "fair",
        "q",
        "available",
        -1_000,
        None,
        Some("tenant-1"),
        0,
        BACKLOG,
    ),
    (
        "plain",
        "paused",
        "available",
        -1_000,
        None,
        None,
        0,
        BACKLOG,
    ),
    ("plain", "q", "pending", -1_000, None, None, 1, BACKLOG),
    (
        "plain",
        "q",
        "scheduled",
        86_400_000,
        None,
        None,
        0,
        BACKLOG,
    ),
    ("plain", "q", "available", -1_000, None, None, 0, 10),
];

/// The running limited job's slot, the limit's only one.
pub(crate) const HOLD_SLOT: &str = "INSERT INTO errand_limit_slots (limit_key, purpose, n, job_id)
    SELECT 'limited', 'running', 1, id FROM errand_jobs WHERE state = 'running'";

/// The fair backlog aged two levels, two and a half steps (of ten minutes) after its run
/// time: not due for a third step for another half. (Also a backlog of a known kind older
/// than burial's grace.)
pub(crate) const AGED: &str = "UPDATE errand_jobs SET base_priority = priority + 2,
    run_at = run_at - 1500000 WHERE kind = 'fair'";

/// The paused queue.
pub(crate) const PAUSE: &str =
    "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES ('paused', 1, 1)";

/// One statement to plan: what it is, its text and parameters, how many rows it finds, and
/// the index it must read.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) statement: &'static super::Named,
    pub(crate) values: Vec<(&'static str, super::Value<'static>)>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) rows: u64,
    pub(crate) index: &'static str,
    /// The most pages (PostgreSQL) finding its rows may read.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) pages: u64,
}

/// Each claim of dialect `D` (the plain one asking 100 of each queue, the limited one's
/// search, the fair one asking 10), the promotion, the expiry sweep and the read of when
/// the next job is due, as the worker runs them.
pub(crate) fn claims<D: super::Dialect>() -> Vec<Case> {
    use super::Value;
    let queues = || Value::Texts(vec!["q", "paused"]);
    let lease = || Value::Lease(std::time::Duration::from_secs(30));
    let mut cases = vec![
        Case {
            name: "plain claim",
            statement: &super::claims::CLAIM,
            values: super::params![queues: queues(), limits: Value::Ints(vec![100, 100]), lease: lease(), worker: Value::from("plan-test"), kinds: Value::Texts(vec!["plain"]), now: Value::Now],
            rows: 10,
            index: "errand_jobs_plain",
            pages: 100,
        },
        Case {
            name: "limited claim's search",
            statement: &super::limits::LIMIT_CANDIDATES,
            values: super::params![queues: queues(), kinds: Value::Texts(vec!["limited"]), max_running: Value::OptInts(vec![Some(1)]), max_starts: Value::OptInts(vec![None]), windows: Value::OptInts(vec![None]), scan: Value::from(400), now: Value::Now],
            rows: 0,
            index: "errand_jobs_limited",
            pages: 100,
        },
        Case {
            name: "fair claim",
            statement: &super::fairness::CLAIM_FAIR,
            values: super::params![queue: Value::from("q"), limit: Value::from(10), kinds: Value::Texts(vec!["fair"]), lease: lease(), worker: Value::from("plan-test"), now: Value::Now],
            // The tenant's first jobs, one a turn.
            rows: 10,
            index: "errand_jobs_fair",
            pages: 100,
        },
        Case {
            // Every 30 s on every worker: the jobs of plain kinds that carry keys.
            name: "adoption's search of plain kinds",
            statement: &super::kinds::UNKEYED,
            values: super::params![kinds: Value::Texts(Vec::new()), fair_kinds: Value::Texts(Vec::new()), limited_kinds: Value::Texts(Vec::new()), plain_kinds: Value::Texts(vec!["plain"]), limit: Value::from(500)],
            rows: 0,
            index: "errand_jobs_keyed",
            pages: 100,
        },
        Case {
            // Every 30 s on every worker: its queues' jobs of kinds no live worker knows
            // (here every kind is known but `plain`'s; its jobs are due for a second, the
            // grace a minute).
            name: "burial of unknown kinds",
            statement: &super::maintenance::BURY_UNKNOWN,
            values: super::params![grace: Value::from(60_000), queues: queues(), kinds: Value::Texts(vec!["limited", "fair"]), message_before: Value::from("no worker knows `"), message_after: Value::from("`"), max_errors: Value::from(25), keep_first: Value::from(5), worker: Value::from("plan-test"), now: Value::Now, live: Value::from(60_000), limit: Value::from(1000)],
            rows: 0,
            index: "errand_jobs_available_kinds",
            pages: 100,
        },
    ];
    cases.push(Case {
        // Every poll of a worker with `priority_aging`, here a level every ten minutes: no
        // job is due for a step, the fair backlog aged two and not due for a third.
        name: "aging",
        statement: &super::claims::AGE,
        values: super::params![
            queues: queues(),
            step: Value::from(600_000),
            limit: Value::from(1000),
            now: Value::Now,
        ],
        rows: 0,
        index: "errand_jobs_aging",
        // One probe of the index for each queue, level and count of steps aged (90 here),
        // whatever the backlog.
        pages: 300,
    });
    let error = || Value::from(r#"{"kind": "expired", "message": "plan"}"#);
    if D::STORE == "postgres" {
        cases.push(Case {
            name: "promotion (with the expiry sweep and the next due)",
            statement: &super::due::PROMOTE_POSTGRES,
            values: super::params![limit: Value::from(1000), error: error()],
            rows: 1,
            index: "errand_jobs_due",
            pages: 100,
        });
    } else {
        cases.extend([
            Case {
                name: "promotion",
                statement: &super::due::PROMOTE_SQLITE,
                values: super::params![limit: Value::from(1000), now: Value::Now],
                rows: 0,
                index: "errand_jobs_due",
                pages: 100,
            },
            Case {
                name: "expiry sweep",
                statement: &super::due::EXPIRE_SQLITE,
                values: super::params![limit: Value::from(1000), error: error(), now: Value::Now],
                rows: 0,
                index: "errand_jobs_expiring",
                pages: 100,
            },
            Case {
                name: "next due",
                statement: &super::due::NEXT_DUE_SQLITE,
                values: super::params![now: Value::Now],
                rows: 1,
                index: "errand_jobs_due",
                pages: 100,
            },
        ]);
    }
    cases
}
