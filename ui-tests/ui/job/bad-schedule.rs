// Each schedule option is checked where it is written: the expression by the cron parser the
// runtime uses, the time zone in the time zone database, and `cron` only on a job without
// arguments.
#[errand::job(cron = "61 * * * *")]
async fn minute_out_of_range() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(cron = "*/5 * * *")]
async fn too_few_fields() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(cron = "0 3 * * *", timezone = "Europe/Berln")]
async fn misspelt_zone() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(cron = "0 3 * * *", catch_up = "everything")]
async fn unknown_catch_up() -> Result<(), std::io::Error> {
    Ok(())
}

#[errand::job(cron = "0 3 * * *")]
async fn with_arguments(days: u32) -> Result<(), std::io::Error> {
    let _ = days;
    Ok(())
}

#[errand::job(timezone = "UTC", catch_up = "latest")]
async fn zone_without_cron() -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
