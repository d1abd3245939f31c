//! The worker process of errand's tests (the `errand-test-worker` binaries): runs the test
//! jobs until SIGTERM.
//!
//! Environment: `DATABASE_URL`, `ERRAND_SCHEMA`, and optionally `ERRAND_QUEUE` (`procs`),
//! `ERRAND_CONCURRENCY` (8) and `ERRAND_LEASE_MS` (30000). Prints `ready` once it works.
//!
//! With `ERRAND_DEATHS` set, it records each death it handles in the table `deaths`. With
//! `ERRAND_PERIODIC` set to a cron expression, it schedules the schedule `ticks`, whose jobs go
//! to the queue `ticks`, which no worker works. A `DATABASE_URL` of SQLite needs no schema.
//!
//! With the argument `enqueue-duplicates`, it instead enqueues one unique job 50 times at once
//! and prints the id each enqueue returned, one a line. With `enqueue-deploy N`, it enqueues N
//! jobs of its build's deploy kinds (two builds of the worker declare the same kinds with other
//! options, for the tests of rolling deploys).

use std::time::Duration;

use errand::{Client, Config, Worker};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What enqueueing a build's deploy jobs returns.
pub type Enqueued =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), errand::Error>> + Send>>;

/// Enqueues `n` jobs of the binary's own deploy kinds (see `src/bin/`), as its build does.
pub type EnqueueDeploy = fn(Client, i64) -> Enqueued;

/// The whole process: what `main` of each worker binary runs. `deploy` enqueues the jobs of
/// the binary's own build for the argument `enqueue-deploy N`.
pub async fn main(deploy: EnqueueDeploy) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL")?;
    let client = if url.starts_with("sqlite:") {
        Client::connect(&url).await?
    } else {
        let schema = std::env::var("ERRAND_SCHEMA")?;
        let client = Client::connect_with(&url, Config::default().schema(&schema)).await?;
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let recorder = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await?;
        crate::jobs::set_recorder(recorder);
        client
    };
    if std::env::args().nth(1).as_deref() == Some("enqueue-duplicates") {
        return enqueue_duplicates(&client).await;
    }
    if std::env::args().nth(1).as_deref() == Some("enqueue-deploy") {
        let n = std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        deploy(client, n).await?;
        return Ok(());
    }
    println!("ready");
    let mut worker = Worker::new(client);
    if std::env::var_os("ERRAND_DEATHS").is_some() {
        worker = worker.on_death(record_death);
    }
    if let Ok(cron) = std::env::var("ERRAND_PERIODIC") {
        // Enqueued to a queue no worker works, to be counted.
        let tick = crate::jobs::succeed::with("periodic".to_owned()).queue("ticks");
        worker = worker.schedule(errand::Periodic::new(&cron, tick).name("ticks"));
    }
    worker
        .queues([(
            std::env::var("ERRAND_QUEUE").unwrap_or_else(|_| "procs".to_owned()),
            1,
        )])
        .concurrency(env_or("ERRAND_CONCURRENCY", 8) as usize)
        .lease(Duration::from_millis(env_or("ERRAND_LEASE_MS", 30_000)))
        .poll_interval(Duration::from_millis(200))
        .grace_period(Duration::from_secs(10))
        .run()
        .await?;
    Ok(())
}

async fn enqueue_duplicates(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    use crate::jobs::until_executed_job;
    let mut enqueues = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        enqueues.spawn(async move {
            until_executed_job::with("processes".to_owned(), 1, "ok".to_owned())
                .queue("parked")
                .enqueue(&client)
                .await
        });
    }
    while let Some(enqueued) = enqueues.join_next().await {
        println!("{}", enqueued??.id);
    }
    Ok(())
}

/// A death handler: one row per death, with the job and the reason.
async fn record_death(death: errand::Death) -> Result<(), errand::DeathHandlerError> {
    tokio::time::sleep(Duration::from_millis(env_or("ERRAND_DEATH_HANDLER_MS", 0))).await;
    let pool = crate::jobs::recorder().ok_or("no recorder")?;
    sqlx::query("INSERT INTO deaths (job_id, reason, pid) VALUES ($1, $2, $3)")
        .bind(death.job.id.get())
        .bind(format!("{:?}", death.reason))
        .bind(i64::from(std::process::id()))
        .execute(pool)
        .await?;
    Ok(())
}
