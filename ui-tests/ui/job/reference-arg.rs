#[errand::job]
async fn greet(name: &str) -> Result<(), std::io::Error> {
    let _ = name;
    Ok(())
}

fn main() {}
