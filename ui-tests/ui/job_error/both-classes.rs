#[derive(Debug, thiserror::Error, errand::JobError)]
enum ChargeError {
    #[error("gateway timed out")]
    #[transient]
    #[permanent]
    Timeout,
}

fn main() {
    let _ = ChargeError::Timeout;
}
