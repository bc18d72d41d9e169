"""The local events queue keeps SQS FIFO's ordering promise: while a message of a group is in
flight or waiting for its retry, no later message of that group is delivered, however many
pollers receive from the queue at once (Lambda runs several).

SQS's FIFO delivery logic: "When messages that belong to a particular message group ID are
invisible, no other consumer can process messages with the same message group ID."
(Amazon SQS Developer Guide, "FIFO queue delivery logic")."""

import json
import threading
import time

import boto3
import pytest

from stack import SqsPoller
from template import SqsSource
from with_aws import free_port, start_moto
from processes import stop

GROUPS = 8
FOLLOWERS = 3  # later messages in each group, after the one that fails at first
FAILS = 2  # receives of each group's first message that fail before it goes through


@pytest.fixture
def sqs(tmp_path):
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = start_moto(port, log)
        try:
            yield boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        finally:
            stop(proc)


class Processor:
    """Applies messages as the processor does: in a batch, a group's first failure fails the rest
    of that group. Records, per group, the order in which messages were applied and whether a
    later message was ever delivered while an earlier one of its group was still unapplied."""

    class fn:
        logical_id = "ProcessorFunction"

    def __init__(self):
        self.lock = threading.Lock()
        self.receives: dict[str, int] = {}
        self.applied: dict[str, list[int]] = {}
        self.out_of_order: list[str] = []
        self.done = threading.Event()

    def invoke(self, payload: bytes) -> bytes:
        failures, failed_groups = [], set()
        expected: dict[str, int] = {}  # per group, the next message it may deliver in this batch
        for record in json.loads(payload)["Records"]:
            body = json.loads(record["body"])
            group, seq = body["group"], body["seq"]
            with self.lock:
                applied = self.applied.setdefault(group, [])
                # A batch may hold several messages of a group, in order; a message whose
                # predecessor is neither applied nor before it in this batch came too early.
                if seq != expected.setdefault(group, len(applied)):
                    self.out_of_order.append(f"{group}#{seq} delivered after {applied}")
                expected[group] = seq + 1
                self.receives[f"{group}#{seq}"] = self.receives.get(f"{group}#{seq}", 0) + 1
                fails = seq == 0 and self.receives[f"{group}#{seq}"] <= FAILS
                if group in failed_groups or fails:
                    failed_groups.add(group)
                    failures.append({"itemIdentifier": record["messageId"]})
                    continue
                applied.append(seq)
                if sum(len(a) for a in self.applied.values()) == GROUPS * (1 + FOLLOWERS):
                    self.done.set()
            time.sleep(0.01)  # the work of applying it, so that pollers overlap
        return json.dumps({"batchItemFailures": failures}).encode()


def test_no_later_message_of_a_group_is_delivered_while_an_earlier_one_waits_for_its_retry(sqs):
    dlq = sqs.create_queue(QueueName="dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    url = sqs.create_queue(QueueName="events.fifo", Attributes={
        "FifoQueue": "true", "VisibilityTimeout": "360",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq.fifo", "maxReceiveCount": 5}),
    })["QueueUrl"]
    for seq in range(1 + FOLLOWERS):
        for g in range(GROUPS):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"group": f"g{g}", "seq": seq}),
                             MessageGroupId=f"g{g}", MessageDeduplicationId=f"g{g}-{seq}")

    processor, stopping = Processor(), threading.Event()
    source = SqsSource(queue="EventsQueue", batch_size=2, report_batch_item_failures=True)
    pollers = [SqsPoller(sqs, url, "arn:aws:sqs:us-east-1:123456789012:events.fifo", processor, source, stopping)
               for _ in range(4)]
    for p in pollers:
        p.retry_seconds = 1
        threading.Thread(target=p.run, daemon=True).start()
    try:
        assert processor.done.wait(120), f"not every message was applied: {processor.applied}"
    finally:
        stopping.set()

    assert processor.out_of_order == []
    assert processor.applied == {f"g{g}": list(range(1 + FOLLOWERS)) for g in range(GROUPS)}
    # Each group's first message went through on its third receive; nothing reached the DLQ.
    assert all(processor.receives[f"g{g}#0"] == FAILS + 1 for g in range(GROUPS))
    assert sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages", []) == []
