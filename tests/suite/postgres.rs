//! What only PostgreSQL does: wake-ups by NOTIFY from other processes, migrations raced by
//! many processes, schemas that keep applications apart, and completion inside the job's own
//! transaction.

use std::time::Duration;

use errand::{Client, Config, JobState, Worker};
use errand_tests::common::{job, postgres, postgres_url, records, tag, wait_for, worker};
use errand_tests::jobs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_worker_in_another_process() {
    let Some(store) = postgres().await else {
        return;
    };
    let schema = store.schema.clone().unwrap();
    // A second client has its own pool: the worker hears of the job only through NOTIFY.
    let other = Client::connect_with(&postgres_url(), Config::default().schema(&schema))
        .await
        .unwrap();
    let pool = store.postgres_pool().await;
    let t = tag("notify");
    let watched = t.clone();
    Worker::new(store.client.clone())
        .poll_interval(Duration::from_secs(3600))
        .run_until(async move {
            let channel = format!("%errand_{schema}%");
            wait_for("the worker to LISTEN", || async {
                let listening: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND query LIKE $1",
                )
                .bind(&channel)
                .fetch_one(&pool)
                .await
                .unwrap();
                listening == 1
            })
            .await;
            // The worker claims once right after it listens; nothing marks the moment it goes
            // idle. Enqueue after that, so that only the notification can start the job (were
            // the job found by that first claim, the test would pass without proving NOTIFY,
            // never fail).
            tokio::time::sleep(Duration::from_millis(200)).await;
            succeed::enqueue(&other, watched.clone()).await.unwrap();
            wait_for("the notified worker to run the job", || async { !records(&watched).is_empty() }).await;
        })
        .await
        .unwrap();
    assert_eq!(records(&t), ["ran"]);
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_many_clients_start_together() {
    let Some(store) = postgres().await else {
        return;
    };
    let schema = format!("{}_race", store.schema.clone().unwrap());
    let url = postgres_url();
    let connects = (0..8).map(|_| {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            Client::connect_with(&url, Config::default().schema(&schema).max_connections(1)).await
        }
    });
    let connects: Vec<_> = connects.map(tokio::spawn).collect();
    for connect in connects {
        connect
            .await
            .unwrap()
            .expect("every client connects and migrates");
    }
    let pool = store.postgres_pool().await;
    // The schema name is the test's own, made of `[a-z0-9_]`: safe to name in this query.
    let applied: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM {schema}.errand_migrations ORDER BY version"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let every: Vec<i64> = (1..=errand::migrations::POSTGRES.len() as i64).collect();
    assert_eq!(applied, every, "each migration applied once");
    let drop: String = sqlx::query_scalar("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(&drop).execute(&pool).await.unwrap();
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_keep_two_applications_apart() {
    let (Some(a), Some(b)) = (postgres().await, postgres().await) else {
        return;
    };
    let t = tag("schema-a");
    let id = succeed::enqueue(&a.client, t.clone()).await.unwrap().id;
    assert!(
        b.client.job(id).await.unwrap().is_none(),
        "b must not see a's job"
    );
    assert_eq!(
        Worker::new(b.client.clone())
            .run_until_idle()
            .await
            .unwrap(),
        0
    );
    assert!(records(&t).is_empty());
    assert_eq!(
        Worker::new(a.client.clone())
            .run_until_idle()
            .await
            .unwrap(),
        1
    );
    assert_eq!(job(&a.client, id).await.state, JobState::Completed);
    a.clean_up().await;
    b.clean_up().await;
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    let err = Client::connect_with(
        &postgres_url(),
        Config::default().schema("app; DROP TABLE users"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("invalid schema name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_in_commits_the_effect_and_the_completion_together() {
    let Some(store) = postgres().await else {
        return;
    };
    let pool = store.postgres_pool().await;
    sqlx::query("CREATE TABLE payments (order_id BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    set_recorder(pool.clone());
    let ok = pay_in_tx::enqueue(&store.client, 1, false)
        .await
        .unwrap()
        .id;
    // Fails after its transaction committed: the completion stands and nothing runs again.
    let failed_late = pay_in_tx::enqueue(&store.client, 2, true).await.unwrap().id;
    Worker::new(store.client.clone())
        .run_until_idle()
        .await
        .unwrap();

    for id in [ok, failed_late] {
        let done = job(&store.client, id).await;
        assert_eq!(
            (done.state, done.attempt),
            (JobState::Completed, 1),
            "{done:?}"
        );
    }
    let payments: Vec<i64> = sqlx::query_scalar("SELECT order_id FROM payments ORDER BY order_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(payments, [1, 2], "each effect exactly once");
    store.clean_up().await;
}

/// The `LISTEN` connection is errand's own, outside the pool: with a pool of one connection a
/// worker still claims (the listener used to hold the only one, and every claim timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_on_a_pool_of_one_connection() {
    let Some(store) = postgres().await else {
        return;
    };
    let url = store.url.clone().unwrap();
    let schema = store.schema.clone().unwrap();
    let client = Client::connect_with(&url, Config::default().schema(&schema).max_connections(1))
        .await
        .unwrap();
    let id = succeed::enqueue(&client, tag("pool-of-one"))
        .await
        .unwrap()
        .id;
    // Polls rarely: the job must be claimed on the wake-up of the local enqueue.
    let w = worker(&client, &["default"]).poll_interval(std::time::Duration::from_secs(3600));
    errand_tests::common::work_until_final(w, &client, &[id]).await;
    assert_eq!(job(&client, id).await.state, JobState::Completed);
    store.clean_up().await;
}

/// The README's `complete_in` pattern (`?`) on a transaction that cannot reach errand's schema:
/// the job fails with the cause, and is not completed without its writes (the pattern it
/// replaced, `if complete_in(..).is_err() { return Ok(()) }`, completed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_in_on_a_transaction_without_the_schema_fails_the_job() {
    let Some(store) = postgres().await else {
        return;
    };
    let schema = store.schema.clone().unwrap();
    let id = completes_in_a_blind_transaction::enqueue(&store.client, schema)
        .await
        .unwrap()
        .id;
    Worker::new(store.client.clone())
        .run_until_idle()
        .await
        .unwrap();
    let done = job(&store.client, id).await;
    assert_eq!(done.state, JobState::Dead, "{done:?}");
    assert!(
        done.errors[0].message.contains("errand_jobs"),
        "{:?}",
        done.errors
    );
    store.clean_up().await;
}

/// Under REPEATABLE READ, a renewal between the transaction's snapshot and `complete_in` makes
/// `complete_in` fail with a serialization error: the transaction rolls back, the job retries,
/// and the effect happens once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_in_under_repeatable_read_retries_and_pays_once() {
    let Some(store) = postgres().await else {
        return;
    };
    let pool = store.postgres_pool().await;
    sqlx::query("CREATE TABLE payments (order_id BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let schema = store.schema.clone().unwrap();
    let id = pays_in_repeatable_read::enqueue(&store.client, schema, 7)
        .await
        .unwrap()
        .id;
    let w = worker(&store.client, &["default"]).lease(Duration::from_secs(2));
    errand_tests::common::work_until_final(w, &store.client, &[id]).await;
    let done = job(&store.client, id).await;
    assert_eq!(
        (done.state, done.attempt),
        (JobState::Completed, 2),
        "{done:?}"
    );
    assert!(
        done.errors[0].message.contains("serialize"),
        "{:?}",
        done.errors
    );
    let payments: Vec<i64> = sqlx::query_scalar("SELECT order_id FROM payments")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(payments, [7], "the effect happened once");
    store.clean_up().await;
}

/// A role that may use errand's tables but not create anything in the database cannot run the
/// migrations (PostgreSQL wants the database's CREATE privilege for `CREATE SCHEMA IF NOT
/// EXISTS`, even when the schema exists), but connects with `migrate(false)` and runs jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_role_connects_without_migrating() {
    let Some(store) = postgres().await else {
        return;
    };
    let schema = store.schema.clone().unwrap();
    let pool = store.postgres_pool().await;
    let role = format!("errand_app_{}", std::process::id());
    // The role and schema names are the test's own, made of `[a-z0-9_]`: safe to name here.
    for grant in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        sqlx::raw_sql(&grant).execute(&pool).await.unwrap();
    }
    let mut options: sqlx::postgres::PgConnectOptions = postgres_url().parse().unwrap();
    options = options.username(&role);
    let url = format!(
        "postgres://{role}@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("test")
    );

    let refused = Client::connect_with(&url, Config::default().schema(&schema)).await;
    let err = refused.expect_err("migrating needs the CREATE privilege");
    assert!(err.to_string().contains("permission denied"), "{err}");

    let client = Client::connect_with(&url, Config::default().schema(&schema).migrate(false))
        .await
        .unwrap();
    let id = succeed::enqueue(&client, tag("least-privilege"))
        .await
        .unwrap()
        .id;
    worker(&client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(job(&client, id).await.state, JobState::Completed);

    drop(client);
    store.clean_up().await;
    sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .execute(&pool)
        .await
        .unwrap();
}

/// With `migrate(false)`, a schema errand's migrations never ran is refused with the versions
/// found and needed, on both SQL stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_schema_is_refused_with_its_version() {
    let url = postgres_url();
    let schema = format!("errand_bare_{}", std::process::id());
    let err = Client::connect_with(&url, Config::default().schema(&schema).migrate(false))
        .await
        .unwrap_err();
    assert!(
        matches!(err, errand::Error::SchemaBehind { found: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("errand::migrations"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bare.db").display());
    let err = Client::connect_with(&sqlite, Config::default().migrate(false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            errand::Error::SchemaBehind {
                store: "sqlite",
                found: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Each applied migration's checksum is recorded and checked on every connect: a database
/// migrated from a different text of a migration is refused, naming it, whether or not the
/// client migrates. A database from before checksums (its bookkeeping has no `checksum`
/// column) gains them on its next migrating connect. On both SQL stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_is_refused_by_name() {
    let Some(store) = postgres().await else {
        return;
    };
    let pg = store.postgres_pool().await;
    let schema = store.schema.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite://{}", dir.path().join("changed.db").display());
    let reconnect = |migrate: bool| {
        let (schema, file) = (schema.clone(), file.clone());
        async move {
            let config = Config::default().schema(&schema).migrate(migrate);
            let pg = Client::connect_with(&postgres_url(), config.clone()).await;
            let lite = Client::connect_with(&file, config).await;
            [pg.map(drop), lite.map(drop)]
        }
    };
    for connected in reconnect(true).await {
        connected.unwrap();
    }
    let lite = sqlx::SqlitePool::connect(&file).await.unwrap();
    let run_both = |sql: &'static str| {
        let (pg, lite) = (pg.clone(), lite.clone());
        async move {
            sqlx::raw_sql(sql).execute(&pg).await.unwrap();
            sqlx::raw_sql(sql).execute(&lite).await.unwrap();
        }
    };
    let checksums = || async {
        let sql = "SELECT count(*) FROM errand_migrations WHERE checksum IS NOT NULL";
        let pg = sqlx::query_scalar::<_, i64>(sql).fetch_one(&pg).await;
        let lite = sqlx::query_scalar::<_, i64>(sql).fetch_one(&lite).await;
        [pg.unwrap(), lite.unwrap()]
    };
    let known = errand::migrations::POSTGRES.len() as i64;
    assert_eq!(checksums().await, [known, known]);

    // A bookkeeping table from before checksums.
    run_both("ALTER TABLE errand_migrations DROP COLUMN checksum").await;
    for connected in reconnect(false).await {
        connected.expect("a schema without checksums is still at its version");
    }
    for connected in reconnect(true).await {
        connected.unwrap();
    }
    assert_eq!(checksums().await, [known, known]);

    // Migration 3 as some other text had it.
    run_both("UPDATE errand_migrations SET checksum = 'edited' WHERE version = 3").await;
    for migrate in [true, false] {
        for connected in reconnect(migrate).await {
            let err = connected.expect_err("a changed migration is refused");
            assert!(
                matches!(
                    err,
                    errand::Error::MigrationChanged {
                        version: 3,
                        name: "0003_failures",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("0003_failures"), "{err}");
        }
    }
    lite.close().await;
    store.clean_up().await;
}

/// Every time errand records comes from the database's clock, including when an attempt
/// failed: with the schema's clock set to 2100, so are the job's times and its error's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_time_comes_from_the_database_clock() {
    let Some(store) = postgres().await else {
        return;
    };
    let pool = store.postgres_pool().await;
    const Y2100: i64 = 4_102_444_800_000;
    sqlx::raw_sql(&format!(
        "CREATE OR REPLACE FUNCTION errand_now_ms() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT {Y2100}::bigint $$"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let id = broken::enqueue(&store.client, tag("db-clock"))
        .await
        .unwrap()
        .id;
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    let dead = job(&store.client, id).await;
    let y2100 = std::time::UNIX_EPOCH + Duration::from_millis(Y2100 as u64);
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.created_at, y2100);
    assert_eq!(dead.finished_at, Some(y2100));
    assert_eq!(
        dead.errors[0].at, y2100,
        "the attempt's time is the database's"
    );
    store.clean_up().await;
}

/// The pruner vacuums errand's table once it holds more dead rows than 10,000 and a fifth of
/// its live ones, and not before: a queue's table that autovacuum does not keep up with grows,
/// and its claims slow down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_vacuums_a_table_of_dead_rows() {
    errand_tests::common::on_postgres(|store| async move {
        let client = &store.client;
        // Whatever the server's own setting, autovacuum leaves this table alone: only the
        // pruner's vacuum counts.
        store
            .sql("ALTER TABLE errand_jobs SET (autovacuum_enabled = false)")
            .await;
        store
            .sql(
                "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                 SELECT 'succeed', 'default', '{}'::jsonb, 'scheduled', 0, 1,
                        errand_now_ms() + 86400000, errand_now_ms()
                 FROM generate_series(1, 1000)",
            )
            .await;
        let stats = |column: &str| {
            format!("SELECT {column} FROM pg_stat_user_tables WHERE relid = 'errand_jobs'::regclass")
        };
        let dead_rows = |at_least: i64| {
            let store = &store;
            let query = stats("n_dead_tup");
            async move {
                wait_for("the dead rows to be counted", || async {
                    store.scalar(&query).await >= at_least
                })
                .await;
            }
        };
        // Each update of the thousand rows leaves a thousand dead ones.
        let update = "UPDATE errand_jobs SET priority = priority + 1";
        for _ in 0..5 {
            store.sql(update).await;
        }
        dead_rows(5_000).await;
        let pruning = || {
            worker(client, &["default"])
                .prune_every(Duration::from_millis(100))
        };
        // Below the threshold: several rounds go by, and nothing is vacuumed.
        let pool = store.postgres_pool().await;
        pruning()
            .run_until(async {
                // Each round renews the lock: three values of its expiry, two whole rounds.
                let mut seen: Vec<i64> = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while seen.len() < 3 {
                    assert!(std::time::Instant::now() < deadline, "no pruning rounds");
                    let until: Option<i64> = sqlx::query_scalar(
                        "SELECT until FROM errand_locks WHERE name = 'errand.prune'",
                    )
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
                    if let Some(until) = until.filter(|u| !seen.contains(u)) {
                        seen.push(until);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap();
        assert_eq!(store.scalar(&stats("vacuum_count")).await, 0);
        // Past it: the next round vacuums the table.
        for _ in 0..6 {
            store.sql(update).await;
        }
        dead_rows(11_000).await;
        let vacuums = stats("vacuum_count");
        pruning()
            .run_until(async {
                wait_for("the pruner to vacuum errand_jobs", || async {
                    store.scalar(&vacuums).await >= 1
                })
                .await;
            })
            .await
            .unwrap();
        // (How many dead rows the vacuum removed is not asserted: another test's transaction
        // on the same server may still see them, and a vacuum keeps what a snapshot can see.)
    })
    .await;
}
