//! `errand-bench chaos`: three worker processes on PostgreSQL; every 2 s one is killed with
//! SIGKILL and a new one started; PostgreSQL (a throwaway cluster) restarts once in the middle.
//! Every job writes its effect in the transaction that completes it, so an effect recorded
//! twice, a job lost or a job stuck in `running` is a bug. One job in a hundred more dies at
//! once; every worker has a death handler that records each death (with a 2 s timeout, so a
//! death whose worker was killed mid-call is taken again 4 s later), and prunes the dead set
//! down to half of them every second, so a death that reaches no handler is a bug too. Exits
//! non-zero on any of them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use errand::{Client, Config};
use errand_tests::processes::TempCluster;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::jobs::{chaos_dies, chaos_effect};
use crate::BoxError;

const SCHEMA: &str = "errand_chaos";
const WORKERS: usize = 3;

async fn start_worker(url: &str, max_dead: i64) -> Result<tokio::process::Child, BoxError> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "worker", "--url", url, "--schema", SCHEMA, "--queue", "chaos",
        ])
        .args([
            "--concurrency",
            "16",
            "--lease-ms",
            "2000",
            "--poll-ms",
            "200",
            "--deaths",
            "--prune-ms",
            "1000",
            "--max-dead",
        ])
        .arg(max_dead.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(stdout).lines().next_line(),
    )
    .await;
    match line {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        // The database may be restarting; the caller tries again.
        other => Err(format!("a worker did not start: {other:?}").into()),
    }
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> Option<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.ok()
}

pub(crate) async fn run(jobs: i64) -> Result<bool, BoxError> {
    let started = Instant::now();
    let cluster = TempCluster::start()
        .ok_or("PostgreSQL's initdb and pg_ctl are needed for the chaos run")?;
    let url = cluster.url();
    let client = Client::connect_with(&url, Config::default().schema(SCHEMA)).await?;
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", SCHEMA)]))
        .await?;
    sqlx::query("CREATE TABLE chaos_effects (n BIGINT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE chaos_deaths (job_id BIGINT NOT NULL)")
        .execute(&pool)
        .await?;
    let dies = (jobs / 100).max(1);
    let max_dead = (dies / 2).max(1);
    client
        .enqueue_many((0..jobs).map(chaos_effect::with))
        .await?;
    client.enqueue_many((0..dies).map(chaos_dies::with)).await?;
    eprintln!("enqueued {jobs} jobs in {:?}", started.elapsed());

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(start_worker(&url, max_dead).await?);
    }
    let (mut kills, mut restarts) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    loop {
        let completed = count(
            &pool,
            "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
        )
        .await;
        let handled = count(&pool, "SELECT count(DISTINCT job_id) FROM chaos_deaths").await;
        if completed == Some(jobs) && handled == Some(dies) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("gave up after an hour");
            break;
        }
        if restarts == 0 && completed.is_some_and(|c| c >= jobs / 2) {
            eprintln!(
                "restarting PostgreSQL at {} completed",
                completed.unwrap_or_default()
            );
            cluster.restart();
            restarts += 1;
        }
        if Instant::now() >= next_kill {
            let victim = fastrand::usize(..workers.len());
            workers[victim].kill().await?;
            kills += 1;
            match start_worker(&url, max_dead).await {
                Ok(worker) => workers[victim] = worker,
                Err(err) => eprintln!("{err}; will replace it at the next kill"),
            }
            next_kill = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        let _ = worker.kill().await;
    }

    let completed = count(
        &pool,
        "SELECT count(*) FROM errand_jobs WHERE state = 'completed'",
    )
    .await
    .unwrap_or(0);
    let effects = count(&pool, "SELECT count(DISTINCT n) FROM chaos_effects")
        .await
        .unwrap_or(0);
    let rows = count(&pool, "SELECT count(*) FROM chaos_effects")
        .await
        .unwrap_or(0);
    let stuck = count(
        &pool,
        "SELECT count(*) FROM errand_jobs WHERE state = 'running'",
    )
    .await
    .unwrap_or(0);
    let handled = count(&pool, "SELECT count(DISTINCT job_id) FROM chaos_deaths")
        .await
        .unwrap_or(0);
    let calls = count(&pool, "SELECT count(*) FROM chaos_deaths")
        .await
        .unwrap_or(0);
    let dead_kept = count(
        &pool,
        "SELECT count(*) FROM errand_jobs WHERE state = 'dead'",
    )
    .await
    .unwrap_or(0);
    let lost = (jobs - completed).max(jobs - effects);
    let duplicates = rows - effects;
    let lost_deaths = dies - handled;
    let seconds = started.elapsed().as_secs();
    println!("| jobs | completed | lost | duplicate effects | stuck | deaths | deaths handled | handler calls | dead kept | kills | PostgreSQL restarts | seconds |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!("| {jobs} | {completed} | {lost} | {duplicates} | {stuck} | {dies} | {handled} | {calls} | {dead_kept} | {kills} | {restarts} | {seconds} |");
    println!(
        "CHAOS jobs={jobs} completed={completed} lost={lost} duplicate_effects={duplicates} stuck={stuck} deaths={dies} lost_deaths={lost_deaths} handler_calls={calls} dead_kept={dead_kept} kills={kills} pg_restarts={restarts} seconds={seconds}"
    );
    drop(client);
    Ok(lost == 0 && duplicates == 0 && stuck == 0 && lost_deaths == 0)
}
