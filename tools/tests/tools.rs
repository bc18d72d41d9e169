//! Replay against a fake Stripe and the in-memory queue; redrive against the local SQS.

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use serde_json::json;
use shared::queue::{EventPayload, InMemoryEventQueue};
use shared::stripe::api::FakeStripe;

fn event(id: &str, created: i64, customer: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": "invoice.paid", "created": created, "livemode": false,
        "api_version": "2026-09-30.endive",
        "data": { "object": { "id": format!("in_{id}"), "object": "invoice", "customer": customer } }
    }))
    .unwrap()
}

#[tokio::test]
async fn replay_queues_events_since_oldest_first_and_is_safe_twice() {
    let stripe = FakeStripe::new();
    stripe.put_event("evt_old", event("evt_old", 50, "cus_a"));
    stripe.put_event("evt_1", event("evt_1", 100, "cus_a"));
    stripe.put_event("evt_2", event("evt_2", 200, "cus_b"));
    stripe.put_event("evt_3", event("evt_3", 300, "cus_a"));
    let queue = InMemoryEventQueue::new(200 * 1024);

    let report = tools::replay(&stripe, &queue, 100).await.unwrap();
    assert_eq!((report.listed, report.queued, report.skipped), (3, 3, 0));
    let ids: Vec<_> = queue
        .messages()
        .iter()
        .map(|m| m.event_id.to_string())
        .collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3"]);
    assert_eq!(queue.messages()[0].group.as_str(), "cus_a");
    assert!(matches!(
        queue.messages()[0].payload,
        EventPayload::Inline(_)
    ));

    // A second run sends the same events with the same deduplication ids and groups; what makes
    // it safe is the processor's markers (tested end to end on the local stack), not SQS.
    tools::replay(&stripe, &queue, 100).await.unwrap();
    let again: Vec<_> = queue.messages()[3..]
        .iter()
        .map(|m| (m.event_id.to_string(), m.group.as_str().to_owned()))
        .collect();
    let first: Vec<_> = queue.messages()[..3]
        .iter()
        .map(|m| (m.event_id.to_string(), m.group.as_str().to_owned()))
        .collect();
    assert_eq!(again, first);
}

#[tokio::test]
async fn redrive_moves_dead_letters_back_with_their_ids_and_is_safe_twice() {
    let sqs = testkit::sqs().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let fifo = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let queue = fifo(format!("redrive-main-{nanos}.fifo")).await;
    let dlq = fifo(format!("redrive-dlq-{nanos}.fifo")).await;
    for (i, group) in ["cus_a", "cus_b", "cus_a"].iter().enumerate() {
        sqs.send_message()
            .queue_url(&dlq)
            .message_group_id(*group)
            .message_deduplication_id(format!("evt_{i}"))
            .message_body(format!("body {i}"))
            .message_attributes(
                "payload",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("inline")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    assert_eq!(tools::redrive(&sqs, &dlq, &queue).await.unwrap(), 3);
    assert_eq!(tools::redrive(&sqs, &dlq, &queue).await.unwrap(), 0);

    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            let a = m.attributes.as_ref().unwrap();
            assert_eq!(
                m.message_attributes.as_ref().unwrap()["payload"].string_value(),
                Some("inline")
            );
            (
                a[&MessageSystemAttributeName::MessageGroupId].clone(),
                a[&MessageSystemAttributeName::MessageDeduplicationId].clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("cus_a".into(), "evt_0".into()),
            ("cus_a".into(), "evt_2".into()),
            ("cus_b".into(), "evt_1".into())
        ]
    );
}
