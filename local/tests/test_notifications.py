"""The outbox delivered from the table's stream: usage writes `credits.low`, the notifier puts it
on the event bus (routed to a local queue) and emails the billing address (read back from SES);
a poison entry is retried, parked in the dead-letter queue, and redriven once fixed."""

import json
import urllib.request
import uuid

import boto3

from conftest import eventually
from test_usage import invoke


def clients(env):
    kw = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return (
        boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], **kw),
        boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], **kw),
    )


def bus_events(sqs, env, seen: list) -> list:
    """Everything published so far (the tap queue drained into `seen`)."""
    while True:
        got = sqs.receive_message(QueueUrl=env["LOCAL_BUS_QUEUE_URL"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return seen
        for m in got:
            seen.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=env["LOCAL_BUS_QUEUE_URL"], ReceiptHandle=m["ReceiptHandle"])


def mail_to(env, address: str) -> list:
    with urllib.request.urlopen(env["LOCAL_SES_MESSAGES_URL"], timeout=10) as r:
        return [m for m in json.loads(r.read()) if address in (m["destinations"] or {}).get("ToAddresses", [])]


def put_account(ddb, env, account: str, email: str) -> None:
    ddb.put_item(TableName=env["TABLE_NAME_BILLING_TABLE"], Item={
        "pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": "ACCOUNT"}, "effective_plan": {"S": "free"},
        "included_units": {"N": "0"}, "credits": {"N": "1000"}, "last_topup": {"N": "1000"}, "email": {"S": email},
    })


def outbox(ddb, env, note_id: str) -> dict:
    return ddb.get_item(
        TableName=env["TABLE_NAME_BILLING_TABLE"], ConsistentRead=True,
        Key={"pk": {"S": f"OUTBOX#{note_id}"}, "sk": {"S": "OUTBOX"}},
    ).get("Item", {})


def test_credits_low_goes_to_the_bus_and_to_the_billing_email_once(stack):
    env, _ = stack
    ddb, sqs = clients(env)
    account = f"acct_{uuid.uuid4().hex[:10]}"
    email = f"billing+{account}@customer.example"
    put_account(ddb, env, account, email)

    answer, error = invoke(env, {"action": "track", "account_id": account, "request_id": "r1", "model": "m", "input_tokens": 900, "output_tokens": 0})
    assert error is None and answer["low_balance"] is True, answer
    note = f"credits.low:{account}:r1"

    seen: list = []
    events = eventually(lambda: [e for e in bus_events(sqs, env, seen) if e["detail"].get("id") == note], what="the bus event")
    assert events[0]["source"] == "billing"
    assert events[0]["detail-type"] == "credits.low"
    assert events[0]["detail"]["credits"] == 100 and events[0]["detail"]["last_topup"] == 1000

    mails = eventually(lambda: mail_to(env, email), what="the email")
    assert mails[0]["subject"] == "Your prepaid credits are running low"
    assert "100 credits left" in mails[0]["body"] and "1,000 credits" in mails[0]["body"]
    assert "https://app.example.com/billing" in mails[0]["body"]
    item = eventually(lambda: (i := outbox(ddb, env, note)).get("status", {}).get("S") == "delivered" and i, what="the delivered mark")
    assert item["mail"]["S"] == "sent"

    # The same request again is a duplicate: no second notification.
    again, _ = invoke(env, {"action": "track", "account_id": account, "request_id": "r1", "model": "m", "input_tokens": 900, "output_tokens": 0})
    assert again["status"] == "duplicate"
    assert len(mail_to(env, email)) == 1
    assert [e for e in bus_events(sqs, env, seen) if e["detail"].get("id") == note] == events


def test_a_poison_entry_is_parked_the_rest_delivered_and_a_redrive_delivers_it(stack):
    env, _ = stack
    ddb, sqs = clients(env)
    table = env["TABLE_NAME_BILLING_TABLE"]
    account = f"acct_{uuid.uuid4().hex[:10]}"
    email = f"ops+{account}@customer.example"
    put_account(ddb, env, account, email)
    good = [f"usage.threshold:{account}:1:{p}" for p in (80, 100)]
    poison = f"usage.blocked:{account}:broken"

    def entry(note_id, detail):
        return {"PutRequest": {"Item": {
            "pk": {"S": f"OUTBOX#{note_id}"}, "sk": {"S": "OUTBOX"}, "id": {"S": note_id},
            "name": {"S": note_id.split(":")[0]}, "account_id": {"S": account},
            "detail": {"S": detail}, "status": {"S": "pending"},
        }}}

    # One write, so the three records reach the stream (and the notifier) in one batch.
    ddb.batch_write_item(RequestItems={table: [
        entry(good[0], json.dumps({"percent": 80, "included_units": 1000})),
        entry(poison, "{not json"),
        entry(good[1], json.dumps({"percent": 100, "included_units": 1000})),
    ]})

    dlq = env["QUEUE_URL_NOTIFIER_DEAD_LETTER_QUEUE"]

    def parked():
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(m["Body"]) for m in got]

    messages = eventually(parked, timeout=90, what="the poison record parked")
    info = messages[0]["DDBStreamBatchInfo"]
    assert messages[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["startSequenceNumber"] and info["streamArn"]

    # The good entries are delivered whether they shared the poison's batch or came in the next
    # read of the stream (the poller reaches them once the poison is parked).
    for note in good:
        eventually(lambda: outbox(ddb, env, note).get("status", {}).get("S") == "delivered", timeout=60, what=note)
    assert len(mail_to(env, email)) == 2
    stuck = outbox(ddb, env, poison)
    assert stuck["status"]["S"] == "pending"
    assert int(stuck["attempts"]["N"]) == 6  # the first attempt and five retries
    assert "detail" in stuck["last_error"]["S"]

    # The redrive: fix the entry and set it to `retry`; the stream brings it back.
    ddb.update_item(
        TableName=table, Key={"pk": {"S": f"OUTBOX#{poison}"}, "sk": {"S": "OUTBOX"}},
        UpdateExpression="SET detail = :d, #s = :retry",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":d": {"S": json.dumps({"plan": "free", "uncovered_units": 7})}, ":retry": {"S": "retry"}},
    )
    eventually(lambda: outbox(ddb, env, poison).get("status", {}).get("S") == "delivered", timeout=30, what="the redriven entry delivered")
    assert len(mail_to(env, email)) == 3
