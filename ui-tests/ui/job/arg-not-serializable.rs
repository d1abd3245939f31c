pub struct Order {
    pub id: i64,
}

#[errand::job]
async fn charge(order: Order) -> Result<(), std::io::Error> {
    let _ = order.id;
    Ok(())
}

fn main() {}
