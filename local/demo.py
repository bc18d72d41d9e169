#!/usr/bin/env python3
"""The demo: a customer's first months, played against the local stack.

Starts the stack if it is not running (and stops it afterwards). Through the local Stripe, a
customer subscribes (checkout → subscription → invoice paid), buys credits and gets a partial
refund; her app then calls the usage function around its model requests (two models, a hold
released and one settled) and runs through the plan's allowance into credits and overage; the
notifier emails her as credits run low and publishes every notification on the event bus; the
overage reaches Stripe's meter and reconciles; the next invoice bills it and fails, and dunning
chases it through retry, email, downgrade and suspension until she adds a card in the portal,
which is charged and brings her back. Every webhook is delivered twice and out of order; the app-facing API
shows the account, and the usage function its balance, after each step. Then forged, tampered,
replayed and live-mode deliveries are refused at the webhook.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import boto3
import stripe

sys.path.insert(0, str(Path(__file__).resolve().parent))

from event_sources import scheduled_event  # noqa: E402
from stack import Settings, read_pid  # noqa: E402
from template import ROOT  # noqa: E402

FIXTURES = json.loads((ROOT / "shared" / "tests" / "fixtures" / "stripe-objects.json").read_text())["resources"]
CUSTOMER = "cus_QvDemoAda000001"


def stripe_object(kind: str, **fields) -> dict:
    """A complete Stripe object of `kind` (Stripe's own fixture shape) with our values."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(fields)
    return obj


def stripe_event(event_id: str, event_type: str, obj: dict, created: int, livemode: bool = False) -> str:
    event = copy.deepcopy(FIXTURES["event"])
    event.update(
        id=event_id, type=event_type, created=created, livemode=livemode,
        api_version="2026-09-30.endive", pending_webhooks=1, data={"object": obj},
    )
    return json.dumps(event, indent=2)  # Stripe delivers pretty-printed JSON


def forgeries(now: int) -> list[tuple[str, str, str]]:
    """(what happens, body, Stripe-Signature header): deliveries the webhook must refuse."""
    secret = Settings().webhook_secrets[0]
    sign = lambda body, at=now, key=secret: stripe.WebhookSignature.generate_signature_header(body, key, timestamp=at)  # noqa: E731

    invoice = stripe_event("evt_1QvDemo0000004", "invoice.paid", stripe_object(
        "invoice", id="in_QvDemoInvoice01", customer=CUSTOMER, amount_due=4900, amount_paid=4900,
        amount_remaining=0, status="paid", livemode=False), now - 30)
    live = stripe_event("evt_1QvDemo0000005", "invoice.paid", stripe_object(
        "invoice", id="in_QvDemoLive0001", customer=CUSTOMER, livemode=True), now - 20, livemode=True)

    return [
        ("someone edits the amount", invoice.replace('"amount_paid": 4900', '"amount_paid": 1'), sign(invoice)),
        ("a capture replayed 1 h later", invoice, sign(invoice, at=now - 3600)),
        ("signed by a stranger", invoice, sign(invoice, key="whsec_not_ours")),
        ("a live-mode event", live, sign(live)),
    ]


def deliver(url: str, body: str, signature: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=body.encode(), method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature,
                 "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def read_env(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def stripe_call(env: dict, method: str, path: str, params: dict | None = None) -> dict:
    body = urllib.parse.urlencode(params or {}).encode() if method != "GET" else None
    req = urllib.request.Request(env["LOCAL_STRIPE_ENDPOINT"] + path, data=body, method=method, headers={
        "Authorization": f"Bearer {env['STRIPE_API_KEY']}", "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def sim(env: dict, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{env['LOCAL_STRIPE_ENDPOINT']}/_sim/{path}", data=json.dumps(body or {}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def api(env: dict, path: str) -> dict:
    with urllib.request.urlopen(env["LOCAL_HTTP_ENDPOINT"] + path, timeout=30) as r:
        return json.loads(r.read())


def wait_for(env: dict, account: str, check, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api(env, f"/v1/accounts/{account}")
        if check(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def wait_for_invoice(env: dict, account: str, invoice_id: str, check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [i for i in api(env, f"/v1/accounts/{account}/invoices")["data"] if i["id"] == invoice_id]
        if found and check(found[0]):
            return
        time.sleep(0.2)


def show_account(env: dict, account: str) -> None:
    a = api(env, f"/v1/accounts/{account}")
    sub = a.get("subscription") or {}
    print(f"    account {a['account_id']}: plan {a['plan']}, {a['included_units']:,} units included per period, "
          f"{a['credits']:,} credits")
    if sub:
        print(f"    subscription {sub['id']}: {sub['status']}, period "
              f"{time.strftime('%Y-%m-%d', time.gmtime(sub['current_period_start']))} → "
              f"{time.strftime('%Y-%m-%d', time.gmtime(sub['current_period_end']))}")
    for inv in api(env, f"/v1/accounts/{account}/invoices")["data"]:
        dunning = f", dunning {inv['dunning']['status']} after {inv['dunning']['failures']} failure(s)" if inv.get("dunning") else ""
        print(f"    invoice {inv['number']}: {inv['status']}, {inv['amount_paid'] / 100:.2f} {inv['currency'].upper()} paid{dunning}")


def play_stripe_story(env: dict) -> None:
    account = f"acct_demo_{int(time.time()) % 100000}"
    print(f"\n1. Ada subscribes to Pro through Stripe Checkout (account {account}): the app asks the API\n"
          "   for a session, she pays on Stripe's page.")
    print("   Stripe delivers every webhook twice and out of order, as it may.\n")
    sim(env, "delivery", {"duplicate": 1, "reorder": True})
    session = post_api(env, f"/v1/accounts/{account}/checkout", {
        "plan": "pro", "email": "ada@example.com",
        "success_url": "https://app.example.com/billing?ok", "cancel_url": "https://app.example.com/billing"})
    print(f"    the app asks for a checkout session: {session['session_id'][:24]}… → {session['url'][:40]}…")
    sim(env, f"checkout/sessions/{session['session_id']}/complete")
    sim(env, "drain")
    wait_for(env, account, lambda a: a["plan"] == "pro")
    time.sleep(1)
    show_account(env, account)
    customer = api(env, f"/v1/accounts/{account}")["customer_id"]

    print("\n2. She buys a 1M credit pack through checkout (with its invoice), then asks for 40 % back.\n")
    pack = post_api(env, f"/v1/accounts/{account}/checkout", {
        "credit_pack": "credits_small",
        "success_url": "https://app.example.com/billing?ok", "cancel_url": "https://app.example.com/billing"})
    done = sim(env, f"checkout/sessions/{pack['session_id']}/complete")
    wait_for(env, account, lambda a: a["credits"] == 1_000_000)
    print(f"    after the purchase: {api(env, f'/v1/accounts/{account}')['credits']:,} credits (invoice {done['invoice']})")
    stripe_call(env, "POST", "/v1/refunds", {"payment_intent": done["payment_intent"], "amount": "400"})
    wait_for(env, account, lambda a: a["credits"] == 600_000)
    print(f"    after a 4.00 USD refund: {api(env, f'/v1/accounts/{account}')['credits']:,} credits")

    period = play_usage(env, account)
    play_notifications(env, account)
    play_metering(env, account, customer, period)

    play_dunning(env, account, session_subscription(env, session["session_id"]), customer)
    sim(env, "delivery", {"duplicate": 0, "reorder": False})

    deliveries = sim(env, "deliveries")["deliveries"]
    events = {d["event"] for d in deliveries}
    outcomes = processor_outcomes(env, events)
    summary = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    print(f"\n   Stripe made {len(deliveries)} deliveries of {len(events)} events; the processor recorded "
          f"{sum(outcomes.values())} of them once each ({summary}).")


def usage(env: dict, payload: dict) -> dict:
    """Invokes UsageFunction as the app does (Lambda Invoke)."""
    url = f"{env['LOCAL_LAMBDA_ENDPOINT']}/2015-03-31/functions/UsageFunction/invocations"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def show_balance(b: dict) -> None:
    print(f"      left: {b['included_remaining']:,} of {b['included_units']:,} included, {b['credits']:,} credits, "
          f"{b['reserved']:,} reserved; {b['overage_units']:,} overage units this period; "
          f"{'allowed' if b['allowed'] else 'NOT allowed'}")


def show_track(what: str, answer: dict) -> None:
    c = answer["covered"]
    print(f"    {what} → {answer['units']:,} units ({answer['status']}): included {c['included']:,} · "
          f"credits {c['credits']:,} · overage {c['overage']:,} · uncovered {c['uncovered']:,}")
    show_balance(answer["balance"])


def call(account: str, request: str, model: str, tokens_in: int, tokens_out: int, **extra) -> dict:
    return {"action": "track", "account_id": account, "request_id": request, "model": model,
            "input_tokens": tokens_in, "output_tokens": tokens_out, **extra}


def play_usage(env: dict, account: str) -> dict:
    print("\n3. Her app calls the usage function around its model requests (rate card: gpt-4o 2 / 8 units per\n"
          "   input / output token, claude-sonnet 3 / 15, gpt-4o-mini 1 / 2).\n")
    show_track("gpt-4o, 400,000 in / 100,000 out", usage(env, call(account, "req-1", "gpt-4o", 400_000, 100_000)))
    show_track("claude-sonnet, 100,000 in / 20,000 out", usage(env, call(account, "req-2", "claude-sonnet", 100_000, 20_000)))
    again = usage(env, call(account, "req-2", "claude-sonnet", 100_000, 20_000))
    print(f"    the same request sent again → {again['status']}, {again['units']:,} units, nothing charged twice")

    hold = {"action": "reserve", "account_id": account, "model": "gpt-4o-mini", "input_tokens": 1_000_000,
            "output_tokens": 250_000, "ttl_seconds": 120}
    r = usage(env, {**hold, "request_id": "req-3"})
    print(f"    reserve for a gpt-4o-mini call → {r['status']} {r['units']:,} units ({r['reservation_id']})")
    show_balance(r["balance"])
    released = usage(env, {"action": "release", "account_id": account, "reservation_id": r["reservation_id"]})
    print(f"    the model call fails; release → {released['status']}")
    show_balance(released["balance"])
    r = usage(env, {**hold, "request_id": "req-4"})
    print(f"    reserve again → {r['status']} {r['units']:,} units")
    show_track("the call succeeds with 900,000 in / 200,000 out, settled against the hold",
               usage(env, call(account, "req-4", "gpt-4o-mini", 900_000, 200_000, reservation_id=r["reservation_id"])))
    show_track("a long gpt-4o batch, 500,000 in / 150,000 out",
               usage(env, call(account, "req-5", "gpt-4o", 500_000, 150_000)))

    print("\n    This period's usage by model (GET /v1/accounts/{id}/usage), and who paid for it:")
    for period in api(env, f"/v1/accounts/{account}/usage")["periods"]:
        for m in period["models"] + [dict(period["totals"], model="total")]:
            c = m["covered"]
            print(f"      {m['model']:<14} {m['requests']:>2} calls {m['units']:>11,} units: included {c['included']:>10,} · "
                  f"credits {c['credits']:>8,} · overage {c['overage']:>8,} · uncovered {c['uncovered']:,}")
    ddb = boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    notes = [i for i in ddb.scan(TableName=env["TABLE_NAME_BILLING_TABLE"], ConsistentRead=True)["Items"]
             if i["pk"]["S"].startswith("OUTBOX#") and i["account_id"]["S"] == account]
    names = sorted(f"{n['name']['S']} {json.loads(n['detail']['S']).get('percent', '')}".strip() for n in notes)
    print(f"    notifications written to the outbox with the usage that caused them: {', '.join(names)}")
    return usage(env, {"action": "balance", "account_id": account})


def bus_events(env: dict, account: str) -> list[dict]:
    """What the event bus published for the account (the local stack routes it to a queue)."""
    sqs = boto3.client("sqs", endpoint_url=env["LOCAL_AWS_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=env["LOCAL_BUS_QUEUE_URL"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return [e for e in out if e["detail"].get("account_id") == account]
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=env["LOCAL_BUS_QUEUE_URL"], ReceiptHandle=m["ReceiptHandle"])


def sent_mail(env: dict) -> list[dict]:
    with urllib.request.urlopen(env["LOCAL_SES_MESSAGES_URL"], timeout=10) as r:
        return json.loads(r.read())


def play_notifications(env: dict, account: str) -> None:
    print("\n4. The notifier delivers each outbox entry from the table's stream: an event on the bus\n"
          "   and, for her, an email (read back from SES).\n")
    deadline, events = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        events += bus_events(env, account)
        if any(e["detail-type"] == "credits.low" for e in events) and len(events) >= 3:
            break
        time.sleep(0.3)
    for e in sorted(events, key=lambda e: e["detail"]["id"]):
        facts = {k: v for k, v in e["detail"].items() if k not in ("id", "name", "account_id")}
        print(f"    event  {e['source']} / {e['detail-type']:<16} {json.dumps(facts)}")
    for m in sent_mail(env):
        if account in (m["body"] or "") and m["subject"] == "Your prepaid credits are running low":
            text = re.sub(r"<[^>]+>", " ", m["body"]).replace("&#39;", "'")
            first = re.sub(r"\s+", " ", text).strip().split(". ")[0]
            print(f"    email  to {', '.join(m['destinations']['ToAddresses'])}: \"{m['subject']}\"")
            print(f"           {first}.")


def fire(env: dict, function: str, at: int | None = None) -> dict:
    """Invokes a scheduled function as its schedule would, with `time` = `at`."""
    event = scheduled_event(function, datetime.fromtimestamp(at, timezone.utc) if at else None)
    url = f"{env['LOCAL_LAMBDA_ENDPOINT']}/2015-03-31/functions/{function}/invocations"
    req = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def meter_total(env: dict, customer: str, start: int, end: int) -> int:
    meter = next(m for m in stripe_call(env, "GET", "/v1/billing/meters")["data"] if m["event_name"] == "llm_overage_units")
    # The period's whole minutes, as reconciliation sums them (summaries take minute bounds).
    window = {"customer": customer, "start_time": start + (-start) % 60, "end_time": end - end % 60}
    got = stripe_call(env, "GET", f"/v1/billing/meters/{meter['id']}/event_summaries?{urllib.parse.urlencode(window)}")
    return int(sum(s["aggregated_value"] for s in got["data"]))


def play_metering(env: dict, account: str, customer: str, balance: dict) -> None:
    print("\n5. The meter reporter (every minute) ships the period's overage to Stripe's meter: one event\n"
          "   per account per run, claimed in the table before it is sent; the reconciler checks it.\n")
    local = balance["overage_units"]
    fire(env, "ReporterFunction")
    start, end = balance["period_start"], balance["period_end"]
    print(f"    overage recorded locally this period: {local:,} units")
    print(f"    Stripe's meter for {customer}: {meter_total(env, customer, start, end):,} units")
    again = fire(env, "ReporterFunction")
    print(f"    the next run sends {again['sent']} event(s): nothing is reported twice")
    result = fire(env, "ReconcilerFunction", end + 2 * 3600)
    print(f"    reconciliation after the period closed: {result['checked']} period(s) compared, "
          f"{result['agreed']} in agreement (recorded = confirmed = Stripe's summary)")


def usage_allowed(env: dict, account: str) -> str:
    check = usage(env, {"action": "check", "account_id": account, "model": "gpt-4o-mini",
                        "input_tokens": 100, "output_tokens": 50})
    return "allowed" if check["allowed"] else f"refused ({check['reason']})"


def dunning_run(env: dict, t0: int, days: float, label: str) -> dict:
    """Fires the dunning function as its schedule would at day `days` of the case, and prints
    the steps it took."""
    result = fire(env, "DunningFunction", t0 + int(days * 86_400))
    steps = ", ".join(t["step"] for t in result["taken"])
    if result.get("paid"):
        steps = ", ".join(filter(None, [steps, "charged the new card: invoice paid"]))
    print(f"    day {days:>5g}  dunning run ({label}): {steps or 'nothing due'}")
    return result


def play_dunning(env: dict, account: str, sub_id: str, customer: str) -> None:
    print("\n6. Next month's invoice (the base fee ahead, last month's overage from the meter) fails:\n"
          "   her card starts declining. Dunning runs every 15 minutes; here it is fired with later\n"
          "   scheduled times, as the clock moves through the case.\n")
    sim(env, "clock/advance", {"seconds": 30 * 86_400})
    failing = sim(env, f"subscriptions/{sub_id}/renew", {"fail": True})
    for line in failing["lines"]["data"]:
        print(f"    invoice line: {line['description']:<40} {line['amount'] / 100:>8.2f} USD")
    sim(env, "drain")
    wait_for_invoice(env, account, failing["id"], lambda i: (i.get("dunning") or {}).get("status") == "open")
    case = next(i for i in api(env, f"/v1/accounts/{account}/invoices")["data"] if i["id"] == failing["id"])
    t0 = case["dunning"]["first_failed_at"]
    print(f"    day     0  payment failed (1st); Stripe's own retry is scheduled for day 3")
    dunning_run(env, t0, 1, "Stripe's retry is due first: not doubled")

    def stripe_retry(day: int, nth: str) -> None:
        sim(env, "clock/advance", {"seconds": 3 * 86_400})
        sim(env, f"invoices/{failing['id']}/retry")
        sim(env, "drain")
        wait_for_invoice(env, account, failing["id"],
                         lambda i: (i.get("dunning") or {}).get("failures", 0) >= int(nth[0]))
        print(f"    day {day:>5}  Stripe's retry with the subscription's card fails ({nth})")

    stripe_retry(3, "2nd")
    dunning_run(env, t0, 3, "second failure")
    stripe_retry(6, "3rd")
    dunning_run(env, t0, 6, "third failure")
    a = wait_for(env, account, lambda a: a["downgraded"])
    sub = stripe_call(env, "GET", f"/v1/subscriptions/{sub_id}")
    print(f"                plan now {a['plan']} (downgraded), prepaid credits kept ({a['credits']:,} left); "
          f"Stripe collection paused ({sub['pause_collection']['behavior']})")
    dunning_run(env, t0, 13.99, "a run before the 14-day mark")
    dunning_run(env, t0, 14, "14 days unpaid")
    wait_for(env, account, lambda a: a["suspended"])
    track = usage(env, {"action": "track", "account_id": account, "request_id": "req_suspended",
                        "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 50})
    print(f"                suspended: a request is {usage_allowed(env, account)}; "
          f"one that ran anyway is {track['status']} ({track['units']} units)")

    portal = post_api(env, f"/v1/accounts/{account}/portal", {"return_url": "https://app.example.com/billing"})
    print(f"    day    15  she opens the customer portal ({portal['url']}) and adds a new card;")
    print("                it becomes her default, while the subscription still charges the old one")
    sim(env, f"customers/{customer}/payment_method")
    sim(env, "drain")
    time.sleep(1)
    result = dunning_run(env, t0, 15, "the card trap: charge the new card, not the subscription's")
    if not result.get("paid"):
        time.sleep(2)
        dunning_run(env, t0, 15.01, "the card trap, once her card reached the account")
    sim(env, "drain")
    a = wait_for(env, account, lambda a: not a["suspended"] and not a["downgraded"])
    print(f"                invoice paid: plan {a['plan']} again at once; a request is {usage_allowed(env, account)}")
    dunning_run(env, t0, 15.02, "after the payment")
    sub = stripe_call(env, "GET", f"/v1/subscriptions/{sub_id}")
    print(f"                Stripe collection {'resumed' if sub['pause_collection'] is None else 'still paused'}; "
          f"the subscription now charges {sub['default_payment_method']}")
    deadline, names = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        names += [e["detail-type"] for e in bus_events(env, account)
                  if e["detail"].get("id", "").endswith(failing["id"])]
        if len(names) >= 4:
            break
        time.sleep(0.3)
    print(f"    events on the bus: {', '.join(names)}")
    mails = [m["subject"] for m in sent_mail(env)
             if failing["id"] in (m["body"] or "") or account in (m["body"] or "")]
    print(f"    emails to her: {'; '.join(s for s in mails if 'credits' not in s)}")
    show_account(env, account)


def post_api(env: dict, path: str, body: dict) -> dict:
    req = urllib.request.Request(env["LOCAL_HTTP_ENDPOINT"] + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def processor_outcomes(env: dict, event_ids: set[str]) -> dict[str, int]:
    """How the processor recorded each event: one marker per event, whatever the deliveries."""
    ddb = boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    counts: dict[str, int] = {}
    for event_id in event_ids:
        item = ddb.get_item(TableName=env["TABLE_NAME_BILLING_TABLE"],
                            Key={"pk": {"S": f"EVENT#{event_id}"}, "sk": {"S": "EVENT"}}).get("Item")
        outcome = item["outcome"]["S"] if item else "not yet"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def session_subscription(env: dict, session_id: str) -> str:
    return stripe_call(env, "GET", f"/v1/checkout/sessions/{session_id}")["subscription"]


def deal_price(env: dict, included_units: int, tiers: list[tuple[str, str]]) -> dict:
    """A metered price on volume tiers, made for one customer as sales would in Stripe."""
    params = {"currency": "usd", "product_data[name]": "Acme volume overage", "recurring[interval]": "month",
              "recurring[usage_type]": "metered", "recurring[meter]": env["STRIPE_METER_ID"],
              "billing_scheme": "tiered", "tiers_mode": "volume",
              "metadata[plan]": "enterprise", "metadata[included_units]": str(included_units)}
    for i, (up_to, cents) in enumerate(tiers):
        params[f"tiers[{i}][up_to]"], params[f"tiers[{i}][unit_amount_decimal]"] = up_to, cents
    return stripe_call(env, "POST", "/v1/prices", params)


def play_enterprise(env: dict) -> None:
    print("\n7. An enterprise deal, made in Stripe while everything runs (no catalog change, no deploy):\n"
          "   sales create a volume-tiered overage price whose metadata names the plan and allowance.\n")
    # The dunning story moved the simulator's clock weeks ahead; this story starts today, so
    # that the usage reported to the meter falls in the new subscription's period.
    ahead = sim(env, "clock/advance", {"seconds": 0})["now"] - int(time.time())
    sim(env, "clock/advance", {"seconds": -ahead})
    account = "acct_demo_acme"
    customer = stripe_call(env, "POST", "/v1/customers", {"email": "billing@acme.example", "metadata[account_id]": account})
    tiers = [("2000000", "0.03"), ("inf", "0.02")]
    price = deal_price(env, 2_000_000, tiers)
    print(f"    {price['id']}: plan=enterprise, included_units=2,000,000; overage "
          + ", then ".join(f"{c} ¢/unit up to {u}" for u, c in tiers))
    sub = stripe_call(env, "POST", "/v1/subscriptions", {
        "customer": customer["id"], "metadata[account_id]": account,
        "items[0][price]": env["STRIPE_PRICE_ENTERPRISE_MONTHLY"], "items[1][price]": price["id"]})
    a = wait_for(env, account, lambda b: b["included_units"] == 2_000_000)
    print(f"    the account at once: plan {a['plan']}, {a['included_units']:,} units included")
    t = usage(env, {"action": "track", "account_id": account, "request_id": "acme-1", "model": "gpt-4o-mini",
                    "input_tokens": 1_000_000, "output_tokens": 600_000})
    show_track("acme-1   gpt-4o-mini 1,000,000 in / 600,000 out", t)
    print("\n    Mid-period, sales raise the allowance to 3,000,000 with a new price on the same item:")
    raised = deal_price(env, 3_000_000, [("5000000", "0.025"), ("inf", "0.015")])
    item = next(i for i in sub["items"]["data"] if i["price"]["id"] == price["id"])
    stripe_call(env, "POST", f"/v1/subscriptions/{sub['id']}", {"items[0][id]": item["id"], "items[0][price]": raised["id"]})
    wait_for(env, account, lambda b: b["included_units"] == 3_000_000)
    t = usage(env, {"action": "track", "account_id": account, "request_id": "acme-2", "model": "gpt-4o-mini",
                    "input_tokens": 1_500_000, "output_tokens": 0})
    show_track("acme-2   gpt-4o-mini 1,500,000 in", t)
    print("    (the 200,000 units of overage recorded before the change stay overage: never repriced backwards)")
    fire(env, "ReporterFunction")
    invoice = sim(env, f"subscriptions/{sub['id']}/renew")
    print("\n    The renewal invoice bills the period's overage from the meter on the deal's tiers:")
    for line in invoice["lines"]["data"]:
        print(f"      {line['description']:<52} {line['amount'] / 100:>10,.2f} USD")


def put_api(env: dict, path: str, body: dict) -> dict:
    req = urllib.request.Request(env["LOCAL_HTTP_ENDPOINT"] + path, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def topup_payments(env: dict, account: str) -> list[dict]:
    """The account's auto top-up payments that Stripe took (from Stripe's event log)."""
    query = urllib.parse.urlencode({"type": "payment_intent.succeeded", "limit": 100})
    events = stripe_call(env, "GET", f"/v1/events?{query}")["data"]
    return [e["data"]["object"] for e in events
            if e["data"]["object"]["metadata"].get("account_id") == account and "topup_seq" in e["data"]["object"]["metadata"]]


def wait_for_card(env: dict, account: str, card: str, timeout: float = 30) -> None:
    """Until the processor has put the customer's new default card on the account."""
    ddb = boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = ddb.get_item(TableName=env["TABLE_NAME_BILLING_TABLE"], ConsistentRead=True,
                            Key={"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": "ACCOUNT"}}).get("Item") or {}
        if item.get("customer_card", {}).get("S") == card:
            return
        time.sleep(0.2)


def play_auto_topup(env: dict) -> None:
    import concurrent.futures

    print("\n8. Auto top-up: a customer with a saved card opts in (PUT /v1/accounts/{id}/auto-topup), then\n"
          "   20 requests race across the threshold on several warm instances of the usage function.\n")
    account = "acct_demo_refill"
    customer = stripe_call(env, "POST", "/v1/customers", {"email": "ops@refill.example", "metadata[account_id]": account})
    session = stripe_call(env, "POST", "/v1/checkout/sessions", {
        "mode": "payment", "customer": customer["id"], "client_reference_id": account,
        "line_items[0][price]": env["STRIPE_PRICE_CREDITS_1M"], "line_items[0][quantity]": "1",
        "metadata[account_id]": account, "metadata[credit_pack]": "credits_small",
        "payment_intent_data[metadata][account_id]": account})
    sim(env, f"checkout/sessions/{session['id']}/complete")
    card = sim(env, f"customers/{customer['id']}/payment_method")["invoice_settings"]["default_payment_method"]
    wait_for_card(env, account, card)
    settings = put_api(env, f"/v1/accounts/{account}/auto-topup",
                       {"threshold": 600_000, "credit_pack": "credits_small", "monthly_cap": 3_000})["auto_topup"]
    a = wait_for(env, account, lambda b: b["credits"] == 1_000_000)
    print(f"    {a['credits']:,} credits; below {settings['threshold']:,} buy {settings['credit_pack']} "
          f"({settings['credits']:,} credits for {settings['amount'] / 100:.2f} USD), at most "
          f"{settings['monthly_cap'] / 100:.2f} USD a month")

    def one(i: int) -> dict:
        while True:
            answer = usage(env, {"action": "track", "account_id": account, "request_id": f"refill-{i}",
                                 "model": "unlisted-model", "input_tokens": 30_000, "output_tokens": 0})
            if answer.get("errorType") != "ContentionError":
                return answer
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(20)))
    recorded = sum(1 for x in answers if x.get("status") == "recorded")
    print(f"    20 × 30,000 units at once ({recorded} recorded): the free tier's 100,000 included units, then "
          f"500,000 credits, crossing the threshold once")
    a = wait_for(env, account, lambda b: b["credits"] > 1_000_000)
    paid = topup_payments(env, account)
    taken = ", ".join(f"{p['id']} {p['amount'] / 100:.2f} USD" for p in paid)
    print(f"    off-session payments Stripe took: {len(paid)} ({taken})")
    print(f"    credits after the top-up: {a['credits']:,} (granted by payment_intent.succeeded, as a purchase is)")


def play_forgeries(env: dict) -> None:
    print(f"\n9. Deliveries that are not Stripe's, or not fresh, are refused at {env['WEBHOOK_URL']}:\n")
    for what, body, signature in forgeries(int(time.time())):
        event = json.loads(body)
        status, answer = deliver(env["WEBHOOK_URL"], body, signature)
        outcome = "queued" if status == 200 else f"refused ({answer['error']['code']})"
        print(f"    {what:<30} {event['type']:<16} {status} {outcome}")


def play(env: dict) -> None:
    play_stripe_story(env)
    play_enterprise(env)
    play_auto_topup(env)
    play_forgeries(env)
    print("\nLogs:", Settings().state / "logs")


def main() -> None:
    settings = Settings()
    stack = [sys.executable, str(ROOT / "local" / "stack.py")]
    started_here = read_pid(settings) is None
    if started_here:
        subprocess.run(stack + ["up"], check=True, stdout=subprocess.DEVNULL)
    try:
        play(read_env(settings.state / "env"))
    finally:
        if started_here:
            subprocess.run(stack + ["down"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
