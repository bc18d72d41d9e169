//! What the DynamoDB Local tests of the usage function share.

use std::sync::Arc;

use serde_json::Value;
use shared::store::DynamoDbUsageStore;
use usage::handler::UsageHandler;

pub type Handler = UsageHandler<Arc<DynamoDbUsageStore>>;

/// Runs the calls at once, each as an app makes it: a `ContentionError` (the account kept
/// changing until the deadline) is retried with the same request id, which the function makes
/// safe. The totals asserted afterwards would show any call charged twice.
pub async fn run_all(calls: Vec<(Arc<Handler>, Value, i64)>) -> Vec<Value> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(h, payload, now)| {
            tokio::spawn(async move {
                loop {
                    match h.handle(&payload, now).await {
                        Err(e) if e.error_type() == "ContentionError" => continue,
                        other => return other,
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}
