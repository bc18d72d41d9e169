//! `POST /webhooks/stripe`: verify, parse the envelope, queue. No business logic, no database.
//!
//! The handler takes the API Gateway HTTP API (payload v2) event itself rather than
//! `lambda_http::Request`: the signature covers the exact body bytes, and `lambda_http` panics on
//! a body flagged base64 that does not decode, where Stripe (or anyone) must get a 400.

use base64::Engine;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::json;
use shared::queue::{EventQueue, QueuedEvent};
use shared::stripe::{EnvelopeError, EventEnvelope, SignatureError, WebhookVerifier};
use tracing::{error, info, warn};

/// Stripe's events are far smaller; anything larger is refused before any work is done.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Why a delivery was not queued. Each becomes one HTTP status at the edge ([`Rejection::status`]).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body is flagged base64 but does not decode")]
    BadBase64,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(
        "the event's livemode is {event} but this deployment takes livemode={deployment} events"
    )]
    WrongMode { event: bool, deployment: bool },
    #[error("the event could not be queued; Stripe will retry")]
    QueueUnavailable(#[source] anyhow::Error),
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::TooLarge => 413,
            Rejection::QueueUnavailable(_) => 500,
            Rejection::BadBase64
            | Rejection::Signature(_)
            | Rejection::Envelope(_)
            | Rejection::WrongMode { .. } => 400,
        }
    }

    /// A stable, machine-readable code for the response body and the logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "body_too_large",
            Rejection::BadBase64 => "malformed_base64",
            Rejection::Signature(SignatureError::MissingHeader) => "missing_signature",
            Rejection::Signature(SignatureError::OutsideTolerance { .. }) => {
                "timestamp_outside_tolerance"
            }
            Rejection::Signature(_) => "invalid_signature",
            Rejection::Envelope(_) => "invalid_event",
            Rejection::WrongMode { .. } => "wrong_livemode",
            Rejection::QueueUnavailable(_) => "queue_unavailable",
        }
    }
}

pub struct WebhookHandler<Q> {
    verifier: WebhookVerifier,
    queue: Q,
    livemode: bool,
}

impl<Q: EventQueue> WebhookHandler<Q> {
    pub fn new(verifier: WebhookVerifier, queue: Q, livemode: bool) -> Self {
        Self {
            verifier,
            queue,
            livemode,
        }
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Handles one delivery at Unix time `now` and answers API Gateway.
    pub async fn handle(
        &self,
        request: &ApiGatewayV2httpRequest,
        now: i64,
    ) -> ApiGatewayV2httpResponse {
        match self.accept(request, now).await {
            Ok(queued) => respond(
                200,
                json!({ "received": true, "event_id": queued.event_id.as_str() }),
            ),
            Err(rejection) => {
                match &rejection {
                    Rejection::QueueUnavailable(cause) => {
                        // `{:#}` keeps the whole cause chain in one line.
                        error!(
                            code = rejection.code(),
                            error = format!("{cause:#}"),
                            "event not queued"
                        )
                    }
                    other => warn!(code = other.code(), reason = %other, "delivery refused"),
                }
                respond(
                    rejection.status(),
                    json!({ "error": { "code": rejection.code(), "message": rejection.to_string() } }),
                )
            }
        }
    }

    /// The decision itself, without HTTP: verified and queued, or why not.
    pub async fn accept(
        &self,
        request: &ApiGatewayV2httpRequest,
        now: i64,
    ) -> Result<QueuedEvent, Rejection> {
        let body = raw_body(request)?;
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .map(|v| {
                v.to_str()
                    .map_err(|_| SignatureError::MalformedHeader("it is not ASCII"))
            })
            .transpose()?;
        self.verifier.verify(signature, &body, now)?;

        let envelope = EventEnvelope::parse(&body)?;
        if envelope.livemode != self.livemode {
            return Err(Rejection::WrongMode {
                event: envelope.livemode,
                deployment: self.livemode,
            });
        }

        // The envelope parsed, so the body is valid UTF-8 JSON: this moves it without copying.
        let body = String::from_utf8(body)
            .map_err(|_| EnvelopeError::NotJson("the body is not UTF-8".to_owned()))?;
        let event = QueuedEvent::for_event(envelope, body, self.queue.max_inline_body_bytes());
        self.queue
            .enqueue(&event)
            .await
            .map_err(Rejection::QueueUnavailable)?;
        info!(
            event_id = %event.event_id,
            event_type = %event.event_type,
            group = %event.group,
            payload = event.payload.kind(),
            "event queued"
        );
        Ok(event)
    }
}

/// The exact bytes Stripe signed, whether API Gateway passed them as text or as base64.
fn raw_body(request: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, Rejection> {
    let text = request.body.as_deref().unwrap_or_default();
    if !request.is_base64_encoded {
        if text.len() > MAX_BODY_BYTES {
            return Err(Rejection::TooLarge);
        }
        return Ok(text.as_bytes().to_vec());
    }
    // Checked before decoding so an oversized body is never allocated twice.
    if base64::decoded_len_estimate(text.len()) > MAX_BODY_BYTES + 3 {
        return Err(Rejection::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Rejection::BadBase64)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Rejection::TooLarge);
    }
    Ok(bytes)
}

fn respond(status: u16, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    shared::http::json_response(status, &body)
}
