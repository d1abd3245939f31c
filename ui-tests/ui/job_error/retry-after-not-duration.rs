#[derive(Debug, thiserror::Error, errand::JobError)]
enum ChargeError {
    #[error("rate limited")]
    #[transient]
    RateLimited {
        #[retry_after]
        wait_seconds: u64,
    },
}

fn main() {
    let _ = ChargeError::RateLimited { wait_seconds: 1 };
}
