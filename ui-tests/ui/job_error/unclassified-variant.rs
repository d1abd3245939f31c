#[derive(Debug, thiserror::Error, errand::JobError)]
enum ChargeError {
    #[error("gateway timed out")]
    #[transient]
    Timeout,
    #[error("card declined")]
    Declined,
}

fn main() {
    let _ = (ChargeError::Timeout, ChargeError::Declined);
}
