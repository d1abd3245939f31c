#[errand::job]
async fn charge<T: serde::Serialize>(order: T) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
