//! Nothing grows forever: the rows that describe jobs (workflows, limits' slots, fair turns,
//! schedules) are pruned once nothing refers to them, as the jobs themselves are.

use std::time::Duration;

use errand::{JobId, Retention, Workflow};
use errand_tests::common::{tag, work_until_final, worker, TestStore};
use errand_tests::jobs::{in_first, limited_pair, per_account, tenant_job};
use errand_tests::per_sql_store;

per_sql_store!(bookkeeping_goes_with_its_jobs, pruning_keeps_what_is_in_use);

const TABLES: [&str; 4] = [
    "errand_workflows",
    "errand_limit_slots",
    "errand_fair_turns",
    "errand_schedules",
];

async fn rows(store: &TestStore) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(store.scalar(&format!("SELECT count(*) FROM {table}")).await);
    }
    counts
}

/// Jobs that leave a row in each table: a workflow, limited jobs (their keys' slots), fair jobs
/// (their keys' turns), under keys new to this round.
async fn a_round(store: &TestStore, round: usize) {
    let client = &store.client;
    let t = tag("pruning");
    let mut ids: Vec<JobId> = Workflow::new(format!("order-{round}"))
        .add("a", in_first::with(t.clone(), "a".into()))
        .add_after("b", in_first::with(t.clone(), "b".into()), ["a"])
        .enqueue(client)
        .await
        .unwrap()
        .steps
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    for n in 0..3 {
        let account = format!("acct-{round}-{n}");
        let limited = per_account::with(t.clone(), account.clone(), n);
        ids.push(limited.enqueue(client).await.unwrap().id);
        let fair = tenant_job::with(t.clone(), account, n);
        ids.push(fair.enqueue(client).await.unwrap().id);
    }
    ids.push(
        limited_pair::enqueue(client, round as i64)
            .await
            .unwrap()
            .id,
    );
    let work = worker(client, &["first", "limited", "fair"]);
    work_until_final(work, client, &ids).await;
}

/// Each table fills as jobs run, and pruning with no retention empties it once the jobs are
/// gone; over twenty rounds of new keys every table stays bounded by one round's rows.
async fn bookkeeping_goes_with_its_jobs(store: TestStore) {
    let client = &store.client;
    let nothing_kept = Retention::default().keep_finished_for(Duration::ZERO);
    // A schedule no worker has run for two days: removed from the code.
    store
        .sql(
            "INSERT INTO errand_schedules (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
             VALUES ('removed', '0 * * * *', 'UTC', 'succeed', 'default', 'none', 0, 0, 0)",
        )
        .await;
    a_round(&store, 0).await;
    let filled = rows(&store).await;
    assert!(filled.iter().all(|n| *n > 0), "{TABLES:?}: {filled:?}");
    let mut most = vec![0; TABLES.len()];
    for round in 1..=20 {
        errand_tests::common::wait_for("pruning to empty the tables", || async {
            client.prune(&nothing_kept).await.unwrap();
            rows(&store).await.iter().all(|n| *n == 0)
        })
        .await;
        a_round(&store, round).await;
        for (most, n) in most.iter_mut().zip(rows(&store).await) {
            *most = (*most).max(n);
        }
    }
    // One round's rows at most: a workflow, five limit keys' slots, three fair keys' turns.
    assert!(
        most[0] <= 1 && most[1] <= 5 && most[2] <= 3 && most[3] == 0,
        "{most:?}"
    );
}

/// With no retention at all, pruning keeps a workflow that still has a waiting job, and every
/// slot of a limit key one of whose slots a job holds (removing a free slot below a held one
/// would leave a gap the claim never fills).
async fn pruning_keeps_what_is_in_use(store: TestStore) {
    let client = &store.client;
    let t = tag("in-use");
    Workflow::new("waiting")
        .add(
            "later",
            in_first::with(t.clone(), "later".into()).delay(Duration::from_secs(3600)),
        )
        .enqueue(client)
        .await
        .unwrap();
    store
        .sql(
            "INSERT INTO errand_limit_slots (limit_key, purpose, n, job_id, taken_at)
             VALUES ('busy', 'running', 1, NULL, NULL), ('busy', 'running', 2, 999999, NULL)",
        )
        .await;
    client
        .prune(&Retention::default().keep_finished_for(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.scalar("SELECT count(*) FROM errand_workflows").await,
        1
    );
    let busy = "SELECT count(*) FROM errand_limit_slots WHERE limit_key = 'busy'";
    assert_eq!(store.scalar(busy).await, 2);
}
