"""A local Stripe: the slice of Stripe's API this backend uses, stateful, signing and delivering
webhooks. What it fakes is listed in local/STRIPE_SIMULATOR.md.

It speaks Stripe's wire format: form-encoded requests (`metadata[k]=v`, `line_items[0][price]=`),
`Authorization: Bearer sk_...`, `Idempotency-Key` with Stripe's semantics, `Stripe-Version`,
Stripe-shaped JSON errors, and objects in Stripe's current shapes (built from Stripe's own
fixtures). Control endpoints under `/_sim/` drive what a customer or time would do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import secrets as pysecrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import stripe as stripe_lib

import stripe_params
from stripe_sim_setup import SetupResources

FIXTURES = json.loads(
    (Path(__file__).resolve().parent.parent / "shared" / "tests" / "fixtures" / "stripe-objects.json").read_text()
)["resources"]
API_VERSION = "2026-09-30.endive"
DAY = 86_400


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.body = status, {"error": {"type": type_, "message": message, "code": code, "param": param}}


# --- restricted keys ---------------------------------------------------------------------------
#
# A restricted key holds, per resource, no access, read or write; a GET needs read and a POST or
# DELETE write, and write implies read (Stripe docs, "Restricted API keys": "Write permissions
# imply read permissions"). Stripe refuses anything else with 403 and names the permission that
# would allow the request, as `rak_<resource>_<read|write>` (public reports quote
# `rak_subscription_read` and `rak_plan_write`, the latter for prices: tylerjrichards/st-paywall#36,
# WWBN/AVideo#8516); the other resources' names here follow the same pattern. The dashboard
# names are the ones the README's permission table uses.
RESTRICTED_RESOURCES = {
    # dashboard name -> the resource in Stripe's permission names
    "Customers": "customer",
    "Checkout Sessions": "checkout_session",
    "Customer portal": "customer_portal",
    "Subscriptions": "subscription",
    "Invoices": "invoice",
    "PaymentIntents": "payment_intent",
    "Refunds": "refund",
    "Events": "event",
    "Meters": "billing_meter",
    "Meter events": "billing_meter_event",
    "Products": "product",
    "Prices": "plan",
    "Webhook endpoints": "webhook",
}
# The API's paths by their first segments, longest first.
RESTRICTED_PATHS = [
    (["checkout", "sessions"], "checkout_session"),
    (["billing_portal"], "customer_portal"),
    (["billing", "meter_events"], "billing_meter_event"),
    (["billing", "meters"], "billing_meter"),
    (["customers"], "customer"),
    (["subscriptions"], "subscription"),
    (["invoices"], "invoice"),
    (["payment_intents"], "payment_intent"),
    (["refunds"], "refund"),
    (["events"], "event"),
    (["products"], "product"),
    (["prices"], "plan"),
    (["webhook_endpoints"], "webhook"),
]


def permission_needed(method: str, path: str) -> str | None:
    """The permission a restricted key needs for a request (`customer_write`), or None for an
    endpoint no restricted key may call."""
    parts = path.strip("/").split("/")[1:]
    for prefix, resource in RESTRICTED_PATHS:
        if parts[: len(prefix)] == prefix:
            return f"{resource}_{'read' if method == 'GET' else 'write'}"
    return None


def grants(permissions: set[str], needed: str) -> bool:
    resource, _, level = needed.rpartition("_")
    return needed in permissions or (level == "read" and f"{resource}_write" in permissions)


def permissions_of(listed: str) -> set[str]:
    """`Customers: Write, Events: Read` (the README's words) → {"customer_write", "event_read"}."""
    out = set()
    for item in filter(None, (i.strip() for i in listed.split(","))):
        name, _, level = item.rpartition(":")
        if name.strip() not in RESTRICTED_RESOURCES or level.strip() not in ("Read", "Write"):
            raise ValueError(f"unknown Stripe permission {item!r} (one of {sorted(RESTRICTED_RESOURCES)}, then Read or Write)")
        out.add(f"{RESTRICTED_RESOURCES[name.strip()]}_{level.strip().lower()}")
    return out


def readme_permissions(readme: str) -> dict[str, set[str]]:
    """The README's table of the restricted key's permissions, by function."""
    out: dict[str, set[str]] = {}
    start = readme.index("<!-- stripe-permissions -->")
    end = readme.index("<!-- /stripe-permissions -->")
    for line in readme[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            out[cells[0].strip("`")] = permissions_of(cells[1])
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}_{pysecrets.token_hex(12)}"


def parse_form(body: str) -> dict:
    """`a[b][0][c]=v` → {"a": {"b": [{"c": "v"}]}}, as Stripe reads it."""
    out: dict = {}
    for key, value in urllib.parse.parse_qsl(body, keep_blank_values=True):
        parts = [key.split("[", 1)[0]] + [p.rstrip("]") for p in key.split("[")[1:]]
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            container_for_next = [] if nxt is not None and (nxt.isdigit() or nxt == "") else {}
            if isinstance(node, list):
                idx = len(node) if part == "" else int(part)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                else:
                    if node[idx] is None:
                        node[idx] = container_for_next
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, container_for_next)
    return out


class StripeSimulator(SetupResources):
    def __init__(self, webhook_url: str, signing_secrets: list[str]):
        self.webhook_url = webhook_url
        self.signing_secrets = signing_secrets
        # As a new account: empty until set up (`set_up`, `make stripe-setup`).
        self.prices: dict[str, dict] = {}  # price id -> {"kind": recurring|metered|one_time, "unit_amount": int, ...}
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {}
        self.events: list[dict] = []
        self.idempotency: dict[str, tuple[str, int, bytes]] = {}
        self.idempotency_in_flight: set[str] = set()
        self.meter_events: dict[str, dict] = {}
        self.cards: dict[str, bool] = {}  # payment method id -> whether it is declined
        self.meters: dict[str, dict] = {}
        # Stripe takes one meter event at a time per customer and meter; a call that arrives
        # while another is being recorded is answered 429. `hold_ms` is how long recording takes.
        self.meter_in_flight: set[tuple[str, str]] = set()
        self.meter_hold_ms = 20
        self.faults: list[dict] = []
        self.api_calls: dict[tuple[str, str], int] = {}  # (method, path) -> calls, for counting
        # Restricted keys the account has (key -> permissions); any other rk_ key is unknown.
        self.restricted_keys: dict[str, set[str]] = {}
        self.products: dict[str, dict] = {}
        self.webhook_endpoints: dict[str, dict] = {}
        self.portal_configurations: dict[str, dict] = {}
        self.not_enabled: set[str] = set()  # events no endpoint enabled: never sent
        # The signing secret a new webhook endpoint gets; None: a fresh random one, as Stripe's.
        self.endpoint_secret: str | None = None
        self.refusal_log: Path | None = None  # where refused restricted-key calls are written
        self.key_calls: dict[str, int] = {}  # API calls allowed, by key
        self.account_id = "acct_1LocalSimulator0"
        self.delivery = {"duplicate": 0, "reorder": False, "delay_ms": 0, "paused": False}
        self.clock_offset = 0
        self.pending: list[dict] = []
        self.wake = threading.Condition(self.lock)
        self.deliveries: list[dict] = []  # what was delivered, for tests and the demo
        self.stopping = False
        threading.Thread(target=self._deliver_forever, daemon=True, name="stripe-webhooks").start()

    # --- clock and events -----------------------------------------------------------------------

    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    def emit(self, event_type: str, obj: dict, previous: dict | None = None) -> dict:
        event = copy.deepcopy(FIXTURES["event"])
        event.update(
            id=new_id("evt"), type=event_type, created=self.now(), livemode=False,
            api_version=API_VERSION, pending_webhooks=1,
            data={"object": copy.deepcopy(obj), **({"previous_attributes": previous} if previous else {})},
            request={"id": new_id("req"), "idempotency_key": None},
        )
        with self.lock:
            self.events.append(event)
            self.pending.append(event)
            self.wake.notify()
        return event

    # --- webhook delivery -----------------------------------------------------------------------

    def _deliver_forever(self) -> None:
        while not self.stopping:
            with self.lock:
                while (not self.pending or self.delivery["paused"]) and not self.stopping:
                    self.wake.wait(0.5)
                batch, self.pending = self.pending, []
                settings = dict(self.delivery)
            if settings["reorder"]:
                random.Random(len(self.events)).shuffle(batch)
            for event in batch:
                for _ in range(1 + int(settings["duplicate"])):
                    if settings["delay_ms"]:
                        time.sleep(settings["delay_ms"] / 1000)
                    self._deliver(event)

    def targets(self, event: dict) -> list[tuple[str, list[str]]]:
        """Where an event goes: every enabled endpoint that enabled its type (or `*`), signed with
        that endpoint's secret (Stripe docs, "Webhook endpoints"). Until an endpoint is
        registered, the simulator's own `webhook_url` with its configured secrets takes all."""
        with self.lock:
            endpoints = list(self.webhook_endpoints.values())
        if not endpoints:
            return [(self.webhook_url, self.signing_secrets)]
        return [(e["url"], e["_secrets"]) for e in endpoints
                if e["status"] == "enabled" and ("*" in e["enabled_events"] or event["type"] in e["enabled_events"])]

    def _deliver(self, event: dict) -> None:
        targets = self.targets(event)
        if not targets:
            with self.lock:
                self.not_enabled.add(event["id"])
        for url, secrets in targets:
            self._deliver_to(event, url, secrets)

    def _deliver_to(self, event: dict, url: str, secrets: list[str]) -> None:
        body = json.dumps(event, indent=2)
        delay = 0.25
        for attempt in range(1, 7):
            # Signed at the real time of delivery (the endpoint checks it against its clock),
            # whatever the simulated clock says the event's `created` is.
            t = int(time.time())
            # One v1 per live secret, as Stripe signs during a rotation.
            sigs = [stripe_lib.WebhookSignature.generate_signature_header(body, s, timestamp=t).split(",v1=")[1] for s in secrets]
            header = f"t={t}," + ",".join(f"v1={s}" for s in sigs)
            req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
                "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
            status = 0
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = 0
            with self.lock:
                self.deliveries.append({"event": event["id"], "type": event["type"], "attempt": attempt, "status": status})
            if 200 <= status < 300:
                return
            time.sleep(delay)
            delay *= 2

    def drained(self, timeout: float = 30) -> bool:
        """True once every event emitted so far has been delivered (or given up on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                delivered = {d["event"] for d in self.deliveries} | self.not_enabled
                if not self.pending and all(e["id"] in delivered for e in self.events):
                    return True
            time.sleep(0.05)
        return False

    # --- objects ----------------------------------------------------------------------------------

    def get(self, obj_id: str, kind: str) -> dict:
        obj = self.objects.get(obj_id)
        if obj is None or obj.get("object") != kind:
            raise ApiError(404, f"No such {kind}: '{obj_id}'", code="resource_missing", param="id")
        return obj

    def price(self, price_id: str) -> dict:
        if price_id not in self.prices:
            raise ApiError(400, f"No such price: '{price_id}'", code="resource_missing", param="line_items")
        return self.prices[price_id]

    def create_price(self, params: dict) -> dict:
        """`POST /v1/prices`, as sales make a price for one deal: licensed or metered (on a meter),
        per unit or on `volume`/`graduated` tiers, with metadata. Stripe's checks that matter
        here are kept: a metered price names an existing meter, tiers end with `inf`, each tier
        has an amount."""
        stripe_params_error = stripe_params.invalid(stripe_params.price_create(), params)
        if stripe_params_error:
            raise ApiError(400, stripe_params_error[1], param=stripe_params_error[0])
        if not params.get("currency"):
            raise ApiError(400, "Missing required param: currency.", param="currency")
        if params.get("product"):
            product = self.product(params["product"])["id"]
        elif (params.get("product_data") or {}).get("name"):
            product = self.create_product({"name": params["product_data"]["name"]})["id"]
        else:
            raise ApiError(400, "You must specify either `product` or `product_data` when creating a price.", param="product")
        recurring = params.get("recurring") or {}
        if recurring and not recurring.get("interval"):
            raise ApiError(400, "Missing required param: recurring[interval].", param="recurring[interval]")
        scheme = params.get("billing_scheme", "per_unit")
        price: dict = {"metadata": params.get("metadata", {}), "nickname": params.get("nickname"),
                       "product": product, "currency": params["currency"], "active": params.get("active") not in (False, "false"),
                       "interval": recurring.get("interval", "month"), "tax_behavior": params.get("tax_behavior", "unspecified")}
        if recurring.get("usage_type") == "metered":
            if recurring.get("meter") not in self.meters:
                raise ApiError(400, f"No such meter: '{recurring.get('meter')}'", code="resource_missing",
                               param="recurring[meter]")
            price.update(kind="metered", meter=recurring["meter"])
        elif recurring:
            price["kind"] = "recurring"
        else:
            price["kind"] = "one_time"
        if scheme == "tiered":
            if price["kind"] != "metered":
                raise ApiError(400, "Only metered prices are tiered here.", param="billing_scheme")
            if params.get("tiers_mode") not in ("volume", "graduated"):
                raise ApiError(400, "tiers_mode must be volume or graduated", param="tiers_mode")
            tiers = params.get("tiers") or []
            if not tiers or tiers[-1].get("up_to") != "inf":
                raise ApiError(400, "The last tier must have up_to=inf.", param="tiers")
            for i, t in enumerate(tiers):
                if "unit_amount_decimal" not in t and "unit_amount" not in t and "flat_amount" not in t:
                    raise ApiError(400, "Each tier needs an amount.", param=f"tiers[{i}]")
                try:
                    Decimal(t.get("unit_amount_decimal", t.get("unit_amount", "0")))
                    if t["up_to"] != "inf":
                        int(t["up_to"])
                except (ArithmeticError, ValueError, KeyError):
                    raise ApiError(400, "Invalid tier.", param=f"tiers[{i}]") from None
            price.update(tiers_mode=params["tiers_mode"], tiers=[
                {"up_to": t["up_to"] if t["up_to"] == "inf" else int(t["up_to"]),
                 "unit_amount_decimal": t.get("unit_amount_decimal", t.get("unit_amount", "0")),
                 "flat_amount": int(t.get("flat_amount", 0))} for t in tiers])
        else:
            try:
                price["unit_amount"] = int(params["unit_amount"])
            except (KeyError, ValueError):
                raise ApiError(400, "unit_amount is required", param="unit_amount") from None
            if "transform_quantity" in params:
                price["divide_by"] = int(params["transform_quantity"].get("divide_by", 1))
        pid = new_id("price")
        price["lookup_key"] = self.claim_lookup_key(pid, params)
        self.prices[pid] = price
        return self.price_json(pid)

    def price_json(self, price_id: str) -> dict:
        """The price as the API shows it, on its own or inside a subscription item."""
        price = self.price(price_id)
        p = copy.deepcopy(FIXTURES["price"])
        metered = price["kind"] == "metered"
        p.update(id=price_id, livemode=False, metadata=price.get("metadata", {}), nickname=price.get("nickname"),
                 product=price.get("product", f"prod_{price_id}"), lookup_key=price.get("lookup_key"),
                 active=price.get("active", True), currency=price.get("currency", "usd"),
                 tax_behavior=price.get("tax_behavior", "unspecified"),
                 type="one_time" if price["kind"] == "one_time" else "recurring",
                 billing_scheme="tiered" if "tiers" in price else "per_unit",
                 tiers_mode=price.get("tiers_mode"), unit_amount=price.get("unit_amount"),
                 unit_amount_decimal=None if "tiers" in price else str(price.get("unit_amount", 0)),
                 transform_quantity=({"divide_by": price["divide_by"], "round": "up"} if "divide_by" in price else None))
        p["recurring"] = None if price["kind"] == "one_time" else {
            **p["recurring"], "usage_type": "metered" if metered else "licensed", "meter": price.get("meter"),
            "interval": price.get("interval", "month")}
        return p

    def new_card(self, declines: bool = False) -> str:
        pm = new_id("pm")
        self.cards[pm] = declines
        return pm

    def create_customer(self, params: dict) -> dict:
        c = copy.deepcopy(FIXTURES["customer"])
        c.update(id=new_id("cus"), created=self.now(), livemode=False, email=params.get("email"),
                 name=params.get("name"), metadata=params.get("metadata", {}), balance=0, delinquent=False)
        self.objects[c["id"]] = c
        self.emit("customer.created", c)
        return c

    def update_customer(self, c: dict, params: dict) -> dict:
        for k in ("email", "name"):
            if k in params:
                c[k] = params[k]
        c["metadata"] = {**c.get("metadata", {}), **params.get("metadata", {})}
        self.emit("customer.updated", c)
        return c

    def create_session(self, params: dict) -> dict:
        mode = params.get("mode")
        if mode not in ("payment", "subscription"):
            raise ApiError(400, "mode must be payment or subscription", param="mode")
        items = params.get("line_items") or []
        if not items or not items[0].get("price"):
            raise ApiError(400, "line_items[0][price] is required", param="line_items")
        for i, item in enumerate(items):
            price = self.price(item["price"])
            # As Stripe: a metered price is billed from its meter, so it takes no quantity; the
            # others need one.
            if price["kind"] == "metered" and "quantity" in item:
                raise ApiError(400, "Quantity should not be specified where usage_type is `metered`.",
                               param=f"line_items[{i}][quantity]")
            if price["kind"] != "metered" and "quantity" not in item:
                raise ApiError(400, "Quantity is required.", param=f"line_items[{i}][quantity]")
            if (price["kind"] == "one_time") == (mode == "subscription"):
                raise ApiError(400, f"The price {item['price']} cannot be used in {mode} mode.", param=f"line_items[{i}][price]")
        if params.get("customer"):
            self.get(params["customer"], "customer")
        s = copy.deepcopy(FIXTURES["checkout.session"])
        sid = f"cs_test_{pysecrets.token_hex(16)}"
        # Metered prices are billed later, from the meter: nothing to pay for them now.
        amount = sum(self.price(i["price"])["unit_amount"] * int(i.get("quantity", 1))
                     for i in items if self.price(i["price"])["kind"] != "metered")
        s.update(
            id=sid, object="checkout.session", mode=mode, status="open", payment_status="unpaid",
            customer=params.get("customer"), client_reference_id=params.get("client_reference_id"),
            metadata=params.get("metadata", {}), success_url=params.get("success_url"),
            customer_email=params.get("customer_email"),
            cancel_url=params.get("cancel_url"), url=f"http://127.0.0.1/checkout/{sid}",
            amount_total=amount, amount_subtotal=amount, currency="usd", created=self.now(),
            expires_at=self.now() + DAY, livemode=False, payment_intent=None, subscription=None, invoice=None,
        )
        s["_line_items"] = items
        s["_subscription_metadata"] = (params.get("subscription_data") or {}).get("metadata", {})
        s["_payment_metadata"] = (params.get("payment_intent_data") or {}).get("metadata", {})
        creation = params.get("invoice_creation") or {}
        s["_invoice"] = creation.get("enabled") == "true" and mode == "payment"
        s["_invoice_metadata"] = (creation.get("invoice_data") or {}).get("metadata", {})
        self.objects[sid] = s
        return s

    def complete_session(self, s: dict, payment: str) -> dict:
        if s["status"] != "open":
            raise ApiError(400, "This Checkout Session is not open", code="checkout_session_not_open")
        if not s.get("customer"):
            # As Stripe does: the customer Checkout creates has the email the buyer typed and no
            # metadata (the session's metadata is not copied onto it), so its `customer.created`
            # names no account and arrives before the session that does.
            email = s.get("customer_email") or "customer@example.com"
            s["customer"] = self.create_customer({"email": email})["id"]
            s["customer_details"] = {**(s.get("customer_details") or {}), "email": email}
        s["status"] = "complete"
        if s["mode"] == "subscription":
            sub = self.create_subscription(s["customer"], s["_line_items"], s["_subscription_metadata"])
            s.update(subscription=sub["id"], payment_status="paid", invoice=sub["latest_invoice"])
            self.emit("checkout.session.completed", public(s))
        else:
            pi, charge = self.create_payment(s["customer"], s["amount_total"], s["_payment_metadata"], paid=payment != "async")
            s["payment_intent"] = pi
            if s["_invoice"]:
                # `invoice_creation[enabled]`: Stripe issues a paid invoice for the payment.
                s["invoice"] = self.payment_invoice(s)["id"]
            s["payment_status"] = "paid" if payment != "async" else "unpaid"
            self.emit("checkout.session.completed", public(s))
            if payment == "async":
                s["payment_status"] = "paid"
                self.objects[charge]["paid"] = True
                self.emit("checkout.session.async_payment_succeeded", public(s))
        return s

    def payment_invoice(self, s: dict) -> dict:
        """The invoice Checkout issues for a one-off payment: paid, with no subscription."""
        inv = copy.deepcopy(FIXTURES["invoice"])
        inv["id"] = new_id("in")
        lines = [self.invoice_line(inv, i["price"], self.price(i["price"])["unit_amount"] * int(i.get("quantity", 1)),
                                   int(i.get("quantity", 1)), self.now(), self.now(), f"{i.get('quantity', 1)} × {i['price']}")
                 for i in s["_line_items"]]
        number = f"SIM-{len([o for o in self.objects.values() if o.get('object') == 'invoice']) + 1:04d}"
        amount = s["amount_total"]
        inv.update(
            customer=s["customer"], subscription=None, status="paid", number=number, metadata=s["_invoice_metadata"],
            lines={"object": "list", "data": lines, "has_more": False, "url": f"/v1/invoices/{inv['id']}/lines"},
            amount_due=amount, amount_paid=amount, amount_remaining=0, total=amount, subtotal=amount,
            currency="usd", attempt_count=1, attempted=True, created=self.now(),
            period_start=self.now(), period_end=self.now(), next_payment_attempt=None, livemode=False,
            hosted_invoice_url=f"https://invoice.stripe.com/i/{inv['id']}",
            invoice_pdf=f"https://pay.stripe.com/invoice/{inv['id']}/pdf",
            billing_reason="manual", parent=None,
        )
        self.objects[inv["id"]] = inv
        for event_type in ("invoice.created", "invoice.finalized", "invoice.paid"):
            self.emit(event_type, inv)
        return inv

    def create_payment(self, customer: str, amount: int, metadata: dict, paid: bool) -> tuple[str, str]:
        pi = copy.deepcopy(FIXTURES["payment_intent"])
        pi.update(id=new_id("pi"), amount=amount, currency="usd", customer=customer, metadata=metadata,
                  status="succeeded", created=self.now(), livemode=False)
        ch = copy.deepcopy(FIXTURES["charge"])
        ch.update(id=new_id("ch"), amount=amount, amount_captured=amount, amount_refunded=0, currency="usd",
                  customer=customer, payment_intent=pi["id"], metadata=metadata, paid=paid, refunded=False,
                  status="succeeded", created=self.now(), livemode=False)
        pi["latest_charge"] = ch["id"]
        self.objects[pi["id"]], self.objects[ch["id"]] = pi, ch
        return pi["id"], ch["id"]

    def create_payment_intent(self, params: dict) -> dict:
        """`POST /v1/payment_intents`: an off-session payment to confirm next (or at once with
        `confirm=true`), as the auto top-up makes it."""
        try:
            amount = int(params["amount"])
        except (KeyError, ValueError):
            raise ApiError(400, "Missing required param: amount.", param="amount") from None
        if amount < 50:
            raise ApiError(400, "Amount must be at least 50 cents", code="amount_too_small", param="amount")
        if params.get("currency") != "usd":
            raise ApiError(400, "Invalid currency", param="currency")
        customer = self.get(params.get("customer", ""), "customer")
        pm = params.get("payment_method")
        if pm is not None and pm not in self.cards:
            raise ApiError(400, f"No such PaymentMethod: '{pm}'", code="resource_missing", param="payment_method")
        pi = copy.deepcopy(FIXTURES["payment_intent"])
        pi.update(id=new_id("pi"), amount=amount, amount_received=0, currency="usd", customer=customer["id"],
                  payment_method=pm, metadata=params.get("metadata", {}), description=params.get("description"),
                  status="requires_confirmation" if pm else "requires_payment_method", created=self.now(),
                  livemode=False, latest_charge=None, last_payment_error=None, confirmation_method="automatic",
                  capture_method="automatic")
        self.objects[pi["id"]] = pi
        self.emit("payment_intent.created", pi)
        if params.get("confirm") == "true":
            return self.confirm_payment_intent(pi, params)
        return pi

    def confirm_payment_intent(self, pi: dict, params: dict) -> dict:
        """Charges the payment method: a declining card answers 402 as Stripe does (the intent
        goes back to `requires_payment_method`, `payment_intent.payment_failed`); an intent
        that already succeeded cannot be confirmed again."""
        if pi["status"] in ("succeeded", "canceled", "processing"):
            raise ApiError(400, f"This PaymentIntent's status is {pi['status']}, so it cannot be confirmed.",
                           code="payment_intent_unexpected_state", param="payment_method")
        pm = params.get("payment_method") or pi.get("payment_method")
        if pm is None or pm not in self.cards:
            raise ApiError(400, "You must provide a payment method to confirm this PaymentIntent.",
                           code="payment_intent_unexpected_state", param="payment_method")
        pi["payment_method"] = pm
        if self.cards[pm]:
            pi.update(status="requires_payment_method",
                      last_payment_error={"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                                          "message": "Your card was declined.", "payment_method": {"id": pm}})
            self.emit("payment_intent.payment_failed", pi)
            raise ApiError(402, "Your card was declined.", type_="card_error", code="card_declined")
        _, charge = self.create_payment(pi["customer"], pi["amount"], pi["metadata"], paid=True)
        self.objects.pop(_, None)  # the intent is this one, not the helper's
        self.objects[charge]["payment_intent"] = pi["id"]
        pi.update(status="succeeded", amount_received=pi["amount"], latest_charge=charge, last_payment_error=None)
        self.emit("charge.succeeded", self.objects[charge])
        self.emit("payment_intent.succeeded", pi)
        return pi

    def create_subscription(self, customer: str, items: list[dict], metadata: dict) -> dict:
        sub = copy.deepcopy(FIXTURES["subscription"])
        start = self.now()
        item_template = sub["items"]["data"][0]
        sub_items = []
        for it in items:
            si = copy.deepcopy(item_template)
            si.update(id=new_id("si"), current_period_start=start, current_period_end=start + 30 * DAY, quantity=int(it.get("quantity", 1)))
            si["price"] = self.price_json(it["price"])
            sub_items.append(si)
        # Checkout saves the card it collected as the subscription's own default payment method
        # (not the customer's: that is what the portal's "update payment method" sets).
        sub.update(id=new_id("sub"), customer=customer, status="active", metadata=metadata, created=start,
                   start_date=start, cancel_at_period_end=False, canceled_at=None, ended_at=None,
                   cancel_at=None, livemode=False, pause_collection=None,
                   default_payment_method=self.new_card())
        sub["items"] = {**sub["items"], "data": sub_items, "url": f"/v1/subscription_items?subscription={sub['id']}"}
        self.objects[sub["id"]] = sub
        self.emit("customer.subscription.created", sub)
        invoice = self.create_invoice(sub, fail=False)
        sub["latest_invoice"] = invoice["id"]
        return sub

    def metered_usage(self, meter_id: str, customer: str, start: int, end: int) -> int:
        """What the meter holds for the customer in [start, end): what Stripe bills."""
        m = self.meters[meter_id]
        return sum(int(e["payload"][m["value_key"]]) for e in self.meter_events.values()
                   if e["event_name"] == m["event_name"] and e["payload"].get(m["customer_key"]) == customer
                   and start <= e["timestamp"] < end)

    @staticmethod
    def metered_amount(price: dict, quantity: int) -> int:
        """A metered price's amount for `quantity` units, in cents (integers and exact decimals
        only: no floats). Volume: the whole quantity at the tier it reaches. Graduated: each
        tier's share at its own rate, plus the flat amount of every tier reached."""
        if price.get("tiers_mode") == "volume":
            for tier in price["tiers"]:
                if tier["up_to"] == "inf" or quantity <= int(tier["up_to"]):
                    exact = Decimal(tier["unit_amount_decimal"]) * quantity + int(tier.get("flat_amount", 0))
                    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if price.get("tiers_mode") == "graduated":
            exact, below = Decimal(0), 0
            for tier in price["tiers"]:
                if quantity <= below:
                    break
                top = quantity if tier["up_to"] == "inf" else min(quantity, int(tier["up_to"]))
                exact += Decimal(tier["unit_amount_decimal"]) * (top - below) + int(tier.get("flat_amount", 0))
                below = top
            return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        divide_by = int(price.get("divide_by", 1))
        return -(-quantity // divide_by) * int(price["unit_amount"])

    def invoice_line(self, inv: dict, price_id: str, amount: int, quantity: int, start: int, end: int, description: str) -> dict:
        line = copy.deepcopy(FIXTURES["invoice"]["lines"]["data"][0])
        line.update(id=new_id("il"), invoice=inv["id"], amount=amount, subtotal=amount, currency="usd",
                    description=description, quantity=quantity, period={"start": start, "end": end},
                    pricing={"type": "price_details", "unit_amount_decimal": None,
                             "price_details": {"price": price_id, "product": f"prod_{price_id}"}},
                    livemode=False)
        return line

    def create_invoice(self, sub: dict, fail: bool, usage_period: tuple[int, int] | None = None) -> dict:
        """The subscription's invoice: each recurring price for the period ahead and, on a renewal,
        each metered price for `usage_period` (the period that ended), from its meter."""
        inv = copy.deepcopy(FIXTURES["invoice"])
        inv["id"] = new_id("in")
        period = sub["items"]["data"][0]
        lines = []
        for item in sub["items"]["data"]:
            price_id = item["price"]["id"]
            price = self.price(price_id)
            if price["kind"] == "recurring":
                lines.append(self.invoice_line(inv, price_id, price["unit_amount"], 1, period["current_period_start"],
                                               period["current_period_end"], f"1 × {price_id}"))
            elif price["kind"] == "metered" and usage_period:
                units = self.metered_usage(price["meter"], sub["customer"], *usage_period)
                lines.append(self.invoice_line(inv, price_id, self.metered_amount(price, units), units, *usage_period,
                                               f"{units:,} units × {price_id}"))
        amount = sum(line["amount"] for line in lines)
        number = f"SIM-{len([o for o in self.objects.values() if o.get('object') == 'invoice']) + 1:04d}"
        inv.update(
            customer=sub["customer"], subscription=None, status="draft", number=number,
            lines={"object": "list", "data": lines, "has_more": False, "url": f"/v1/invoices/{inv['id']}/lines"},
            amount_due=amount, amount_paid=0, amount_remaining=amount, total=amount, subtotal=amount,
            currency="usd", attempt_count=0, attempted=False, created=self.now(),
            period_start=period["current_period_start"], period_end=period["current_period_end"],
            hosted_invoice_url=None, invoice_pdf=None, next_payment_attempt=None, livemode=False,
            billing_reason="subscription_cycle",
            parent={"type": "subscription_details", "quote_details": None,
                    "subscription_details": {"subscription": sub["id"], "metadata": sub.get("metadata", {})}},
        )
        self.objects[inv["id"]] = inv
        self.emit("invoice.created", inv)
        inv.update(status="open", hosted_invoice_url=f"https://invoice.stripe.com/i/{inv['id']}",
                   invoice_pdf=f"https://pay.stripe.com/invoice/{inv['id']}/pdf")
        self.emit("invoice.finalized", inv)
        if (sub.get("pause_collection") or {}).get("behavior") == "void":
            # Collection paused with `void`: the invoice is created and voided, never charged.
            return self.close_invoice(inv, "void", "invoice.voided")
        if fail:
            self.fail_invoice(inv)
        else:
            self.pay_invoice(inv)
        return inv

    def pay_invoice(self, inv: dict) -> dict:
        if inv["status"] == "paid":
            raise ApiError(400, "Invoice is already paid", code="invoice_already_paid")
        inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0, attempted=True,
                   attempt_count=inv["attempt_count"] + 1, next_payment_attempt=None)
        self.emit("invoice.paid", inv)
        sub = self.objects.get(inv["parent"]["subscription_details"]["subscription"])
        if sub and sub["status"] in ("past_due", "unpaid"):
            previous = {"status": sub["status"]}
            sub["status"] = "active"
            self.emit("customer.subscription.updated", sub, previous)
        return inv

    def attempt_payment(self, inv: dict, card: str | None) -> dict:
        """A payment attempt with `card`, else the subscription's own card, else the customer's
        default (Stripe's order): a declined card fails the attempt as Stripe does (402, and
        `invoice.payment_failed`)."""
        if inv["status"] == "paid":
            raise ApiError(400, "Invoice is already paid", code="invoice_already_paid")
        if inv["status"] not in ("open", "uncollectible"):
            raise ApiError(400, f"You can only pay an open invoice; this one is {inv['status']}", code="invoice_not_open")
        sub = self.objects.get(inv["parent"]["subscription_details"]["subscription"]) or {}
        customer = self.objects.get(inv["customer"]) or {}
        card = card or sub.get("default_payment_method") or (customer.get("invoice_settings") or {}).get("default_payment_method")
        if card is not None and card not in self.cards:
            raise ApiError(400, f"No such PaymentMethod: '{card}'", code="resource_missing", param="payment_method")
        if card is None or self.cards[card]:
            if inv["status"] == "open":
                self.fail_invoice(inv)
            raise ApiError(402, "Your card was declined.", type_="card_error", code="card_declined")
        return self.pay_invoice(inv)

    def close_invoice(self, inv: dict, status: str, event_type: str) -> dict:
        """`mark_uncollectible` and `void`: only an open invoice, as Stripe allows."""
        if inv["status"] != "open":
            raise ApiError(400, f"You can only {status.replace('_', ' ')} an open invoice; this one is {inv['status']}",
                           code="invoice_not_open")
        inv.update(status=status, next_payment_attempt=None)
        self.emit(event_type, inv)
        return inv

    def fail_invoice(self, inv: dict) -> dict:
        if inv["status"] != "open":
            raise ApiError(400, f"Invoice is {inv['status']}", code="invoice_not_open")
        inv.update(attempted=True, attempt_count=inv["attempt_count"] + 1)
        # Stripe's Smart Retries: a few days later, up to four attempts.
        inv["next_payment_attempt"] = self.now() + 3 * DAY if inv["attempt_count"] < 4 else None
        self.emit("invoice.payment_failed", inv)
        sub = self.objects.get(inv["parent"]["subscription_details"]["subscription"])
        if sub and sub["status"] == "active":
            sub["status"] = "past_due"
            self.emit("customer.subscription.updated", sub, {"status": "active"})
        return inv

    def cancel_subscription(self, sub: dict) -> dict:
        if sub["status"] == "canceled":
            raise ApiError(400, "This subscription is already canceled", code="resource_missing")
        sub.update(status="canceled", canceled_at=self.now(), ended_at=self.now())
        self.emit("customer.subscription.deleted", sub)
        return sub

    def update_subscription(self, sub: dict, params: dict) -> dict:
        previous = {}
        if "items" in params:
            # A price change (`items[0][id]` with a new `price`) applies from now: the period
            # and its usage so far stay, and the renewal bills the ended period's usage on the
            # price the item has then. No proration (see the README).
            previous["items"] = copy.deepcopy(sub["items"])
            for i, change in enumerate(params["items"] or []):
                price_id = change.get("price")
                if not price_id:
                    raise ApiError(400, "items need a price", param=f"items[{i}][price]")
                self.price(price_id)
                match = [si for si in sub["items"]["data"] if si["id"] == change.get("id")]
                if change.get("id") and not match:
                    raise ApiError(400, f"No such subscription item: '{change['id']}'", param=f"items[{i}][id]")
                if match:
                    match[0]["price"] = self.price_json(price_id)
                else:
                    first = sub["items"]["data"][0]
                    si = copy.deepcopy(first)
                    si.update(id=new_id("si"), price=self.price_json(price_id))
                    sub["items"]["data"].append(si)
        if "pause_collection" in params:
            previous["pause_collection"] = sub.get("pause_collection")
            value = params["pause_collection"]
            if value == "":
                sub["pause_collection"] = None
            elif isinstance(value, dict) and value.get("behavior") in ("void", "keep_as_draft", "mark_uncollectible"):
                sub["pause_collection"] = {"behavior": value["behavior"], "resumes_at": None}
            else:
                raise ApiError(400, "Invalid pause_collection[behavior]", param="pause_collection[behavior]")
        if "default_payment_method" in params:
            if params["default_payment_method"] not in self.cards:
                raise ApiError(400, f"No such PaymentMethod: '{params['default_payment_method']}'",
                               code="resource_missing", param="default_payment_method")
            previous["default_payment_method"] = sub.get("default_payment_method")
            sub["default_payment_method"] = params["default_payment_method"]
        if "cancel_at_period_end" in params:
            previous["cancel_at_period_end"] = sub["cancel_at_period_end"]
            sub["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
        if "metadata" in params:
            previous["metadata"] = sub.get("metadata", {})
            sub["metadata"] = {**sub.get("metadata", {}), **params["metadata"]}
        self.emit("customer.subscription.updated", sub, previous)
        return sub

    def refund(self, params: dict) -> dict:
        charge_id = params.get("charge")
        if not charge_id and params.get("payment_intent"):
            charge_id = self.get(params["payment_intent"], "payment_intent")["latest_charge"]
        charge = self.get(charge_id or "", "charge")
        amount = int(params.get("amount", charge["amount"] - charge["amount_refunded"]))
        if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
            raise ApiError(400, "Refund amount exceeds what is refundable", code="amount_too_large", param="amount")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = copy.deepcopy(FIXTURES["refund"])
        refund.update(id=new_id("re"), amount=amount, charge=charge["id"], payment_intent=charge["payment_intent"],
                      currency="usd", status="succeeded", created=self.now())
        self.objects[refund["id"]] = refund
        self.emit("charge.refunded", charge)
        return refund

    def meter_for(self, event_name: str) -> dict:
        for meter in self.meters.values():
            if meter["event_name"] == event_name:
                return meter
        raise ApiError(400, f"No active meter was found matching event_name {event_name!r}.", param="event_name")

    def meter_event(self, params: dict) -> dict:
        """`POST /v1/billing/meter_events`, called without the simulator's lock: the per-customer
        lock is what concurrent calls meet."""
        event_name = params.get("event_name")
        if not event_name:
            raise ApiError(400, "Missing required param: event_name.", param="event_name")
        meter = self.meter_for(event_name)
        payload = params.get("payload") or {}
        customer, value = payload.get(meter["customer_key"]), payload.get(meter["value_key"])
        if not customer or value is None:
            raise ApiError(400, f"payload needs {meter['customer_key']} and {meter['value_key']}.", param="payload")
        if not str(value).isdigit() or len(str(value)) > 15:
            raise ApiError(400, "payload value must be a whole number of at most 15 digits.", param="payload[value]")
        now = self.now()
        timestamp = int(params.get("timestamp") or now)
        if timestamp < now - 35 * DAY:
            raise ApiError(400, "timestamp must be within the past 35 calendar days.", param="timestamp")
        if timestamp > now + 300:
            raise ApiError(400, "timestamp must be at most 5 minutes in the future.", param="timestamp")
        identifier = params.get("identifier") or new_id("mev")
        key = (customer, event_name)
        with self.lock:
            self.get(customer, "customer")
            if identifier in self.meter_events:
                # Stripe ignores an identifier it has seen (for at least 24 hours).
                return self.meter_events[identifier]
            if key in self.meter_in_flight:
                raise ApiError(429, "A meter event for this customer and meter is already being processed; retry.",
                               type_="rate_limit_error", code="rate_limit")
            self.meter_in_flight.add(key)
        try:
            time.sleep(self.meter_hold_ms / 1000)
            with self.lock:
                ev = copy.deepcopy(FIXTURES["billing.meter_event"])
                ev.update(identifier=identifier, event_name=event_name, payload=payload,
                          timestamp=timestamp, created=now, livemode=False)
                self.meter_events[identifier] = ev
                return ev
        finally:
            with self.lock:
                self.meter_in_flight.discard(key)

    def meter_json(self, meter_id: str) -> dict:
        m = self.meters.get(meter_id)
        if m is None:
            raise ApiError(404, f"No such billing meter: '{meter_id}'", code="resource_missing", param="id")
        out = copy.deepcopy(FIXTURES["billing.meter"])
        out.update(id=meter_id, event_name=m["event_name"], display_name=m.get("display_name", meter_id),
                   customer_mapping={"event_payload_key": m["customer_key"], "type": "by_id"},
                   value_settings={"event_payload_key": m["value_key"]}, livemode=False,
                   default_aggregation={"formula": m.get("formula", "sum")}, status=m.get("status", "active"))
        return out

    def event_summaries(self, meter_id: str, query: dict) -> dict:
        """One summary of the customer's events in [start_time, end_time), both minute-aligned."""
        meter = self.meter_json(meter_id)
        for field in ("customer", "start_time", "end_time"):
            if not query.get(field):
                raise ApiError(400, f"Missing required param: {field}.", param=field)
        start, end = int(query["start_time"]), int(query["end_time"])
        for field, t in (("start_time", start), ("end_time", end)):
            if t % 60:
                raise ApiError(400, f"{field} must be aligned with minute boundaries.", param=field)
        if query.get("value_grouping_window"):
            raise ApiError(400, "value_grouping_window is not supported by the simulator.", param="value_grouping_window")
        key = meter["customer_mapping"]["event_payload_key"]
        total = sum(int(e["payload"][meter["value_settings"]["event_payload_key"]])
                    for e in self.meter_events.values()
                    if e["event_name"] == meter["event_name"] and e["payload"].get(key) == query["customer"]
                    and start <= e["timestamp"] < end)
        summary = copy.deepcopy(FIXTURES["billing.meter_event_summary"])
        summary.update(id=new_id("mtrusg"), meter=meter_id, aggregated_value=total, start_time=start,
                       end_time=end, livemode=False)
        return {"object": "list", "data": [summary], "has_more": False,
                "url": f"/v1/billing/meters/{meter_id}/event_summaries"}

    def list_events(self, query: dict) -> dict:
        limit = min(int(query.get("limit", 10)), 100)
        gte = int(query.get("created[gte]", 0))
        events = [e for e in reversed(self.events) if e["created"] >= gte  # newest first, as Stripe lists
                  and query.get("type") in (None, e["type"])]
        if query.get("starting_after"):
            ids = [e["id"] for e in events]
            if query["starting_after"] in ids:
                events = events[ids.index(query["starting_after"]) + 1:]
        page = events[:limit]
        return {"object": "list", "data": page, "has_more": len(events) > limit, "url": "/v1/events"}

    # --- routing ----------------------------------------------------------------------------------

    def route(self, method: str, path: str, params: dict, query: dict) -> tuple[int, dict]:
        p = path.rstrip("/").split("/")[1:]  # e.g. ["v1", "customers", "cus_1"]
        if method == "POST" and p == ["v1", "billing", "meter_events"]:
            return 200, self.meter_event(params)
        if p == ["_sim", "drain"]:
            # Waits for the delivery thread, so it must not hold the lock that thread needs.
            return 200, {"drained": self.drained(float(params.get("timeout", 20)))}
        with self.lock:
            if p[:1] == ["_sim"]:
                return 200, self.control(method, p[1:], params)
            if p[:1] != ["v1"]:
                raise ApiError(404, f"Unrecognized request URL ({method}: {path})")
            r = p[1:]
            handled = self.route_setup(method, r, params)
            if handled is not None:
                return 200, handled
            match method, r:
                case "POST", ["customers"]:
                    return 200, self.create_customer(params)
                case "GET", ["customers", cid]:
                    return 200, self.get(cid, "customer")
                case "POST", ["customers", cid]:
                    return 200, self.update_customer(self.get(cid, "customer"), params)
                case "POST", ["checkout", "sessions"]:
                    return 200, public(self.create_session(params))
                case "GET", ["checkout", "sessions", sid]:
                    return 200, public(self.get(sid, "checkout.session"))
                case "GET", ["subscriptions", sid]:
                    return 200, self.get(sid, "subscription")
                case "POST", ["payment_intents"]:
                    return 200, self.create_payment_intent(params)
                case "GET", ["payment_intents", pid]:
                    return 200, self.get(pid, "payment_intent")
                case "POST", ["payment_intents", pid, "confirm"]:
                    return 200, self.confirm_payment_intent(self.get(pid, "payment_intent"), params)
                case "POST", ["prices"]:
                    return 200, self.create_price(params)
                case "GET", ["prices", pid]:
                    if pid not in self.prices:
                        raise ApiError(404, f"No such price: '{pid}'", code="resource_missing", param="id")
                    return 200, self.price_json(pid)
                case "POST", ["subscriptions"]:
                    # A subscription made directly (as sales do for a deal), charged to the
                    # customer's default card; its first invoice is paid at once.
                    customer = self.get(params.get("customer", ""), "customer")
                    items = params.get("items") or []
                    if not items or not all(i.get("price") for i in items):
                        raise ApiError(400, "items[0][price] is required", param="items")
                    for i, item in enumerate(items):
                        if self.price(item["price"])["kind"] == "one_time":
                            raise ApiError(400, f"The price {item['price']} is not recurring.", param=f"items[{i}][price]")
                    return 200, self.create_subscription(customer["id"], items, params.get("metadata", {}))
                case "POST", ["subscriptions", sid]:
                    return 200, self.update_subscription(self.get(sid, "subscription"), params)
                case "DELETE", ["subscriptions", sid]:
                    return 200, self.cancel_subscription(self.get(sid, "subscription"))
                case "GET", ["invoices", iid]:
                    return 200, self.get(iid, "invoice")
                case "POST", ["invoices", iid, "pay"]:
                    return 200, self.attempt_payment(self.get(iid, "invoice"), params.get("payment_method"))
                case "POST", ["invoices", iid, "mark_uncollectible"]:
                    return 200, self.close_invoice(self.get(iid, "invoice"), "uncollectible", "invoice.marked_uncollectible")
                case "POST", ["invoices", iid, "void"]:
                    return 200, self.close_invoice(self.get(iid, "invoice"), "void", "invoice.voided")
                case "GET", ["invoices"]:
                    data = [o for o in self.objects.values() if o.get("object") == "invoice" and o.get("customer") == query.get("customer")]
                    return 200, {"object": "list", "data": data[::-1], "has_more": False, "url": "/v1/invoices"}
                case "POST", ["billing_portal", "sessions"]:
                    return 200, self.portal_session(params)
                case "GET", ["billing", "meters"]:
                    data = [self.meter_json(m) for m in self.meters]
                    return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/billing/meters"}
                case "GET", ["billing", "meters", mid]:
                    return 200, self.meter_json(mid)
                case "GET", ["billing", "meters", mid, "event_summaries"]:
                    return 200, self.event_summaries(mid, query)
                case "POST", ["refunds"]:
                    return 200, self.refund(params)
                case "GET", ["events"]:
                    return 200, self.list_events(query)
                case "GET", ["events", eid]:
                    for e in self.events:
                        if e["id"] == eid:
                            return 200, e
                    raise ApiError(404, f"No such event: '{eid}'", code="resource_missing", param="id")
            raise ApiError(404, f"Unrecognized request URL ({method}: {path})")

    def portal_session(self, params: dict) -> dict:
        customer = self.get(params.get("customer", ""), "customer")
        s = copy.deepcopy(FIXTURES["billing_portal.session"])
        sid = new_id("bps")
        s.update(id=sid, customer=customer["id"], return_url=params.get("return_url"),
                 url=f"http://127.0.0.1/portal/{sid}", created=self.now(), livemode=False)
        return s

    def control(self, method: str, p: list[str], body: dict) -> dict:
        match p:
            case ["checkout", "sessions", sid, "complete"]:
                return public(self.complete_session(self.get(sid, "checkout.session"), body.get("payment", "succeeds")))
            case ["subscriptions", sid, "renew"]:
                # A new billing period: its invoice is paid, or fails when asked to.
                # The invoice bills the new period's fees ahead and the ended period's metered
                # usage in arrears, as Stripe's renewal invoice does.
                sub = self.get(sid, "subscription")
                if body.get("fail") in (True, "true") and sub.get("default_payment_method"):
                    # The card on file starts declining: Stripe's retries with it fail too.
                    self.cards[sub["default_payment_method"]] = True
                ended = (sub["items"]["data"][0]["current_period_start"], sub["items"]["data"][0]["current_period_end"])
                for item in sub["items"]["data"]:
                    item["current_period_start"] = item["current_period_end"]
                    item["current_period_end"] += 30 * DAY
                self.emit("customer.subscription.updated", sub, {"items": "period"})
                return self.create_invoice(sub, fail=body.get("fail") in (True, "true"), usage_period=ended)
            case ["invoices", iid, "fail"]:
                return self.fail_invoice(self.get(iid, "invoice"))
            case ["invoices", iid, "pay"]:
                return self.pay_invoice(self.get(iid, "invoice"))
            case ["invoices", iid, "retry"]:
                # Stripe's own scheduled retry (Smart Retries): the subscription's card first.
                inv = self.get(iid, "invoice")
                try:
                    return self.attempt_payment(inv, None)
                except ApiError as e:
                    if e.status != 402:
                        raise
                    return inv
            case ["customers", cid, "payment_method"]:
                # The customer adds a card in the portal ("update payment method"): it becomes
                # the customer's default, and the subscription keeps its own card.
                c = self.get(cid, "customer")
                pm = self.new_card(declines=body.get("declines") in (True, "true"))
                settings = c.get("invoice_settings") or {}
                previous = {"invoice_settings": {"default_payment_method": settings.get("default_payment_method")}}
                c["invoice_settings"] = {**settings, "default_payment_method": pm}
                self.emit("customer.updated", c, previous)
                return c
            case ["keys"]:
                # Which keys made how many allowed calls, by the key's name (its secret part cut).
                return {k.rsplit("_", 1)[0]: n for k, n in self.key_calls.items()}
            case ["faults"]:
                # {"method": "GET", "path": "/v1/events", "status": 429, "times": 2}
                self.faults.append({"method": body.get("method"), "path": body["path"],
                                    "status": int(body.get("status", 500)), "times": int(body.get("times", 1))})
                return {"faults": self.faults}
            case ["delivery"]:
                self.delivery.update({k: body[k] for k in ("duplicate", "reorder", "delay_ms", "paused") if k in body})
                self.wake.notify()
                return self.delivery
            case ["meters"]:
                # {"hold_ms": N}: how long recording one meter event takes (the 429 window).
                self.meter_hold_ms = int(body.get("hold_ms", self.meter_hold_ms))
                return {"hold_ms": self.meter_hold_ms}
            case ["clock", "advance"]:
                self.clock_offset += int(body.get("seconds", 0))
                return {"now": self.now()}
            case ["deliveries"]:
                return {"deliveries": self.deliveries}
        raise ApiError(404, f"Unknown simulator control: {'/'.join(p)}")

    def take_fault(self, method: str, path: str) -> int | None:
        with self.lock:
            for f in self.faults:
                if f["times"] > 0 and path.startswith(f["path"]) and f["method"] in (None, method):
                    f["times"] -= 1
                    return f["status"]
        return None


def public(obj: dict) -> dict:
    """The object as the API shows it: without the simulator's own bookkeeping."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def make_handler(sim: StripeSimulator):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def respond(self, status: int, body: dict | bytes, extra: dict | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", new_id("req"))
            self.send_header("Stripe-Version", self.headers.get("Stripe-Version") or API_VERSION)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def restricted_refusal(self, key: str, path: str) -> tuple[int, dict] | None:
            if not key.startswith("rk_"):
                return None
            if key not in sim.restricted_keys:
                return 401, {"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {redacted(key)}"}}
            needed = permission_needed(self.command, path)
            if needed and grants(sim.restricted_keys[key], needed):
                return None
            if sim.refusal_log:
                with open(sim.refusal_log, "a") as f:
                    f.write(json.dumps({"key": key.rsplit("_", 1)[0], "method": self.command, "path": path,
                                        "needed": needed}) + "\n")
            # Stripe's permission error: 403, type invalid_request_error, naming what would allow it.
            why = (f"Having the 'rak_{needed}' permission would allow this request to continue." if needed
                   else "This is a restricted API key, but the required permissions are not available for use by restricted keys.")
            return 403, {"error": {"type": "invalid_request_error", "message":
                f"The provided key '{redacted(key)}' does not have the required permissions for this endpoint "
                f"on account '{sim.account_id}'. {why}"}}

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            control = url.path.startswith("/_sim/")
            if not control:
                with sim.lock:
                    sim.api_calls[(self.command, url.path)] = sim.api_calls.get((self.command, url.path), 0) + 1
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer sk_test_") and not auth.startswith("Bearer rk_test_"):
                    return self.respond(401, {"error": {"type": "invalid_request_error",
                                                        "message": "Invalid API Key provided (the simulator takes test-mode keys)."}})
                refused = self.restricted_refusal(auth.removeprefix("Bearer "), url.path)
                if refused:
                    return self.respond(*refused)
                with sim.lock:
                    k = auth.removeprefix("Bearer ")
                    sim.key_calls[k] = sim.key_calls.get(k, 0) + 1
                fault = sim.take_fault(self.command, url.path)
                if fault:
                    return self.respond(fault, {"error": {"type": "api_error" if fault >= 500 else "rate_limit_error",
                                                          "message": f"Injected {fault} from the simulator."}},
                                        {"Stripe-Should-Retry": "true"})
            try:
                # A GET carries its parameters in the query, nested as a form's (`lookup_keys[]=`).
                params = json.loads(raw or "{}") if control else parse_form(url.query if self.command == "GET" else raw)
            except ValueError:
                return self.respond(400, {"error": {"type": "invalid_request_error", "message": "Malformed body."}})
            key = self.headers.get("Idempotency-Key")
            # The body byte for byte: perhaps stricter than Stripe, which documents comparing the
            # parameters; it makes a request whose fields move between sends fail here first.
            fingerprint = hashlib.sha256(f"{self.command} {url.path} {raw}".encode()).hexdigest()
            keyed = bool(key) and self.command == "POST" and not control
            if keyed:
                with sim.lock:
                    seen = sim.idempotency.get(key)
                    # As Stripe: a second request under a key whose first is still running is
                    # answered 409, to be retried.
                    busy = not seen and key in sim.idempotency_in_flight
                    if not seen and not busy:
                        sim.idempotency_in_flight.add(key)
                if busy:
                    return self.respond(409, {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                        "message": "There is currently another in-progress request using this Idempotent Key."}})
                if seen:
                    if seen[0] != fingerprint:
                        return self.respond(400, {"error": {"type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}})
                    return self.respond(seen[1], seen[2], {"Idempotent-Replayed": "true"})
            try:
                status, body = sim.route(self.command, url.path, params, query)
            except ApiError as e:
                status, body = e.status, e.body
            except Exception:
                if keyed:
                    with sim.lock:
                        sim.idempotency_in_flight.discard(key)
                raise
            data = json.dumps(body).encode()
            if keyed:
                with sim.lock:
                    # Stripe keeps the first answer to a key for 24 hours, errors included (but not 5xx).
                    if status < 500:
                        sim.idempotency.setdefault(key, (fingerprint, status, data))
                    sim.idempotency_in_flight.discard(key)
            self.respond(status, data)

        do_GET = do_POST = do_DELETE = lambda self: self.handle_any()  # noqa: E731

    return Handler


def set_up(base: str, webhook_url: str, key: str = "sk_test_local", **kwargs):
    """Runs `make stripe-setup` (tools/stripe_setup.py) against a simulator at `base`: the account
    every local test and the demo start from. Answers its report (`ids`, `webhook_secret`)."""
    import sys

    tools = str(Path(__file__).resolve().parent.parent / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import stripe_setup

    report = stripe_setup.setup(key, webhook_url, api_base=base, **kwargs)
    if report.problems:
        raise RuntimeError(f"Stripe setup refused: {report.problems}")
    return report


def redacted(key: str) -> str:
    """A key as Stripe prints it in errors: its prefix, stars, and its last four characters."""
    prefix = key[:8]
    return prefix + "*" * max(0, len(key) - 12) + key[-4:]


def serve(port: int, webhook_url: str, signing_secrets: list[str]) -> tuple[StripeSimulator, ThreadingHTTPServer]:
    sim = StripeSimulator(webhook_url, signing_secrets)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(sim), bind_and_activate=False)
    server.request_queue_size = 1024  # accept bursts (Python's default backlog is 5)
    server.server_bind()
    server.server_activate()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="stripe-sim").start()
    return sim, server
