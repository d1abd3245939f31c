#[derive(Debug, thiserror::Error, errand::JobError)]
#[job_error(default = "sometimes")]
enum ChargeError {
    #[error("gateway timed out")]
    Timeout,
}

fn main() {
    let _ = ChargeError::Timeout;
}
