//! A DynamoDB stream batch, parsed only as far as the notifier uses it (the record's key and
//! sequence number: the entry itself is read back consistently), and the answer that names the
//! records to retry.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub dynamodb: RecordData,
}

#[derive(Debug, Deserialize)]
pub struct RecordData {
    #[serde(rename = "Keys", default)]
    pub keys: Keys,
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Keys {
    pub pk: Option<StringAttribute>,
}

#[derive(Debug, Deserialize)]
pub struct StringAttribute {
    #[serde(rename = "S")]
    pub s: String,
}

impl StreamRecord {
    pub fn pk(&self) -> Option<&str> {
        self.dynamodb.keys.pk.as_ref().map(|a| a.s.as_str())
    }

    pub fn sequence_number(&self) -> &str {
        &self.dynamodb.sequence_number
    }
}

pub use shared::stream::{BatchResponse, ItemFailure};
