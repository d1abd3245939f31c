#[errand::job]
async fn charge(order_id: i64, amount_cents: i64) -> Result<(), std::io::Error> {
    let _ = (order_id, amount_cents);
    Ok(())
}

async fn enqueue(client: &errand::Client) -> Result<(), errand::Error> {
    charge::with("42", 2500).enqueue(client).await?;
    Ok(())
}

fn main() {
    let _ = enqueue;
}
