//! A worker process for errand's tests (see `errand_tests::worker_process`): the build that
//! an older deploy left running. Its deploy kinds have no limit and no `fair_by`, and it knows
//! a kind the newer build dropped.

use errand::{job, Client};
use errand_tests::jobs::TestError;

/// The deploy test's limited kind, as the older build declares it.
#[job(name = "deploy_job", queue = "deploy")]
async fn deploy_job(n: i64) -> Result<(), TestError> {
    let _ = n;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    Ok(())
}

/// The deploy test's fair kind, as the older build declares it.
#[job(name = "deploy_fair", queue = "deploy")]
async fn deploy_fair(account: String, n: i64) -> Result<(), TestError> {
    let _ = (account, n);
    Ok(())
}

/// A kind only the older build knows.
#[job(name = "old_only", queue = "deploy")]
async fn old_only(n: i64) -> Result<(), TestError> {
    let _ = n;
    Ok(())
}

fn enqueue(client: Client, n: i64) -> errand_tests::worker_process::Enqueued {
    Box::pin(async move {
        client.enqueue_many((0..n).map(deploy_job::with)).await?;
        client
            .enqueue_many((0..n).map(|i| deploy_fair::with(format!("acct-{}", i % 4), i)))
            .await?;
        client.enqueue_many((0..n / 4).map(old_only::with)).await?;
        Ok(())
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    errand_tests::worker_process::main(enqueue).await
}
