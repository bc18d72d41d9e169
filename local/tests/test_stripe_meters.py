"""The simulator's meters, as Stripe has them: identifiers deduplicated, the timestamp window,
one meter event at a time per customer and meter, and summaries over minute-aligned windows."""

import concurrent.futures
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from stripe_sim import serve, set_up
from with_aws import free_port

DAY = 86_400


@pytest.fixture()
def sim():
    port = free_port()
    simulator, server = serve(port, "http://127.0.0.1:9/unused", ["whsec_test"])
    simulator.delivery["paused"] = True  # no webhook endpoint here
    # The account as `make stripe-setup` leaves it: the catalog's prices, the overage meter.
    simulator.ids = set_up(f"http://127.0.0.1:{port}", "http://127.0.0.1:9/unused").ids
    yield simulator, f"http://127.0.0.1:{port}"
    server.shutdown()


def call(base: str, method: str, path: str, params: dict | None = None) -> tuple[int, dict]:
    body = urllib.parse.urlencode(params or {}).encode() if method == "POST" else None
    url = base + path + ("?" + urllib.parse.urlencode(params) if method == "GET" and params else "")
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": "Bearer sk_test_meters"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def event(customer: str, value: int, identifier: str, timestamp: int | None = None) -> dict:
    params = {"event_name": "llm_overage_units", "payload[stripe_customer_id]": customer,
              "payload[value]": str(value), "identifier": identifier}
    if timestamp is not None:
        params["timestamp"] = str(timestamp)
    return params


def customer(base: str) -> str:
    return call(base, "POST", "/v1/customers", {"email": "meter@example.com"})[1]["id"]


def test_identifiers_count_once_and_summaries_add_up(sim):
    s, base = sim
    cus = customer(base)
    now = s.now()
    start = now - now % 60 - 3600
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 5, "ovg_a", now - 60))[0] == 200
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 5, "ovg_a", now - 60))[0] == 200
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 7, "ovg_b", now - 30))[0] == 200
    (meter,) = call(base, "GET", "/v1/billing/meters")[1]["data"]
    assert meter["event_name"] == "llm_overage_units"
    status, summaries = call(base, "GET", f"/v1/billing/meters/{meter['id']}/event_summaries",
                             {"customer": cus, "start_time": start, "end_time": start + 7200})
    assert status == 200 and summaries["data"][0]["aggregated_value"] == 12
    status, error = call(base, "GET", f"/v1/billing/meters/{meter['id']}/event_summaries",
                         {"customer": cus, "start_time": start + 1, "end_time": start + 7200})
    assert status == 400 and error["error"]["param"] == "start_time"


def test_timestamps_outside_stripes_window_are_refused(sim):
    s, base = sim
    cus = customer(base)
    old = call(base, "POST", "/v1/billing/meter_events", event(cus, 1, "ovg_old", s.now() - 36 * DAY))
    ahead = call(base, "POST", "/v1/billing/meter_events", event(cus, 1, "ovg_ahead", s.now() + 600))
    assert (old[0], old[1]["error"]["param"]) == (400, "timestamp")
    assert (ahead[0], ahead[1]["error"]["param"]) == (400, "timestamp")
    bad = call(base, "POST", "/v1/billing/meter_events", {**event(cus, 1, "ovg_x"), "event_name": "nope"})
    assert (bad[0], bad[1]["error"]["param"]) == (400, "event_name")


def test_concurrent_events_for_one_customer_and_meter_are_answered_429(sim):
    s, base = sim
    s.meter_hold_ms = 1000  # far longer than starting the calls takes, however busy the machine
    cus, other = customer(base), customer(base)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        same = list(pool.map(lambda i: call(base, "POST", "/v1/billing/meter_events", event(cus, 1, f"ovg_c{i}"))[0], range(5)))
    assert sorted(same) == [200, 429, 429, 429, 429]
    # Another customer is not held up by the first one's event.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(lambda c: call(base, "POST", "/v1/billing/meter_events", event(c, 1, f"ovg_{c}"))[0], [cus, other])
    assert (a, b) == (200, 200)


def test_a_renewal_invoice_bills_the_ended_periods_meter_per_thousand_units_rounded_up(sim):
    s, base = sim
    cus = customer(base)
    pro, overage = s.ids["prices"]["pro_monthly"], s.ids["prices"]["pro_overage"]
    sub = s.create_subscription(cus, [{"price": pro}, {"price": overage}], {})
    first = s.objects[sub["latest_invoice"]]
    assert first["amount_due"] == 4900, "the first invoice bills the base fee only"
    now = s.now()
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 2_000, "ovg_1", now))[0] == 200
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 500, "ovg_2", now))[0] == 200
    assert call(base, "POST", "/v1/billing/meter_events", event(cus, 500, "ovg_2", now))[0] == 200  # deduplicated

    renewal = s.control("POST", ["subscriptions", sub["id"], "renew"], {})
    lines = {line["pricing"]["price_details"]["price"]: line for line in renewal["lines"]["data"]}
    assert lines[overage]["quantity"] == 2_500
    assert lines[overage]["amount"] == 3 * 200  # 2,500 units: three started thousands
    assert lines[overage]["period"]["end"] == renewal["period_start"]
    assert renewal["amount_due"] == 4900 + 600


def test_volume_tiers_price_the_whole_quantity_at_the_tier_it_reaches(sim):
    from stripe_sim import StripeSimulator

    s, _ = sim
    price = s.prices[s.ids["prices"]["enterprise_overage_volume"]]
    amount = StripeSimulator.metered_amount
    assert amount(price, 0) == 0
    assert amount(price, 1_000) == 20  # 0.02 ¢ a unit
    assert amount(price, 10_000_000) == 200_000
    assert amount(price, 10_000_001) == 150_000  # 0.015 ¢ a unit from the first unit, rounded
    assert amount(price, 25) == 1  # 0.5 ¢ rounds half up
    pro = s.prices[s.ids["prices"]["pro_overage"]]
    assert (amount(pro, 1), amount(pro, 1_000), amount(pro, 1_001)) == (200, 200, 400)
