//! How to test code that enqueues jobs, and the jobs themselves, with no database server:
//! `errand::testing::TestClient` is a `Client` over a private SQLite database in memory.
//!
//! ```text
//! cargo test --example testing
//! ```
//!
//! The application below signs a user up (a welcome mail now, a reminder in three days) and
//! charges orders through a gateway that can decline a card (permanent) or time out
//! (transient). The tests at the bottom are what a user of errand would write.

use std::time::Duration;

use errand::{job, Client, JobError};

#[derive(Debug, thiserror::Error, JobError)]
pub enum ChargeError {
    #[error("the card was declined")]
    #[permanent]
    Declined,
    #[error("the gateway timed out")]
    #[transient]
    Timeout,
}

/// Charges an order: 0 cents is a declined card, 1 cent a gateway timeout, in this example.
#[job(
    queue = "payments",
    retry = 5,
    unique = "until_executed",
    key = "charge-<order_id>"
)]
pub async fn charge(order_id: i64, cents: i64) -> Result<(), ChargeError> {
    let _ = order_id;
    match cents {
        0 => Err(ChargeError::Declined),
        1 => Err(ChargeError::Timeout),
        _ => Ok(()),
    }
}

#[job(queue = "mail")]
pub async fn send_welcome(user_id: i64) -> Result<(), std::io::Error> {
    let _ = user_id;
    Ok(())
}

#[job(queue = "mail")]
pub async fn send_reminder(user_id: i64) -> Result<(), std::io::Error> {
    let _ = user_id;
    Ok(())
}

/// The code under test: it enqueues through a `&Client`, whatever store is behind it.
pub async fn sign_up(client: &Client, user_id: i64) -> Result<(), errand::Error> {
    send_welcome::enqueue(client, user_id).await?;
    send_reminder::with(user_id)
        .delay(Duration::from_secs(3 * 24 * 3600))
        .enqueue(client)
        .await?;
    Ok(())
}

fn main() {
    println!("this example is a test module: run `cargo test --example testing`");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use errand::testing::TestClient;
    use errand::{FailureKind, JobState};

    use super::*;

    #[tokio::test]
    async fn signing_up_enqueues_a_welcome_now_and_a_reminder_later() {
        let test = TestClient::new();
        sign_up(&test, 7).await.unwrap();

        test.assert_enqueued::<send_welcome>(|args| args.user_id == 7)
            .await;
        test.assert_enqueued::<send_reminder>(|args| args.user_id == 7)
            .await;
        test.refute_enqueued::<send_welcome>(|args| args.user_id == 8)
            .await;
        assert_eq!(test.enqueued_in("mail").await.len(), 2);

        // Only the welcome is due; the reminder waits three days on the store's clock.
        assert_eq!(test.drain_due().await.unwrap(), 1);
        test.refute_enqueued::<send_welcome>(|_| true).await;
        test.advance(Duration::from_secs(3 * 24 * 3600));
        assert_eq!(test.drain_queue("mail").await.unwrap(), 1);
        assert!(test.enqueued_in("mail").await.is_empty());
    }

    #[tokio::test]
    async fn a_declined_card_dies_at_once_and_a_timeout_is_retried() {
        let test = TestClient::new();

        let declined = test.perform(charge::with(1, 0)).await.unwrap();
        assert_eq!(declined.state, JobState::Dead);
        assert_eq!(declined.errors[0].kind, FailureKind::Permanent);
        assert_eq!(declined.errors[0].message, "the card was declined");

        let timed_out = test.perform(charge::with(2, 1)).await.unwrap();
        assert_eq!(timed_out.state, JobState::Retryable);
        assert_eq!(timed_out.errors[0].kind, FailureKind::Transient);
        assert!(timed_out.run_at > test.now(), "retried later, with backoff");

        let paid = test.perform(charge::with(3, 2500)).await.unwrap();
        assert_eq!((paid.state, paid.attempt), (JobState::Completed, 1));
    }

    #[tokio::test]
    async fn an_order_is_charged_once_however_often_it_is_enqueued() {
        let test = TestClient::new();
        let first = charge::enqueue(&test, 42, 2500).await.unwrap();
        let again = charge::enqueue(&test, 42, 2500).await.unwrap();
        assert_eq!(
            again.duplicate_of,
            Some(first.id),
            "the key charge-42 is taken"
        );
        assert_eq!(test.drain().await.unwrap(), 1);
        assert_eq!(test.jobs_of::<charge>().await.len(), 1);
    }

    #[tokio::test]
    async fn a_job_function_can_be_called_directly() {
        // The function stays an ordinary async fn.
        assert!(matches!(charge(9, 0).await, Err(ChargeError::Declined)));
        send_welcome(9).await.unwrap();
    }
}
