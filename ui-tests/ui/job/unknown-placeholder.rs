#[errand::job(key = "charge-<order>")]
async fn charge(order_id: i64, amount_cents: i64) -> Result<(), std::io::Error> {
    let _ = (order_id, amount_cents);
    Ok(())
}

fn main() {}
