#[errand::job(retry = 101)]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
