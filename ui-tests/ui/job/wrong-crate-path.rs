// `crate = ".."` is the path every generated item goes through.
#[errand::job(crate = "::not_errand")]
async fn greet(id: i64) -> Result<(), std::io::Error> {
    let _ = id;
    Ok(())
}

fn main() {}
