#[errand::job(unique = "until_done", key = "charge-<order_id>")]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
