//! The project's EventBridge bus: every notification becomes one event there.

use std::future::Future;
use std::sync::Mutex;

use anyhow::{Context, anyhow};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use shared::notifications::{EVENT_SOURCE, OutboxEntry};

pub trait EventBus {
    /// Puts the entry's event on the bus; an error means it may not be there.
    fn put(&self, entry: &OutboxEntry) -> impl Future<Output = anyhow::Result<()>> + Send;
}

pub struct RealEventBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl RealEventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        Self {
            client,
            bus_name: bus_name.into(),
        }
    }
}

impl EventBus for RealEventBus {
    async fn put(&self, entry: &OutboxEntry) -> anyhow::Result<()> {
        let out = self
            .client
            .put_events()
            .entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(EVENT_SOURCE)
                    .detail_type(&entry.name)
                    .detail(entry.event_detail().to_string())
                    .build(),
            )
            .send()
            .await
            .context("putting the event on the bus")?;
        // PutEvents answers 200 even when an entry is refused; the entry says why.
        if out.failed_entry_count > 0 {
            let failed = out.entries().first();
            return Err(anyhow!(
                "the bus refused the event: {} {}",
                failed.and_then(|e| e.error_code()).unwrap_or("unknown"),
                failed.and_then(|e| e.error_message()).unwrap_or("")
            ));
        }
        Ok(())
    }
}

/// Records what it is given; fails the next `fail_next` puts first.
#[derive(Debug, Default)]
pub struct FakeEventBus {
    pub events: Mutex<Vec<(String, serde_json::Value)>>,
    pub fail_next: Mutex<u32>,
    /// Entries whose put always fails.
    pub poison: Mutex<Vec<String>>,
}

impl FakeEventBus {
    pub fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl EventBus for FakeEventBus {
    async fn put(&self, entry: &OutboxEntry) -> anyhow::Result<()> {
        if self
            .poison
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&entry.id.to_string())
        {
            return Err(anyhow!("the bus refuses this entry"));
        }
        {
            let mut fail = self.fail_next.lock().unwrap_or_else(|e| e.into_inner());
            if *fail > 0 {
                *fail -= 1;
                return Err(anyhow!("the bus is unavailable"));
            }
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((entry.name.clone(), entry.event_detail()));
        Ok(())
    }
}
