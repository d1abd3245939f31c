//! The dead set: jobs die, an operator looks at why, retries one and clears the rest.
//!
//! ```sh
//! cargo run --example dead_set
//! ```
//!
//! Three imports fail: two on bad rows (a permanent error), one on a flaky upstream that runs
//! out of retries. A death handler reports each death as it happens. The program then lists the
//! dead set with every job's errors, retries the flaky one (the upstream is back), and clears
//! the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use errand::{job, Client, Context, DeadFilter, JobError, JobState, Page, Worker};

#[derive(Debug, thiserror::Error, JobError)]
enum ImportError {
    #[error("row {0} is malformed")]
    #[permanent]
    BadRow(u32),
    #[error("upstream unavailable")]
    #[transient]
    Upstream,
}

/// Whether the upstream answers; the operator "fixes" it before retrying.
static UPSTREAM_UP: AtomicBool = AtomicBool::new(false);

#[job(queue = "imports", retry = 2, backoff = quick)]
async fn import_file(ctx: &Context, file: String, bad_row: Option<u32>) -> Result<(), ImportError> {
    if let Some(row) = bad_row {
        return Err(ImportError::BadRow(row));
    }
    if !UPSTREAM_UP.load(Ordering::SeqCst) {
        return Err(ImportError::Upstream);
    }
    println!("  imported {file} on attempt {}", ctx.attempt());
    Ok(())
}

fn quick(_attempt: u32) -> Duration {
    Duration::from_millis(100)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("errand-dead-set.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let client = Client::connect(&format!("sqlite://{}", path.display())).await?;
    let flaky = import_file::enqueue(&client, "orders.csv".into(), None)
        .await?
        .id;
    import_file::enqueue(&client, "users.csv".into(), Some(17)).await?;
    import_file::enqueue(&client, "items.csv".into(), Some(3)).await?;

    let worker = || {
        Worker::new(client.clone())
            .queues([("imports", 1)])
            .poll_interval(Duration::from_millis(50))
            .on_death(|death: errand::Death| async move {
                println!(
                    "  death handler: job {} died ({:?})",
                    death.job.id, death.reason
                );
                Ok(())
            })
    };
    println!("running the imports:");
    let watched = client.clone();
    worker().run_until(until_dead_count(watched, 3)).await?;

    println!("\nthe dead set:");
    for job in client
        .dead_jobs(&DeadFilter::all(), Page::first(50))
        .await?
    {
        println!(
            "  job {} {} {} after {} attempts",
            job.id, job.kind, job.args, job.attempt
        );
        for error in &job.errors {
            println!(
                "    attempt {}: {} ({})",
                error.attempt, error.message, error.kind
            );
        }
    }

    println!("\nthe upstream is back: retrying job {flaky}");
    UPSTREAM_UP.store(true, Ordering::SeqCst);
    client.retry_dead(flaky).await?;
    let watched = client.clone();
    worker()
        .run_until(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(watched.job(flaky).await, Ok(Some(job)) if job.state == JobState::Completed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await?;
    let retried = client.job(flaky).await?.ok_or("the retried job is gone")?;
    println!(
        "  job {flaky} is {} with {} errors kept in its history",
        retried.state,
        retried.errors.len()
    );

    let cleared = client.delete_all_dead(&DeadFilter::all()).await?;
    println!(
        "cleared {cleared} dead jobs; the dead set is empty: {}",
        client
            .dead_jobs(&DeadFilter::all(), Page::first(1))
            .await?
            .is_empty()
    );
    if retried.state != JobState::Completed || cleared != 2 {
        return Err("the dead set did not behave as expected".into());
    }
    Ok(())
}

/// Resolves once `count` jobs are dead, or after 30 s.
async fn until_dead_count(client: Client, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(client.dead_jobs(&DeadFilter::all(), Page::first(count)).await, Ok(dead) if dead.len() == count)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
