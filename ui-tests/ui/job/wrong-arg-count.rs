#[errand::job]
async fn charge(order_id: i64, amount_cents: i64) -> Result<(), std::io::Error> {
    let _ = (order_id, amount_cents);
    Ok(())
}

async fn enqueue(client: &errand::Client) -> Result<(), errand::Error> {
    charge::with(42).enqueue(client).await?;
    charge::enqueue(client, 42).await?;
    Ok(())
}

fn main() {
    let _ = enqueue;
}
