//! Stripe signature verification against vectors produced by Stripe's own library.
//!
//! Every `v1` below was produced with the Python `stripe` package (16.1.0):
//!
//! ```python
//! stripe.WebhookSignature.generate_signature_header(PAYLOAD, secret, timestamp=1763942400)
//! ```
//!
//! with `secret` = `whsec_test_secret_a` (→ `SIG_A`) and `whsec_test_secret_b` (→ `SIG_B`), and
//! `SIG_EMPTY` for an empty payload under `whsec_test_secret_a`. The same script checked each
//! header with `stripe.WebhookSignature.verify_header`.

use proptest::prelude::*;
use shared::secrets::SecretString;
use shared::stripe::signature::{DEFAULT_TOLERANCE_SECS, MAX_HEADER_LEN, SignatureHeader, sign};
use shared::stripe::{SignatureError, WebhookVerifier};

const PAYLOAD: &str = r#"{"id":"evt_1QvTestVector0001","object":"event","api_version":"2026-09-30.endive","created":1763942400,"data":{"object":{"id":"in_1QvTestInvoice01","object":"invoice","customer":"cus_QvTestCustomer1","amount_due":2000}},"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"invoice.paid"}"#;
const T: i64 = 1_763_942_400;
const SIG_A: &str = "2e171e1f82ec1076da11405cb942b97a49d03bec70e51d1db050e61410ff0657";
const SIG_B: &str = "788f7b76489c461860d074c27ea1a2142eb38cf7f755afb00513af7a9cec2a3d";
const SIG_EMPTY: &str = "2a6545f8e65e2c7f7f78ea3146c06d56df12238bb73c6d95af54d651fa53c160";
const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn verifier(secrets: &[&str]) -> WebhookVerifier {
    let secrets: Vec<_> = secrets.iter().map(|s| SecretString::new(*s)).collect();
    WebhookVerifier::new(&secrets, DEFAULT_TOLERANCE_SECS).unwrap()
}

fn check(secrets: &[&str], header: &str, body: &str, now: i64) -> Result<(), SignatureError> {
    verifier(secrets).verify(Some(header), body.as_bytes(), now)
}

#[test]
fn stripe_library_vectors_verify() {
    assert_eq!(
        check(
            &["whsec_test_secret_a"],
            &format!("t={T},v1={SIG_A}"),
            PAYLOAD,
            T
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &["whsec_test_secret_b"],
            &format!("t={T},v1={SIG_B}"),
            PAYLOAD,
            T
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &["whsec_test_secret_a"],
            &format!("t={T},v1={SIG_EMPTY}"),
            "",
            T
        ),
        Ok(())
    );
}

#[test]
fn our_signer_matches_stripes() {
    let a = SecretString::new("whsec_test_secret_a");
    assert_eq!(
        sign(&a, T, PAYLOAD.as_bytes()).unwrap(),
        format!("t={T},v1={SIG_A}")
    );
    assert_eq!(sign(&a, T, b"").unwrap(), format!("t={T},v1={SIG_EMPTY}"));
}

#[test]
fn rotation_any_secret_any_signature() {
    let both = ["whsec_test_secret_a", "whsec_test_secret_b"];
    // The matching v1 alone, first, and last; the matching secret first and last.
    for header in [
        format!("t={T},v1={SIG_A}"),
        format!("t={T},v1={SIG_A},v1={OTHER}"),
        format!("t={T},v1={OTHER},v1={SIG_A}"),
        format!("t={T},v1={SIG_B}"),
        format!("t={T},v1={OTHER},v1={SIG_B}"),
        format!("t={T},v1={SIG_B},v1={OTHER}"),
    ] {
        assert_eq!(check(&both, &header, PAYLOAD, T), Ok(()), "{header}");
        let reversed = [both[1], both[0]];
        assert_eq!(check(&reversed, &header, PAYLOAD, T), Ok(()), "{header}");
    }
    // Stripe's header during rotation carries one v1 per secret.
    assert_eq!(
        check(
            &["whsec_test_secret_b"],
            &format!("t={T},v1={SIG_A},v1={SIG_B}"),
            PAYLOAD,
            T
        ),
        Ok(())
    );
}

#[test]
fn other_schemes_are_ignored() {
    let header = format!("t={T},v0={OTHER},v1={SIG_A},v2=whatever");
    assert_eq!(check(&["whsec_test_secret_a"], &header, PAYLOAD, T), Ok(()));
    let only_v0 = format!("t={T},v0={SIG_A}");
    assert_eq!(
        check(&["whsec_test_secret_a"], &only_v0, PAYLOAD, T),
        Err(SignatureError::NoV1Signature)
    );
}

#[test]
fn tolerance_is_300_seconds_both_ways() {
    let header = format!("t={T},v1={SIG_A}");
    let at = |now| check(&["whsec_test_secret_a"], &header, PAYLOAD, now);
    for delta in [-300, -299, 0, 299, 300] {
        assert_eq!(at(T + delta), Ok(()), "now = t{delta:+}");
    }
    for delta in [-301, 301, 86_400, -86_400] {
        assert_eq!(
            at(T + delta),
            Err(SignatureError::OutsideTolerance {
                age_secs: delta.unsigned_abs(),
                tolerance_secs: 300
            }),
            "now = t{delta:+}"
        );
    }
}

#[test]
fn tampering_and_wrong_secrets_fail() {
    let header = format!("t={T},v1={SIG_A}");
    let tampered = PAYLOAD.replace("2000", "1");
    assert_eq!(
        check(&["whsec_test_secret_a"], &header, &tampered, T),
        Err(SignatureError::NoMatch)
    );
    assert_eq!(
        check(&["whsec_test_secret_c"], &header, PAYLOAD, T),
        Err(SignatureError::NoMatch)
    );
    // The timestamp is signed too: moving it breaks the signature.
    let moved = format!("t={},v1={SIG_A}", T + 1);
    assert_eq!(
        check(&["whsec_test_secret_a"], &moved, PAYLOAD, T),
        Err(SignatureError::NoMatch)
    );
}

#[test]
fn malformed_headers_are_named() {
    let v = verifier(&["whsec_test_secret_a"]);
    let body = PAYLOAD.as_bytes();
    assert_eq!(v.verify(None, body, T), Err(SignatureError::MissingHeader));
    let cases = [
        (
            "",
            SignatureError::MalformedHeader("an item is not key=value"),
        ),
        (
            "garbage",
            SignatureError::MalformedHeader("an item is not key=value"),
        ),
        (
            &format!("v1={SIG_A}") as &str,
            SignatureError::MalformedHeader("t is missing"),
        ),
        (
            &format!("t=abc,v1={SIG_A}"),
            SignatureError::MalformedHeader("t is not an integer"),
        ),
        (
            &format!("t={T},t={T},v1={SIG_A}"),
            SignatureError::MalformedHeader("t appears twice"),
        ),
        (&format!("t={T}"), SignatureError::NoV1Signature),
        (&format!("t={T},v1=nothex"), SignatureError::NoMatch),
    ];
    for (header, expected) in cases {
        assert_eq!(v.verify(Some(header), body, T), Err(expected), "{header:?}");
    }
    let long = format!("t={T},v1={SIG_A},{}", "v0=x,".repeat(MAX_HEADER_LEN));
    assert_eq!(
        v.verify(Some(&long), body, T),
        Err(SignatureError::MalformedHeader("it is too long"))
    );
}

#[test]
fn header_parse_keeps_every_v1() {
    let parsed = SignatureHeader::parse(&format!("t={T}, v1={SIG_A}, v1={SIG_B}")).unwrap();
    assert_eq!(parsed.timestamp, T);
    assert_eq!(parsed.v1.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_header_or_body_panics(header in ".{0,300}", body in proptest::collection::vec(any::<u8>(), 0..512), now in any::<i64>()) {
        let v = verifier(&["whsec_test_secret_a", "whsec_test_secret_b"]);
        let _ = v.verify(Some(&header), &body, now);
        let _ = SignatureHeader::parse(&header);
    }

    #[test]
    fn structured_headers_never_panic(
        t in any::<i64>(),
        sigs in proptest::collection::vec("[0-9a-f]{0,70}", 0..12),
        extra in "[a-z0-9=,]{0,40}",
        now in any::<i64>(),
    ) {
        let mut header = format!("t={t}");
        for s in &sigs { header.push_str(&format!(",v1={s}")); }
        header.push_str(&extra);
        let _ = verifier(&["whsec_test_secret_a"]).verify(Some(&header), PAYLOAD.as_bytes(), now);
    }

    #[test]
    fn a_valid_signature_verifies_for_any_body(body in proptest::collection::vec(any::<u8>(), 0..2048), skew in -300i64..=300) {
        let secret = SecretString::new("whsec_prop");
        let header = sign(&secret, T, &body).unwrap();
        prop_assert_eq!(WebhookVerifier::new(&[secret], 300).unwrap().verify(Some(&header), &body, T + skew), Ok(()));
    }
}
