//! The transactional outbox: a job enqueued inside the caller's transaction exists exactly when
//! the transaction commits.

use errand::JobState;

use errand_tests::common::{job, records, sqlite, tag, worker};
use errand_tests::jobs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_in_transaction_follows_commit_and_rollback() {
    let store = sqlite().await;
    let client = &store.client;
    let pool = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, paid INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    let committed = tag("committed");
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, paid) VALUES (1, 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let real = succeed::with(committed.clone())
        .enqueue_tx(&mut tx)
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();

    let rolled_back = tag("rolled-back");
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, paid) VALUES (2, 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let ghost = succeed::with(rolled_back.clone())
        .enqueue_tx(&mut tx)
        .await
        .unwrap()
        .id;
    tx.rollback().await.unwrap();

    assert!(
        client.job(ghost).await.unwrap().is_none(),
        "a rolled-back job must never exist"
    );
    assert_eq!(job(client, real).await.state, JobState::Available);

    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, real).await.state, JobState::Completed);
    assert_eq!(records(&committed), ["ran"]);
    assert!(records(&rolled_back).is_empty());
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
}
