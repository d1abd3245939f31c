// Limits across the cluster, per kind and per key.
#[errand::job(concurrency = 2, rate = "100/1m")]
async fn call_partner_api(request_id: i64) -> Result<(), std::io::Error> {
    let _ = request_id;
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Account {
    id: i64,
}

#[errand::job(concurrency = 1, concurrency_key = "tenant-<account.id>")]
async fn export(account: Account, format: String) -> Result<(), std::io::Error> {
    let _ = (account, format);
    Ok(())
}

#[errand::job(fair_by = "<account.id>")]
async fn send_digest(account: Account) -> Result<(), std::io::Error> {
    let _ = account;
    Ok(())
}

fn main() {
    let _ = send_digest::with(Account { id: 8 });
    let _ = call_partner_api::with(1);
    let _ = export::with(Account { id: 7 }, "csv".to_owned());
}
