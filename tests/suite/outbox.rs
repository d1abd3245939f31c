//! The transactional outbox: a job enqueued inside the caller's transaction exists exactly when
//! the transaction commits, on SQLite and on PostgreSQL, in a transaction of the caller's own
//! pool or of the store's (`Client::begin`).

use errand::{Client, JobId, JobState};
use errand_tests::common::{job, records, tag, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_sql_store!(enqueue_in_transaction_follows_commit_and_rollback);
errand_tests::per_store!(
    begin_opens_a_transaction_on_the_stores_pool,
    enqueue_many_tx_follows_commit_and_rollback,
);

/// `Client::enqueue_many_tx`: a batch in the caller's transaction, plain jobs in one statement
/// and unique ones one by one, all or none.
async fn enqueue_many_tx_follows_commit_and_rollback(store: TestStore) {
    let client = &store.client;
    let (kept, dropped) = (tag("many-tx-kept"), tag("many-tx-dropped"));
    macro_rules! batch {
        ($db:ty, $tag:expr, $commit:expr) => {{
            let mut tx = client.begin::<$db>().await.unwrap();
            let plain = client
                .enqueue_many_tx(&mut tx, (0..3).map(|_| succeed::with($tag.clone())))
                .await
                .unwrap();
            let unique = client
                .enqueue_many_tx(
                    &mut tx,
                    [1, 2, 1].map(|id| until_executed_job::with($tag.clone(), id, "ok".into())),
                )
                .await
                .unwrap();
            if $commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            (plain, unique)
        }};
    }
    // Commit first, so the rolled-back batch cannot reuse the committed jobs' ids.
    let ((plain, unique), (gone, _)) = if store.schema.is_some() {
        (
            batch!(sqlx::Postgres, kept, true),
            batch!(sqlx::Postgres, dropped, false),
        )
    } else {
        (
            batch!(sqlx::Sqlite, kept, true),
            batch!(sqlx::Sqlite, dropped, false),
        )
    };
    for enqueued in &gone {
        assert!(client.job(enqueued.id).await.unwrap().is_none());
    }
    assert_eq!(plain.len(), 3);
    assert!(plain.windows(2).all(|w| w[0].id < w[1].id), "in order");
    let outcomes: Vec<_> = unique.iter().map(|e| e.outcome).collect();
    use errand::EnqueueOutcome::{Duplicate, New};
    assert_eq!(
        outcomes,
        [New, New, Duplicate],
        "key u-1 twice in one batch"
    );
    assert_eq!(unique[2].id, unique[0].id);
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(records(&kept).len(), 5, "{:?}", records(&kept));
    assert!(records(&dropped).is_empty());
}

/// In transactions opened by `$begin` (an expression yielding a `Result` of a transaction):
/// creates `orders`, commits order 1 with a job tagged `$committed`, rolls back order 2 with
/// one tagged `$rolled_back`; returns the two jobs' ids and how many orders there are. The
/// statements are the same on either database; sqlx's transaction types differ, so a macro
/// spells them.
macro_rules! commit_one_roll_back_one {
    ($begin:expr, $committed:expr, $rolled_back:expr) => {{
        let mut tx = $begin.await.unwrap();
        sqlx::query("CREATE TABLE orders (id BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO orders (id) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let real = succeed::with($committed.clone())
            .enqueue_tx(&mut tx)
            .await
            .unwrap()
            .id;
        // Commit first, so the rolled-back insert cannot reuse the committed job's id.
        tx.commit().await.unwrap();
        let mut tx = $begin.await.unwrap();
        sqlx::query("INSERT INTO orders (id) VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let ghost = succeed::with($rolled_back.clone())
            .enqueue_tx(&mut tx)
            .await
            .unwrap()
            .id;
        tx.rollback().await.unwrap();
        let mut tx = $begin.await.unwrap();
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (real, ghost, orders)
    }};
}

/// The committed job exists and runs; the rolled-back one never existed.
async fn only_the_committed_job_runs(
    client: &Client,
    (real, ghost, orders): (JobId, JobId, i64),
    (committed, rolled_back): (&str, &str),
) {
    assert_eq!(orders, 1, "the rolled-back order is gone with its job");
    assert!(
        client.job(ghost).await.unwrap().is_none(),
        "a rolled-back job must never exist"
    );
    assert_eq!(job(client, real).await.state, JobState::Available);
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, real).await.state, JobState::Completed);
    assert_eq!(records(committed), ["ran"]);
    assert!(records(rolled_back).is_empty());
}

async fn enqueue_in_transaction_follows_commit_and_rollback(store: TestStore) {
    let client = &store.client;
    let (committed, rolled_back) = (tag("committed"), tag("rolled-back"));
    // The caller's own pool on the same database.
    let outcome = match &store.schema {
        Some(_) => {
            let pool = store.postgres_pool().await;
            commit_one_roll_back_one!(pool.begin(), committed, rolled_back)
        }
        None => {
            let pool = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
                .await
                .unwrap();
            commit_one_roll_back_one!(pool.begin(), committed, rolled_back)
        }
    };
    only_the_committed_job_runs(client, outcome, (&committed, &rolled_back)).await;
}

/// `Client::begin`: a transaction on the store's own pool, whose connection reaches errand's
/// tables (on PostgreSQL, in a schema of the test's own), for the caller's writes and its
/// jobs; a transaction of the other database is refused by name.
async fn begin_opens_a_transaction_on_the_stores_pool(store: TestStore) {
    let client = &store.client;
    let (committed, rolled_back) = (tag("begin-committed"), tag("begin-rolled-back"));
    let (outcome, wrong) = if store.schema.is_some() {
        let outcome =
            commit_one_roll_back_one!(client.begin::<sqlx::Postgres>(), committed, rolled_back);
        (outcome, client.begin::<sqlx::Sqlite>().await.unwrap_err())
    } else {
        let outcome =
            commit_one_roll_back_one!(client.begin::<sqlx::Sqlite>(), committed, rolled_back);
        (outcome, client.begin::<sqlx::Postgres>().await.unwrap_err())
    };
    assert!(
        matches!(wrong, errand::Error::WrongStore { .. }),
        "{wrong:?}"
    );
    assert!(wrong.to_string().contains("store is"), "{wrong}");
    only_the_committed_job_runs(client, outcome, (&committed, &rolled_back)).await;
}
