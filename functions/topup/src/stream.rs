//! The table's stream, as the top-up function reads it: the inserted claim's new image, parsed
//! only as far as a payment needs, and the answer that names the record to resume from.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize)]
pub struct StreamRecord {
    pub dynamodb: RecordData,
}

#[derive(Debug, Deserialize)]
pub struct RecordData {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    /// Kept as JSON until read, so that one record of an unexpected shape cannot fail the
    /// whole batch's parse (and block the stream).
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_json::Value>,
}

impl RecordData {
    pub fn claim(&self) -> Option<ClaimImage> {
        serde_json::from_value(self.new_image.clone()?).ok()
    }
}

/// A claim as the usage function wrote it (`TOPUP#{account}#{seq}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimImage {
    pub account_id: S,
    pub seq: N,
    pub pack: S,
    pub amount: N,
    pub customer: S,
    pub card: S,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S {
    #[serde(rename = "S")]
    pub s: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct N {
    #[serde(rename = "N")]
    pub n: String,
}

impl N {
    pub fn get(&self) -> Option<u64> {
        self.n.parse().ok()
    }
}

pub use shared::stream::{BatchResponse, ItemFailure};
