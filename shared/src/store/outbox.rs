//! The notifier's port to the table: an outbox entry read consistently, the account's billing
//! address, and the conditional writes that record how far its delivery got.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use super::StoreError;
use crate::ids::AccountId;
use crate::notifications::{DeliveryStatus, EntryError, NotificationId, OutboxEntry};

/// What became of an entry's email, recorded on the entry when it is marked delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    Sent,
    /// Not a notification a person reads: the event is all there is.
    NotForAPerson,
    /// The account has no billing email (no Stripe customer with one yet).
    NoAddress,
    /// This deployment sends no email (no sender address configured).
    Disabled,
}

impl MailOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::NotForAPerson => "not_for_a_person",
            Self::NoAddress => "no_address",
            Self::Disabled => "disabled",
        }
    }
}

/// An entry as read: deliverable, or stored in a shape that can never be delivered.
pub type LoadedEntry = Result<OutboxEntry, EntryError>;

pub trait OutboxStore {
    /// The entry, read consistently; `None` once it is gone (expired).
    fn load(
        &self,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<LoadedEntry>, StoreError>> + Send;

    /// The account's billing email, if it has one.
    fn billing_email(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Records that the bus has the event (the email is still to go).
    fn mark_event_sent(
        &self,
        id: &NotificationId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the entry delivered; `false` if it already was (another invocation won).
    fn mark_delivered(
        &self,
        id: &NotificationId,
        mail: MailOutcome,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Counts a failed attempt on the entry, with a short reason for whoever redrives it.
    fn note_failure(
        &self,
        id: &NotificationId,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One stored entry, as the in-memory store keeps it (raw, so a malformed one can exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredEntry {
    pub name: Option<String>,
    pub account_id: Option<String>,
    pub detail: Option<String>,
    pub status: Option<String>,
    pub event_sent: bool,
    pub mail: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The outbox in memory, for in-process tests of the notifier.
#[derive(Debug, Default)]
pub struct InMemoryOutboxStore {
    entries: Mutex<HashMap<String, StoredEntry>>,
    emails: Mutex<HashMap<String, String>>,
}

impl InMemoryOutboxStore {
    pub fn put(&self, id: &str, entry: StoredEntry) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), entry);
    }

    pub fn set_email(&self, account: &str, email: &str) {
        self.emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_owned(), email.to_owned());
    }

    pub fn entry(&self, id: &str) -> Option<StoredEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

impl OutboxStore for InMemoryOutboxStore {
    async fn load(&self, id: &NotificationId) -> Result<Option<LoadedEntry>, StoreError> {
        Ok(self.entry(id.as_str()).map(|e| {
            OutboxEntry::from_parts(
                id.as_str(),
                e.name.as_deref(),
                e.account_id.as_deref(),
                e.detail.as_deref(),
                e.status.as_deref(),
                e.event_sent,
            )
        }))
    }

    async fn billing_email(&self, account: &AccountId) -> Result<Option<String>, StoreError> {
        Ok(self
            .emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account.as_str())
            .cloned())
    }

    async fn mark_event_sent(&self, id: &NotificationId) -> Result<(), StoreError> {
        if let Some(e) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id.as_str())
        {
            e.event_sent = true;
            e.status = Some(DeliveryStatus::Pending.as_str().into());
        }
        Ok(())
    }

    async fn mark_delivered(
        &self,
        id: &NotificationId,
        mail: MailOutcome,
        _now: i64,
    ) -> Result<bool, StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(id.as_str()) {
            Some(e) if e.status.as_deref() != Some("delivered") => {
                e.status = Some("delivered".into());
                e.mail = Some(mail.as_str().into());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn note_failure(&self, id: &NotificationId, reason: &str) -> Result<(), StoreError> {
        if let Some(e) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id.as_str())
            && e.status.as_deref() != Some("delivered")
        {
            e.attempts += 1;
            e.last_error = Some(reason.to_owned());
            e.status = Some(DeliveryStatus::Pending.as_str().into());
        }
        Ok(())
    }
}
