//! Answers to API Gateway's HTTP API (payload format 2.0).

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};

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
