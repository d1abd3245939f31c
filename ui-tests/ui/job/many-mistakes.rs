// One build reports every mistake in the attribute, not just the first.
#[errand::job(retries = 5, queue = "Bulk", timeout = "soon", unique = "until_executed", priority = 12)]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
