//! Several workers sharing one PostgreSQL database.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example postgres_workers --features postgres
//! ```
//!
//! It enqueues 300 jobs in one transaction, starts three workers (each with its own client and
//! connection pool, as separate processes or machines would have), and prints how long they
//! took once every job has completed. Start it in several terminals at once: every process
//! works the same queue, and no job runs twice. Its tables live in the schema
//! `errand_example`, so it leaves the rest of the database alone.

use std::time::{Duration, Instant};

use errand::{job, Client, Config, Context, JobState, Worker};

#[job(queue = "shipping", retry = 3)]
async fn ship_order(ctx: &Context, order_id: i64) -> Result<(), std::io::Error> {
    // Pretend to call a carrier's API.
    tokio::time::sleep(Duration::from_millis(10)).await;
    tracing::debug!(parent: ctx.span(), order_id, "shipped");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .init();
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/test")?;
    let config = Config::default().schema("errand_example");

    let client = Client::connect_with(&url, config.clone()).await?;
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let pool =
        sqlx::PgPool::connect_with(options.options([("search_path", "errand_example")])).await?;
    let mut tx = pool.begin().await?;
    let mut ids = Vec::new();
    for order_id in 0..300 {
        ids.push(ship_order::with(order_id).enqueue_tx(&mut tx).await?.id);
    }
    tx.commit().await?;
    println!("enqueued {} jobs", ids.len());

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for _ in 0..3 {
        let worker = Worker::new(Client::connect_with(&url, config.clone()).await?)
            .queues([("shipping", 1)])
            .concurrency(8);
        println!("worker {} started", worker.id());
        let mut stopped = stopped.clone();
        workers.spawn(worker.run_until(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = 0;
        for id in &ids {
            if client
                .job(*id)
                .await?
                .is_some_and(|job| job.state == JobState::Completed)
            {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(
                format!("only {done} of {} jobs completed in two minutes", ids.len()).into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true)?;
    while let Some(result) = workers.join_next().await {
        result??;
    }
    println!(
        "all {} jobs completed in {:?}",
        ids.len(),
        started.elapsed()
    );
    Ok(())
}
