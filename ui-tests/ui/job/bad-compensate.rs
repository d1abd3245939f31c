// A compensation is a `#[job]` that takes the step's arguments, in order: one that takes others
// is an error on the path in the attribute (one that does not exist: `unknown-compensate.rs`).
#[errand::job]
async fn refund(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

#[errand::job]
async fn release(sku: String) -> Result<(), std::io::Error> {
    let _ = sku;
    Ok(())
}

#[errand::job(compensate = refund)]
async fn more_arguments(order_id: i64, cents: i64) -> Result<(), std::io::Error> {
    let _ = (order_id, cents);
    Ok(())
}

#[errand::job(compensate = release)]
async fn other_types(sku: i64) -> Result<(), std::io::Error> {
    let _ = sku;
    Ok(())
}

#[errand::job(compensate = "refund")]
async fn quoted(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
