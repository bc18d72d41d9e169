"""Auto top-up through the whole stack: the API turns it on, twenty uses racing across the
threshold on the usage function's warm instances claim one top-up, the top-up function charges
the saved card off-session once, and Stripe's event grants the credits. A declined card
disarms it and tells the customer; a new card arms it again."""

import concurrent.futures
import json
import urllib.parse
import uuid

import boto3

from conftest import Stripe, eventually, http
from test_flows import account_where
from test_usage import invoke, track


def put_topup(env, account: str, body: dict) -> tuple[int, dict]:
    return http("PUT", f"{env['LOCAL_HTTP_ENDPOINT']}/v1/accounts/{account}/auto-topup",
                json.dumps(body).encode(), {"Content-Type": "application/json"})


def topups(stripe: Stripe, account: str, event_type: str) -> list[dict]:
    """The account's top-up payments Stripe sent `event_type` for (the simulator's event log)."""
    status, page = stripe.call("GET", "/v1/events?" + urllib.parse.urlencode({"type": event_type, "limit": 100}))
    assert status == 200, page
    return [e["data"]["object"] for e in page["data"]
            if e["data"]["object"]["metadata"].get("account_id") == account
            and "topup_seq" in e["data"]["object"]["metadata"]]


def item(env, pk: str, sk: str) -> dict | None:
    ddb = boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return ddb.get_item(TableName=env["TABLE_NAME_BILLING_TABLE"], ConsistentRead=True,
                        Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")


def outbox(env, notification_id: str) -> dict | None:
    return item(env, f"OUTBOX#{notification_id}", "OUTBOX")


def card_applied(env, account: str, card: str) -> None:
    """Waits until the processor has applied the customer's new default card to the account."""
    def check():
        a = item(env, f"ACCOUNT#{account}", "ACCOUNT") or {}
        return a.get("customer_card", {}).get("S") == card
    eventually(check, what=f"the card {card} on the account")


def add_card(stripe: Stripe, env, account: str, customer: str, declines: bool = False) -> str:
    """The customer adds a card in the portal; it becomes the default once the event applies."""
    c = stripe.sim(f"customers/{customer}/payment_method", {"declines": declines})
    card = c["invoice_settings"]["default_payment_method"]
    card_applied(env, account, card)
    return card


def test_twenty_uses_across_the_threshold_make_one_payment_and_a_decline_disarms(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    status, customer = stripe.call("POST", "/v1/customers", {"email": f"{account}@example.com", "metadata[account_id]": account})
    assert status == 200, customer
    # A 1M pack bought through Checkout, and a card saved in the portal.
    status, session = stripe.call("POST", "/v1/checkout/sessions", {
        "mode": "payment", "customer": customer["id"], "client_reference_id": account,
        "line_items[0][price]": stripe.price("credits_1m"), "line_items[0][quantity]": "1",
        "metadata[account_id]": account, "metadata[credit_pack]": "credits_small",
        "payment_intent_data[metadata][account_id]": account,
    })
    assert status == 200, session
    stripe.sim(f"checkout/sessions/{session['id']}/complete")
    add_card(stripe, env, account, customer["id"])
    account_where(env, account, lambda a: a["credits"] == 1_000_000, "the pack")

    status, answer = put_topup(env, account, {"threshold": 600_000, "credit_pack": "credits_small", "monthly_cap": 5_000})
    assert status == 200, answer
    assert answer["auto_topup"]["enabled"] is True

    # 20 uses of 30,000 at once: the free plan's 100,000 included units, then credits
    # 1,000,000 → 500,000, crossing 600,000 once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: invoke(env, track(account, f"r{i}", 30_000)), range(20)))
    assert all(error is None for _, error in answers), answers
    account_where(env, account, lambda a: a["credits"] == 1_500_000, "the top-up's credits")
    paid = topups(stripe, account, "payment_intent.succeeded")
    assert len(paid) == 1, paid
    assert (paid[0]["amount"], paid[0]["metadata"]["topup_seq"], paid[0]["metadata"]["credit_pack"]) == (1000, "1", "credits_small")
    assert len(topups(stripe, account, "payment_intent.created")) == 1

    # The card starts declining (a new default card that declines): the next claim fails,
    # disarms auto top-up, and the customer is told.
    add_card(stripe, env, account, customer["id"], declines=True)
    account_where(env, account, lambda a: a["auto_topup"]["enabled"] and not a["auto_topup"]["in_flight"], "settled")
    invoke(env, track(account, "drop", 1_000_000))
    eventually(lambda: outbox(env, f"credits.topup_failed:{account}:2"), timeout=30, what="the decline's notification")
    a = account_where(env, account, lambda a: a["auto_topup"]["paused_by_decline"], "paused by the decline")
    assert a["credits"] == 500_000 and not a["auto_topup"]["in_flight"]
    invoke(env, track(account, "again", 1_000))
    assert len(topups(stripe, account, "payment_intent.created")) == 2, "no claim while the card is the one that declined"

    # A new card arms it again: the next use below the threshold tops up.
    add_card(stripe, env, account, customer["id"])
    account_where(env, account, lambda a: not a["auto_topup"]["paused_by_decline"], "re-armed by the new card")
    invoke(env, track(account, "after", 1_000))
    account_where(env, account, lambda a: a["credits"] == 1_498_000, "the second top-up's credits")
    assert [p["metadata"]["topup_seq"] for p in topups(stripe, account, "payment_intent.succeeded")] == ["3", "1"]
