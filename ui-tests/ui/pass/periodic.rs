// A job without arguments declares its schedule; the worker of its queue runs it.
#[errand::job(
    queue = "maintenance",
    cron = "0 */5 * * * *",
    timezone = "Europe/Berlin",
    catch_up = "all:48",
    expires_in = "10m"
)]
async fn purge_sessions() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(cron = "@daily", catch_up = "latest")]
async fn nightly_report(ctx: &errand::Context) -> Result<(), std::io::Error> {
    let _ = ctx;
    Ok(())
}

fn main() {
    let _ = errand::Worker::new;
    let _ = nightly_report::with();
    let _ = purge_sessions::with();
}
