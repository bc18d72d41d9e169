//! One AWS JSON-protocol call (`awsJson1_0`), signed with SigV4 and sent on a kept-alive
//! connection, without the SDK's request pipeline.
//!
//! The webhook makes one AWS call per event, SQS `SendMessage`. Through the SDK's client that
//! one call cost more CPU than everything else the handler does (its orchestrator, interceptors,
//! type-erased configuration and a byte-at-a-time JSON escaper, measured by `make bench`). Here it
//! is the protocol's few parts: a JSON body, a few headers, AWS's own SigV4 signer (`aws-sigv4`,
//! the crate the SDK signs with) and hyper's pooled client. The SDK still supplies what it is
//! good at, once, at cold start: region, credentials provider and endpoint resolution.
//!
//! Failures the SDK would retry are retried here the same way (transport errors and timeouts,
//! 5xx, throttling), with jittered backoff, within one overall deadline.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::credentials::CachedCredentials;
use crate::retry::full_jitter;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// A retry is not started with less time than this left in the call: it could only time out,
/// and its timeout would hide the error that caused it.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(250);
/// SQS (a query-compatible service) then names errors with their query-protocol codes too, as
/// it does for the SDK, which sends this header.
const QUERY_MODE: &str = "x-amzn-query-mode";
const USER_AGENT: &str = concat!("billing-backend/", env!("CARGO_PKG_VERSION"));

/// Error codes AWS answers when a call may succeed if made again later: the SDK's throttling and
/// transient codes, and two server-error codes that normally come with a 5xx anyway.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalError",
];

/// Timeouts and attempts of one call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    /// For the whole call, retries and waits included.
    pub call_timeout: Duration,
    pub max_attempts: u32,
    /// The first retry waits up to this long, each later one up to twice as long as the last.
    pub backoff_base: Duration,
}

impl Default for CallLimits {
    /// The SDK settings every function uses (see [`super::sdk_config`]) and the SDK's standard
    /// three attempts.
    fn default() -> Self {
        Self {
            connect_timeout: super::CONNECT_TIMEOUT,
            attempt_timeout: super::ATTEMPT_TIMEOUT,
            call_timeout: super::OPERATION_TIMEOUT,
            max_attempts: 3,
            backoff_base: Duration::from_millis(50),
        }
    }
}

/// Where and as whom the calls go.
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    /// The resolved endpoint, e.g. `https://sqs.eu-west-1.amazonaws.com`.
    pub endpoint: Uri,
    pub region: String,
    /// The SigV4 signing name, e.g. `sqs`.
    pub signing_name: &'static str,
    /// The `X-Amz-Target` prefix, e.g. `AmazonSQS`.
    pub target_prefix: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no AWS credentials")]
    Credentials(#[source] anyhow::Error),
    #[error("the request could not be built or signed: {0}")]
    Signing(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request did not reach the service")]
    Transport(#[source] hyper_util::client::legacy::Error),
    #[error("the answer could not be read")]
    Body(#[source] hyper::Error),
    #[error("the service answered {status} {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
}

impl CallError {
    /// Whether the same call may succeed if made again (for a FIFO `SendMessage`, a second
    /// attempt is harmless: its deduplication id collapses it with the first).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::Transport(_) | CallError::Body(_) => true,
            CallError::Credentials(_) | CallError::Signing(_) => false,
            CallError::Service { status, code, .. } => {
                *status >= 500 || *status == 429 || RETRYABLE_CODES.contains(&code.as_str())
            }
        }
    }
}

pub struct AwsJsonClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    target: ServiceTarget,
    credentials: CachedCredentials,
    limits: CallLimits,
}

impl std::fmt::Debug for AwsJsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsJsonClient")
            .field("target", &self.target)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AwsJsonClient {
    pub fn new(
        target: ServiceTarget,
        credentials: CachedCredentials,
        limits: CallLimits,
    ) -> anyhow::Result<Self> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(limits.connect_timeout));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Below the 60 s after which AWS's endpoints close an idle connection.
            .pool_idle_timeout(Duration::from_secs(50))
            .build(tls);
        Ok(Self {
            http,
            target,
            credentials,
            limits,
        })
    }

    /// Calls `operation` with a JSON `body`; the answer's body on a 2xx.
    pub async fn call(&self, operation: &str, body: Bytes) -> Result<Bytes, CallError> {
        let x_amz_target = format!("{}.{operation}", self.target.target_prefix);
        // One timer per attempt, never two: each attempt's limit is cut to what is left of the
        // call's, and no retry starts that could not finish inside it.
        let deadline = tokio::time::Instant::now() + self.limits.call_timeout;
        let mut attempt = 0;
        loop {
            let limit = self
                .limits
                .attempt_timeout
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let outcome = tokio::time::timeout(limit, self.attempt(&x_amz_target, body.clone()))
                .await
                .unwrap_or(Err(CallError::Timeout(limit)));
            let wait = full_jitter(self.limits.backoff_base, attempt);
            match outcome {
                Err(error)
                    if error.is_retryable()
                        && attempt + 1 < self.limits.max_attempts
                        && tokio::time::Instant::now() + wait + MIN_ATTEMPT_TIME < deadline =>
                {
                    tracing::debug!(%operation, attempt, error = %error, "retrying an AWS call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn attempt(&self, x_amz_target: &str, body: Bytes) -> Result<Bytes, CallError> {
        let request = self.signed_request(x_amz_target, body).await?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(CallError::Transport)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(CallError::Body)?.to_bytes();
        if parts.status.is_success() {
            return Ok(body);
        }
        Err(service_error(parts.status, &parts.headers, &body))
    }

    async fn signed_request(
        &self,
        x_amz_target: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let now = SystemTime::now();
        let identity: Identity = self
            .credentials
            .get(now)
            .await
            .map_err(CallError::Credentials)?
            .into();
        let uri = self.target.endpoint.to_string();
        // Host is signed too: the signer takes it from the URI, as hyper does when it sends.
        let signed_headers = [
            (header::CONTENT_TYPE.as_str(), CONTENT_TYPE),
            ("x-amz-target", x_amz_target),
            (QUERY_MODE, "true"),
        ];
        let signable = SignableRequest::new(
            "POST",
            &uri,
            signed_headers.into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| CallError::Signing(e.to_string()))?;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.target.region)
            .name(self.target.signing_name)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CallError::Signing(e.to_string()))?
            .into();
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| CallError::Signing(e.to_string()))?
            .into_parts();

        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.target.endpoint.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header("x-amz-target", x_amz_target)
            .header(QUERY_MODE, HeaderValue::from_static("true"))
            .body(Full::new(body))
            .map_err(|e| CallError::Signing(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// An error answer, read as the SDK reads one: the code from the `x-amzn-errortype` header, else
/// the body's `code` or `__type`, without its namespace (`com.amazonaws.sqs#`) or suffix (`:…`).
fn service_error(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> CallError {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(default)]
        code: Option<String>,
        #[serde(alias = "Message", default)]
        message: String,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let raw = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(parsed.code)
        .or(parsed.kind)
        .unwrap_or_default();
    let code = raw.split(':').next().unwrap_or_default();
    let code = code.rsplit('#').next().unwrap_or_default().trim();
    CallError::Service {
        status: status.as_u16(),
        code: if code.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            code.to_owned()
        },
        message: parsed.message,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// A request as it arrived on the wire.
    #[derive(Debug, Clone)]
    struct Received {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// An HTTP/1.1 server answering each request with the next scripted answer (`None`: close
    /// the connection without answering), recording what it received.
    async fn scripted(
        answers: Vec<Option<(u16, &'static str)>>,
    ) -> (Uri, Arc<Mutex<Vec<Received>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'connections: while let Ok((socket, _)) = listener.accept().await {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut line = String::new();
                    if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                        continue 'connections;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap().to_owned(),
                        parts.next().unwrap().to_owned(),
                    );
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        socket.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (n, v) = h.split_once(':').unwrap();
                        headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; length];
                    socket.read_exact(&mut body).await.unwrap();
                    log.lock().unwrap().push(Received {
                        method,
                        path,
                        headers,
                        body,
                    });
                    match answers.next().flatten() {
                        Some((status, body)) => {
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            socket.get_mut().write_all(answer.as_bytes()).await.unwrap();
                        }
                        None => continue 'connections,
                    }
                }
            }
        });
        (uri, received)
    }

    fn client(endpoint: Uri, session_token: Option<&str>) -> AwsJsonClient {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        );
        let target = ServiceTarget {
            endpoint,
            region: "eu-west-1".into(),
            signing_name: "sqs",
            target_prefix: "AmazonSQS",
        };
        let limits = CallLimits {
            backoff_base: Duration::from_millis(1),
            ..CallLimits::default()
        };
        AwsJsonClient::new(
            target,
            CachedCredentials::new(SharedCredentialsProvider::new(credentials)),
            limits,
        )
        .unwrap()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// SigV4 recomputed from the request as received, written from AWS's specification
    /// ("Create a signed AWS API request", docs.aws.amazon.com/IAM) rather than with the signer
    /// under test: the bytes on the wire must carry the signature of exactly those bytes.
    fn expected_signature(r: &Received, secret: &str, signed_headers: &str, scope: &str) -> String {
        let canonical_headers: String = signed_headers
            .split(';')
            .map(|name| {
                format!(
                    "{name}:{}\n",
                    r.header(name)
                        .unwrap_or_else(|| panic!("{name} was signed but not sent"))
                )
            })
            .collect();
        let canonical_request = format!(
            "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
            r.method,
            r.path,
            hex::encode(Sha256::digest(&r.body))
        );
        let amz_date = r.header("x-amz-date").unwrap();
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut parts = scope.split('/');
        let (date, region, service) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let key = hmac(format!("AWS4{secret}").as_bytes(), date);
        let key = hmac(&key, region);
        let key = hmac(&key, service);
        let key = hmac(&key, "aws4_request");
        hex::encode(hmac(&key, &string_to_sign))
    }

    #[tokio::test]
    async fn what_goes_on_the_wire_is_exactly_what_was_signed() {
        let (endpoint, received) = scripted(vec![Some((200, r#"{"MessageId":"m1"}"#))]).await;
        let client = client(endpoint.clone(), Some("session-token"));
        let body = r#"{"QueueUrl":"q","MessageBody":"{\"a\":1}"}"#;
        let answer = client
            .call("SendMessage", Bytes::from_static(body.as_bytes()))
            .await
            .unwrap();
        assert_eq!(&answer[..], br#"{"MessageId":"m1"}"#);

        let r = received.lock().unwrap()[0].clone();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(r.header("x-amz-target"), Some("AmazonSQS.SendMessage"));
        assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.0"));
        assert_eq!(r.header("host"), endpoint.authority().map(|a| a.as_str()));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));

        let authorization = r.header("authorization").unwrap();
        let fields = authorization.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
        let field = |name: &str| {
            fields
                .split(", ")
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {authorization}"))
        };
        let credential = field("Credential=");
        let (access_key, scope) = credential.split_once('/').unwrap();
        assert_eq!(access_key, "AKIDEXAMPLE");
        assert!(scope.ends_with("/eu-west-1/sqs/aws4_request"), "{scope}");
        let signed_headers = field("SignedHeaders=");
        for required in [
            "content-type",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-target",
        ] {
            assert!(
                signed_headers.split(';').any(|h| h == required),
                "{required} unsigned: {signed_headers}"
            );
        }
        assert_eq!(
            field("Signature="),
            expected_signature(
                &r,
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                signed_headers,
                scope
            )
        );
    }

    #[tokio::test]
    async fn a_server_error_and_a_dropped_connection_are_retried_then_the_call_succeeds() {
        let (endpoint, received) = scripted(vec![
            Some((500, r#"{"__type":"InternalError"}"#)),
            None,
            Some((200, "{}")),
        ])
        .await;
        client(endpoint, None)
            .call("SendMessage", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(received.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_given_up_within_the_call_limit() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut client = client(endpoint, None);
        client.limits.attempt_timeout = Duration::from_secs(2);
        client.limits.call_timeout = Duration::from_secs(5);
        let started = tokio::time::Instant::now();
        let error = client
            .call("SendMessage", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(error, CallError::Timeout(_)), "{error:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "it retried: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_refusal_is_answered_at_once_and_retries_stop_after_three_attempts() {
        let (endpoint, received) = scripted(vec![Some((
            400,
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"no"}"#,
        ))])
        .await;
        let error = client(endpoint, None)
            .call("SendMessage", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::Service { status: 400, .. }),
            "{error:?}"
        );
        assert_eq!(received.lock().unwrap().len(), 1);

        let (endpoint, received) = scripted(vec![Some((503, "")); 5]).await;
        let error = client(endpoint, None)
            .call("SendMessage", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::Service { status: 503, .. }),
            "{error:?}"
        );
        assert_eq!(received.lock().unwrap().len(), 3);
    }

    fn service(status: u16, body: &str) -> CallError {
        service_error(
            StatusCode::from_u16(status).unwrap(),
            &http::HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn an_error_answer_names_its_code_without_the_namespace() {
        match service(
            400,
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
        ) {
            CallError::Service {
                status,
                code,
                message,
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (400, "QueueDoesNotExist", "gone")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_error_type_header_comes_first_and_a_suffix_is_dropped() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("ThrottlingException:http://internal.amazon.com/"),
        );
        let error = service_error(
            StatusCode::BAD_REQUEST,
            &headers,
            br#"{"__type":"com.amazonaws.sqs#Other"}"#,
        );
        assert!(
            matches!(&error, CallError::Service { code, .. } if code == "ThrottlingException"),
            "{error:?}"
        );
        assert!(error.is_retryable());
    }

    #[test]
    fn an_answer_that_is_not_json_is_named_by_its_status() {
        match service(503, "<html>unavailable</html>") {
            CallError::Service { code, .. } => assert_eq!(code, "Service Unavailable"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retried_and_refusals_are_not() {
        assert!(service(400, r#"{"__type":"com.amazonaws.sqs#RequestThrottled"}"#).is_retryable());
        assert!(service(400, r#"{"__type":"ThrottlingException"}"#).is_retryable());
        assert!(service(500, r#"{"__type":"InternalError"}"#).is_retryable());
        assert!(service(503, "").is_retryable());
        assert!(service(429, "").is_retryable());
        assert!(
            !service(400, r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist"}"#).is_retryable()
        );
        assert!(!service(403, r#"{"__type":"AccessDeniedException"}"#).is_retryable());
        assert!(!service(400, r#"{"__type":"InvalidParameterValue"}"#).is_retryable());
        assert!(CallError::Timeout(Duration::from_secs(2)).is_retryable());
        assert!(!CallError::Signing("bad".into()).is_retryable());
    }
}
