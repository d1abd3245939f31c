//! Bad input gets a clear error and loses nothing: bad URLs, unreachable databases, oversized
//! arguments, and stored jobs this binary cannot run.

use errand::{Client, Config, Error, FailureKind, JobState};

use errand_tests::common::{job, sqlite, tag, worker};
use errand_tests::jobs::*;

#[tokio::test]
async fn malformed_url_names_the_problem() {
    let err = Client::connect("mysql://localhost/jobs").await.unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("expected a URL starting with `sqlite:`"),
        "{err}"
    );

    let err = Client::connect("sqlite://jobs.db?mode=sideways")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");

    let err = Client::connect("postgres://app:hunter2@db.invalid/jobs")
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("hunter2"),
        "the password leaked: {err}"
    );
}

#[tokio::test]
async fn unreachable_database_says_which_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/no/such/folder/jobs.db", dir.path().display());
    let err = Client::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Connect {
                store: "sqlite",
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no/such/folder/jobs.db") && message.contains("sqlite"),
        "{message}"
    );
}

#[tokio::test]
async fn oversized_arguments_are_refused_at_enqueue() {
    let store = sqlite().await;
    let url = store.url.clone().unwrap();
    let big = "x".repeat(2 * 1024 * 1024);
    let err = succeed::enqueue(&store.client, big).await.unwrap_err();
    match &err {
        Error::ArgsTooLarge { kind, size, limit } => {
            assert_eq!((*kind, *limit), ("succeed", 1024 * 1024));
            assert!(*size > 2 * 1024 * 1024);
        }
        other => panic!("expected ArgsTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("over the limit"), "{err}");

    let strict = Client::connect_with(&url, Config::default().max_args_bytes(64))
        .await
        .unwrap();
    let err = succeed::enqueue(&strict, "y".repeat(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ArgsTooLarge { limit: 64, .. }),
        "{err:?}"
    );
    let fits = succeed::enqueue(&strict, "small".to_owned()).await.unwrap();
    assert_eq!(fits.id.get(), 1, "refused jobs were not stored");
}

#[tokio::test]
async fn invalid_queue_or_priority_is_refused_at_enqueue() {
    let store = sqlite().await;
    let err = succeed::with(tag("q"))
        .queue("Not A Queue")
        .enqueue(&store.client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidQueue { .. }), "{err:?}");
    let err = succeed::with(tag("p"))
        .priority(10)
        .enqueue(&store.client)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidPriority { priority: 10, .. }),
        "{err:?}"
    );
}

/// Inserts a job as another program (another release, another binary) might have, enqueued
/// long ago.
async fn insert_raw(url: &str, kind: &str, args: &str, max_attempts: i64) -> errand::JobId {
    insert_raw_at(url, kind, args, max_attempts, 0).await
}

async fn insert_raw_at(
    url: &str,
    kind: &str,
    args: &str,
    max_attempts: i64,
    created_at: i64,
) -> errand::JobId {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
         VALUES (?1, 'default', ?2, 'available', 5, ?3, 0, ?4) RETURNING id",
    )
    .bind(kind)
    .bind(args)
    .bind(max_attempts)
    .bind(created_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    // A JobId is only ever handed out by errand; this one comes from the row's id.
    serde_json::from_value(serde_json::json!(id)).unwrap()
}

/// Stores a job this binary cannot run beside one it can, works the queue, checks that the good
/// job completed anyway, and returns what became of the bad one.
async fn run_beside_a_good_job(kind: &str, args: &str, max_attempts: i64) -> errand::JobInfo {
    let store = sqlite().await;
    let bad = insert_raw(store.url.as_deref().unwrap(), kind, args, max_attempts).await;
    let fine = succeed::enqueue(&store.client, tag("beside-bad"))
        .await
        .unwrap()
        .id;
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(job(&store.client, fine).await.state, JobState::Completed);
    job(&store.client, bad).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_is_marked_and_never_stops_the_worker() {
    let dead = run_beside_a_good_job("vanished_job", r#"{"x":1}"#, 1).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.errors.len(), 1);
    assert_eq!(dead.errors[0].kind, FailureKind::UnknownKind);
    let message = &dead.errors[0].message;
    assert!(message.contains("`vanished_job`"), "{message}");
    assert_eq!(
        dead.args,
        serde_json::json!({"x": 1}),
        "the job's data is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_arguments_die_at_once_and_never_stop_the_worker() {
    let dead = run_beside_a_good_job("succeed", r#"{"tag": 5}"#, 10).await;
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 1));
    assert_eq!(dead.errors[0].kind, FailureKind::Undecodable);
    let message = &dead.errors[0].message;
    assert!(
        message.starts_with("cannot decode the arguments of `succeed`: invalid type: integer `5`"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_waits_out_its_grace_period_then_dies() {
    let store = sqlite().await;
    let url = store.url.as_deref().unwrap();
    let now = errand_now();
    // Enqueued long ago, due only now (a retry after its backoff, a delayed job, a retried
    // dead job): the grace runs from when it became due, not from its enqueue.
    let id = insert_raw_at(url, "from_the_future", "{}", 5, 0).await;
    sqlx_run(url, &format!("UPDATE errand_jobs SET run_at = {now}")).await;
    // Within the grace period, the job is left untouched for a worker that knows the kind.
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    let waiting = job(&store.client, id).await;
    assert_eq!((waiting.state, waiting.attempt), (JobState::Available, 0));
    assert!(waiting.errors.is_empty());
    // Past it, the job dies, with an error naming the kind.
    sqlx_run(url, "UPDATE errand_jobs SET run_at = 0").await;
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    let dead = job(&store.client, id).await;
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 0));
    assert_eq!(dead.errors[0].kind, FailureKind::UnknownKind);
    assert!(
        dead.errors[0].message.contains("`from_the_future`"),
        "{}",
        dead.errors[0].message
    );
}

/// Two binaries on one queue, one of which knows a kind the other does not (a deploy in
/// progress): the one that does not know it never takes it, so it cannot kill it; the one
/// that knows it runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_claims_a_kind_it_does_not_know() {
    let store = sqlite().await;
    let url = store.url.as_deref().unwrap();
    // Enqueued long ago, due for half an hour: within the default grace of an hour.
    let id = insert_raw_at(url, "from_the_future", "{}", 5, 0).await;
    let due = errand_now() - 30 * 60 * 1000;
    sqlx_run(url, &format!("UPDATE errand_jobs SET run_at = {due}")).await;
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    let untouched = job(&store.client, id).await;
    assert_eq!(
        (untouched.state, untouched.attempt),
        (JobState::Available, 0),
        "{:?}",
        untouched.errors
    );
}

fn errand_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

async fn sqlx_run(url: &str, sql: &str) {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

errand_tests::per_sql_store!(durations_near_the_maximum_are_clamped);

/// `Duration::MAX` as a delay, a snooze or a `#[retry_after]` means "about forever" on every
/// store; PostgreSQL used to fail with "bigint out of range" where SQLite saturated.
async fn durations_near_the_maximum_are_clamped(store: errand_tests::common::TestStore) {
    let client = &store.client;
    let delayed = succeed::with(tag("forever"))
        .delay(std::time::Duration::MAX)
        .enqueue(client)
        .await
        .unwrap()
        .id;
    let snoozed = waits_forever::enqueue(client, true).await.unwrap().id;
    let retried = waits_forever::enqueue(client, false).await.unwrap().id;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, delayed).await.state, JobState::Scheduled);
    let snoozed = job(client, snoozed).await;
    assert_eq!(snoozed.state, JobState::Scheduled, "{:?}", snoozed.errors);
    let retried = job(client, retried).await;
    assert_eq!(retried.state, JobState::Retryable, "{:?}", retried.errors);
    let year = std::time::Duration::from_secs(365 * 86_400);
    assert!(retried.run_at > std::time::SystemTime::now() + 100 * year);
}

/// A refused PostgreSQL connection fails at once with its cause and where it went, never after
/// the pool's 10 s timeout with only "pool timed out", and never with a password.
#[tokio::test]
async fn a_refused_postgres_connection_says_why_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/jobs?password=hunter3");
    let err = tokio::time::timeout(std::time::Duration::from_secs(8), Client::connect(&url))
        .await
        .expect("a refused connection must not wait for the pool's timeout")
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("hunter2") && !message.contains("hunter3"),
        "a password leaked: {message}"
    );
}

/// The notification channel is `errand_<schema>`; PostgreSQL truncates it past 63 bytes, so a
/// longer schema name is refused up front instead of failing every insert.
#[tokio::test]
async fn a_schema_name_too_long_for_its_channel_is_refused() {
    let schema = "s".repeat(57);
    let url = errand_tests::common::postgres_url();
    let err = Client::connect_with(&url, Config::default().schema(&schema))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("at most 56 characters"), "{err}");
}

/// A row whose arguments are not JSON at all dies as undecodable, and stays readable: the job
/// and the dead set show its raw arguments and its error.
#[tokio::test]
async fn a_row_whose_arguments_are_not_json_is_listed_with_them() {
    let store = sqlite().await;
    let client = &store.client;
    let id = succeed::enqueue(client, tag("not-json")).await.unwrap().id;
    let raw = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
        .await
        .unwrap();
    sqlx::query("UPDATE errand_jobs SET args = 'not json {' WHERE id = ?1")
        .bind(id.get())
        .execute(&raw)
        .await
        .unwrap();
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let dead = job(client, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.args, serde_json::json!("not json {"));
    assert_eq!(dead.errors[0].kind, FailureKind::Undecodable);
    let listed = client
        .dead_jobs(&errand::DeadFilter::all(), errand::Page::first(10))
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
}

/// A job enqueued before an optional parameter was added to its function (`label` here) has
/// no such field in its stored arguments: it runs with `None`, as serde reads a missing
/// `Option` field.
#[tokio::test]
async fn a_job_stored_before_an_optional_parameter_was_added_runs_with_none() {
    let store = sqlite().await;
    let url = store.url.as_deref().unwrap();
    let t = tag("older-args");
    let payload = Payload {
        text: "older".to_owned(),
        nested: Nested {
            list: vec![Some(1)],
            map: std::collections::BTreeMap::new(),
        },
        maybe: None,
        nothing: None,
        smallest: 0,
        largest: 0,
        ratio: 0.5,
    };
    let args = serde_json::json!({ "tag": t, "payload": payload }).to_string();
    let id = insert_raw(url, "round_trip", &args, 3).await;
    worker(&store.client, &["default"])
        .run_until_idle()
        .await
        .unwrap();
    let ran = job(&store.client, id).await;
    assert_eq!(ran.state, JobState::Completed, "{:?}", ran.errors);
    let recorded = errand_tests::common::records(&t);
    let (_, label): (Payload, Option<String>) = serde_json::from_str(&recorded[0]).unwrap();
    assert_eq!(label, None);
}
