#[errand::job]
async fn charge(order_id: i64) {
    let _ = order_id;
}

fn main() {}
