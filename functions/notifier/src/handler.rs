//! One stream batch: each outbox entry it announces is read back, put on the bus, emailed if a
//! person should read it, and marked delivered, in that order and at least once.
//!
//! A record that fails is named in the partial-batch answer; the others are still delivered
//! (the entry's own status makes a redelivered record a no-op). Lambda retries from the first
//! failed record and, after the event source's retries, parks the batch's coordinates in the
//! dead-letter queue; the entry itself stays `pending` in the table with its attempt count and
//! last error, ready for a redrive.

use anyhow::Context;
use shared::notifications::{DeliveryStatus, Links, NotificationId, email_for};
use shared::store::dynamodb::notification_id_of_pk;
use shared::store::outbox::{MailOutcome, OutboxStore};
use tracing::{debug, info, instrument, warn};

use crate::bus::EventBus;
use crate::mail::Mailer;
use crate::stream::{BatchResponse, ItemFailure, StreamEvent};

#[derive(Debug, Clone, Default)]
pub struct NotifierConfig {
    pub links: Links,
    /// Off when the deployment names no sender: events still go out, emails do not.
    pub mail_enabled: bool,
}

pub struct Notifier<S, B, M> {
    store: S,
    bus: B,
    mailer: M,
    config: NotifierConfig,
}

/// What one record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered(MailOutcome),
    /// Delivered before (a redelivered record, or another invocation got there first).
    AlreadyDelivered,
    /// The entry is no longer in the table (expired): nothing left to deliver.
    Gone,
    /// Not an outbox entry (the event source's filter keeps these out).
    NotAnEntry,
}

impl<S: OutboxStore, B: EventBus, M: Mailer> Notifier<S, B, M> {
    pub fn new(store: S, bus: B, mailer: M, config: NotifierConfig) -> Self {
        Self {
            store,
            bus,
            mailer,
            config,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    pub fn mailer(&self) -> &M {
        &self.mailer
    }

    pub async fn handle(&self, event: StreamEvent, now: i64) -> BatchResponse {
        let mut response = BatchResponse::default();
        for record in &event.records {
            let Some(id) = record.pk().and_then(notification_id_of_pk) else {
                debug!(event_name = %record.event_name, "skipping a record that is not an outbox entry");
                continue;
            };
            // Boxed: the SDK futures inside are deep enough to overflow the compiler's layout
            // depth once inlined into the runtime's loop.
            match Box::pin(self.deliver(&id, now)).await {
                Ok(outcome) => debug!(notification_id = %id, ?outcome, "record done"),
                Err(e) => {
                    warn!(notification_id = %id, error = %format!("{e:#}"), "delivery failed; the record will be retried");
                    if let Err(note) = self.store.note_failure(&id, &format!("{e:#}")).await {
                        warn!(notification_id = %id, error = %format!("{note:#}"), "could not record the failed attempt");
                    }
                    response.batch_item_failures.push(ItemFailure {
                        item_identifier: record.sequence_number().to_owned(),
                    });
                }
            }
        }
        response
    }

    #[instrument(skip(self, id, now), fields(notification_id = %id))]
    pub async fn deliver(&self, id: &NotificationId, now: i64) -> anyhow::Result<Outcome> {
        let Some(loaded) = self.store.load(id).await? else {
            return Ok(Outcome::Gone);
        };
        let entry = loaded.context("the outbox entry cannot be delivered")?;
        if entry.status == DeliveryStatus::Delivered {
            return Ok(Outcome::AlreadyDelivered);
        }
        let email = if entry.for_a_person() {
            email_for(&entry, &self.config.links)
        } else {
            None
        };
        let wants_mail = email.is_some() && self.config.mail_enabled;

        if !entry.event_sent {
            self.bus.put(&entry).await?;
            if wants_mail {
                // So that a failed email is retried without a second event.
                self.store.mark_event_sent(id).await?;
            }
        }

        let mail = match email {
            None => MailOutcome::NotForAPerson,
            Some(_) if !self.config.mail_enabled => MailOutcome::Disabled,
            Some(email) => match self.store.billing_email(&entry.account).await? {
                None => MailOutcome::NoAddress,
                Some(to) => {
                    self.mailer.send(&to, &email).await?;
                    MailOutcome::Sent
                }
            },
        };
        if !self.store.mark_delivered(id, mail, now).await? {
            return Ok(Outcome::AlreadyDelivered);
        }
        info!(
            name = %entry.name,
            account_id = %entry.account,
            mail = mail.as_str(),
            "notification delivered"
        );
        Ok(Outcome::Delivered(mail))
    }
}

#[cfg(test)]
mod tests;
