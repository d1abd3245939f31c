//! The transactional outbox: a job enqueued inside the caller's transaction exists exactly when
//! the transaction commits, on SQLite and on PostgreSQL.

use errand::JobState;
use errand_tests::common::{job, records, tag, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_sql_store!(enqueue_in_transaction_follows_commit_and_rollback);

/// The caller's own database: a pool on the same database as the store.
enum Caller {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

async fn enqueue_in_transaction_follows_commit_and_rollback(store: TestStore) {
    let client = &store.client;
    let caller = match &store.schema {
        Some(_) => Caller::Postgres(store.postgres_pool().await),
        None => Caller::Sqlite(
            sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
                .await
                .unwrap(),
        ),
    };
    let create = "CREATE TABLE orders (id BIGINT PRIMARY KEY)";
    let (committed, rolled_back) = (tag("committed"), tag("rolled-back"));
    // The same statements on either database; sqlx's pool types differ, so a macro spells them.
    macro_rules! commit_one_roll_back_one {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query(create).execute(pool).await.unwrap();
            // Commit first, so the rolled-back insert cannot reuse the committed job's id.
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO orders (id) VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let real = succeed::with(committed.clone())
                .enqueue_tx(&mut tx)
                .await
                .unwrap()
                .id;
            tx.commit().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO orders (id) VALUES (2)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let ghost = succeed::with(rolled_back.clone())
                .enqueue_tx(&mut tx)
                .await
                .unwrap()
                .id;
            tx.rollback().await.unwrap();
            let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
                .fetch_one(pool)
                .await
                .unwrap();
            (real, ghost, orders)
        }};
    }
    let (real, ghost, orders) = match &caller {
        Caller::Sqlite(pool) => commit_one_roll_back_one!(pool),
        Caller::Postgres(pool) => commit_one_roll_back_one!(pool),
    };
    assert_eq!(orders, 1, "the rolled-back order is gone with its job");

    assert!(
        client.job(ghost).await.unwrap().is_none(),
        "a rolled-back job must never exist"
    );
    assert_eq!(job(client, real).await.state, JobState::Available);
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, real).await.state, JobState::Completed);
    assert_eq!(records(&committed), ["ran"]);
    assert!(records(&rolled_back).is_empty());
}
