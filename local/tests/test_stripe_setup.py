"""`make stripe-setup` (tools/stripe_setup.py) against an empty simulator: it makes everything the
product needs from catalog.toml, a second run changes nothing, `--dry-run` writes nothing, and
what Stripe would refuse or what would lose money is refused with the way out."""

import sys

import pytest
import stripe

import stripe_sim
from template import ROOT
from with_aws import free_port

sys.path.insert(0, str(ROOT / "tools"))
import stripe_setup  # noqa: E402

HOOK = "https://billing.example.com/webhooks/stripe"


@pytest.fixture
def account():
    port = free_port()
    sim, server = stripe_sim.serve(port, "http://127.0.0.1:9/unused", ["whsec_x"])
    sim.delivery["paused"] = True
    yield sim, f"http://127.0.0.1:{port}"
    server.shutdown()


def run(base: str, **kw):
    return stripe_setup.setup("sk_test_setup", HOOK, api_base=base, **kw)


def test_an_empty_account_gets_everything_once_and_a_second_run_changes_nothing(account):
    sim, base = account
    dry = run(base, write=False)
    assert dry.changes and not sim.prices and not sim.webhook_endpoints, "a dry run writes nothing"

    first = run(base)
    assert first.problems == []
    assert sorted(first.ids["prices"]) == sorted(stripe_setup.tomllib.loads((ROOT / "catalog.toml").read_text())["prices"])
    # Each price under its lookup key, billing what the catalog says.
    by_key = {p["lookup_key"]: p for p in sim.prices.values()}
    assert by_key["pro_monthly"]["unit_amount"] == 4_900 and by_key["pro_monthly"]["kind"] == "recurring"
    assert by_key["pro_overage"]["meter"] == first.ids["meter"] and by_key["pro_overage"]["divide_by"] == 1_000
    assert by_key["credits_1m"]["kind"] == "one_time" and by_key["credits_1m"]["unit_amount"] == 1_000
    assert [t["up_to"] for t in by_key["enterprise_overage_volume"]["tiers"]] == [10_000_000, "inf"]
    # The endpoint enables exactly the types the processor handles, at the pinned version.
    (endpoint,) = sim.webhook_endpoints.values()
    assert sorted(endpoint["enabled_events"]) == sorted(stripe_setup.handled_event_types())
    assert endpoint["api_version"] == stripe_setup.pinned_api_version() == "2026-09-30.endive"
    assert first.webhook_secret.startswith("whsec_")
    # The portal: cards, invoices, cancel at period end; no plan switching (metered prices).
    (portal,) = sim.portal_configurations.values()
    assert portal["features"]["payment_method_update"]["enabled"] is True
    assert portal["features"]["invoice_history"]["enabled"] is True
    assert portal["features"]["subscription_update"]["enabled"] is False

    second = run(base)
    assert (second.changes, second.problems, second.webhook_secret) == ([], [], None)
    assert second.ids == first.ids
    assert len(sim.prices) == 6 and len(sim.meters) == 1 and len(sim.products) == 4  # pro, enterprise, two packs


def test_a_price_whose_amount_changed_is_refused_never_transferred(account, tmp_path):
    sim, base = account
    run(base)
    # Someone edits the catalog's pro price in place: Stripe's price keeps its amount.
    edited = (ROOT / "catalog.toml").read_text().replace("unit_amount = 4_900", "unit_amount = 5_900")
    path = tmp_path / "catalog.toml"
    path.write_text(edited)
    report = stripe_setup.setup("sk_test_setup", HOOK, api_base=base, catalog_path=path)
    (problem,) = report.problems
    assert "price pro_monthly" in problem and "unit_amount 4900, catalog 5900" in problem
    assert "new lookup key" in problem and "retired_prices" in problem
    assert all(p["lookup_key"] != "pro_monthly" or p["unit_amount"] == 4_900 for p in sim.prices.values())


def test_a_retired_price_is_deactivated_and_still_recognised(account, tmp_path):
    sim, base = account
    run(base)
    catalog = (ROOT / "catalog.toml").read_text()
    retired = catalog.replace(
        'prices = ["pro_monthly", "pro_overage"]',
        'prices = ["pro_monthly", "pro_overage_2027"]\nretired_prices = ["pro_overage"]',
    ) + '\n[prices.pro_overage_2027]\ntype = "metered"\nunit_amount = 250\ndivide_by = 1_000\n'
    path = tmp_path / "catalog.toml"
    path.write_text(retired)
    report = stripe_setup.setup("sk_test_setup", HOOK, api_base=base, catalog_path=path)
    assert report.problems == []
    by_key = {p["lookup_key"]: p for p in sim.prices.values()}
    assert by_key["pro_overage"]["active"] is False and by_key["pro_overage_2027"]["active"] is True
    assert "deactivate (retired) price pro_overage" in " ".join(report.changes)


def test_the_simulator_refuses_what_stripe_refuses_in_these_calls(account):
    _, base = account
    client = stripe_setup.client("sk_test_setup", base)
    # Not a v1 webhook event type: Stripe's meter error reports are v2 events only.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.webhook_endpoints.create(params={"url": HOOK, "enabled_events": ["invoice.paid", "billing.meter.error_report_triggered"]})
    assert refused.value.param == "enabled_events[1]"
    assert refused.value.user_message.startswith("Invalid enabled_events[1]: must be one of *, account.application.authorized")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.meters.create(params={"display_name": "x", "event_name": "x",
                                                "default_aggregation": {"formula": "avg"}})
    assert refused.value.param == "default_aggregation[formula]"
    client.v1.products.create(params={"id": "p1", "name": "P"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.prices.create(params={"product": "p1", "currency": "usd", "unit_amount": 1,
                                        "recurring": {"interval": "monthly"}})
    assert refused.value.param == "recurring[interval]"
    price = client.v1.prices.create(params={"product": "p1", "currency": "usd", "unit_amount": 1, "lookup_key": "k"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.prices.update(price.id, params={"unit_amount": 2})
    assert refused.value.user_message == "Received unknown parameter: unit_amount"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.prices.create(params={"product": "p1", "currency": "usd", "unit_amount": 1, "lookup_key": "k"})
    assert refused.value.param == "lookup_key"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.products.create(params={"id": "p1", "name": "again"})
    assert refused.value.code == "resource_already_exists"


def test_the_endpoint_enables_only_types_stripe_knows_and_the_processor_handles():
    import stripe_params

    known = stripe_params.enums(stripe_params.webhook_endpoint_create())["enabled_events[]"]
    handled = stripe_setup.handled_event_types()
    assert len(handled) == 16 and set(handled) <= known
    assert stripe_setup.pinned_api_version() in stripe_params.enums(stripe_params.webhook_endpoint_create())["api_version"]
