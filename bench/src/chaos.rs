//! `errand-bench chaos`: three worker processes on PostgreSQL; every 2 s one is killed with
//! SIGKILL and a new one started, of the other build each time (`errand-bench` and
//! `errand-bench-chaos-next`, which limits `chaos_effect` to 24 at once: a limit added to a kind
//! with a backlog, both builds side by side); PostgreSQL (a throwaway cluster) restarts once in
//! the middle. Every job writes its effect in the transaction that completes it, so an effect
//! recorded twice, a job lost or a job stuck in `running` is a bug. One job in a hundred more
//! dies at once; every worker has a death handler that records each death (with a 2 s timeout,
//! so a death whose worker was killed mid-call is taken again 4 s later), and prunes the dead
//! set down to half of them every second, so a death that reaches no handler is a bug too.
//! One in a hundred more takes 300 ms, and the run cancels one of those now and then, each
//! while it runs or before, and checks each ends as `cancel` answered. One in two hundred is a
//! saga whose second step dies and whose first is undone; every second, and once at the end,
//! an operator retries the whole dead set, which must skip those steps: a step or compensation run twice is a bug. No
//! limit slot may stay held at the end. Exits non-zero on any of them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use errand::{Cancellation, Client, Config, DeadFilter, JobId, JobState, Saga};
use errand_tests::processes::TempCluster;
use tokio::io::{AsyncBufReadExt, BufReader};

use errand_bench::jobs::{chaos_dies, chaos_reserve, chaos_ship, chaos_slow};
use errand_bench::BoxError;

use crate::effect::chaos_effect;

const SCHEMA: &str = "errand_chaos";
const WORKERS: usize = 3;

/// The newer build's binary, beside this one.
fn next_build() -> Result<std::path::PathBuf, BoxError> {
    let path = std::env::current_exe()?.with_file_name("errand-bench-chaos-next");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build both binaries first (cargo build --release -p errand-bench --bins)",
            path.display()
        )
        .into())
    }
}

async fn start_worker(
    url: &str,
    max_dead: i64,
    next: bool,
) -> Result<tokio::process::Child, BoxError> {
    let program = if next {
        next_build()?
    } else {
        std::env::current_exe()?
    };
    let mut child = tokio::process::Command::new(program)
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
    for table in [
        "CREATE TABLE chaos_deaths (job_id BIGINT NOT NULL)",
        "CREATE TABLE chaos_slow_effects (n BIGINT NOT NULL)",
        "CREATE TABLE chaos_saga_runs (n BIGINT NOT NULL, what TEXT NOT NULL)",
    ] {
        sqlx::query(table).execute(&pool).await?;
    }
    next_build()?;
    let dies = (jobs / 100).max(1);
    let slow = (jobs / 100).max(1);
    let sagas = (jobs / 200).max(1);
    // Deaths: the jobs that die at once, and each saga's second step.
    let max_dead = ((dies + sagas) / 2).max(1);
    client
        .enqueue_many((0..jobs).map(chaos_effect::with))
        .await?;
    client.enqueue_many((0..dies).map(chaos_dies::with)).await?;
    client.enqueue_many((0..slow).map(chaos_slow::with)).await?;
    for n in 0..sagas {
        Saga::new("chaos")
            .compensated_step(chaos_reserve::with(n))
            .step_without_compensation(chaos_ship::with(n))
            .enqueue(&client)
            .await?;
    }
    eprintln!("enqueued {jobs} jobs in {:?}", started.elapsed());

    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(start_worker(&url, max_dead, i % 2 == 1).await?);
    }
    // What each cancel answered, by job: one cancel a job at most.
    let mut cancels: Vec<(JobId, Cancellation)> = Vec::new();
    let (mut retried, mut skipped) = (0, 0);
    let mut next_retry = Instant::now() + Duration::from_secs(1);
    let (mut kills, mut restarts) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    loop {
        let completed = count(&pool, COMPLETED).await;
        let handled = count(&pool, "SELECT count(DISTINCT job_id) FROM chaos_deaths").await;
        let unsettled = count(&pool, UNSETTLED).await;
        if completed == Some(jobs) && handled == Some(dies + sagas) && unsettled == Some(0) {
            break;
        }
        // Cancel a slow job now and then, running or not yet.
        if fastrand::u8(..3) == 0 {
            let running: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM errand_jobs WHERE kind = 'chaos_slow'
                 AND state IN ('running', 'available') ORDER BY state DESC, random() LIMIT 1",
            )
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
            let id = running.map(JobId::from);
            if let Some(id) = id.filter(|id| cancels.iter().all(|(c, _)| c != id)) {
                if let Ok(answer) = client.cancel(id).await {
                    cancels.push((id, answer));
                }
            }
        }
        if Instant::now() >= next_retry {
            if let Ok(r) = client.retry_all_dead(&DeadFilter::default()).await {
                retried += r.retried;
                skipped += r.skipped;
            }
            next_retry = Instant::now() + Duration::from_secs(1);
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
            match start_worker(&url, max_dead, kills % 2 == 1).await {
                Ok(worker) => workers[victim] = worker,
                Err(err) => eprintln!("{err}; will replace it at the next kill"),
            }
            next_kill = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A last retry of the whole dead set, now that every saga has settled: it must skip each
    // saga's dead step still kept. Then what it retried settles (each dies again and reaches a
    // handler), and the workers stop.
    let last = client.retry_all_dead(&DeadFilter::default()).await?;
    retried += last.retried;
    skipped += last.skipped;
    let settled = Instant::now() + Duration::from_secs(60);
    while Instant::now() < settled
        && count(&pool, "SELECT count(*) FROM errand_jobs WHERE state NOT IN ('completed', 'dead', 'cancelled') OR death_pending")
            .await
            != Some(0)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        let _ = worker.kill().await;
    }

    let completed = count(&pool, COMPLETED).await.unwrap_or(0);
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
    let held_slots = count(
        &pool,
        "SELECT count(*) FROM errand_limit_slots WHERE job_id IS NOT NULL",
    )
    .await
    .unwrap_or(-1);
    let miscancelled = miscancelled(&client, &pool, &cancels).await?;
    let saga_runs = |what: &'static str| {
        let pool = &pool;
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM chaos_saga_runs WHERE what = $1")
                .bind(what)
                .fetch_one(pool)
                .await
                .unwrap_or(-1)
        }
    };
    let runs = [
        saga_runs("reserve").await,
        saga_runs("ship").await,
        saga_runs("release").await,
    ];
    // A step or compensation run more than once is a rerun. The second step may have run
    // fewer times: one whose worker was killed before it ran was rescued dead (no attempts
    // left). Every saga still ran its first step and its compensation once.
    let saga_reruns: i64 = runs.iter().map(|n| (n - sagas).max(0)).sum();
    let saga_missed = (sagas - runs[0]).max(0) + (sagas - runs[2]).max(0);
    let lost = (jobs - completed).max(jobs - effects);
    let duplicates = rows - effects;
    let lost_deaths = dies + sagas - handled;
    let seconds = started.elapsed().as_secs();
    println!("| jobs | completed | lost | duplicate effects | stuck | deaths | deaths handled | handler calls | dead kept | kills | PostgreSQL restarts | seconds |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {jobs} | {completed} | {lost} | {duplicates} | {stuck} | {} | {handled} | {calls} | {dead_kept} | {kills} | {restarts} | {seconds} |",
        dies + sagas
    );
    println!(
        "| cancels | miscancelled | sagas | saga runs (reserve, ship, release) | dead retried | dead skipped | slots held |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {miscancelled} | {sagas} | {runs:?} | {retried} | {skipped} | {held_slots} |",
        cancels.len()
    );
    println!(
        "CHAOS jobs={jobs} completed={completed} lost={lost} duplicate_effects={duplicates} stuck={stuck} deaths={} lost_deaths={lost_deaths} handler_calls={calls} dead_kept={dead_kept} kills={kills} pg_restarts={restarts} cancels={} miscancelled={miscancelled} saga_reruns={saga_reruns} saga_missed={saga_missed} dead_retried={retried} dead_skipped={skipped} held_slots={held_slots} seconds={seconds}",
        dies + sagas,
        cancels.len()
    );
    drop(client);
    Ok(lost == 0
        && duplicates == 0
        && stuck == 0
        && lost_deaths == 0
        && miscancelled == 0
        && saga_reruns == 0
        && saga_missed == 0
        && held_slots == 0)
}

/// How `chaos_effect` jobs are counted as completed.
const COMPLETED: &str =
    "SELECT count(*) FROM errand_jobs WHERE kind = 'chaos_effect' AND state = 'completed'";

/// The slow jobs and saga jobs not final yet.
const UNSETTLED: &str = "SELECT count(*) FROM errand_jobs
    WHERE kind IN ('chaos_slow', 'chaos_reserve', 'chaos_release', 'chaos_ship')
      AND state NOT IN ('completed', 'dead', 'cancelled')";

/// How many cancelled jobs ended other than their cancel answered: cancelled before they ran
/// (then cancelled, with no effect), being cancelled while running (then cancelled), or too
/// late (then as it said).
async fn miscancelled(
    client: &Client,
    pool: &sqlx::PgPool,
    cancels: &[(JobId, Cancellation)],
) -> Result<usize, BoxError> {
    let mut wrong = 0;
    for (id, answer) in cancels {
        let Some(job) = client.job(*id).await? else {
            continue;
        };
        let n = job
            .args
            .get("n")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(-1);
        let effects: i64 =
            sqlx::query_scalar("SELECT count(*) FROM chaos_slow_effects WHERE n = $1")
                .bind(n)
                .fetch_one(pool)
                .await?;
        let right = match answer {
            Cancellation::Cancelled => job.state == JobState::Cancelled && effects == 0,
            Cancellation::Requested => job.state == JobState::Cancelled,
            Cancellation::AlreadyFinished(state) => job.state == *state,
            _ => false,
        };
        if !right {
            eprintln!(
                "job {id}: cancel answered {answer:?}, but it is {:?} with {effects} effects",
                job.state
            );
            wrong += 1;
        }
    }
    Ok(wrong)
}
