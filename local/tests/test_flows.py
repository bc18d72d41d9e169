"""Stripe flows end to end on the local stack: the simulator's webhooks go through the webhook,
the queue and the processor, and the API shows the result."""

import json
import time
import uuid
from pathlib import Path

import boto3
from conftest import Stripe, eventually, http


def api(env, path):
    return http("GET", env["LOCAL_HTTP_ENDPOINT"] + path)


def account_where(env, account, predicate, what):
    def check():
        status, body = api(env, f"/v1/accounts/{account}")
        return body if status == 200 and predicate(body) else None
    return eventually(check, what=what)


def subscribe(stripe: Stripe, account: str, price: str = "pro_monthly") -> dict:
    status, customer = stripe.call("POST", "/v1/customers", {"email": f"{account}@example.com", "metadata[account_id]": account})
    assert status == 200, customer
    status, session = stripe.call("POST", "/v1/checkout/sessions", {
        "mode": "subscription", "customer": customer["id"], "client_reference_id": account,
        "line_items[0][price]": stripe.price(price), "line_items[0][quantity]": "1",
        "subscription_data[metadata][account_id]": account, "metadata[account_id]": account,
        "success_url": "https://app.example.com/ok", "cancel_url": "https://app.example.com/cancel",
    }, idempotency_key=f"checkout-{account}")
    assert status == 200, session
    return stripe.sim(f"checkout/sessions/{session['id']}/complete")


def test_checkout_subscription_and_paid_invoice_show_on_the_account(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    session = subscribe(stripe, account)
    body = account_where(env, account, lambda b: b["plan"] == "pro", "the pro plan")
    assert body["included_units"] == 5_000_000
    assert body["subscription"]["id"] == session["subscription"]
    assert body["subscription"]["status"] == "active"
    # The invoice's events are applied by concurrent processor instances, in any order: wait for
    # the state they converge to.
    paid = lambda r: r if r[1]["data"] and r[1]["data"][0]["status"] == "paid" else None  # noqa: E731
    status, invoices = eventually(lambda: paid(api(env, f"/v1/accounts/{account}/invoices")), what="a paid invoice")
    assert invoices["data"][0]["amount_paid"] == 4900


def test_idempotency_keys_replay_the_first_answer(stack):
    env, _ = stack
    stripe = Stripe(env)
    first = stripe.call("POST", "/v1/customers", {"email": "a@example.com"}, idempotency_key="same-key")
    again = stripe.call("POST", "/v1/customers", {"email": "a@example.com"}, idempotency_key="same-key")
    assert first == again
    status, err = stripe.call("POST", "/v1/customers", {"email": "b@example.com"}, idempotency_key="same-key")
    assert status == 400 and err["error"]["type"] == "idempotency_error"


def test_a_credit_pack_is_granted_once_and_refunds_claw_back_exactly(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    # Every event delivered three times.
    stripe.sim("delivery", {"duplicate": 2})
    try:
        status, session = stripe.call("POST", "/v1/checkout/sessions", {
            "mode": "payment", "client_reference_id": account, "line_items[0][price]": env["STRIPE_PRICE_CREDITS_1M"], "line_items[0][quantity]": "1",
            "metadata[account_id]": account, "metadata[credit_pack]": "credits_small",
            "payment_intent_data[metadata][account_id]": account,
        })
        assert status == 200, session
        done = stripe.sim(f"checkout/sessions/{session['id']}/complete")
        account_where(env, account, lambda b: b["credits"] == 1_000_000, "the credits")
        assert stripe.call("POST", "/v1/refunds", {"payment_intent": done["payment_intent"], "amount": "400"})[0] == 200
        account_where(env, account, lambda b: b["credits"] == 600_000, "the partial clawback")
        assert stripe.call("POST", "/v1/refunds", {"payment_intent": done["payment_intent"]})[0] == 200
        account_where(env, account, lambda b: b["credits"] == 0, "the full clawback")
        assert stripe.sim("drain")["drained"]
    finally:
        stripe.sim("delivery", {"duplicate": 0})
    assert api(env, f"/v1/accounts/{account}")[1]["credits"] == 0


def test_a_lifecycle_delivered_twice_and_out_of_order_ends_in_stripes_state(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    stripe.sim("delivery", {"duplicate": 1, "reorder": True})
    try:
        session = subscribe(stripe, account)
        sub = session["subscription"]
        stripe.sim("clock/advance", {"seconds": 30 * 86_400})
        failing = stripe.sim(f"subscriptions/{sub}/renew", {"fail": True})
        stripe.sim("clock/advance", {"seconds": 3 * 86_400})
        stripe.sim(f"invoices/{failing['id']}/pay")
        stripe.sim("clock/advance", {"seconds": 86_400})
        assert stripe.call("DELETE", f"/v1/subscriptions/{sub}")[0] == 200
        assert stripe.sim("drain")["drained"]
    finally:
        stripe.sim("delivery", {"duplicate": 0, "reorder": False})
    body = account_where(env, account, lambda b: b["subscription"] and b["subscription"]["status"] == "canceled", "the cancellation")
    assert body["plan"] == "free"
    _, invoices = api(env, f"/v1/accounts/{account}/invoices")
    renewal = next(i for i in invoices["data"] if i["id"] == failing["id"])
    assert renewal["status"] == "paid"
    # Whichever of payment_failed and paid arrived first, the case is not open: a payment_failed
    # delivered after the payment is stale and changes nothing.
    assert renewal["dunning"] is None or renewal["dunning"]["status"] == "paid"


def test_a_large_event_queued_by_reference_is_fetched_through_429s(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    stripe.sim("delivery", {"paused": True})
    try:
        status, customer = stripe.call("POST", "/v1/customers", {"email": f"{account}@example.com", "name": "Ref", "metadata[account_id]": account})
        assert status == 200
        event = next(e for e in stripe.call("GET", "/v1/events?limit=20")[1]["data"] if e["data"]["object"]["id"] == customer["id"])
        stripe.sim("faults", {"method": "GET", "path": f"/v1/events/{event['id']}", "status": 429, "times": 2})
        sqs = boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        attr = lambda v: {"DataType": "String", "StringValue": v}  # noqa: E731
        sqs.send_message(
            QueueUrl=env["QUEUE_URL_EVENTS_QUEUE"], MessageGroupId=customer["id"], MessageDeduplicationId=event["id"],
            MessageBody=json.dumps({"id": event["id"], "object": "event", "type": event["type"]}),
            MessageAttributes={"stripe_event_id": attr(event["id"]), "stripe_event_type": attr(event["type"]), "payload": attr("reference")},
        )
        body = account_where(env, account, lambda b: b["customer_id"] == customer["id"], "the fetched customer event")
        assert body["account_id"] == account
        faults = stripe.sim("faults", {"method": "GET", "path": "/nothing", "times": 0})["faults"]
        assert all(f["times"] == 0 for f in faults if f["path"].startswith("/v1/events/"))
    finally:
        stripe.sim("delivery", {"paused": False})


def test_a_poison_message_is_dead_lettered_and_its_neighbours_applied(stack):
    env, _ = stack
    sqs = boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    poison_id = f"poison-{uuid.uuid4().hex[:8]}"
    sqs.send_message(QueueUrl=env["QUEUE_URL_EVENTS_QUEUE"], MessageGroupId="cus_poison", MessageDeduplicationId=poison_id,
                     MessageBody="{ this is not an event")
    subscribe(stripe, account)
    account_where(env, account, lambda b: b["plan"] == "pro", "the neighbour's subscription")

    def in_dlq():
        got = sqs.receive_message(QueueUrl=env["QUEUE_URL_EVENTS_DEAD_LETTER_QUEUE"], MaxNumberOfMessages=10,
                                  AttributeNames=["All"], VisibilityTimeout=0).get("Messages", [])
        return [m for m in got if m["Attributes"].get("MessageDeduplicationId") == poison_id]
    dead = eventually(in_dlq, timeout=60, what="the poison message in the dead-letter queue")
    assert dead[0]["Body"] == "{ this is not an event"
    assert int(dead[0]["Attributes"]["ApproximateReceiveCount"]) >= 5


def test_replay_requeues_stripes_events_and_changes_nothing_twice(stack):
    import os
    import subprocess

    from template import ROOT

    env, state = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    subscribe(stripe, account)
    before = account_where(env, account, lambda b: b["plan"] == "pro", "the subscription")
    assert stripe.sim("drain")["drained"]
    ours = [e["id"] for e in stripe.call("GET", "/v1/events?limit=100")[1]["data"]
            if e["data"]["object"].get("metadata", {}).get("account_id") == account]
    assert ours
    binary = Path(os.environ.get("LOCAL_BIN_DIR", ROOT / "target" / "debug")) / "replay"
    run_env = {
        **os.environ, "AWS_ENDPOINT_URL": env["LOCAL_AWS_ENDPOINT"], "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "EVENTS_QUEUE_URL": env["QUEUE_URL_EVENTS_QUEUE"], "STRIPE_API_KEY": env["STRIPE_API_KEY"],
        "STRIPE_API_BASE": env["LOCAL_STRIPE_ENDPOINT"], "LOG_FORMAT": "text",
    }
    for _ in range(2):
        out = subprocess.run([str(binary), "--since", "0"], env=run_env, check=True, capture_output=True, text=True, timeout=60)
        assert "queued" in out.stdout and "skipped 0" in out.stdout, out.stdout
    # Every replayed event of this account reached the processor again and changed nothing:
    # its marker made it a duplicate (SQS deduplication is not what holds here).
    for event_id in ours:
        eventually(lambda: processor_saw(state, event_id, "duplicate"), what=f"{event_id} replayed as a duplicate")
    assert api(env, f"/v1/accounts/{account}")[1] == before


def test_the_same_event_re_signed_is_applied_once(stack):
    import stripe as stripe_lib

    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    stripe.sim("delivery", {"paused": True})
    try:
        status, session = stripe.call("POST", "/v1/checkout/sessions", {
            "mode": "payment", "client_reference_id": account, "line_items[0][price]": env["STRIPE_PRICE_CREDITS_1M"], "line_items[0][quantity]": "1",
            "metadata[account_id]": account, "metadata[credit_pack]": "credits_small"})
        assert status == 200
        stripe.sim(f"checkout/sessions/{session['id']}/complete")
        event = next(e for e in stripe.call("GET", "/v1/events?limit=20")[1]["data"]
                     if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == session["id"])
        body = json.dumps(event, indent=2)
        now = int(time.time())
        # Stripe's retries re-sign the same event at a new time: new signatures, one event.
        for t in (now - 2, now - 1, now):
            header = stripe_lib.WebhookSignature.generate_signature_header(body, "whsec_new_local", timestamp=t)
            status, _ = http("POST", env["WEBHOOK_URL"], body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"})
            assert status == 200
    finally:
        stripe.sim("delivery", {"paused": False})
    assert stripe.sim("drain")["drained"]
    account_where(env, account, lambda b: b["credits"] == 1_000_000, "the credits")
    time.sleep(2)
    assert api(env, f"/v1/accounts/{account}")[1]["credits"] == 1_000_000


def processor_saw(state: Path, event_id: str, outcome: str) -> bool:
    """Whether the processor logged `event_id` with `outcome` (its text log in the stack's state)."""
    log = state / "logs" / "ProcessorFunction.log"
    return any(f"event_id={event_id} " in line and f"outcome=\"{outcome}\"" in line for line in log.read_text(errors="replace").splitlines())


def test_a_redelivery_after_the_deduplication_window_is_applied_once(stack):
    """SQS forgets a deduplication id after 5 minutes (moto as soon as the message is deleted),
    and Stripe retries for days: the guarantee is the processor's marker, end to end."""
    env, state = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    status, session = stripe.call("POST", "/v1/checkout/sessions", {
        "mode": "payment", "client_reference_id": account, "line_items[0][price]": env["STRIPE_PRICE_CREDITS_1M"], "line_items[0][quantity]": "1",
        "metadata[account_id]": account, "metadata[credit_pack]": "credits_small",
        "payment_intent_data[metadata][account_id]": account,
    })
    assert status == 200, session
    stripe.sim(f"checkout/sessions/{session['id']}/complete")
    account_where(env, account, lambda b: b["credits"] == 1_000_000, "the credits")
    events = stripe.call("GET", "/v1/events?limit=50")[1]["data"]
    grant = next(e for e in events if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == session["id"])
    eventually(lambda: processor_saw(state, grant["id"], "applied"), what="the grant applied")

    # The same event, queued again as SQS would take it once its deduplication window is over.
    sqs = boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    attr = lambda v: {"DataType": "String", "StringValue": v}  # noqa: E731
    sqs.send_message(
        QueueUrl=env["QUEUE_URL_EVENTS_QUEUE"], MessageGroupId=grant["data"]["object"].get("customer") or session["id"],
        MessageDeduplicationId=f"{grant['id']}-after-window", MessageBody=json.dumps(grant),
        MessageAttributes={"stripe_event_id": attr(grant["id"]), "stripe_event_type": attr(grant["type"]), "payload": attr("inline")},
    )
    eventually(lambda: processor_saw(state, grant["id"], "duplicate"), what="the redelivery seen as a duplicate")
    assert api(env, f"/v1/accounts/{account}")[1]["credits"] == 1_000_000


def test_a_customer_created_by_checkout_is_parked_then_named_on_the_account(stack):
    """Stripe's order: `customer.created` (no metadata, so no account) before the session that
    links it. The event is parked, then applied by the link: the account shows the email."""
    env, state = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    status, session = stripe.call("POST", "/v1/checkout/sessions", {
        "mode": "payment", "client_reference_id": account, "line_items[0][price]": env["STRIPE_PRICE_CREDITS_1M"], "line_items[0][quantity]": "1",
        "customer_email": f"{account}@example.com",
        "metadata[account_id]": account, "metadata[credit_pack]": "credits_small",
        "payment_intent_data[metadata][account_id]": account,
    })
    assert status == 200, session
    done = stripe.sim(f"checkout/sessions/{session['id']}/complete")
    body = account_where(env, account, lambda b: b["credits"] == 1_000_000 and b.get("billing_email"), "the account with its email")
    assert body["customer_id"] == done["customer"]
    assert body["billing_email"] == f"{account}@example.com"
    created = next(e for e in stripe.call("GET", "/v1/events?limit=50")[1]["data"]
                   if e["type"] == "customer.created" and e["data"]["object"]["id"] == done["customer"])
    eventually(lambda: processor_saw(state, created["id"], "applied"), what="the parked customer.created applied")


def test_a_failure_and_a_write_off_in_one_second_leave_no_open_case_in_either_order(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    session = subscribe(stripe, account)
    account_where(env, account, lambda b: b["plan"] == "pro", "the subscription")
    stripe.sim("delivery", {"reorder": True, "duplicate": 1, "paused": True})
    try:
        invoice = stripe.sim(f"subscriptions/{session['subscription']}/renew", {"fail": True})
        status, closed = stripe.call("POST", f"/v1/invoices/{invoice['id']}/mark_uncollectible")
        assert status == 200 and closed["status"] == "uncollectible", closed
    finally:
        stripe.sim("delivery", {"reorder": False, "duplicate": 0, "paused": False})
    assert stripe.sim("drain")["drained"]

    def settled():
        _, body = api(env, f"/v1/accounts/{account}/invoices")
        inv = next((i for i in body["data"] if i["id"] == invoice["id"]), None)
        return inv if inv and inv["status"] == "uncollectible" else None
    inv = eventually(settled, what="the invoice written off")
    assert (inv.get("dunning") or {}).get("status") in (None, "uncollectible"), inv
