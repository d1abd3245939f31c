//! A worker process for errand's tests (see `errand_tests::worker_process`): the newer build of
//! a rolling deploy. Its deploy kinds gained `concurrency = 2` and `fair_by`, it dropped a kind,
//! and it knows a kind the older build does not.

use errand::{job, Client};
use errand_tests::jobs::TestError;

/// The deploy test's limited kind, as the newer build declares it: two at a time across the cluster.
#[job(name = "deploy_job", queue = "deploy", concurrency = 2)]
async fn deploy_job(n: i64) -> Result<(), TestError> {
    let _ = n;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    Ok(())
}

/// The deploy test's fair kind, as the newer build declares it: accounts in turn.
#[job(name = "deploy_fair", queue = "deploy", fair_by = "<account>")]
async fn deploy_fair(account: String, n: i64) -> Result<(), TestError> {
    let _ = (account, n);
    Ok(())
}

/// A kind only the newer build knows.
#[job(name = "new_only", queue = "deploy")]
async fn new_only(n: i64) -> Result<(), TestError> {
    let _ = n;
    Ok(())
}

fn enqueue(client: Client, n: i64) -> errand_tests::worker_process::Enqueued {
    Box::pin(async move {
        client.enqueue_many((0..n).map(deploy_job::with)).await?;
        client
            .enqueue_many((0..n).map(|i| deploy_fair::with(format!("acct-{}", i % 4), i)))
            .await?;
        client.enqueue_many((0..n / 4).map(new_only::with)).await?;
        Ok(())
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    errand_tests::worker_process::main(enqueue).await
}
