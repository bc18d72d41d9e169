//! The notifier's reads and writes of outbox entries (`OUTBOX#{id}` / `OUTBOX`, written by the
//! usage function's commits) and of the account's billing email.
//!
//! Every write but the last leaves `status` = `pending`: the stream feeds the notifier new
//! entries and entries an operator sets to `retry`, so the notifier's own bookkeeping never
//! triggers another delivery.

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoDbBillingStore;
use super::item::{Item, account_key, get_bool, get_s, key, n, s};
use super::metering::written;
use crate::ids::AccountId;
use crate::notifications::{NotificationId, OutboxEntry};
use crate::store::StoreError;
use crate::store::outbox::{LoadedEntry, MailOutcome, OutboxStore};

#[derive(Debug, Clone)]
pub struct DynamoDbOutboxStore {
    store: DynamoDbBillingStore,
}

impl DynamoDbOutboxStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            store: DynamoDbBillingStore::new(client, table),
        }
    }
}

impl DynamoDbOutboxStore {
    /// Updates an entry that exists and is not delivered yet; `false` if it is gone or
    /// delivered (nothing written).
    async fn update_pending(
        &self,
        id: &NotificationId,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
        what: &'static str,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(outbox_key(id)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk) AND #status <> :delivered")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":delivered", s("delivered"));
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        written(
            update.send().await,
            |e| e.is_conditional_check_failed_exception(),
            what,
        )
    }
}

fn outbox_key(id: &NotificationId) -> Item {
    key(format!("OUTBOX#{id}"), "OUTBOX")
}

/// The stream record's key names the entry: `OUTBOX#{id}`.
pub fn notification_id_of_pk(pk: &str) -> Option<NotificationId> {
    NotificationId::parse(pk.strip_prefix("OUTBOX#")?).ok()
}

impl OutboxStore for DynamoDbOutboxStore {
    async fn load(&self, id: &NotificationId) -> Result<Option<LoadedEntry>, StoreError> {
        let item = self.store.get(outbox_key(id)).await?;
        Ok(item.map(|i| {
            OutboxEntry::from_parts(
                id.as_str(),
                get_s(&i, "name").as_deref(),
                get_s(&i, "account_id").as_deref(),
                get_s(&i, "detail").as_deref(),
                get_s(&i, "status").as_deref(),
                get_bool(&i, "event_sent").unwrap_or(false),
            )
        }))
    }

    async fn billing_email(&self, account: &AccountId) -> Result<Option<String>, StoreError> {
        let out = self
            .store
            .client
            .get_item()
            .table_name(&self.store.table)
            .set_key(Some(account_key(account)))
            .projection_expression("email")
            .send()
            .await
            .map_err(|e| {
                StoreError::Retryable(anyhow::Error::new(e).context("reading the billing email"))
            })?;
        Ok(out
            .item
            .and_then(|i| get_s(&i, "email"))
            .filter(|e| !e.is_empty()))
    }

    async fn mark_event_sent(&self, id: &NotificationId) -> Result<(), StoreError> {
        self.update_pending(
            id,
            "SET event_sent = :yes, #status = :pending",
            vec![
                (":yes", AttributeValue::Bool(true)),
                (":pending", s("pending")),
            ],
            "recording the event as sent",
        )
        .await
        .map(|_| ())
    }

    async fn mark_delivered(
        &self,
        id: &NotificationId,
        mail: MailOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.update_pending(
            id,
            "SET #status = :delivered, mail = :mail, delivered_at = :now",
            vec![(":mail", s(mail.as_str())), (":now", n(now))],
            "marking a notification delivered",
        )
        .await
    }

    async fn note_failure(&self, id: &NotificationId, reason: &str) -> Result<(), StoreError> {
        let reason: String = reason.chars().take(300).collect();
        self.update_pending(
            id,
            "SET #status = :pending, last_error = :why ADD attempts :one",
            vec![
                (":pending", s("pending")),
                (":why", s(reason)),
                (":one", n(1)),
            ],
            "recording a failed delivery",
        )
        .await
        .map(|_| ())
    }
}
