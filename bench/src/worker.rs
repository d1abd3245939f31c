//! `errand-bench worker`: a worker process for the benchmark and the chaos run.
//!
//! `--url U [--schema S] [--queue Q[,Q..]] [--concurrency N] [--lease-ms N] [--poll-ms N]
//! [--prefetch N] [--deaths] [--prune-ms N] [--keep-finished-ms N] [--max-dead N]`; prints `ready`, then works until SIGTERM. With
//! `--deaths`, a death handler records each death in `chaos_deaths`.

use std::time::Duration;

use errand::{Client, Config, Worker};

use crate::jobs::{Recorder, RECORDER};
use crate::{flag, BoxError};

pub async fn run(args: &[String]) -> Result<(), BoxError> {
    let url = flag(args, "--url").ok_or("--url is required")?;
    let schema = flag(args, "--schema").unwrap_or_else(|| "public".to_owned());
    let queue = flag(args, "--queue").unwrap_or_else(|| "bench".to_owned());
    let number = |name: &str, default: u64| {
        flag(args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let client = Client::connect_with(&url, Config::default().schema(&schema)).await?;
    let recorder = if url.starts_with("sqlite:") {
        Recorder::Sqlite(sqlx::SqlitePool::connect(&url).await?)
    } else {
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await?;
        Recorder::Postgres(pool)
    };
    let _ = RECORDER.set(recorder);
    println!("ready");
    let mut worker = Worker::new(client);
    if args.iter().any(|a| a == "--deaths") {
        // Short, so that a death whose worker was killed mid-call is retried within seconds.
        worker = worker
            .on_death(crate::jobs::record_death)
            .death_handler_timeout(Duration::from_secs(2));
    }
    let mut retention =
        errand::Retention::default().max_dead(number("--max-dead", 10_000) as usize);
    if let Some(ms) = flag(args, "--keep-finished-ms").and_then(|v| v.parse().ok()) {
        retention = retention.keep_finished_for(Duration::from_millis(ms));
    }
    // Without `--prefetch`, the worker sizes its buffer itself, as a user's does by default.
    if let Some(jobs) = flag(args, "--prefetch").and_then(|v| v.parse().ok()) {
        worker = worker.prefetch(jobs);
    }
    worker
        .retention(retention)
        .prune_every(Duration::from_millis(number("--prune-ms", 60_000)))
        .queues(queue.split(',').map(|q| (q.to_owned(), 1)))
        .concurrency(number("--concurrency", 16) as usize)
        .lease(Duration::from_millis(number("--lease-ms", 30_000)))
        .poll_interval(Duration::from_millis(number("--poll-ms", 1_000)))
        .grace_period(Duration::from_secs(5))
        .run()
        .await?;
    Ok(())
}
