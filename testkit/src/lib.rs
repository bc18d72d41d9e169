//! Test support, used only as a dev-dependency.
//!
//! `make test` runs the suite under `local/with_aws.py`, which starts moto (SQS, Secrets Manager,
//! SES, EventBridge) and DynamoDB Local on free ports and exports:
//! - `LOCAL_AWS_ENDPOINT`: moto;
//! - `LOCAL_DYNAMODB_ENDPOINT`: DynamoDB Local, which keeps DynamoDB's transaction semantics under
//!   concurrency (every money and ordering test runs there, never on moto);
//! - `LOCAL_BILLING_TABLE_SCHEMA`: `BillingTable`'s keys, attributes and indexes, as template.yaml
//!   declares them, so each test's private table has the shape that deploys.
//!
//! Helpers panic with a clear message: a test without its local endpoints cannot run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with `make test`, which starts the local AWS endpoints")
    })
}

/// SDK configuration for a local endpoint: fixed region and test credentials, so nothing is read
/// from the developer's own AWS profile.
pub async fn sdk_config_for(endpoint_url: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint_url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .load()
        .await
}

/// moto: SQS, Secrets Manager, SES, EventBridge.
pub fn aws_endpoint() -> String {
    env("LOCAL_AWS_ENDPOINT")
}

/// DynamoDB Local.
pub fn dynamodb_endpoint() -> String {
    env("LOCAL_DYNAMODB_ENDPOINT")
}

pub async fn aws_config() -> SdkConfig {
    sdk_config_for(&aws_endpoint()).await
}

pub async fn dynamodb_config() -> SdkConfig {
    sdk_config_for(&dynamodb_endpoint()).await
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_config().await)
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&dynamodb_config().await)
}

/// A name no other test (or earlier run) uses: `{prefix}-{nanoseconds}`, within SQS's and
/// DynamoDB's name rules.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    format!("{prefix}-{nanos}")
}

/// Creates a private table shaped like template.yaml's `BillingTable` and returns its name.
pub async fn billing_table(client: &aws_sdk_dynamodb::Client, test: &str) -> String {
    let schema: Value = serde_json::from_str(&env("LOCAL_BILLING_TABLE_SCHEMA"))
        .expect("LOCAL_BILLING_TABLE_SCHEMA is JSON");
    let name = unique_name(test);
    let mut create = client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            array(&schema, "AttributeDefinitions")
                .iter()
                .map(|a| {
                    AttributeDefinition::builder()
                        .attribute_name(text(a, "AttributeName"))
                        .attribute_type(ScalarAttributeType::from(text(a, "AttributeType")))
                        .build()
                        .expect("complete attribute definition")
                })
                .collect(),
        ))
        .set_key_schema(Some(key_schema(&schema["KeySchema"])));
    for index in array(&schema, "GlobalSecondaryIndexes") {
        let projection = &index["Projection"];
        let non_key = projection["NonKeyAttributes"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        });
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(text(index, "IndexName"))
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(text(projection, "ProjectionType")))
                        .set_non_key_attributes(non_key)
                        .build(),
                )
                .build()
                .expect("complete index"),
        );
    }
    if let Some(view) = schema["StreamSpecification"]["StreamViewType"].as_str() {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .expect("complete stream specification"),
        );
    }
    create.send().await.expect("create the test table");
    name
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("table schema: {key} missing in {v}"))
}

fn key_schema(v: &Value) -> Vec<KeySchemaElement> {
    v.as_array()
        .expect("a KeySchema list")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(text(k, "AttributeName"))
                .key_type(KeyType::from(text(k, "KeyType")))
                .build()
                .expect("complete key")
        })
        .collect()
}

/// Counts DynamoDB requests by operation (from the `X-Amz-Target` header): round trips are
/// asserted exactly, since counts do not drift the way timings do.
#[derive(Debug, Clone, Default)]
pub struct CountRequests(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl aws_sdk_dynamodb::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?")
            .trim_start_matches("DynamoDB_20120810.")
            .to_owned();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(target);
        Ok(())
    }
}

impl CountRequests {
    /// The operations sent since the last `take`, in order.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A DynamoDB client on the local endpoint whose requests this counts.
    pub async fn client(&self) -> aws_sdk_dynamodb::Client {
        let sdk = dynamodb_config().await;
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(self.clone())
                .build(),
        )
    }
}

/// Writes an account item as the processor leaves it (`ACCOUNT#{account}` / `ACCOUNT`): its
/// plan, the plan's allowance, and any other attributes given (`credits`, `customer_id`,
/// `sub_status`, the period...).
pub async fn put_account(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    account: &str,
    plan: &str,
    included_units: u64,
    more: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut item = std::collections::HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("ACCOUNT#{account}")),
        ),
        ("sk".to_owned(), AttributeValue::S("ACCOUNT".into())),
        ("effective_plan".to_owned(), AttributeValue::S(plan.into())),
        (
            "included_units".to_owned(),
            AttributeValue::N(included_units.to_string()),
        ),
    ]);
    item.extend(more.into_iter().map(|(k, v)| (k.to_owned(), v)));
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("putting an account item");
}

/// A TCP proxy in front of an HTTP endpoint that counts the requests passing through it: round
/// trips, counted exactly, whatever client makes them.
pub struct CountingProxy {
    url: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    /// Starts forwarding to `upstream` (`http://host:port`) on a free local port.
    pub async fn start(upstream: &str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;

        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the counting proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        forward(client, server, counter).await;
                    }
                });
            }
        });
        Self { url, requests }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies both ways; counts request lines (`… HTTP/1.1\r\n` at the start of a request) in the
/// client's stream. A JSON body cannot hold a raw CR LF, so only request lines match.
async fn forward(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MARK: &[u8] = b" HTTP/1.1\r\n";
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous read, so a mark split across two reads is still seen once.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut carry);
            window.extend_from_slice(&buf[..n]);
            let found = window.windows(MARK.len()).filter(|w| *w == MARK).count();
            requests.fetch_add(found, std::sync::atomic::Ordering::SeqCst);
            carry = window[window.len().saturating_sub(MARK.len() - 1)..].to_vec();
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
