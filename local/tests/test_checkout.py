"""`POST /v1/accounts/{account_id}/checkout` through the HTTP API, on the simulator through
async-stripe's typed requests: the sessions
complete into the events Stripe sends, and the processor makes of them the plan, the credits and
the invoice; retries make one session; an account on the plan gets a 409."""

import json
import uuid

from conftest import Stripe, eventually, http
from test_flows import account_where, api

OK = "https://app.example.com/billing?done"
BACK = "https://app.example.com/billing"


def checkout(env, account: str, body: dict, headers: dict | None = None):
    return http("POST", f"{env['LOCAL_HTTP_ENDPOINT']}/v1/accounts/{account}/checkout", json.dumps(body).encode(),
                {"Content-Type": "application/json", **(headers or {})})


def test_a_plan_and_a_credit_pack_through_checkout_become_the_plan_the_credits_and_an_invoice(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"

    status, body = checkout(env, account, {"plan": "pro", "success_url": OK, "cancel_url": BACK,
                                           "email": f"{account}@example.com"}, {"Idempotency-Key": "upgrade-1"})
    assert status == 200, body
    session_id = body["session_id"]
    # The app retries (a lost answer): the same session, and still one customer.
    again = checkout(env, account, {"plan": "pro", "success_url": OK, "cancel_url": BACK,
                                    "email": f"{account}@example.com"}, {"Idempotency-Key": "upgrade-1"})
    assert again == (200, body)

    status, session = stripe.call("GET", f"/v1/checkout/sessions/{session_id}")
    assert session["mode"] == "subscription" and session["client_reference_id"] == account
    assert session["metadata"] == {"account_id": account, "plan": "pro"}

    # The customer pays: Stripe's events make the account pro, with its customer and email.
    done = stripe.sim(f"checkout/sessions/{session_id}/complete")
    status, sub = stripe.call("GET", f"/v1/subscriptions/{done['subscription']}")
    assert sub["metadata"]["account_id"] == account
    assert sorted(i["price"]["lookup_key"] for i in sub["items"]["data"]) == ["pro_monthly", "pro_overage"]
    a = account_where(env, account, lambda a: a["plan"] == "pro" and a["customer_id"], "the pro plan")
    assert a["customer_id"] == done["customer"]
    assert a["billing_email"] == f"{account}@example.com"

    status, body = checkout(env, account, {"plan": "pro", "success_url": OK, "cancel_url": BACK})
    assert (status, body["error"]["code"]) == (409, "already_on_plan"), body

    # A credit pack: payment mode with an invoice, on the same customer.
    status, body = checkout(env, account, {"credit_pack": "credits_small", "success_url": OK, "cancel_url": BACK})
    assert status == 200, body
    status, session = stripe.call("GET", f"/v1/checkout/sessions/{body['session_id']}")
    assert session["mode"] == "payment" and session["customer"] == a["customer_id"]
    done = stripe.sim(f"checkout/sessions/{body['session_id']}/complete")
    assert done["invoice"], "invoice creation is on"
    account_where(env, account, lambda a: a["credits"] == 1_000_000, "the pack's credits")
    invoices = eventually(lambda: [i for i in api(env, f"/v1/accounts/{account}/invoices")[1]["data"]
                                   if i["id"] == done["invoice"] and i["status"] == "paid"], what="the pack's invoice")
    assert invoices[0]["amount_paid"] == 1000 and invoices[0]["subscription_id"] is None


def test_checkout_refuses_what_it_cannot_sell(stack):
    env, _ = stack
    account = f"acct_{uuid.uuid4().hex[:10]}"
    status, body = checkout(env, account, {"plan": "platinum", "success_url": OK, "cancel_url": BACK})
    assert (status, body["error"]["code"]) == (400, "unknown_plan"), body
    assert "platinum" in body["error"]["message"]
    status, body = checkout(env, account, {"credit_pack": "pack_x", "success_url": OK, "cancel_url": BACK})
    assert (status, body["error"]["code"]) == (400, "unknown_credit_pack"), body
    status, body = checkout(env, account, {"plan": "pro", "success_url": "ftp://x", "cancel_url": BACK})
    assert (status, body["error"]["code"]) == (400, "invalid_success_url"), body


def test_a_request_retried_across_instances_is_one_session(stack):
    """Eight sends of one request at once reach several warm instances of the function: each
    sends Stripe the same body under the same key, so Stripe answers them all with one session."""
    from concurrent.futures import ThreadPoolExecutor

    env, _ = stack
    account = f"acct_{uuid.uuid4().hex[:10]}"
    body = {"credit_pack": "credits_large", "success_url": OK, "cancel_url": BACK}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: checkout(env, account, body, {"Idempotency-Key": "pack-9"}), range(8)))
    assert {a[0] for a in answers} == {200}, answers
    assert len({a[1]["session_id"] for a in answers}) == 1, answers
