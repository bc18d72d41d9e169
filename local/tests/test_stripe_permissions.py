"""The restricted key the README describes can run the product, and nothing more: locally each
function calls Stripe with an `rk_test_` key holding exactly the permissions the README lists for
it, and the simulator answers a call outside them with Stripe's 403 permission error."""

import json
import uuid

from conftest import Stripe, free_port, http
from template import ROOT, Template, load

import stripe_sim


def readme() -> dict[str, set[str]]:
    return stripe_sim.readme_permissions((ROOT / "README.md").read_text())


def test_the_readme_lists_the_permissions_of_every_function_that_holds_the_key():
    holders = {f.logical_id for f in Template(load(), "http://x").functions() if "STRIPE_API_KEY_SECRET_ID" in f.environment}
    listed = readme()
    assert set(listed) == holders
    assert all(listed.values()), listed
    assert listed["CheckoutFunction"] == {"customer_write", "checkout_session_write"}


def test_permissions_are_read_for_gets_and_write_for_the_rest_and_write_implies_read():
    assert stripe_sim.permission_needed("GET", "/v1/customers/cus_1") == "customer_read"
    assert stripe_sim.permission_needed("POST", "/v1/checkout/sessions") == "checkout_session_write"
    assert stripe_sim.permission_needed("POST", "/v1/billing/meter_events") == "billing_meter_event_write"
    assert stripe_sim.permission_needed("GET", "/v1/billing/meters/mtr_1/event_summaries") == "billing_meter_read"
    assert stripe_sim.permission_needed("POST", "/v1/prices") == "plan_write"
    assert stripe_sim.permission_needed("GET", "/v1/balance") is None
    assert stripe_sim.grants({"invoice_write"}, "invoice_read")
    assert not stripe_sim.grants({"invoice_read"}, "invoice_write")
    assert stripe_sim.permissions_of("Customers: Write, Events: Read") == {"customer_write", "event_read"}


def test_a_call_outside_a_restricted_key_is_refused_as_stripe_refuses_it():
    port = free_port()
    sim, server = stripe_sim.serve(port, "http://127.0.0.1:1/unused", ["whsec_x"])
    try:
        key = f"rk_test_api_{uuid.uuid4().hex[:16]}"
        # The API function's row, less nothing: it may open portal sessions, and read no customer.
        sim.restricted_keys = {key: readme()["ApiFunction"]}
        status, body = call(port, key, "GET", "/v1/customers/cus_1")
        assert status == 403
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
        assert message.startswith("The provided key 'rk_test_")
        assert key[-4:] in message and key[8:-4] not in message
        assert message.endswith("on account 'acct_1LocalSimulator0'. Having the 'rak_customer_read' permission would allow this request to continue.")
        # An endpoint no restricted key may call, and a key the account does not have.
        status, body = call(port, key, "GET", "/v1/balance")
        assert status == 403 and "not available for use by restricted keys" in body["error"]["message"]
        status, body = call(port, "rk_test_unknown0000", "POST", "/v1/billing_portal/sessions")
        assert status == 401
    finally:
        server.shutdown()


def call(port: int, key: str, method: str, path: str):
    return http(method, f"http://127.0.0.1:{port}{path}", b"" if method == "POST" else None,
                {"Authorization": f"Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"})


def test_each_function_of_the_stack_calls_stripe_with_its_own_restricted_key(stack):
    env, state = stack
    principals = json.loads((state / "iam-principals.json").read_text())["principals"]
    keys = {}
    for p in principals.values():
        for value in p["secret_values"].values():
            keys[p["function"]] = json.loads(value)["api_key"]
    assert set(keys) == set(readme())
    assert all(k.startswith("rk_test_") for k in keys.values())
    # A checkout goes through the checkout function's key (and its events through the processor's).
    account = f"acct_{uuid.uuid4().hex[:10]}"
    name = keys["CheckoutFunction"].rsplit("_", 1)[0]
    before = Stripe(env).sim("keys").get(name, 0)
    status, body = http("POST", f"{env['LOCAL_HTTP_ENDPOINT']}/v1/accounts/{account}/checkout",
                        json.dumps({"plan": "pro", "success_url": "https://app.example.com/ok",
                                    "cancel_url": "https://app.example.com/back"}).encode(),
                        {"Content-Type": "application/json"})
    assert status == 200, body
    assert Stripe(env).sim("keys")[name] - before == 2  # the customer, then the session
