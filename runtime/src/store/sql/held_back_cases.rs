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

/// The paused queue.
pub(crate) const PAUSE: &str =
    "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES ('paused', 1, 1)";

/// One statement to plan: what it is, its text and parameters, how many rows it finds, and
/// the index it must read.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) values: Vec<super::Value<'static>>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) rows: u64,
    pub(crate) index: &'static str,
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
            sql: super::claims::CLAIM.of::<D>(),
            values: vec![
                queues(),
                Value::Ints(vec![100, 100]),
                lease(),
                Value::from("plan-test"),
                Value::Texts(vec!["plain"]),
                Value::Now,
            ],
            rows: 10,
            index: "errand_jobs_plain",
        },
        Case {
            name: "limited claim's search",
            sql: super::limits::LIMIT_CANDIDATES.of::<D>(),
            values: vec![
                queues(),
                Value::Texts(vec!["limited"]),
                Value::OptInts(vec![Some(1)]),
                Value::OptInts(vec![None]),
                Value::OptInts(vec![None]),
                Value::from(400),
                Value::Now,
            ],
            rows: 0,
            index: "errand_jobs_limited",
        },
        Case {
            name: "fair claim",
            sql: super::fairness::CLAIM_FAIR.of::<D>(),
            values: vec![
                Value::from("q"),
                Value::from(10),
                Value::Texts(vec!["fair"]),
                lease(),
                Value::from("plan-test"),
                Value::Now,
            ],
            // The tenant's first jobs, one a turn.
            rows: 10,
            index: "errand_jobs_fair",
        },
        Case {
            // Every 30 s on every worker: the jobs of plain kinds that carry keys.
            name: "adoption's search of plain kinds",
            sql: super::kinds::UNKEYED.of::<D>(),
            values: vec![
                Value::Texts(Vec::new()),
                Value::Texts(Vec::new()),
                Value::Texts(Vec::new()),
                Value::Texts(vec!["plain"]),
                Value::from(500),
            ],
            rows: 0,
            index: "errand_jobs_keyed",
        },
        Case {
            // Every 30 s on every worker: its queues' jobs of kinds no live worker knows
            // (here every kind is known but `plain`'s; its jobs are due for a second, the
            // grace a minute).
            name: "burial of unknown kinds",
            sql: super::maintenance::BURY_UNKNOWN.of::<D>(),
            values: vec![
                Value::from(60_000),
                queues(),
                Value::Texts(vec!["limited", "fair"]),
                Value::from("no worker knows `"),
                Value::from("`"),
                Value::from(25),
                Value::from(5),
                Value::from("plan-test"),
                Value::Now,
                Value::from(60_000),
                Value::from(1000),
            ],
            rows: 0,
            index: "errand_jobs_available_kinds",
        },
    ];
    let error = || Value::from(r#"{"kind": "expired", "message": "plan"}"#);
    if D::STORE == "postgres" {
        cases.push(Case {
            name: "promotion (with the expiry sweep and the next due)",
            sql: super::due::PROMOTE_POSTGRES,
            values: vec![Value::from(1000), error()],
            rows: 1,
            index: "errand_jobs_due",
        });
    } else {
        cases.extend([
            Case {
                name: "promotion",
                sql: super::due::PROMOTE_SQLITE,
                values: vec![Value::from(1000), Value::Now],
                rows: 0,
                index: "errand_jobs_due",
            },
            Case {
                name: "expiry sweep",
                sql: super::due::EXPIRE_SQLITE,
                values: vec![Value::from(1000), error(), Value::Now],
                rows: 0,
                index: "errand_jobs_expiring",
            },
            Case {
                name: "next due",
                sql: super::due::NEXT_DUE_SQLITE,
                values: vec![Value::Now],
                rows: 1,
                index: "errand_jobs_due",
            },
        ]);
    }
    cases
}
