//! Lambda's answer to a DynamoDB stream batch (`ReportBatchItemFailures`): the record to resume
//! from. Shared by the functions that read the billing table's stream.

use serde::Serialize;

/// The stream resumes from the first failed record; an empty list acknowledges the batch.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ItemFailure {
    /// The failed record's `SequenceNumber`.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

impl BatchResponse {
    /// Resume from the record numbered `sequence_number`.
    pub fn resume_from(sequence_number: impl Into<String>) -> Self {
        Self {
            batch_item_failures: vec![ItemFailure {
                item_identifier: sequence_number.into(),
            }],
        }
    }
}
