#[errand::job(key = "ship-<order_id>7<city>")]
async fn ship(order_id: i64, city: String) -> Result<(), std::io::Error> {
    let _ = (order_id, city);
    Ok(())
}

fn main() {}
