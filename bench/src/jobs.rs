//! The jobs the benchmark and the chaos run enqueue, and where they record what they did: the
//! kinds both worker builds declare alike. (`chaos_effect`, which the two builds declare with
//! different options, is in each binary.)

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use errand::{job, Context, JobError};

/// Where probe and chaos jobs write: set once per worker process.
pub static RECORDER: OnceLock<Recorder> = OnceLock::new();

pub enum Recorder {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

#[derive(Debug, thiserror::Error, JobError)]
pub enum BenchError {
    #[error("no recorder in this process")]
    #[permanent]
    NoRecorder,
    #[error("this job is meant to die")]
    #[permanent]
    Doomed,
    #[error(transparent)]
    #[transient]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    #[transient]
    Errand(#[from] errand::Error),
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Does nothing: the drain workload measures the queue, not the work.
#[job(name = "bench_noop", queue = "bench")]
pub async fn noop(order_id: i64) -> Result<(), BenchError> {
    let _ = order_id;
    Ok(())
}

/// Does nothing, taking turns by tenant: the mixed drain's fair third.
#[job(name = "bench_fair", queue = "bench", fair_by = "<tenant>")]
pub async fn fair_noop(tenant: i64, order_id: i64) -> Result<(), BenchError> {
    let _ = (tenant, order_id);
    Ok(())
}

/// Does nothing, at most 64 at once across the cluster: the mixed drain's limited third, and
/// the held-back drain's full limit.
#[job(name = "bench_limited", queue = "bench", concurrency = 64)]
pub async fn limited_noop(order_id: i64) -> Result<(), BenchError> {
    let _ = order_id;
    Ok(())
}

/// Sleeps: the slow-jobs workload measures whether the worker keeps its slots full.
#[job(name = "bench_sleep", queue = "bench")]
pub async fn sleeps(ms: u64) -> Result<(), BenchError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// Records when it started, for the enqueue-to-start latency.
#[job(name = "bench_latency", queue = "bench")]
pub async fn latency_probe(sent_us: i64) -> Result<(), BenchError> {
    let started = now_us();
    match RECORDER.get().ok_or(BenchError::NoRecorder)? {
        Recorder::Sqlite(pool) => {
            sqlx::query("INSERT INTO bench_latency (sent_us, started_us) VALUES (?1, ?2)")
                .bind(sent_us)
                .bind(started)
                .execute(pool)
                .await?;
        }
        Recorder::Postgres(pool) => {
            sqlx::query("INSERT INTO bench_latency (sent_us, started_us) VALUES ($1, $2)")
                .bind(sent_us)
                .bind(started)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

pub fn quick(_attempt: u32) -> Duration {
    Duration::from_millis(50)
}

/// Dies at once: the chaos run counts that each death reaches a handler.
#[job(name = "chaos_dies", queue = "chaos", retry = 0)]
pub async fn chaos_dies(n: i64) -> Result<(), BenchError> {
    let _ = n;
    Err(BenchError::Doomed)
}

/// The chaos run's death handler: one row per call, so a death handled twice shows, and one
/// never handled is missing.
pub async fn record_death(death: errand::Death) -> Result<(), errand::DeathHandlerError> {
    let Some(Recorder::Postgres(pool)) = RECORDER.get() else {
        return Err("no recorder in this process".into());
    };
    sqlx::query("INSERT INTO chaos_deaths (job_id) VALUES ($1)")
        .bind(death.job.id.get())
        .execute(pool)
        .await?;
    Ok(())
}

/// Writes its effect after 300 ms, then completes in the same transaction: the chaos run cancels
/// some while they run, and checks each ends as `cancel` answered.
#[job(name = "chaos_slow", queue = "chaos", retry = 50, backoff = quick)]
pub async fn chaos_slow(ctx: &Context, n: i64) -> Result<(), BenchError> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    complete_with(
        ctx,
        "INSERT INTO chaos_slow_effects (n) VALUES ($1)",
        n,
        None,
    )
    .await
}

/// Runs `insert` (`$1` is `n`, `$2` is `what` if given) and completes the job in the same
/// transaction: an effect recorded twice, or without its completion, would be a bug.
pub async fn complete_with(
    ctx: &Context,
    insert: &'static str,
    n: i64,
    what: Option<&str>,
) -> Result<(), BenchError> {
    let Some(Recorder::Postgres(pool)) = RECORDER.get() else {
        return Err(BenchError::NoRecorder);
    };
    let mut tx = pool.begin().await?;
    let mut query = sqlx::query(insert).bind(n);
    if let Some(what) = what {
        query = query.bind(what);
    }
    query.execute(&mut *tx).await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records one run of a saga step or compensation (`what`, for saga `n`).
async fn saga_run(ctx: &Context, n: i64, what: &str) -> Result<(), BenchError> {
    let insert = "INSERT INTO chaos_saga_runs (n, what) VALUES ($1, $2)";
    complete_with(ctx, insert, n, Some(what)).await
}

/// A saga's first step: completes, recording its run.
#[job(name = "chaos_reserve", queue = "chaos", retry = 50, backoff = quick, compensate = chaos_release)]
pub async fn chaos_reserve(ctx: &Context, n: i64) -> Result<(), BenchError> {
    saga_run(ctx, n, "reserve").await
}

/// Undoes `chaos_reserve`, recording its run: once per saga, however often operators retry.
#[job(name = "chaos_release", queue = "chaos", retry = 50, backoff = quick)]
pub async fn chaos_release(ctx: &Context, n: i64) -> Result<(), BenchError> {
    saga_run(ctx, n, "release").await
}

/// A saga's second step: records its run, then dies, so the saga is compensated and the step
/// stays in the dead set, where the operators' retries must skip it.
#[job(name = "chaos_ship", queue = "chaos", retry = 0)]
pub async fn chaos_ship(n: i64) -> Result<(), BenchError> {
    let Some(Recorder::Postgres(pool)) = RECORDER.get() else {
        return Err(BenchError::NoRecorder);
    };
    sqlx::query("INSERT INTO chaos_saga_runs (n, what) VALUES ($1, 'ship')")
        .bind(n)
        .execute(pool)
        .await?;
    Err(BenchError::Doomed)
}
