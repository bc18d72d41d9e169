"""Overage from the usage function reaches the simulator's meter through the reporter
(async-stripe's typed meter-event request), once, and the meter's total equals the local one."""

import json
import time
import urllib.parse
import uuid
from datetime import datetime, timezone

from conftest import Stripe, eventually, http
from event_sources import scheduled_event
from test_flows import account_where, subscribe
from test_usage import invoke


def fire(env, function: str, at: int) -> tuple[dict, str | None]:
    """Fires a scheduled function (the Invoke API) with its event's `time` set to `at`."""
    import urllib.request

    url = f"{env['LOCAL_LAMBDA_ENDPOINT']}/2015-03-31/functions/{function}/invocations"
    event = scheduled_event(function, datetime.fromtimestamp(at, timezone.utc))
    req = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read()), r.headers.get("X-Amz-Function-Error")


def report_now(env) -> tuple[dict, str | None]:
    """Fires the reporter as its schedule would (the Invoke API, a scheduled event)."""
    return fire(env, "ReporterFunction", int(time.time()))


def test_overage_reaches_the_meter_once(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    subscribe(stripe, account)
    body = account_where(env, account, lambda a: a["plan"] == "pro" and a["customer_id"], "the subscription applied")
    customer = body["customer_id"]
    # Pro includes 5,000,000 units: the rest is overage.
    track = {"action": "track", "account_id": account, "model": "unlisted-model", "output_tokens": 0}
    invoke(env, {**track, "request_id": "big", "input_tokens": 5_000_100})
    invoke(env, {**track, "request_id": "more", "input_tokens": 23})

    answer, error = report_now(env)
    assert error is None, answer
    assert answer["confirmed"] >= 1
    again, error = report_now(env)
    assert error is None and again["sent"] == 0, again

    now = int(time.time())
    start, end = now - now % 60 - 3600, now - now % 60 + 3600
    query = urllib.parse.urlencode({"customer": customer, "start_time": start, "end_time": end})
    status, summaries = stripe.call("GET", f"/v1/billing/meters/{stripe.meter}/event_summaries?{query}")
    assert status == 200, summaries
    assert summaries["data"][0]["aggregated_value"] == 123


def test_reconciliation_agrees_after_the_period_and_finds_a_planted_difference(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    subscribe(stripe, account)
    customer = account_where(env, account, lambda a: a["plan"] == "pro" and a["customer_id"], "the subscription applied")["customer_id"]
    track = {"action": "track", "account_id": account, "model": "unlisted-model", "output_tokens": 0}
    answer, _ = invoke(env, {**track, "request_id": "big", "input_tokens": 5_000_040})
    period_end = answer["balance"]["period_end"]
    answer, error = report_now(env)
    assert error is None, answer

    # While the period is open, nothing is compared.
    early, error = fire(env, "ReconcilerFunction", int(time.time()))
    assert error is None, early
    after = period_end + 2 * 3600
    done, error = fire(env, "ReconcilerFunction", after)
    assert error is None, done
    assert done["checked"] >= 1 and done["agreed"] == done["checked"], done

    # A second account, and a meter event Stripe holds that the reporter never sent.
    other = f"acct_{uuid.uuid4().hex[:10]}"
    subscribe(stripe, other)
    other_customer = account_where(env, other, lambda a: a["plan"] == "pro" and a["customer_id"], "the subscription applied")["customer_id"]
    answer, _ = invoke(env, {**track, "account_id": other, "request_id": "big", "input_tokens": 5_000_007})
    assert report_now(env)[1] is None
    status, _ = stripe.call("POST", "/v1/billing/meter_events", {
        "event_name": "llm_overage_units", "payload[stripe_customer_id]": other_customer,
        "payload[value]": "3", "identifier": f"planted_{other}",
        # Inside the period's whole minutes (it began seconds ago), where reconciliation sums.
        "timestamp": str(int(time.time()) + 120),
    })
    assert status == 200
    found, error = fire(env, "ReconcilerFunction", answer["balance"]["period_end"] + 2 * 3600)
    assert error == "Unhandled" and found["errorType"] == "NeedsAttention", found
    assert other in found["errorMessage"] and "recorded: 7" in found["errorMessage"] and "stripe: 10" in found["errorMessage"], found
    assert customer != other_customer


def test_the_daily_run_alarms_when_stripe_stops_selling_what_the_catalog_sells(stack):
    """The reconciler's daily run also checks the catalog against Stripe (not a cold start):
    a price the catalog sells but Stripe has deactivated fails the run by name."""
    env, _ = stack
    stripe = Stripe(env)
    price = stripe.price("credits_10m")
    at = int(time.time())
    fine, error = fire(env, "ReconcilerFunction", at)
    assert error is None, fine
    status, _ = stripe.call("POST", f"/v1/prices/{price}", {"active": "false"})
    assert status == 200
    try:
        found, error = fire(env, "ReconcilerFunction", at)
        assert error == "Unhandled" and found["errorType"] == "NeedsAttention", found
        assert f"price `credits_10m` ({price}) is sold by the catalog but inactive in Stripe" in found["errorMessage"], found
    finally:
        assert stripe.call("POST", f"/v1/prices/{price}", {"active": "true"})[0] == 200
    again, error = fire(env, "ReconcilerFunction", at)
    assert error is None, again
