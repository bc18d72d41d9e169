"""Dunning through the whole local stack: a renewal's payment fails in the simulator, its events
reach the processor, and the dunning function (fired with later scheduled `time`s, as its
schedule would) retries, emails, downgrades and suspends, each once; the customer adds a card in
the portal, the next run charges that card (not the subscription's failing one), the payment's
events lift the restrictions at once and the run after reactivates the account."""

import uuid

from conftest import Stripe, eventually
from test_flows import account_where, api, subscribe
from test_metering import fire
from test_notifications import bus_events, clients, mail_to
from test_usage import invoke

DAY = 86_400


def steps_of(answer: dict) -> list[str]:
    return [t["step"] for t in answer.get("taken", [])]


def open_case(env, account: str, failures: int) -> dict:
    def check():
        status, body = api(env, f"/v1/accounts/{account}/invoices")
        for inv in body.get("data", []) if status == 200 else []:
            d = inv.get("dunning") or {}
            if d.get("status") == "open" and d.get("failures") == failures:
                return inv
        return None
    return eventually(check, what=f"an open case with {failures} failures")


def test_a_failed_renewal_is_chased_to_suspension_and_a_new_card_brings_it_back(stack):
    env, _ = stack
    _, sqs = clients(env)
    seen: list = []
    stripe, account = Stripe(env), f"acct_{uuid.uuid4().hex[:10]}"
    session = subscribe(stripe, account)
    customer, sub_id = session["customer"], session["subscription"]
    account_where(env, account, lambda b: b["plan"] == "pro" and b["billing_email"], "pro with a billing email")

    # The renewal's payment fails: the card on file starts declining.
    invoice = stripe.sim(f"subscriptions/{sub_id}/renew", {"fail": True})
    case = open_case(env, account, 1)
    t0 = case["dunning"]["first_failed_at"]
    assert case["id"] == invoice["id"]

    # Stripe has its own retry scheduled: ours is not doubled.
    answer, error = fire(env, "DunningFunction", t0 + DAY)
    assert error is None, answer
    assert steps_of(answer) == []

    # Stripe's retry fails: the second failure emails the customer and emits payment.failed.
    stripe.sim(f"invoices/{invoice['id']}/retry")
    open_case(env, account, 2)
    answer, _ = fire(env, "DunningFunction", t0 + 3 * DAY)
    assert steps_of(answer) == ["notify"], answer

    # The third failure downgrades, in Stripe (collection paused) and locally; credits stay.
    stripe.sim(f"invoices/{invoice['id']}/retry")
    open_case(env, account, 3)
    answer, _ = fire(env, "DunningFunction", t0 + 6 * DAY)
    assert steps_of(answer) == ["downgrade"], answer
    status, sub = stripe.call("GET", f"/v1/subscriptions/{sub_id}")
    assert sub["pause_collection"] == {"behavior": "void", "resumes_at": None}
    body = account_where(env, account, lambda b: b["downgraded"], "the downgrade")
    assert body["plan"] == "free"

    # Not one scheduled run early; then suspended: usage recorded but not allowed.
    answer, _ = fire(env, "DunningFunction", t0 + 14 * DAY - 900)
    assert steps_of(answer) == []
    answer, _ = fire(env, "DunningFunction", t0 + 14 * DAY)
    assert steps_of(answer) == ["suspend"], answer
    track, _ = invoke(env, {"action": "track", "account_id": account, "request_id": "r_susp",
                            "model": "m", "input_tokens": 10, "output_tokens": 0})
    assert (track["status"], track["allowed"], track["balance"]["status"]) == ("recorded", False, "suspended")

    # Repeated runs take nothing more.
    answer, _ = fire(env, "DunningFunction", t0 + 14 * DAY + 900)
    assert steps_of(answer) == [] and answer["already_taken"] == 0, answer

    # The customer adds a card in the portal: the customer's default, not the subscription's.
    stripe.sim(f"customers/{customer}/payment_method")
    status, c = stripe.call("GET", f"/v1/customers/{customer}")
    new_card = c["invoice_settings"]["default_payment_method"]

    def charged():
        answer, _ = fire(env, "DunningFunction", t0 + 14 * DAY + 1800)
        return answer if answer.get("paid") == 1 else None
    eventually(charged, what="the next run charging the new card")
    status, sub = stripe.call("GET", f"/v1/subscriptions/{sub_id}")
    assert sub["default_payment_method"] == new_card
    body = account_where(env, account, lambda b: not b["suspended"] and not b["downgraded"], "the restrictions lifted")
    assert body["plan"] == "pro"
    allowed, _ = invoke(env, {"action": "check", "account_id": account, "model": "m", "input_tokens": 10, "output_tokens": 0})
    assert allowed["allowed"] is True, allowed

    def reactivated():
        answer, _ = fire(env, "DunningFunction", t0 + 14 * DAY + 2700)
        return answer if "reactivate" in steps_of(answer) else None
    eventually(reactivated, what="the reactivation")
    status, sub = stripe.call("GET", f"/v1/subscriptions/{sub_id}")
    assert sub["pause_collection"] is None, "the plan bills again"

    # Every notification once, on the bus; the payment.failed email with the invoice link.
    names = ["payment.failed", "account.downgraded", "account.suspended", "account.reactivated"]
    ids = {f"{n}:{invoice['id']}" for n in names}
    events = eventually(lambda: (lambda got: got if {e["detail"]["id"] for e in got} == ids else None)(
        [e for e in bus_events(sqs, env, seen) if e["detail"].get("id") in ids]), what="the four events")
    assert sorted(e["detail-type"] for e in events) == sorted(names)
    mail = eventually(lambda: [m for m in mail_to(env, f"{account}@example.com")
                               if "did not go through" in m["subject"]], what="the payment.failed email")
    assert len(mail) == 1
    assert invoice["hosted_invoice_url"] in mail[0]["body"]
