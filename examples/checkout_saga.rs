//! A checkout as a saga: reserve the stock, charge the card, ship; when shipping fails, the
//! payment is refunded and the stock released, in that order.
//!
//! ```sh
//! cargo run --example checkout_saga
//! ```
//!
//! It runs the saga three times on an SQLite file: order 1 ships and the saga completes; order
//! 2's address cannot be shipped to, a permanent failure, so the saga compensates; order 3 ships
//! tomorrow, and the customer cancels it today (`Client::cancel_saga`), which undoes it the
//! same way. It prints what each job did, then each saga's steps and final state, and exits
//! non-zero if a saga did not end as it should.

use std::time::{Duration, Instant};

use errand::{
    job, Client, Context, JobError, JobState, Saga, SagaInfo, SagaState, Worker, WorkflowId,
};

#[derive(Debug, thiserror::Error, JobError)]
enum ShopError {
    #[error("no carrier delivers to {0:?}")]
    #[permanent]
    Undeliverable(String),
    #[error(transparent)]
    #[transient]
    Errand(#[from] errand::Error),
}

/// Keeps `count` items of `sku` for the order; undone by `release_stock`.
#[job(queue = "shop", compensate = release_stock)]
async fn reserve_stock(order_id: i64, sku: String, count: u32) -> Result<(), ShopError> {
    println!("  order {order_id}: reserved {count} x {sku}");
    Ok(())
}

#[job(queue = "shop")]
async fn release_stock(order_id: i64, sku: String, count: u32) -> Result<(), ShopError> {
    println!("  order {order_id}: released {count} x {sku}");
    Ok(())
}

/// Charges the card once per order, recording the payment provider's charge id in the effect
/// ledger; undone by `refund`, which reads that id.
#[job(queue = "shop", key = "charge-<order_id>", compensate = refund)]
async fn charge(ctx: &Context, order_id: i64, cents: i64) -> Result<(), ShopError> {
    let gateway = async { Ok::<_, ShopError>(format!("ch_{order_id}_{cents}")) };
    let charge_id: String = ctx.step("gateway", gateway).await?;
    println!("  order {order_id}: charged {cents} cents as {charge_id}");
    Ok(())
}

#[job(queue = "shop", key = "refund-<order_id>")]
async fn refund(ctx: &Context, order_id: i64, cents: i64) -> Result<(), ShopError> {
    match ctx.result_of::<String>("charge", "gateway").await? {
        Some(charge_id) => println!("  order {order_id}: refunded {cents} cents of {charge_id}"),
        None => println!("  order {order_id}: nothing was charged"),
    }
    Ok(())
}

/// Hands the parcel to a carrier; an address no carrier serves fails permanently.
#[job(queue = "shop", compensate = cancel_shipment)]
async fn ship(order_id: i64, address: String) -> Result<(), ShopError> {
    if address.contains("Atlantis") {
        println!("  order {order_id}: cannot ship to {address}");
        return Err(ShopError::Undeliverable(address));
    }
    println!("  order {order_id}: shipped to {address}");
    Ok(())
}

/// The last step's compensation: it never runs, as a saga whose last step completed is done.
#[job(queue = "shop")]
async fn cancel_shipment(order_id: i64, address: String) -> Result<(), ShopError> {
    println!("  order {order_id}: shipment to {address} cancelled");
    Ok(())
}

fn checkout(order_id: i64, address: &str, ship_in: Duration) -> Saga {
    Saga::new(format!("checkout-{order_id}"))
        .compensated_step(reserve_stock::with(order_id, "mug".into(), 2))
        .compensated_step(charge::with(order_id, 1999))
        .compensated_step(ship::with(order_id, address.into()).delay(ship_in))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_target(false)
        .init();
    let path = std::env::temp_dir().join("errand-checkout-saga.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let client = Client::connect(&format!("sqlite://{}", path.display())).await?;

    let now = Duration::ZERO;
    let shipped = checkout(1, "1 Main Street, Springfield", now)
        .enqueue(&client)
        .await?;
    let stranded = checkout(2, "7 Coral Way, Atlantis", now)
        .enqueue(&client)
        .await?;
    let tomorrow = Duration::from_secs(86_400);
    let changed_mind = checkout(3, "9 Elm Road, Shelbyville", tomorrow)
        .enqueue(&client)
        .await?;
    let sagas = [
        (shipped.id, SagaState::Completed),
        (stranded.id, SagaState::Compensated),
        (changed_mind.id, SagaState::Cancelled),
    ];

    println!("what the jobs did:");
    let worker = Worker::new(client.clone())
        .queues([("shop", 1)])
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .spawn();
    // Order 3 is charged and waits to ship tomorrow; the customer cancels it.
    let ship_3 = changed_mind.steps[2].job;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(client.job(ship_3).await?, Some(job) if job.state == JobState::Scheduled) {
        if Instant::now() > deadline {
            return Err("order 3 never got as far as waiting to ship".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  order 3: the customer cancels");
    // `Cancelled`: it waited and will not run; `Requested`: it runs, and is undone when it
    // returns; `AlreadyFinished`: too late, it shipped.
    let answer = client.cancel_saga(changed_mind.id).await?;
    println!("  order 3: {answer:?}");
    all_ended(&client, &sagas).await;
    worker.shutdown().await?;

    let mut as_expected = true;
    for (id, expected) in sagas {
        let Some(saga) = client.saga(id).await? else {
            return Err(format!("saga {id} disappeared").into());
        };
        print_saga(&saga);
        as_expected &= saga.state == expected;
    }
    if !as_expected {
        return Err("a saga did not end in the state it should have".into());
    }
    Ok(())
}

fn print_saga(saga: &SagaInfo) {
    println!("\n{} (saga {}): {:?}", saga.name, saga.id, saga.state);
    for step in &saga.steps {
        let compensation = step.compensation.as_ref().map_or("-".to_owned(), |c| {
            format!("{} {}", c.kind, c.state.as_str())
        });
        println!(
            "  {:<14} {:<10} compensation: {compensation}",
            step.name,
            step.job.state.as_str()
        );
    }
    let run: Vec<&str> = saga
        .compensations_run()
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    if !run.is_empty() {
        println!("  compensations run, in order: {}", run.join(", "));
    }
}

/// Resolves once every saga has ended as expected, or after 60 s.
async fn all_ended(client: &Client, sagas: &[(WorkflowId, SagaState)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut done = true;
        for (id, expected) in sagas {
            done &= matches!(client.saga(*id).await, Ok(Some(s)) if s.state == *expected);
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("gave up waiting for the sagas to end");
}
