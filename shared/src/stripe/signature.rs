//! Stripe webhook signature verification, as Stripe documents it:
//! <https://docs.stripe.com/webhooks#verify-manually>
//!
//! 1. The `Stripe-Signature` header is a comma-separated list of `key=value` pairs. `t` is the
//!    Unix timestamp of the delivery; each `v1` is a hex HMAC-SHA256. Other schemes (`v0`, ...)
//!    are ignored, as Stripe's own libraries do.
//! 2. The signed payload is `"{t}.{raw body}"`, keyed by the endpoint's signing secret
//!    (the whole `whsec_...` string, as Stripe's libraries use it).
//! 3. The delivery is authentic when any `v1` equals the HMAC under any configured secret
//!    (several secrets are live while one is being rotated). Comparison is constant-time.
//! 4. An authentic delivery is still refused when its timestamp is more than the tolerance away
//!    from now, in either direction, so a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secrets::SecretString;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's libraries default to five minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// A header longer than this is not a Stripe header; refusing it bounds the work an attacker can ask for.
pub const MAX_HEADER_LEN: usize = 4096;

/// At most this many `v1` entries are considered (Stripe sends one per live secret: one or two).
pub const MAX_V1_SIGNATURES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the Stripe-Signature header carries no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the payload under any configured signing secret")]
    NoMatch,
    #[error(
        "the signature timestamp is {age_secs} s from now; at most {tolerance_secs} s are allowed"
    )]
    OutsideTolerance { age_secs: u64, tolerance_secs: u64 },
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// Decoded `v1` signatures; entries that are not 64 hex digits cannot match and are dropped.
    pub v1: Vec<[u8; 32]>,
}

impl SignatureHeader {
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::MalformedHeader("it is too long"));
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        let mut saw_v1 = false;
        for item in header.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                return Err(SignatureError::MalformedHeader("an item is not key=value"));
            };
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::MalformedHeader("t appears twice"));
                    }
                    let t = value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::MalformedHeader("t is not an integer"))?;
                    timestamp = Some(t);
                }
                "v1" => {
                    saw_v1 = true;
                    let mut bytes = [0u8; 32];
                    if v1.len() < MAX_V1_SIGNATURES
                        && hex::decode_to_slice(value, &mut bytes).is_ok()
                    {
                        v1.push(bytes);
                    }
                }
                _ => {} // other schemes (v0 is Stripe's test scheme) are ignored
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("t is missing"))?;
        if !saw_v1 {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

/// Verifies deliveries against every live signing secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    /// One keyed MAC per secret, keyed once at cold start and cloned per check.
    keyed: Vec<HmacSha256>,
    tolerance_secs: u64,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &format_args!("[{} redacted]", self.keyed.len()))
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

/// A signing secret HMAC-SHA256 cannot be keyed with. HMAC takes a key of any length, so no
/// secret is refused today; the type keeps that promise out of `expect`.
#[derive(Debug, thiserror::Error)]
#[error("a webhook signing secret cannot key HMAC-SHA256")]
pub struct InvalidSecret;

fn keyed(secret: &SecretString) -> Result<HmacSha256, InvalidSecret> {
    HmacSha256::new_from_slice(secret.expose().as_bytes()).map_err(|_| InvalidSecret)
}

impl WebhookVerifier {
    pub fn new(secrets: &[SecretString], tolerance_secs: u64) -> Result<Self, InvalidSecret> {
        Ok(Self {
            keyed: secrets.iter().map(keyed).collect::<Result<_, _>>()?,
            tolerance_secs,
        })
    }

    /// Checks `header` against the raw `body` at Unix time `now`.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = SignatureHeader::parse(header.ok_or(SignatureError::MissingHeader)?)?;
        let authentic = self.keyed.iter().any(|key| {
            let expected = signed_payload_mac(key.clone(), header.timestamp, body);
            header
                .v1
                .iter()
                .any(|candidate| bool::from(expected.ct_eq(candidate)))
        });
        if !authentic {
            return Err(SignatureError::NoMatch);
        }
        let age_secs = now.abs_diff(header.timestamp);
        if age_secs > self.tolerance_secs {
            return Err(SignatureError::OutsideTolerance {
                age_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// HMAC-SHA256 of `"{t}.{body}"`, fed in parts so the body is never copied.
fn signed_payload_mac(mut mac: HmacSha256, timestamp: i64, body: &[u8]) -> [u8; 32] {
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Builds a header the way Stripe does, for the local simulator, the demo and tests.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> Result<String, InvalidSecret> {
    Ok(format!(
        "t={timestamp},v1={}",
        hex::encode(signed_payload_mac(keyed(secret)?, timestamp, body))
    ))
}
