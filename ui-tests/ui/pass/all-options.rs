use std::time::Duration;

use errand::{job, Classify, Context, ErrorClass, Job, JobError, Outcome};

#[derive(Debug, thiserror::Error, JobError)]
pub enum ChargeError {
    #[error("gateway timed out")]
    #[transient]
    Timeout,
    #[error("rate limited")]
    #[transient]
    RateLimited {
        #[retry_after]
        wait: Duration,
    },
    #[error("maybe limited")]
    #[transient]
    MaybeLimited(#[retry_after] Option<Duration>),
    #[error("card declined: {0}")]
    #[permanent]
    Declined(String),
}

#[derive(Debug, thiserror::Error, JobError)]
#[job_error(default = "permanent")]
pub enum AuditError {
    #[error("bad input")]
    BadInput,
    #[error("storage busy")]
    #[transient]
    Busy,
}

#[derive(Debug, thiserror::Error, JobError)]
#[error("upstream failed")]
#[transient]
pub struct UpstreamError;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Customer {
    pub id: i64,
    pub email: String,
}

fn custom_backoff(attempt: u32) -> Duration {
    Duration::from_secs(u64::from(attempt))
}

#[job(
    queue = "critical",
    retry = 5,
    backoff = custom_backoff,
    unique = "until_expired",
    unique_for = "24h",
    on_conflict = "reject",
    key = "charge-<order_id>-<customer.id>",
    priority = 1,
    timeout = "30s",
    name = "billing.charge_order"
)]
pub async fn charge_order(ctx: &Context, order_id: i64, customer: Customer, amount_cents: i64) -> Result<Outcome, ChargeError> {
    let _ = (ctx.idempotency_key(), customer.email, amount_cents, order_id);
    Ok(Outcome::Done)
}

#[job(retry = false, backoff = "constant")]
async fn audit(entry: String) -> Result<(), AuditError> {
    let _ = entry;
    Ok(())
}

#[job]
async fn no_args() -> Result<(), UpstreamError> {
    Ok(())
}

fn main() {
    let customer = Customer { id: 7, email: "a@example.com".into() };
    assert_eq!(charge_order::key(&42, &customer), "charge-42-7");
    assert_eq!(<charge_order as Job>::KIND, "billing.charge_order");
    let options = <charge_order as Job>::OPTIONS;
    assert_eq!(options.queue, "critical");
    assert_eq!(options.max_attempts(), 6);
    assert_eq!(options.priority, 1);
    assert_eq!(options.timeout, Some(Duration::from_secs(30)));
    let unique = options.unique.expect("unique options");
    assert_eq!(unique.strategy, errand::UniqueStrategy::UntilExpired);
    assert_eq!(unique.unique_for, Some(Duration::from_secs(86_400)));
    assert_eq!(unique.on_conflict, errand::OnConflict::Reject);
    assert_eq!(<audit as Job>::OPTIONS.max_attempts(), 1);
    assert_eq!(<no_args as Job>::KIND, "no_args");

    let request = charge_order::with(42, customer, 2500).priority(0).queue("other");
    assert_eq!(request.key().as_deref(), Some("charge-42-7"));

    assert_eq!(ChargeError::Declined("x".into()).class(), ErrorClass::Permanent);
    assert_eq!(ChargeError::RateLimited { wait: Duration::from_secs(3) }.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(ChargeError::MaybeLimited(None).retry_after(), None);
    assert_eq!(ChargeError::Timeout.retry_after(), None);
    assert_eq!(AuditError::BadInput.class(), ErrorClass::Permanent);
    assert_eq!(AuditError::Busy.class(), ErrorClass::Transient);
    assert_eq!(UpstreamError.class(), ErrorClass::Transient);

    // The function itself stays callable as written.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        audit("direct call".to_owned()).await.expect("audit");
        no_args().await.expect("no_args");
    });
}
