#!/usr/bin/env python3
"""Sets a Stripe account up for the billing backend, from catalog.toml: `make stripe-setup`.

    stripe_setup.py --webhook-url URL [--table NAME] [--dry-run | --check]
                    [--meter-event-name llm_overage_units] [--meter-customer-key stripe_customer_id]
                    [--return-url https://app.example.com/billing]

The API key comes from STRIPE_API_KEY (a secret key, or a restricted key with write access to
Products, Prices, Meters, Webhook endpoints and Customer portal); STRIPE_API_BASE points it at
another Stripe (the local simulator). It creates what is missing and corrects what it may, and
never changes what Stripe does not let change:

- the overage meter (`--meter-event-name`, aggregation sum, the customer from
  `--meter-customer-key`, the value from `value`);
- one product per plan and per credit pack (ids `billing_plan_<id>`, `billing_pack_<id>`) and each
  price of `catalog.toml` under its `lookup_key`. A price already in Stripe under that key must
  bill what the catalog says (type, amount, tiers, meter, currency): a price's amount never
  changes in Stripe, so a difference is refused with the way out (a new lookup key, the old one
  retired), never transferred. Retired prices are deactivated; the rest kept active;
- the webhook endpoint for `--webhook-url`, enabling exactly the event types the processor
  handles (`HANDLED_EVENT_TYPES` in shared/src/stripe/objects.rs, read from the code) at the
  pinned API version. Its signing secret is printed once, when the endpoint is created;
- the customer portal configuration: payment-method updates, invoice history, email and address
  updates, cancellation at period end. Plan switching stays off: Stripe's portal cannot update a
  subscription that carries a metered price, and every paid plan here has one, so the app sends
  customers to checkout for another plan (checkout answers 409 `already_subscribed`, and the
  portal's cancellation ends the current one).

With `--table`, the ids Stripe gave (prices by lookup key, meter, endpoint, portal configuration)
are written to the billing table's `STRIPE#SETUP` item, where checkout reads them: no function
calls Stripe at cold start to resolve a lookup key. `--dry-run` prints the plan and writes
nothing; `--check` compares only, exiting 1 on any difference that would lose money. Run twice,
it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGED = {"managed_by": "billing-backend"}


def handled_event_types(source: Path = ROOT / "shared" / "src" / "stripe" / "objects.rs") -> list[str]:
    text = source.read_text()
    block = re.search(r"pub const HANDLED_EVENT_TYPES: \[&str; \d+\] = \[(.*?)\];", text, re.S)
    if not block:
        raise SystemExit(f"{source}: HANDLED_EVENT_TYPES not found")
    return re.findall(r'"([a-z_.]+)"', block.group(1))


def pinned_api_version(source: Path = ROOT / "shared" / "src" / "stripe" / "objects.rs") -> str:
    m = re.search(r'pub const STRIPE_API_VERSION: &str = "([^"]+)";', source.read_text())
    if not m:
        raise SystemExit(f"{source}: STRIPE_API_VERSION not found")
    return m.group(1)


class Refused(Exception):
    """A difference setup may not fix by itself: the message says what to do."""


@dataclass
class Report:
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ids: dict = field(default_factory=dict)
    webhook_secret: str | None = None


class Setup:
    def __init__(self, client, catalog: dict, webhook_url: str, meter_event_name: str, meter_customer_key: str,
                 return_url: str | None, write: bool):
        self.stripe = client
        self.catalog = catalog
        self.webhook_url = webhook_url
        self.meter_event_name = meter_event_name
        self.meter_customer_key = meter_customer_key
        self.return_url = return_url
        self.write = write
        self.report = Report()

    def change(self, what: str, call=None):
        self.report.changes.append(what)
        if self.write and call:
            out = call()
            return out.to_dict(for_json=True) if hasattr(out, "to_dict") else out
        return None

    # --- the meter ---------------------------------------------------------------------------

    def meter(self) -> str | None:
        meters = [m for m in listed(self.stripe.v1.billing.meters.list(params={"limit": 100}))
                  if m["event_name"] == self.meter_event_name and m["status"] == "active"]
        if meters:
            m = meters[0]
            formula, by = m["default_aggregation"]["formula"], m["customer_mapping"]["event_payload_key"]
            if formula != "sum" or by != self.meter_customer_key:
                self.report.problems.append(
                    f"meter {m['id']} ({self.meter_event_name}) aggregates by {formula} and maps the customer "
                    f"from `{by}`; the reporter needs sum and `{self.meter_customer_key}`")
            return m["id"]
        created = self.change(f"create meter {self.meter_event_name} (sum of `value`, customer from `{self.meter_customer_key}`)",
                              lambda: self.stripe.v1.billing.meters.create(params={
                                  "display_name": "LLM overage units", "event_name": self.meter_event_name,
                                  "default_aggregation": {"formula": "sum"},
                                  "customer_mapping": {"event_payload_key": self.meter_customer_key, "type": "by_id"},
                                  "value_settings": {"event_payload_key": "value"}}))
        return created["id"] if created else None

    # --- products and prices -----------------------------------------------------------------

    def owners(self) -> dict[str, tuple[str, str, bool]]:
        """lookup key -> (product id, product name, sold)."""
        out = {}
        for plan in self.catalog["plans"]:
            for key in plan.get("prices", []):
                out[key] = (f"billing_plan_{plan['id']}", plan["name"], True)
            for key in plan.get("retired_prices", []):
                out[key] = (f"billing_plan_{plan['id']}", plan["name"], False)
        for pack in self.catalog.get("credit_packs", []):
            out[pack["price"]] = (f"billing_pack_{pack['id']}", pack["name"], True)
            for key in pack.get("retired_prices", []):
                out[key] = (f"billing_pack_{pack['id']}", pack["name"], False)
        return out

    def product(self, pid: str, name: str) -> None:
        import stripe

        try:
            p = self.stripe.v1.products.retrieve(pid).to_dict()
        except stripe.InvalidRequestError as e:
            if e.http_status != 404:
                raise
            self.change(f"create product {pid} ({name})",
                        lambda: self.stripe.v1.products.create(params={"id": pid, "name": name, "metadata": MANAGED}))
            return
        if p["name"] != name or not p["active"]:
            self.change(f"update product {pid}: name {name!r}, active",
                        lambda: self.stripe.v1.products.update(pid, params={"name": name, "active": True}))

    def wanted_price(self, key: str, product: str, meter: str | None) -> dict:
        d = self.catalog["prices"][key]
        params: dict = {"product": product, "currency": self.catalog["currency"], "lookup_key": key, "metadata": MANAGED}
        if d["type"] in ("licensed", "metered"):
            params["recurring"] = {"interval": "month", "usage_type": d["type"]}
            if d["type"] == "metered":
                params["recurring"]["meter"] = meter or "(the meter, once created)"
        if "tiers" in d:
            params.update(billing_scheme="tiered", tiers_mode=d["tiers_mode"], tiers=[
                {"up_to": t["up_to"], "unit_amount_decimal": t["unit_amount_decimal"]} for t in d["tiers"]])
        else:
            params["unit_amount"] = d["unit_amount"]
            if "divide_by" in d:
                params["transform_quantity"] = {"divide_by": d["divide_by"], "round": "up"}
        return params

    def differences(self, key: str, price, meter: str | None) -> list[str]:
        """Where a price in Stripe bills differently from the catalog (what would lose money)."""
        d = self.catalog["prices"][key]
        out = []
        recurring = price.get("recurring") or {}
        kind = "one_time" if price["type"] == "one_time" else recurring.get("usage_type")
        if kind != d["type"]:
            out.append(f"type {kind}, catalog {d['type']}")
        if price["currency"] != self.catalog["currency"]:
            out.append(f"currency {price['currency']}, catalog {self.catalog['currency']}")
        if "tiers" in d:
            if price["billing_scheme"] != "tiered" or price.get("tiers_mode") != d["tiers_mode"]:
                out.append(f"billing {price['billing_scheme']}/{price.get('tiers_mode')}, catalog tiered/{d['tiers_mode']}")
            else:
                # Stripe lists tiers only when asked (`expand[]=data.tiers`); compared when shown.
                theirs = [(t["up_to"], str(t.get("unit_amount_decimal"))) for t in (price.get("tiers") or [])]
                ours = [(None if t["up_to"] == "inf" else t["up_to"], t["unit_amount_decimal"]) for t in d["tiers"]]
                if theirs and theirs != ours:
                    out.append(f"tiers {theirs}, catalog {ours}")
        else:
            if price.get("unit_amount") != d["unit_amount"]:
                out.append(f"unit_amount {price.get('unit_amount')}, catalog {d['unit_amount']}")
            divide = (price.get("transform_quantity") or {}).get("divide_by")
            if divide != d.get("divide_by"):
                out.append(f"divide_by {divide}, catalog {d.get('divide_by')}")
        if d["type"] == "metered" and meter and recurring.get("meter") != meter:
            out.append(f"meter {recurring.get('meter')}, the overage meter is {meter}")
        return out

    def prices(self, meter: str | None) -> dict[str, str]:
        owners = self.owners()
        for pid, name, _ in sorted(set(owners.values())):
            self.product(pid, name)
        keys = sorted(owners)
        found = {}
        for i in range(0, len(keys), 10):  # Stripe takes at most 10 lookup keys per list
            page = self.stripe.v1.prices.list(params={"lookup_keys": keys[i:i + 10], "limit": 100,
                                                       "expand": ["data.tiers"]})
            for p in listed(page):
                found[p["lookup_key"]] = p
        ids = {}
        for key in keys:
            product, _, sold = owners[key]
            price = found.get(key)
            if price is None:
                if not sold:
                    continue  # a retired price this account never had: nothing to recognise
                wanted = self.wanted_price(key, product, meter)
                created = self.change(f"create price {key} ({describe(self.catalog['prices'][key], self.catalog['currency'])})",
                                      lambda w=wanted: self.stripe.v1.prices.create(params=w))
                if created:
                    ids[key] = created["id"]
                continue
            diff = self.differences(key, price, meter)
            if diff:
                self.report.problems.append(
                    f"price {key} ({price['id']}) in Stripe differs from catalog.toml: {'; '.join(diff)}. A Stripe price's "
                    f"amount never changes: give the catalog's price a new lookup key, sell it, and move `{key}` to "
                    f"retired_prices")
            if price["active"] != sold:
                self.change(f"{'activate' if sold else 'deactivate (retired)'} price {key} ({price['id']})",
                            lambda p=price, a=sold: self.stripe.v1.prices.update(p["id"], params={"active": a}))
            ids[key] = price["id"]
        return ids

    # --- the webhook endpoint ----------------------------------------------------------------

    def webhook(self) -> str | None:
        events, version = sorted(handled_event_types()), pinned_api_version()
        endpoints = [e for e in listed(self.stripe.v1.webhook_endpoints.list(params={"limit": 100})) if e["url"] == self.webhook_url]
        if not endpoints:
            created = self.change(f"create webhook endpoint {self.webhook_url} ({len(events)} event types, API version {version})",
                                  lambda: self.stripe.v1.webhook_endpoints.create(params={
                                      "url": self.webhook_url, "enabled_events": events, "api_version": version,
                                      "description": "Billing backend", "metadata": MANAGED}))
            if created:
                self.report.webhook_secret = created["secret"]
                return created["id"]
            return None
        e = endpoints[0]
        if e.get("api_version") != version:
            self.report.problems.append(
                f"webhook endpoint {e['id']} is on API version {e.get('api_version')}, the code on {version}: Stripe cannot "
                f"change an endpoint's version; create a new endpoint (a new URL or after deleting this one) and move the "
                f"signing secret")
        if sorted(e["enabled_events"]) != events or e["status"] != "enabled":
            self.change(f"update webhook endpoint {e['id']}: enable exactly the handled event types",
                        lambda: self.stripe.v1.webhook_endpoints.update(e["id"], params={"enabled_events": events, "disabled": False}))
        return e["id"]

    # --- the customer portal -----------------------------------------------------------------

    def portal(self) -> str | None:
        features = {
            "payment_method_update": {"enabled": True},
            "invoice_history": {"enabled": True},
            "customer_update": {"enabled": True, "allowed_updates": ["email", "address"]},
            "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
            "subscription_update": {"enabled": False},
        }
        params = {"features": features, "metadata": MANAGED}
        if self.return_url:
            params["default_return_url"] = self.return_url
        mine = [c for c in listed(self.stripe.v1.billing_portal.configurations.list(params={"limit": 100}))
                if (c.get("metadata") or {}).get("managed_by") == MANAGED["managed_by"]]
        if not mine:
            created = self.change("create customer portal configuration (cards, invoices, email/address, cancel at period end)",
                                  lambda: self.stripe.v1.billing_portal.configurations.create(params=params))
            return created["id"] if created else None
        c = mine[0]
        current = {k: {f: v for f, v in (c["features"].get(k) or {}).items() if f in features[k]} for k in features}
        if current != features or (self.return_url and c.get("default_return_url") != self.return_url):
            self.change(f"update customer portal configuration {c['id']}",
                        lambda: self.stripe.v1.billing_portal.configurations.update(c["id"], params=params))
        return c["id"]

    def run(self) -> Report:
        meter = self.meter()
        prices = self.prices(meter)
        self.report.ids = {"meter": meter, "prices": prices, "webhook_endpoint": self.webhook(), "portal_configuration": self.portal()}
        return self.report


def listed(page) -> list[dict]:
    """A list answer's objects, as plain dicts (the SDK's objects are not dicts)."""
    return [o.to_dict(for_json=True) for o in page.data]


def describe(d: dict, currency: str) -> str:
    if "tiers" in d:
        return f"metered, {d['tiers_mode']} tiers"
    per = f" per {d['divide_by']}" if "divide_by" in d else ""
    return f"{d['type']}, {d['unit_amount']} {currency}{per}" + (" / month" if d["type"] != "one_time" else "")


def record(table: str, ids: dict, dynamodb=None) -> None:
    """The `STRIPE#SETUP` item checkout reads the price ids from."""
    import time

    import boto3

    ddb = dynamodb or boto3.client("dynamodb")
    ddb.put_item(TableName=table, Item={
        "pk": {"S": "STRIPE#SETUP"}, "sk": {"S": "STRIPE#SETUP"},
        "prices": {"M": {k: {"S": v} for k, v in ids["prices"].items()}},
        **{k: {"S": ids[k]} for k in ("meter", "webhook_endpoint", "portal_configuration") if ids.get(k)},
        "updated_at": {"N": str(int(time.time()))},
    })


def client(api_key: str, api_base: str | None):
    import stripe

    from_base = {"api": api_base} if api_base else {}
    return stripe.StripeClient(api_key, base_addresses=from_base, stripe_version=pinned_api_version(), max_network_retries=2)


def setup(api_key: str, webhook_url: str, *, api_base: str | None = None, table: str | None = None, dynamodb=None,
          write: bool = True, meter_event_name: str = "llm_overage_units", meter_customer_key: str = "stripe_customer_id",
          return_url: str | None = None, catalog_path: Path = ROOT / "catalog.toml") -> Report:
    catalog = tomllib.loads(catalog_path.read_text())
    report = Setup(client(api_key, api_base), catalog, webhook_url, meter_event_name, meter_customer_key, return_url, write).run()
    if write and table and not report.problems:
        record(table, report.ids, dynamodb)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--webhook-url", required=True, help="the stack's WebhookUrl output")
    ap.add_argument("--table", help="the stack's BillingTableName output: where the resolved ids are recorded")
    ap.add_argument("--meter-event-name", default="llm_overage_units")
    ap.add_argument("--meter-customer-key", default="stripe_customer_id")
    ap.add_argument("--return-url", help="your app's billing page, where the portal returns")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    mode.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args()
    key = os.environ.get("STRIPE_API_KEY", "")
    if not key.startswith(("sk_", "rk_")):
        raise SystemExit("STRIPE_API_KEY must hold the account's secret key (or a restricted key that may write "
                         "Products, Prices, Meters, Webhook endpoints and Customer portal)")
    report = setup(key, args.webhook_url, api_base=os.environ.get("STRIPE_API_BASE") or None, table=args.table,
                   write=not (args.dry_run or args.check), meter_event_name=args.meter_event_name,
                   meter_customer_key=args.meter_customer_key, return_url=args.return_url)
    verb = "would " if (args.dry_run or args.check) else ""
    for c in report.changes:
        print(f"{verb}{c}")
    if not report.changes:
        print("Stripe already matches the catalog: nothing to change")
    for p in report.problems:
        print(f"MISMATCH: {p}", file=sys.stderr)
    if report.webhook_secret:
        print(f"\nThe webhook endpoint's signing secret (shown once; put it in StripeWebhookSecret):\n  {report.webhook_secret}")
    print(json.dumps(report.ids, indent=2))
    if args.table and not (args.dry_run or args.check) and not report.problems:
        print(f"recorded in {args.table} (STRIPE#SETUP)")
    return 1 if report.problems or (args.check and report.changes) else 0


if __name__ == "__main__":
    sys.exit(main())
