//! Answers to API Gateway's HTTP API (payload format 2.0).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The request's JSON object body (API Gateway may hand it over base64-encoded).
pub fn json_body(request: &ApiGatewayV2httpRequest) -> Result<Map<String, Value>, String> {
    let raw = request.body.as_deref().unwrap_or_default();
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| "the body is not valid base64".to_owned())?
    } else {
        raw.as_bytes().to_vec()
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// The Stripe `Idempotency-Key` for an app's request, `{prefix}:{hash}`: derived from the app's
/// own `Idempotency-Key` header when it sends one, else from `facts` (what the request asks
/// for) and the minute it arrived, so that a retry of the same request makes the same Stripe
/// object while a later visit gets a fresh one. `Err` names a malformed header.
pub fn idempotency_key(
    request: &ApiGatewayV2httpRequest,
    prefix: &str,
    facts: &[&str],
) -> Result<String, String> {
    if let Some(given) = request.headers.get("idempotency-key") {
        let given = given
            .to_str()
            .map_err(|_| "Idempotency-Key must be printable ASCII".to_owned())?;
        if given.is_empty() || given.len() > 200 || !given.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Idempotency-Key must be 1 to 200 printable characters".into());
        }
        let mut parts = facts[..1.min(facts.len())].to_vec();
        parts.push(given);
        return Ok(format!("{prefix}:{}", hash(&parts)));
    }
    let minute = (request.request_context.time_epoch / 60_000).to_string();
    let mut parts = facts.to_vec();
    parts.push(&minute);
    Ok(format!("{prefix}:{}", hash(&parts)))
}

/// 128 bits of SHA-256 over the parts, each terminated (so `["ab","c"]` ≠ `["a","bc"]`).
pub fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A small JSON answer with `status`.
pub fn json_response(status: u16, body: &serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers = headers;
    response.body = Some(Body::Text(body.to_string()));
    response
}

/// Whether `url` is a link safe to hand a customer (an email's links, a return URL Stripe
/// redirects to): `https://` with a host, or `http://` to this machine only (`localhost` or
/// `127.0.0.1`, any port: the local stack), at most 2,048 characters, without credentials,
/// spaces, quotes or angle brackets. `Err` says why not.
pub fn check_link(url: &str) -> Result<(), &'static str> {
    if url.len() > 2048 {
        return Err("is longer than 2,048 characters");
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\'))
    {
        return Err("contains spaces, quotes or brackets");
    }
    let (rest, https) = if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else {
        return Err("must be an https URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials");
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return Err("has an invalid port"),
        None => authority,
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err("has no valid host");
    }
    if !https && host != "localhost" && host != "127.0.0.1" {
        return Err("must be an https URL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_link;

    #[test]
    fn only_https_links_or_this_machines_own_pass() {
        for ok in [
            "https://app.example.com/billing",
            "https://app.example.com:8443/billing?x=1#y",
            "http://localhost:3000/billing",
            "http://127.0.0.1/portal/bps_1",
            "https://invoice.stripe.com/i/acct_1/test_abc",
        ] {
            assert_eq!(check_link(ok), Ok(()), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "ftp://app.example.com",
            "http://app.example.com",
            "http://localhost.evil.com/",
            "http://127.0.0.1@evil.com/",
            "https://user:pass@app.example.com/",
            "https://",
            "https:///path",
            "https://a.example.com/x y",
            "https://a.example.com/\"onclick",
            "https://a.example.com:port/",
        ] {
            assert!(check_link(bad).is_err(), "{bad}");
        }
        assert!(check_link(&format!("https://a.example.com/{}", "x".repeat(2048))).is_err());
    }
}
