//! Real worker processes on PostgreSQL: many at once, one killed mid-job, and the database
//! restarted under them. Each run of a job is recorded in the test's own table.

use std::time::Duration;

use errand::{Client, Config, FailureKind, JobState};
use errand_tests::common::{job, postgres, wait_for, wait_for_within};
use errand_tests::jobs::*;
use errand_tests::processes::{TempCluster, WorkerProcess};
use sqlx::PgPool;

const WORKER: &str = env!("CARGO_BIN_EXE_errand-test-worker");

/// A fresh schema with the `test_runs` table, or `None` without a server.
struct Setup {
    store: errand_tests::common::TestStore,
    url: String,
    schema: String,
    pool: PgPool,
}

async fn setup() -> Option<Setup> {
    let store = postgres().await?;
    let (url, schema) = (store.url.clone()?, store.schema.clone()?);
    let pool = store.postgres_pool().await;
    create_runs_table(&pool).await;
    Some(Setup {
        store,
        url,
        schema,
        pool,
    })
}

/// The table the worker processes' death handler records into.
async fn create_deaths_table(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE deaths (job_id BIGINT NOT NULL, reason TEXT NOT NULL, pid BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .expect("create deaths");
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Jobs per state, for failure messages.
async fn states(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT state, count(*) FROM errand_jobs GROUP BY state ORDER BY state")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_run_ten_thousand_jobs_exactly_once() {
    const JOBS: i64 = 10_000;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let mut tx = pool.begin().await.unwrap();
    for n in 0..JOBS {
        recorded_run::with(n).enqueue_tx(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProcess::start(WORKER, &url, &schema, Duration::from_secs(30)).await);
    }
    wait_for_within(
        Duration::from_secs(300),
        "every job to complete",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
            )
            .await
                == JOBS
        },
    )
    .await;
    for worker in workers {
        worker.terminate().await;
    }

    assert_eq!(states(&pool).await, [("completed".to_owned(), JOBS)]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM test_runs").await,
        JOBS,
        "a job ran twice"
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT n) FROM test_runs").await,
        JOBS,
        "a job never ran"
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT pid) FROM test_runs").await,
        3,
        "each process took jobs"
    );
    store.clean_up().await;
}

/// The client cancels a job whose run ignores the request, then its worker is killed before it
/// writes anything: the rescue ends the job cancelled, and no attempt runs after the cancel.
/// (Before, the rescue made it retryable and another process ran it to completion.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_its_worker_is_killed_stays_cancelled() {
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let lease = Duration::from_secs(1);
    let first = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    let id = hangs_on_first_attempt::enqueue(&store.client, 8)
        .await
        .unwrap()
        .id;
    wait_for("the first worker to start the job", || async {
        count(
            &pool,
            "SELECT count(*) FROM test_runs WHERE event = 'started'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        store.client.cancel(id).await.unwrap(),
        errand::Cancellation::Requested
    );
    first.kill().await;
    let second = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    wait_for("the rescue to end the job", || async {
        job(&store.client, id).await.state.is_final()
    })
    .await;
    second.terminate().await;
    let ended = job(&store.client, id).await;
    assert_eq!(ended.state, JobState::Cancelled, "{:?}", ended.errors);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM test_runs").await,
        1,
        "no run after the cancel"
    );
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_is_finished_by_another_process() {
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let lease = Duration::from_secs(1);
    let first = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    let first_pid = i64::from(first.pid);
    let id = hangs_on_first_attempt::enqueue(&store.client, 7)
        .await
        .unwrap()
        .id;
    wait_for("the first worker to start the job", || async {
        count(
            &pool,
            "SELECT count(*) FROM test_runs WHERE event = 'started'",
        )
        .await
            == 1
    })
    .await;
    first.kill().await;
    assert_eq!(job(&store.client, id).await.state, JobState::Running);

    let second = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    wait_for("another process to finish the job", || async {
        job(&store.client, id).await.state == JobState::Completed
    })
    .await;
    second.terminate().await;

    let done = job(&store.client, id).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, FailureKind::LeaseLost);
    assert!(
        done.errors[0].worker.contains(&format!(":{first_pid}:")),
        "{:?}",
        done.errors[0]
    );
    let runs: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT pid, attempt, event FROM test_runs ORDER BY attempt, event DESC")
            .fetch_all(&pool)
            .await
            .unwrap();
    let second_pid = runs.last().map(|r| r.0).unwrap();
    assert_ne!(second_pid, first_pid);
    assert_eq!(
        runs,
        [
            (first_pid, 1, "started".to_owned()),
            (second_pid, 2, "started".to_owned()),
            (second_pid, 2, "finished".to_owned()),
        ]
    );
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_carry_on_when_postgres_restarts_under_them() {
    const JOBS: i64 = 2_000;
    let Some(cluster) = TempCluster::start() else {
        return;
    };
    let (url, schema) = (cluster.url(), "errand_restart");
    let client = Client::connect_with(&url, Config::default().schema(schema))
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    create_runs_table(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    for n in 0..JOBS {
        recorded_slow_run::with(n)
            .enqueue_tx(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let lease = Duration::from_secs(2);
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(WorkerProcess::start(WORKER, &url, schema, lease).await);
    }
    wait_for("a quarter of the jobs to complete", || async {
        count(
            &pool,
            "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
        )
        .await
            >= JOBS / 4
    })
    .await;
    cluster.restart();
    // Queries fail while the server is down; a failed poll just polls again.
    wait_for_within(
        Duration::from_secs(300),
        "every job to complete after the restart",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == JOBS)
        },
    )
    .await;
    for worker in workers {
        worker.terminate().await;
    }

    assert_eq!(
        states(&pool).await,
        [("completed".to_owned(), JOBS)],
        "none lost, none stuck"
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT n) FROM test_runs").await,
        JOBS,
        "every job ran"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_cannot_write_to_a_job_it_lost() {
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let events = |event: &'static str, attempt: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM test_runs WHERE event = $1 AND attempt = $2",
            )
            .bind(event)
            .bind(attempt)
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    };
    let lease = Duration::from_secs(1);
    let stalled = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    let id = stalls_then_fails::enqueue(&store.client, 1)
        .await
        .unwrap()
        .id;
    wait_for("the first worker to start the job", || events("started", 1)).await;
    stalled.pause();

    let rescuer = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    wait_for("another worker to take the job over", || {
        events("started", 2)
    })
    .await;
    // The stalled worker wakes while the job's second run is still going, and tries to record
    // its own run's permanent failure: its fence is stale, so the write must not land.
    stalled.resume();
    open_gate(&pool, "resume-1").await;
    wait_for("the stalled run to come back", || events("resumed", 1)).await;
    // A graceful stop waits for that run's outcome to be written (or refused) before it exits.
    stalled.terminate().await;
    let meanwhile = job(&store.client, id).await;
    assert_eq!(
        (meanwhile.state, meanwhile.attempt),
        (JobState::Running, 2),
        "{meanwhile:?}"
    );
    open_gate(&pool, "finish-2").await;
    wait_for("the second run to finish", || async {
        job(&store.client, id).await.state.is_final()
    })
    .await;
    rescuer.terminate().await;

    let done = job(&store.client, id).await;
    assert_eq!(
        (done.state, done.attempt),
        (JobState::Completed, 2),
        "{done:?}"
    );
    let kinds: Vec<FailureKind> = done.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [FailureKind::LeaseLost],
        "the stale failure must not be recorded"
    );
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_enqueuing_one_key_leave_one_job() {
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let runs: Vec<_> = (0..3)
        .map(|_| {
            tokio::process::Command::new(WORKER)
                .arg("enqueue-duplicates")
                .env("DATABASE_URL", &url)
                .env("ERRAND_SCHEMA", &schema)
                .output()
        })
        .collect();
    let mut ids = Vec::new();
    for run in runs {
        let output = run.await.expect("run the enqueuing process");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        ids.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    assert_eq!(ids.len(), 150);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every enqueue names the one job: {ids:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM errand_jobs").await, 1);
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_executing_jobs_never_overlap_across_processes() {
    const JOBS: i64 = 12;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    // Each process works a queue of its own, so both run jobs; the jobs of both queues share
    // one key, so the processes contend for it.
    let workers = [
        WorkerProcess::start_on_queue(WORKER, &url, &schema, "procs-a").await,
        WorkerProcess::start_on_queue(WORKER, &url, &schema, "procs-b").await,
    ];
    for n in 0..JOBS {
        let queue = if n % 2 == 0 { "procs-a" } else { "procs-b" };
        let enqueued = exclusive_section::with(n)
            .queue(queue)
            .enqueue(&store.client)
            .await
            .unwrap();
        assert_eq!(
            enqueued.duplicate_of, None,
            "while_executing never refuses an enqueue"
        );
    }
    wait_for_within(
        Duration::from_secs(120),
        "every job to complete",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
            )
            .await
                == JOBS
        },
    )
    .await;
    for worker in workers {
        worker.terminate().await;
    }
    let events: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT n, event, pid FROM test_runs ORDER BY at, event DESC")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len() as i64, 2 * JOBS);
    for pair in events.chunks(2) {
        assert_eq!(
            (pair[0].1.as_str(), pair[1].1.as_str()),
            ("start", "end"),
            "runs overlapped: {events:?}"
        );
        assert_eq!(pair[0].0, pair[1].0, "runs overlapped: {events:?}");
    }
    let pids: std::collections::HashSet<i64> = events.iter().map(|e| e.2).collect();
    assert_eq!(pids.len(), 2, "both processes ran some");
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_survives_a_killed_worker_exactly_once() {
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    sqlx::query("CREATE TABLE gateway_charges (id BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL, step_key TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let lease = Duration::from_secs(1);
    let first = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    let id = pay_with_ledger::enqueue(&store.client, 42)
        .await
        .unwrap()
        .id;
    // The same charge, enqueued twice: the unique key makes the second a duplicate.
    let again = pay_with_ledger::enqueue(&store.client, 42).await.unwrap();
    assert_eq!(again.duplicate_of, Some(id));
    wait_for("the first worker to charge", || async {
        count(
            &pool,
            "SELECT count(*) FROM test_runs WHERE event = 'charged'",
        )
        .await
            >= 1
    })
    .await;
    first.kill().await;

    let second = WorkerProcess::start(WORKER, &url, &schema, lease).await;
    wait_for("the job to complete", || async {
        job(&store.client, id).await.state == JobState::Completed
    })
    .await;
    second.terminate().await;

    let charges: Vec<(i64, String)> =
        sqlx::query_as("SELECT order_id, step_key FROM gateway_charges")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        charges,
        [(42, "pay-42/charge".to_owned())],
        "one charge, whatever ran twice"
    );
    assert_eq!(
        job(&store.client, id).await.attempt,
        2,
        "the killed run was retried"
    );
    store.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_failures_across_two_processes_land_where_their_errors_say() {
    const JOBS: i64 = 1_000;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    create_deaths_table(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..JOBS {
        ids.push((
            n,
            mixed_failure::with(n).enqueue_tx(&mut tx).await.unwrap().id,
        ));
    }
    tx.commit().await.unwrap();
    let workers = [
        WorkerProcess::start_recording_deaths(WORKER, &url, &schema).await,
        WorkerProcess::start_recording_deaths(WORKER, &url, &schema).await,
    ];
    wait_for_within(
        Duration::from_secs(300),
        "every job to finish and every death to be handled",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM errand_jobs WHERE state IN ('completed', 'dead')",
            )
            .await
                == JOBS
                && count(&pool, "SELECT count(*) FROM deaths").await >= JOBS / 2
        },
    )
    .await;
    for worker in workers {
        worker.terminate().await;
    }

    for (n, id) in &ids {
        let done = job(&store.client, *id).await;
        let expected = match n % 4 {
            0 => (JobState::Completed, 1),
            1 => (JobState::Dead, 1),
            2 => (JobState::Dead, 3),
            _ => (JobState::Completed, 2),
        };
        assert_eq!((done.state, done.attempt), expected, "job {n}");
    }
    let deaths: Vec<(i64, String)> =
        sqlx::query_as("SELECT job_id, reason FROM deaths ORDER BY job_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(deaths.len() as i64, JOBS / 2, "one handler call per death");
    for (job_id, reason) in &deaths {
        let n = ids
            .iter()
            .find(|(_, id)| id.get() == *job_id)
            .map(|(n, _)| *n)
            .unwrap();
        let expected = if n % 4 == 1 {
            "Permanent"
        } else {
            "RetriesExhausted"
        };
        assert_eq!(reason, expected, "job {n}");
    }
    let mut listed = 0;
    let mut page = errand::Page::first(100);
    loop {
        let dead = store
            .client
            .dead_jobs(&errand::DeadFilter::all(), page)
            .await
            .unwrap();
        listed += dead.len();
        match dead.last() {
            Some(last) => page = errand::Page::after(last.id, 100),
            None => break,
        }
    }
    assert_eq!(listed as i64, JOBS / 2, "the dead set holds every death");
    store.clean_up().await;
}

/// Twenty jobs die in a burst while each death handler takes 2 s (a slow webhook), the lease
/// is 3 s, and other jobs run until every death has been handled (several leases): the handlers
/// must not hold up lease renewals, so no job is rescued from a live worker and run twice, and
/// every death reaches a handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_death_handlers_never_cost_a_lease() {
    const DEATHS: i64 = 20;
    const LONG: i64 = 6;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    create_deaths_table(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let mut long = Vec::new();
    for n in 0..LONG {
        long.push(
            recorded_long_run::with(n, DEATHS)
                .enqueue_tx(&mut tx)
                .await
                .unwrap()
                .id,
        );
    }
    for n in 0..DEATHS {
        // `4k + 1` fails permanently at once.
        mixed_failure::with(4 * n + 1)
            .enqueue_tx(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let options = errand_tests::processes::Options {
        lease: Duration::from_secs(3),
        concurrency: 8,
        record_deaths: true,
        death_handler_delay: Duration::from_secs(2),
        ..errand_tests::processes::Options::default()
    };
    // The first worker holds the long jobs and handles every death; the second, without a
    // handler, would rescue the first's jobs if the handlers held up its renewals.
    let without_handler = errand_tests::processes::Options {
        record_deaths: false,
        ..options.clone()
    };
    let workers = [
        WorkerProcess::start_with(WORKER, &url, &schema, &options).await,
        WorkerProcess::start_with(WORKER, &url, &schema, &without_handler).await,
    ];
    wait_for_within(
        Duration::from_secs(120),
        "the long jobs to complete and every death to be handled",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM errand_jobs WHERE state IN ('completed', 'dead')",
            )
            .await
                == LONG + DEATHS
                && count(&pool, "SELECT count(DISTINCT job_id) FROM deaths").await == DEATHS
        },
    )
    .await;
    for worker in workers {
        worker.terminate().await;
    }
    let starts = count(
        &pool,
        "SELECT count(*) FROM test_runs WHERE event = 'started'",
    )
    .await;
    assert_eq!(
        starts,
        LONG,
        "each long job started once: {:?}",
        states(&pool).await
    );
    for id in long {
        let done = job(&store.client, id).await;
        assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
        assert!(done.errors.is_empty(), "no lease lost: {:?}", done.errors);
    }
    store.clean_up().await;
}

/// A run whose worker cannot renew its lease (the database went away) for a whole lease is
/// stopped locally: its `ctx.cancelled()` fires, because another worker may own the job by
/// the time the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_cannot_be_renewed_is_stopped() {
    let Some(cluster) = TempCluster::start() else {
        return;
    };
    let client = Client::connect_with(&cluster.url(), Config::default().schema("lost_lease"))
        .await
        .unwrap();
    let t = errand_tests::common::tag("lost-lease");
    waits_for_cancel::enqueue(&client, t.clone()).await.unwrap();
    let w = errand_tests::common::worker(&client, &["default"]).lease(Duration::from_secs(1));
    let working = tokio::spawn(w.run_until(std::future::pending()));
    let started = t.clone();
    wait_for("the job to start", || async {
        errand_tests::common::records(&started).contains(&"started".to_owned())
    })
    .await;
    cluster.stop();
    let stopped = t.clone();
    wait_for("the run to be told to stop", || async {
        errand_tests::common::records(&stopped).contains(&"saw the cancellation".to_owned())
    })
    .await;
    working.abort();
}

/// A batch of 10,000 jobs run by three worker processes fires its `on_complete` callback once,
/// after every job: the database releases it in the statement that finishes the last one,
/// whichever process writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_ten_thousand_fires_on_complete_once_across_three_processes() {
    const JOBS: i64 = 10_000;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let client = &store.client;
    let batch = (0..JOBS)
        .fold(errand::Batch::new(), |b, n| b.add(recorded_run::with(n)))
        .on_complete(recorded_run::with(-1))
        .enqueue(client)
        .await
        .unwrap();
    let callback = client
        .batch(batch.id)
        .await
        .unwrap()
        .unwrap()
        .on_complete
        .unwrap()
        .id;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProcess::start(WORKER, &url, &schema, Duration::from_secs(30)).await);
    }
    wait_for_within(Duration::from_secs(300), "the callback", || async {
        job(client, callback).await.state == JobState::Completed
    })
    .await;
    for worker in workers {
        worker.terminate().await;
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM test_runs WHERE n = -1").await,
        1,
        "the callback ran once"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT n) FROM test_runs WHERE n >= 0"
        )
        .await,
        JOBS,
        "every job ran"
    );
    let last_job: i64 = count(
        &pool,
        "SELECT max(at_ms) FROM (SELECT (extract(epoch FROM at) * 1000)::bigint AS at_ms FROM test_runs WHERE n >= 0) r",
    )
    .await;
    let callback_at: i64 = count(
        &pool,
        "SELECT (extract(epoch FROM at) * 1000)::bigint FROM test_runs WHERE n = -1",
    )
    .await;
    assert!(callback_at >= last_job, "the callback ran after every job");
    let status = client.batch(batch.id).await.unwrap().unwrap();
    assert_eq!(status.total, JOBS as u64);
    assert_eq!(status.counts.completed, JOBS as u64);
}

/// 200 sagas of three steps run by two worker processes, one of which is killed with SIGKILL
/// every few hundred milliseconds and replaced: saga `n` dies at step `n % 4` (0: none). Each
/// saga ends completed or compensated, and each step and compensation that should run ran
/// exactly once (each records itself in the transaction that completes it), the compensations
/// in reverse order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sagas_survive_workers_killed_at_random() {
    const SAGAS: i64 = 200;
    const KILLS: usize = 12;
    let Some(Setup {
        store,
        url,
        schema,
        pool,
    }) = setup().await
    else {
        return;
    };
    let client = &store.client;
    let mut sagas = Vec::new();
    for n in 0..SAGAS {
        let fails_at = n % 4;
        let saga = (1..=3)
            .fold(errand::Saga::new(format!("saga-{n}")), |saga, step| {
                saga.compensated_step(process_step::with(n, step, fails_at))
            })
            .enqueue(client)
            .await
            .unwrap();
        sagas.push((n, fails_at, saga.id));
    }
    let options = errand_tests::processes::Options {
        lease: Duration::from_secs(1),
        concurrency: 2,
        ..Default::default()
    };
    let start = || WorkerProcess::start_with(WORKER, &url, &schema, &options);
    let mut workers = vec![start().await, start().await];
    let unfinished = "SELECT count(*) FROM errand_jobs
        WHERE workflow_id IS NOT NULL AND state NOT IN ('completed', 'dead', 'cancelled')";
    let mut kills = 0;
    while kills < KILLS && count(&pool, unfinished).await > 0 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..300))).await;
        let victim = workers.swap_remove(fastrand::usize(0..workers.len()));
        victim.kill().await;
        kills += 1;
        workers.push(start().await);
    }
    wait_for_within(Duration::from_secs(300), "every saga to end", || async {
        count(&pool, unfinished).await == 0
    })
    .await;
    for worker in workers {
        worker.terminate().await;
    }
    assert!(
        count(&pool, unfinished).await == 0 && kills > 0,
        "{kills} kills during the run"
    );

    let runs: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT n, event, count(*) FROM test_runs GROUP BY n, event ORDER BY n, min(at)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (n, fails_at, id) in sagas {
        let info = client.saga(id).await.unwrap().unwrap();
        let (state, expected): (_, Vec<String>) = match fails_at {
            0 => (
                errand::SagaState::Completed,
                (1..=3).map(|s| format!("step {s}")).collect(),
            ),
            f => (
                errand::SagaState::Compensated,
                (1..f)
                    .map(|s| format!("step {s}"))
                    .chain((1..f).rev().map(|s| format!("undo {s}")))
                    .collect(),
            ),
        };
        assert_eq!(info.state, state, "saga {n}: {info:?}");
        let ran: Vec<(&str, i64)> = runs
            .iter()
            .filter(|(m, _, _)| *m == n)
            .map(|(_, event, times)| (event.as_str(), *times))
            .collect();
        let once: Vec<(&str, i64)> = expected.iter().map(|e| (e.as_str(), 1)).collect();
        assert_eq!(
            ran, once,
            "saga {n}, failing at step {fails_at}, in order of their runs"
        );
    }
    let retried = count(&pool, "SELECT count(*) FROM errand_jobs WHERE attempt > 1").await;
    eprintln!("{kills} workers killed; {retried} jobs ran more than once");
    store.clean_up().await;
}
