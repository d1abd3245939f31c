// A boxed error without `Send + Sync` cannot cross the worker's threads; the message says
// which box works.
#[errand::job]
async fn charge(order_id: i64) -> Result<(), Box<dyn std::error::Error>> {
    let _ = order_id;
    Ok(())
}

fn main() {}
