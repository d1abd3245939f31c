// Limits are checked where they are written: a rate needs starts per window, a concurrency at
// least one, and a `concurrency_key` a limit to apply per key.
#[errand::job(rate = "100 per minute")]
async fn wordy_rate() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(concurrency = 0)]
async fn no_concurrency() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(concurrency_key = "<account_id>")]
async fn key_without_limit(account_id: i64) -> Result<(), std::io::Error> {
    let _ = account_id;
    Ok(())
}

#[errand::job(concurrency = 2, concurrency_key = "<acount_id>")]
async fn misspelt_key(account_id: i64) -> Result<(), std::io::Error> {
    let _ = account_id;
    Ok(())
}

#[errand::job(concurrency = 1, fair_by = "<account_id>")]
async fn fair_and_limited(account_id: i64) -> Result<(), std::io::Error> {
    let _ = account_id;
    Ok(())
}

fn main() {}
