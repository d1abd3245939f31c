// A mistake in the attribute is one error: rustc stops after expanding macros when one
// failed, so the call sites below, which the failed expansion leaves unresolved, add none.
#[errand::job(queue = "Critical", retry = 5)]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

async fn checkout(client: &errand::Client) -> Result<(), errand::Error> {
    charge::with(7).enqueue(client).await?;
    charge::enqueue(client, 8).await?;
    Ok(())
}

fn main() {
    let _ = checkout;
}
