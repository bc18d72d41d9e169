//! The meter port over async-stripe against a local HTTP server: the request as Stripe reads it
//! (form-encoded, the identifier and timestamp of the claim, the configured payload key), the
//! response parsed from Stripe's own fixture shape, and errors sorted into retryable and refused.

use std::time::Duration;

use shared::metering::Claim;
use shared::secrets::SecretString;
use shared::stripe::api::RealStripe;
use shared::stripe::meter::{MeterApi, MeterConfig, MeterError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENT: &str = r#"{"created":1767229200,"event_name":"llm_overage_units","identifier":"ovg_1","livemode":false,"object":"billing.meter_event","payload":{"stripe_customer_id":"cus_1","value":"42"},"timestamp":1767229200}"#;

/// Serves one answer per connection, in order, and hands back each request's body.
async fn server(
    answers: Vec<(u16, &'static str)>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (status, body) in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then the body its Content-Length announces.
            let (head_end, length) = loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while request.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            tx.send(String::from_utf8_lossy(&request[head_end..]).to_string())
                .unwrap();
            let reason = if status == 200 { "OK" } else { "Error" };
            let answer = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (url, rx)
}

fn claim() -> Claim {
    Claim {
        seq: 0,
        value: 42,
        identifier: "ovg_1".into(),
        timestamp: 1_767_229_200,
    }
}

fn meter() -> MeterConfig {
    MeterConfig {
        event_name: "llm_overage_units".into(),
        customer_key: "stripe_customer_id".into(),
    }
}

fn stripe(url: &str) -> RealStripe {
    RealStripe::with_timeouts(
        &SecretString::new("sk_test_meter"),
        Some(url),
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap()
}

#[tokio::test]
async fn a_claim_goes_out_as_one_form_encoded_meter_event() {
    let (url, mut bodies) = server(vec![(200, EVENT)]).await;
    stripe(&url)
        .send(&meter(), "cus_1", &claim())
        .await
        .unwrap();
    let body = bodies.recv().await.unwrap();
    let mut fields: Vec<(String, String)> = url_decode(&body);
    fields.sort();
    assert_eq!(
        fields,
        [
            ("event_name", "llm_overage_units"),
            ("identifier", "ovg_1"),
            ("payload[stripe_customer_id]", "cus_1"),
            ("payload[value]", "42"),
            ("timestamp", "1767229200"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[tokio::test]
async fn rate_limits_and_outages_may_be_retried_and_refusals_may_not() {
    let (url, _bodies) = server(vec![
        (429, r#"{"error":{"type":"rate_limit_error","message":"Too many requests"}}"#),
        (503, r#"{"error":{"type":"api_error","message":"Unavailable"}}"#),
        (400, r#"{"error":{"type":"invalid_request_error","message":"timestamp too old","param":"timestamp"}}"#),
    ])
    .await;
    let s = stripe(&url);
    assert!(matches!(
        s.send(&meter(), "cus_1", &claim()).await,
        Err(MeterError::Retryable(_))
    ));
    assert!(matches!(
        s.send(&meter(), "cus_1", &claim()).await,
        Err(MeterError::Retryable(_))
    ));
    assert!(
        matches!(s.send(&meter(), "cus_1", &claim()).await, Err(MeterError::Rejected(m)) if m.contains("timestamp too old"))
    );
}

fn url_decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 3 <= bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}
