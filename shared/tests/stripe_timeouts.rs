//! A Stripe that accepts connections and never answers: every call ends, with an error, within
//! the client's budget instead of hanging until the Lambda timeout.

use std::time::Duration;

use shared::secrets::SecretString;
use shared::stripe::api::{ObjectKind, RealStripe, StripeApi, StripeApiError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stripe_call_fails_within_its_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept and hold every connection, reading nothing and answering nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let stripe = RealStripe::with_timeouts(
        &SecretString::new("sk_test_hung"),
        Some(&url),
        Duration::from_millis(100),
        Duration::from_millis(500),
    )
    .unwrap();
    let err = stripe
        .object(ObjectKind::Invoice, "in_1")
        .await
        .unwrap_err();
    assert!(matches!(err, StripeApiError::Failed(_)), "{err}");
}
