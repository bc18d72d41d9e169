"""An enterprise deal made in Stripe at run time, with no catalog change: a tiered price whose
metadata names the plan and the allowance works at once, a new price mid-period applies from its
event on, and the overage the reporter ships is billed on the price's tiers."""

import time
import uuid

from conftest import Stripe
from test_flows import account_where, api
from test_metering import fire, report_now
from test_usage import invoke

TRACK = {"action": "track", "model": "unlisted-model", "output_tokens": 0}


def deal_price(stripe: Stripe, included_units: int, tiers: list[tuple[str, str]], plan: str = "enterprise") -> str:
    params = {
        "currency": "usd", "product_data[name]": "Acme volume overage",
        "recurring[interval]": "month", "recurring[usage_type]": "metered", "recurring[meter]": stripe.meter,
        "billing_scheme": "tiered", "tiers_mode": "volume",
        "metadata[plan]": plan, "metadata[included_units]": str(included_units),
    }
    for i, (up_to, cents) in enumerate(tiers):
        params[f"tiers[{i}][up_to]"] = up_to
        params[f"tiers[{i}][unit_amount_decimal]"] = cents
    status, price = stripe.call("POST", "/v1/prices", params)
    assert status == 200, price
    assert price["billing_scheme"] == "tiered" and price["metadata"]["included_units"] == str(included_units)
    return price["id"]


def test_a_deal_price_made_at_run_time_sets_the_allowance_and_bills_overage_on_its_tiers(stack):
    env, _ = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    status, customer = stripe.call("POST", "/v1/customers", {"email": f"{account}@example.com", "metadata[account_id]": account})
    assert status == 200, customer
    first = deal_price(stripe, 1_000, [("1000", "0.5"), ("inf", "0.25")])
    status, sub = stripe.call("POST", "/v1/subscriptions", {
        "customer": customer["id"], "metadata[account_id]": account,
        "items[0][price]": stripe.price("enterprise_monthly"), "items[1][price]": first,
    })
    assert status == 200, sub
    account_where(env, account, lambda a: a["plan"] == "enterprise" and a["included_units"] == 1_000, "the deal's allowance")

    answer, error = invoke(env, {**TRACK, "account_id": account, "request_id": "r1", "input_tokens": 1_500})
    assert error is None, answer
    assert answer["covered"] == {"included": 1_000, "credits": 0, "overage": 500, "uncovered": 0}

    # Sales raise the allowance mid-period with a new price on the same item.
    second = deal_price(stripe, 3_000, [("10000", "0.4"), ("inf", "0.2")])
    item = next(i for i in sub["items"]["data"] if i["price"]["id"] == first)
    status, sub = stripe.call("POST", f"/v1/subscriptions/{sub['id']}", {"items[0][id]": item["id"], "items[0][price]": second})
    assert status == 200, sub
    account_where(env, account, lambda a: a["included_units"] == 3_000, "the new price's allowance")

    # From that event on: the allowance left is 3,000 - 1,000 used; what was overage stays so.
    answer, error = invoke(env, {**TRACK, "account_id": account, "request_id": "r2", "input_tokens": 2_500})
    assert error is None, answer
    assert answer["covered"] == {"included": 2_000, "credits": 0, "overage": 500, "uncovered": 0}
    assert answer["balance"]["overage_units"] == 1_000 and answer["balance"]["included_remaining"] == 0

    # The reporter ships the overage; the renewal bills it on the item's tiers: 1,000 units in
    # the first volume tier at 0.4 cents each.
    answer, error = report_now(env)
    assert error is None, answer
    invoice = stripe.sim(f"subscriptions/{sub['id']}/renew")
    lines = {line["pricing"]["price_details"]["price"]: line for line in invoice["lines"]["data"]}
    assert (lines[second]["quantity"], lines[second]["amount"]) == (1_000, 400), lines[second]
    assert lines[stripe.price("enterprise_monthly")]["amount"] == 99_900


def test_a_deal_price_with_inconsistent_metadata_is_dead_lettered_and_changes_nothing(stack):
    env, state = stack
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    status, customer = stripe.call("POST", "/v1/customers", {"email": f"{account}@example.com", "metadata[account_id]": account})
    assert status == 200, customer
    bad = deal_price(stripe, 1_000, [("inf", "0.5")], plan="platinum")
    status, sub = stripe.call("POST", "/v1/subscriptions", {
        "customer": customer["id"], "metadata[account_id]": account, "items[0][price]": bad,
    })
    assert status == 200, sub
    reason = "names plan `platinum`, which is not in the catalog"
    log = state / "logs" / "ProcessorFunction.log"
    deadline = time.monotonic() + 60
    while reason not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the processor never named the reason"
        time.sleep(0.5)
    # The refused subscription never became the account's plan.
    status, body = api(env, f"/v1/accounts/{account}")
    assert status == 404 or (body["plan"] == "free" and body["subscription"] is None), body
