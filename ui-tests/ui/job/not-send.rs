use std::rc::Rc;

async fn pause() {}

#[errand::job]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let shared = Rc::new(order_id);
    pause().await;
    let _ = shared;
    Ok(())
}

fn main() {}
