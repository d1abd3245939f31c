#[errand::job(key = "transfer-<from><to>")]
async fn transfer(from: String, to: String) -> Result<(), std::io::Error> {
    let _ = (from, to);
    Ok(())
}

fn main() {}
