//! The SQS FIFO queue, reached with one signed `SendMessage` per event (see
//! [`crate::aws::json_rpc`] for why not through the SDK's client).

use std::collections::BTreeMap;

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_sqs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_types::service_config::ServiceConfigKey;
use bytes::Bytes;
use serde::Serialize;

use super::{
    ATTR_EVENT_ID, ATTR_EVENT_TYPE, ATTR_PAYLOAD, ATTRIBUTE_ALLOWANCE, EventQueue, QueuedEvent,
};
use crate::aws::credentials::CachedCredentials;
use crate::aws::json_rpc::{AwsJsonClient, CallLimits, ServiceTarget};

#[derive(Debug)]
pub struct SqsEventQueue {
    client: AwsJsonClient,
    queue_url: String,
    max_message_bytes: usize,
}

impl SqsEventQueue {
    /// The queue at `queue_url`, reached as an SDK client built from `config` would reach it:
    /// the same region, credentials and endpoint (`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL`,
    /// FIPS and dual-stack settings, resolved by the SQS SDK's own endpoint rules).
    pub async fn from_config(
        config: &SdkConfig,
        queue_url: impl Into<String>,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let region = config
            .region()
            .context("no AWS region is configured (AWS_REGION)")?
            .to_string();
        let credentials = config
            .credentials_provider()
            .context("no AWS credentials provider is configured")?;
        let endpoint = endpoint_uri(&resolve_endpoint(config, &region).await?)?;
        let target = ServiceTarget {
            endpoint,
            region,
            signing_name: "sqs",
            target_prefix: "AmazonSQS",
        };
        Ok(Self {
            client: AwsJsonClient::new(
                target,
                CachedCredentials::new(credentials),
                CallLimits::default(),
            )?,
            queue_url: queue_url.into(),
            max_message_bytes,
        })
    }
}

/// The endpoint an SQS SDK client built from `config` would call: the same settings, read the
/// same way (a service-specific endpoint before the global one), through SQS's endpoint rules.
async fn resolve_endpoint(config: &SdkConfig, region: &str) -> anyhow::Result<String> {
    let configured = if config.get_origin("endpoint_url").is_client_config() {
        config.endpoint_url().map(str::to_owned)
    } else {
        let key = ServiceConfigKey::builder()
            .service_id("SQS")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .context("building the SQS service-config key")?;
        config
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| config.endpoint_url().map(str::to_owned))
    };
    let mut params = Params::builder()
        .region(region)
        .use_fips(config.use_fips().unwrap_or(false))
        .use_dual_stack(config.use_dual_stack().unwrap_or(false));
    if let Some(url) = configured {
        params = params.endpoint(url);
    }
    let params = params.build().context("SQS endpoint parameters")?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| anyhow::anyhow!("resolving the SQS endpoint: {e}"))?;
    Ok(endpoint.url().to_owned())
}

/// The endpoint as a request URI, refused at cold start unless it is an absolute http(s) URL
/// (a bare path or a host without a scheme would fail every call). The operation's path `/` is
/// joined to the endpoint's own, as the SDK joins them.
fn endpoint_uri(endpoint: &str) -> anyhow::Result<http::Uri> {
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("the SQS endpoint {endpoint:?} is not a URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        anyhow::bail!("the SQS endpoint {endpoint:?} is not an http(s) URL with a host");
    }
    let path = uri.path();
    let path = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    format!(
        "{}://{authority}{path}",
        uri.scheme_str().unwrap_or("https")
    )
    .parse()
    .with_context(|| format!("the SQS endpoint {endpoint:?} is not a URL"))
}

/// `SendMessage`'s request, in the JSON protocol's shape.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessage<'a> {
    queue_url: &'a str,
    message_body: &'a str,
    message_group_id: &'a str,
    message_deduplication_id: &'a str,
    message_attributes: BTreeMap<&'static str, StringAttribute<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StringAttribute<'a> {
    data_type: &'static str,
    string_value: &'a str,
}

fn string(value: &str) -> StringAttribute<'_> {
    StringAttribute {
        data_type: "String",
        string_value: value,
    }
}

fn send_message_request(queue_url: &str, event: &QueuedEvent) -> anyhow::Result<Vec<u8>> {
    let body = event.body();
    let request = SendMessage {
        queue_url,
        message_body: &body,
        message_group_id: event.group.as_str(),
        // FIFO deduplication: Stripe's redeliveries of one event collapse into one message.
        message_deduplication_id: event.event_id.as_str(),
        message_attributes: BTreeMap::from([
            (ATTR_EVENT_ID, string(event.event_id.as_str())),
            (ATTR_EVENT_TYPE, string(&event.event_type)),
            (ATTR_PAYLOAD, string(event.payload.kind())),
        ]),
    };
    serde_json::to_vec(&request).context("encoding SendMessage")
}

impl EventQueue for SqsEventQueue {
    fn max_inline_body_bytes(&self) -> usize {
        self.max_message_bytes.saturating_sub(ATTRIBUTE_ALLOWANCE)
    }

    async fn enqueue(&self, event: &QueuedEvent) -> anyhow::Result<()> {
        let request = send_message_request(&self.queue_url, event)?;
        self.client
            .call("SendMessage", Bytes::from(request))
            .await
            .with_context(|| format!("sending event {} to SQS", event.event_id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::ids::{StripeEventId, StripeObjectId};
    use crate::queue::EventPayload;

    fn event(payload: EventPayload) -> QueuedEvent {
        QueuedEvent {
            event_id: StripeEventId::parse("evt_1Qv").unwrap(),
            event_type: "invoice.paid".into(),
            group: StripeObjectId::parse("cus_Qv1").unwrap(),
            payload,
        }
    }

    #[test]
    fn send_message_carries_the_body_verbatim_with_group_dedup_and_attributes() {
        let raw = "{\"id\":\"evt_1Qv\",\"note\":\"quotes \\\" and \u{e9}\"}";
        let request = send_message_request(
            "https://q/1/e.fifo",
            &event(EventPayload::Inline(raw.into())),
        )
        .unwrap();
        let request: Value = serde_json::from_slice(&request).unwrap();
        let attribute = |v: &str| json!({"DataType": "String", "StringValue": v});
        assert_eq!(
            request,
            json!({
                "QueueUrl": "https://q/1/e.fifo",
                "MessageBody": raw,
                "MessageGroupId": "cus_Qv1",
                "MessageDeduplicationId": "evt_1Qv",
                "MessageAttributes": {
                    ATTR_EVENT_ID: attribute("evt_1Qv"),
                    ATTR_EVENT_TYPE: attribute("invoice.paid"),
                    ATTR_PAYLOAD: attribute("inline"),
                },
            })
        );
    }

    #[test]
    fn an_endpoint_must_be_an_http_url_with_a_host() {
        for bad in ["/sqs", "localhost:4566", "ftp://host/", "not a url"] {
            assert!(endpoint_uri(bad).is_err(), "{bad}");
        }
        let ok = |e: &str| endpoint_uri(e).unwrap().to_string();
        assert_eq!(
            ok("https://sqs.eu-west-1.amazonaws.com"),
            "https://sqs.eu-west-1.amazonaws.com/"
        );
        assert_eq!(ok("http://127.0.0.1:4566"), "http://127.0.0.1:4566/");
        assert_eq!(
            ok("https://proxy.internal/sqs"),
            "https://proxy.internal/sqs/"
        );
    }

    #[test]
    fn a_reference_names_the_event_to_fetch() {
        let request = send_message_request("u", &event(EventPayload::Reference)).unwrap();
        let request: Value = serde_json::from_slice(&request).unwrap();
        let body: Value = serde_json::from_str(request["MessageBody"].as_str().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"id": "evt_1Qv", "object": "event", "type": "invoice.paid"})
        );
        assert_eq!(
            request["MessageAttributes"][ATTR_PAYLOAD]["StringValue"],
            "reference"
        );
    }
}
