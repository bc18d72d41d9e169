"""`POST /v1/accounts/{account_id}/portal` through the HTTP API: a Stripe customer portal session
opened through async-stripe's typed request on the simulator, for the account's customer only."""

import json
import uuid

from conftest import Stripe, http
from test_flows import account_where, subscribe


def portal(env, account: str, body: dict, headers: dict | None = None):
    return http("POST", f"{env['LOCAL_HTTP_ENDPOINT']}/v1/accounts/{account}/portal", json.dumps(body).encode(),
                {"Content-Type": "application/json", **(headers or {})})


def test_a_subscribed_account_gets_a_portal_session_and_others_a_clear_answer(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"

    status, body = portal(env, account, {"return_url": "https://app.example.com/billing"})
    assert (status, body["error"]["code"]) == (404, "no_customer"), body

    subscribe(stripe, account)
    customer = account_where(env, account, lambda a: a["customer_id"], "the customer linked")["customer_id"]
    status, body = portal(env, account, {"return_url": "https://app.example.com/billing"}, {"Idempotency-Key": "visit-1"})
    assert status == 200, body
    assert body["url"].startswith("http://127.0.0.1/portal/bps_")
    # The same visit retried: Stripe replays the first session (the key is derived from the app's).
    again = portal(env, account, {"return_url": "https://app.example.com/billing"}, {"Idempotency-Key": "visit-1"})
    assert again == (200, body)
    session_id = body["url"].rsplit("/", 1)[-1]
    assert customer and session_id

    status, body = portal(env, account, {"return_url": "ftp://app.example.com"})
    assert (status, body["error"]["code"]) == (400, "invalid_return_url"), body
