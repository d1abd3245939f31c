//! Exactly-once charges, from the pattern literature's order → charge → receipt flow.
//!
//! ```sh
//! cargo run --example payment
//! ```
//!
//! A fake payment gateway (a table in the same SQLite file) counts every charge it is asked
//! for. The program enqueues each order's charge twice (the second is a duplicate and is
//! skipped), makes the gateway time out once (a transient error: retried), and SIGKILLs the
//! worker process after it charged an order but before the job completed (another worker
//! process rescues the job, and the effect ledger returns the recorded charge instead of
//! charging again). It ends by printing the number of charges per order, which must be 1, and
//! exits non-zero otherwise.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use errand::{job, Client, Context, JobError, Worker};
use sqlx::SqlitePool;

/// The order whose first charge request times out.
const TIMES_OUT: i64 = 1;
/// The order whose worker is killed between the charge and the completion.
const CRASHES: i64 = 2;

static GATEWAY: OnceLock<SqlitePool> = OnceLock::new();

#[derive(Debug, thiserror::Error, JobError)]
enum PaymentError {
    #[error("payment gateway timed out")]
    #[transient]
    GatewayTimeout,
    #[error(transparent)]
    #[transient]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    #[transient]
    Errand(#[from] errand::Error),
}

fn gateway() -> Result<&'static SqlitePool, PaymentError> {
    GATEWAY.get().ok_or(PaymentError::GatewayTimeout)
}

/// The fake gateway's charge call: it charges every request it gets (as a gateway that ignored
/// idempotency keys would), so only errand keeps this to one charge per order.
async fn gateway_charge(
    order_id: i64,
    cents: i64,
    idempotency_key: &str,
) -> Result<i64, PaymentError> {
    let pool = gateway()?;
    let calls: i64 = sqlx::query_scalar("INSERT INTO gateway_calls (order_id) VALUES (?1) RETURNING (SELECT count(*) FROM gateway_calls WHERE order_id = ?1)")
        .bind(order_id)
        .fetch_one(pool)
        .await?;
    if order_id == TIMES_OUT && calls == 1 {
        return Err(PaymentError::GatewayTimeout);
    }
    let charge = sqlx::query_scalar("INSERT INTO gateway_charges (order_id, cents, idempotency_key) VALUES (?1, ?2, ?3) RETURNING id")
        .bind(order_id)
        .bind(cents)
        .bind(idempotency_key)
        .fetch_one(pool)
        .await?;
    Ok(charge)
}

#[job(queue = "payments", retry = 5, unique = "until_executed", key = "charge-<order_id>", backoff = quick)]
async fn charge_order(ctx: &Context, order_id: i64, cents: i64) -> Result<(), PaymentError> {
    let step_key = ctx.step_key("charge");
    let charge_id: i64 = ctx
        .step("charge", gateway_charge(order_id, cents, &step_key))
        .await?;
    println!(
        "  worker {}: order {order_id} charged as charge {charge_id} (attempt {})",
        std::process::id(),
        ctx.attempt()
    );
    if order_id == CRASHES && ctx.attempt() == 1 {
        // Tell the coordinator we charged, then wait for its SIGKILL.
        sqlx::query("INSERT INTO crash_points (order_id) VALUES (?1)")
            .bind(order_id)
            .execute(gateway()?)
            .await?;
        std::future::pending::<()>().await;
    }
    let client = Client::connect(&database_url()).await?;
    send_receipt::enqueue(&client, order_id, charge_id).await?;
    Ok(())
}

#[job(queue = "payments", unique = "until_executed", key = "receipt-<order_id>", backoff = quick)]
async fn send_receipt(order_id: i64, charge_id: i64) -> Result<(), PaymentError> {
    sqlx::query("INSERT INTO receipts (order_id, charge_id) VALUES (?1, ?2)")
        .bind(order_id)
        .bind(charge_id)
        .execute(gateway()?)
        .await?;
    Ok(())
}

fn quick(_attempt: u32) -> Duration {
    Duration::from_millis(200)
}

fn database_url() -> String {
    format!(
        "sqlite://{}",
        std::env::temp_dir().join("errand-payment.db").display()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_target(false)
        .init();
    let worker = std::env::args().nth(1).as_deref() == Some("--worker");
    if !worker {
        // A fresh start each run: errand's tables and the fake gateway's live in one file.
        let path = std::env::temp_dir().join("errand-payment.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let pool = SqlitePool::connect(&format!("{}?mode=rwc", database_url())).await?;
    let _ = GATEWAY.set(pool.clone());
    if worker {
        let client = Client::connect(&database_url()).await?;
        return Ok(Worker::new(client)
            .queues([("payments", 1)])
            .lease(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(100))
            .run()
            .await?);
    }
    coordinate(&pool).await
}

/// Sets the scene, runs worker processes (killing the first mid-charge), and checks the result.
async fn coordinate(pool: &SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    sqlx::raw_sql(
        "CREATE TABLE gateway_calls (order_id INTEGER NOT NULL);
         CREATE TABLE gateway_charges (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, cents INTEGER NOT NULL, idempotency_key TEXT NOT NULL);
         CREATE TABLE receipts (order_id INTEGER NOT NULL, charge_id INTEGER NOT NULL);
         CREATE TABLE crash_points (order_id INTEGER NOT NULL);",
    )
    .execute(pool)
    .await?;
    let client = Client::connect(&database_url()).await?;
    let orders = [(1, 2500), (2, 990), (3, 12000)];
    for (order_id, cents) in orders {
        let first = charge_order::enqueue(&client, order_id, cents).await?;
        let again = charge_order::enqueue(&client, order_id, cents).await?;
        println!(
            "order {order_id}: charge job {}; enqueued again: duplicate of {:?}",
            first.id, again.duplicate_of
        );
    }

    let exe = std::env::current_exe()?;
    let mut first = tokio::process::Command::new(&exe)
        .arg("--worker")
        .stdout(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM crash_points")
        .fetch_one(pool)
        .await?
        == 0
    {
        if Instant::now() > deadline {
            return Err("the worker never reached the crash point".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = first.id().unwrap_or_default();
    first.kill().await?; // SIGKILL: no shutdown, no chance to complete the job
    println!("killed worker {killed} after it charged order {CRASHES}");

    let mut second = tokio::process::Command::new(&exe)
        .arg("--worker")
        .stdout(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM receipts")
        .fetch_one(pool)
        .await?
        < orders.len() as i64
    {
        if Instant::now() > deadline {
            return Err("the receipts were not all sent within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill().await?;

    println!("\norder  charges  receipts  gateway calls");
    let mut exactly_once = true;
    for (order_id, _) in orders {
        let count = |table: &str| format!("SELECT count(*) FROM {table} WHERE order_id = ?1");
        let charges: i64 = sqlx::query_scalar(&count("gateway_charges"))
            .bind(order_id)
            .fetch_one(pool)
            .await?;
        let receipts: i64 = sqlx::query_scalar(&count("receipts"))
            .bind(order_id)
            .fetch_one(pool)
            .await?;
        let calls: i64 = sqlx::query_scalar(&count("gateway_calls"))
            .bind(order_id)
            .fetch_one(pool)
            .await?;
        println!("{order_id:>5}  {charges:>7}  {receipts:>8}  {calls:>13}");
        exactly_once &= charges == 1 && receipts == 1;
    }
    if !exactly_once {
        return Err("an order was charged or receipted other than exactly once".into());
    }
    println!("\nevery order charged exactly once");
    Ok(())
}
