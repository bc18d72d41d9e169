#!/usr/bin/env python3
"""The demo: Stripe's side of a customer's first days, played against the local stack.

Starts the stack if it is not running (and stops it afterwards), signs realistic Stripe events the
way Stripe does, delivers them to the webhook (one twice, one tampered with, one replayed late,
one signed by a stranger, one from live mode), then shows what was queued and what was refused.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import stripe

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Settings, read_pid  # noqa: E402
from template import ROOT  # noqa: E402

FIXTURES = json.loads((ROOT / "shared" / "tests" / "fixtures" / "stripe-objects.json").read_text())["resources"]
CUSTOMER = "cus_QvDemoAda000001"
ACCOUNT = "acct_demo_ada"


def stripe_object(kind: str, **fields) -> dict:
    """A complete Stripe object of `kind` (Stripe's own fixture shape) with our values."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(fields)
    return obj


def stripe_event(event_id: str, event_type: str, obj: dict, created: int, livemode: bool = False) -> str:
    event = copy.deepcopy(FIXTURES["event"])
    event.update(
        id=event_id, type=event_type, created=created, livemode=livemode,
        api_version="2026-09-30.endive", pending_webhooks=1, data={"object": obj},
    )
    return json.dumps(event, indent=2)  # Stripe delivers pretty-printed JSON


def story(now: int) -> list[tuple[str, str, str]]:
    """(what happens, body, Stripe-Signature header) in delivery order."""
    secret = Settings().webhook_secrets[0]
    sign = lambda body, at=now, key=secret: stripe.WebhookSignature.generate_signature_header(body, key, timestamp=at)  # noqa: E731

    customer = stripe_event("evt_1QvDemo0000001", "customer.created", stripe_object(
        "customer", id=CUSTOMER, email="ada@example.com", name="Ada Lovelace", livemode=False), now - 60)
    checkout = stripe_event("evt_1QvDemo0000002", "checkout.session.completed", stripe_object(
        "checkout.session", id="cs_test_QvDemoCheckout01", customer=CUSTOMER, client_reference_id=ACCOUNT,
        mode="subscription", status="complete", payment_status="paid", subscription="sub_QvDemoPro0001",
        livemode=False), now - 50)
    subscription = stripe_event("evt_1QvDemo0000003", "customer.subscription.created", stripe_object(
        "subscription", id="sub_QvDemoPro0001", customer=CUSTOMER, status="active", livemode=False), now - 40)
    invoice = stripe_event("evt_1QvDemo0000004", "invoice.paid", stripe_object(
        "invoice", id="in_QvDemoInvoice01", customer=CUSTOMER, amount_due=4900, amount_paid=4900,
        amount_remaining=0, status="paid", livemode=False), now - 30)
    live = stripe_event("evt_1QvDemo0000005", "invoice.paid", stripe_object(
        "invoice", id="in_QvDemoLive0001", customer=CUSTOMER, livemode=True), now - 20, livemode=True)

    return [
        ("customer signs up", customer, sign(customer)),
        ("checkout completes", checkout, sign(checkout)),
        ("subscription starts", subscription, sign(subscription)),
        ("first invoice is paid", invoice, sign(invoice)),
        ("Stripe redelivers it", invoice, sign(invoice)),
        ("someone edits the amount", invoice.replace('"amount_paid": 4900', '"amount_paid": 1'), sign(invoice)),
        ("a capture replayed 1 h later", invoice, sign(invoice, at=now - 3600)),
        ("signed by a stranger", invoice, sign(invoice, key="whsec_not_ours")),
        ("a live-mode event", live, sign(live)),
    ]


def deliver(url: str, body: str, signature: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=body.encode(), method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature,
                 "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def read_env(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def play(env: dict) -> None:
    print(f"\nDelivering Stripe events to {env['WEBHOOK_URL']}\n")
    print(f"  {'what happens':<30} {'event':<20} {'type':<30} answer")
    for what, body, signature in story(int(time.time())):
        event = json.loads(body)
        status, answer = deliver(env["WEBHOOK_URL"], body, signature)
        outcome = "queued" if status == 200 else f"refused ({answer['error']['code']})"
        print(f"  {what:<30} {event['id']:<20} {event['type']:<30} {status} {outcome}")

    sqs = boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    url = env["QUEUE_URL_EVENTS_QUEUE"]
    messages = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                       AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages"):
        messages += batch
    print(f"\nThe FIFO queue holds {len(messages)} messages (one per distinct event, in order per customer):\n")
    print(f"  {'group (customer)':<22} {'deduplication id':<20} {'type':<30} payload")
    for m in messages:
        a, attrs = m["Attributes"], m["MessageAttributes"]
        print(f"  {a['MessageGroupId']:<22} {a['MessageDeduplicationId']:<20} "
              f"{attrs['stripe_event_type']['StringValue']:<30} {attrs['payload']['StringValue']} ({len(m['Body'])} bytes)")
    # Return them: the demo only looked.
    for m in messages:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    print("\nWebhook log:", Settings().state / "logs" / "WebhookFunction.log")


def main() -> None:
    settings = Settings()
    stack = [sys.executable, str(ROOT / "local" / "stack.py")]
    started_here = read_pid(settings) is None
    if started_here:
        subprocess.run(stack + ["up"], check=True, stdout=subprocess.DEVNULL)
    try:
        play(read_env(settings.state / "env"))
    finally:
        if started_here:
            subprocess.run(stack + ["down"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
