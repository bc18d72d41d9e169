#!/usr/bin/env python3
"""A short end-to-end check of a deployed stack (`make smoke STACK=billing-dev`) or of the local
stack (`make smoke STACK=local`), printing what passed.

1. checkout: `POST /v1/accounts/{id}/checkout` (SigV4-signed, as your app calls it) opens a
   test-mode Checkout Session for the pro plan;
2. webhook: a pro subscription for a fresh test customer is made in Stripe (locally the session
   is completed; on a deployed stack a subscription is created with Stripe's test card
   `pm_card_visa`), and its events, through the webhook and the processor, put the account on pro;
3. track: the usage function (Lambda Invoke, as your app calls it) records a request;
4. balance: the usage function's `balance` and `GET /v1/accounts/{id}` show it;
5. alarm: `ReporterNotRunAlarm` is set to ALARM by hand, and CloudWatch's history shows its action
   published to the alarm topic (proof the topic's key lets CloudWatch in); the alarm is then
   set back. The local stack has no CloudWatch: skipped there.

Deployed: AWS credentials that may call the API and invoke the usage function (the
`AppBackendApiPolicy`), read the stack and set alarm states; STRIPE_API_KEY, a test-mode key of
the stack's Stripe account. It touches only a new account `acct_smoke_<random>` and test-mode
objects.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Target:
    """Where the stack's parts are, from CloudFormation's outputs or the local stack's env file."""

    def __init__(self, stack: str):
        import boto3

        self.local = stack == "local"
        if self.local:
            state = Path(os.environ.get("LOCAL_STATE_DIR", ROOT / ".local"))
            env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines() if "=" in line)
            env = {k: v.strip("'") for k, v in env.items()}
            self.api = env["LOCAL_HTTP_ENDPOINT"] + "/v1"
            self.stripe_base = env["LOCAL_STRIPE_ENDPOINT"]
            self.stripe_key = env["STRIPE_API_KEY"]
            self.region = "us-east-1"
            self.session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                                 region_name=self.region)
            self.usage_function = "UsageFunction"
            self.lambda_endpoint = env["LOCAL_LAMBDA_ENDPOINT"]
            self.prices = {k.removeprefix("STRIPE_PRICE_").lower(): v for k, v in env.items() if k.startswith("STRIPE_PRICE_")}
        else:
            self.session = boto3.session.Session()
            self.region = self.session.region_name or "us-east-1"
            cfn = self.session.client("cloudformation")
            outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
            self.outputs = outputs
            self.api = outputs["ApiUrl"]
            self.stripe_base = "https://api.stripe.com"
            self.stripe_key = os.environ.get("STRIPE_API_KEY", "")
            if not self.stripe_key.startswith(("sk_test_", "rk_test_")):
                raise SystemExit("STRIPE_API_KEY must be a test-mode key of the stack's Stripe account")
            self.usage_function = outputs["UsageFunctionName"]
            self.lambda_endpoint = None
            self.prices = {}

    # --- the app's calls, signed as an app signs them -------------------------------------------

    def api_call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """An HTTP API call signed with SigV4 for `execute-api` (the /v1 routes are IAM-authorised)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.api + path
        data = json.dumps(body).encode() if body is not None else None
        request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(self.session.get_credentials(), "execute-api", self.region).add_auth(request)
        req = urllib.request.Request(url, data=data, method=method, headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def usage(self, payload: dict) -> dict:
        lam = self.session.client("lambda", endpoint_url=self.lambda_endpoint)
        out = lam.invoke(FunctionName=self.usage_function, Payload=json.dumps(payload).encode())
        answer = json.loads(out["Payload"].read())
        if out.get("FunctionError"):
            raise AssertionError(f"the usage function failed: {answer}")
        return answer

    def stripe(self, method: str, path: str, params: dict | None = None) -> dict:
        body = urllib.parse.urlencode(params or {}).encode() if method == "POST" else None
        url = self.stripe_base + path + ("?" + urllib.parse.urlencode(params) if method == "GET" and params else "")
        req = urllib.request.Request(url, data=body, method=method, headers={
            "Authorization": f"Bearer {self.stripe_key}", "Stripe-Version": "2026-09-30.endive"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def price(self, lookup_key: str) -> str:
        if lookup_key in self.prices:
            return self.prices[lookup_key]
        found = self.stripe("GET", "/v1/prices", {"lookup_keys[]": lookup_key})["data"]
        if not found:
            raise AssertionError(f"Stripe has no price `{lookup_key}`: run make stripe-setup first")
        return found[0]["id"]


def eventually(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s (last: {last!r})")


def run(target: Target) -> list[tuple[str, str]]:
    account = f"acct_smoke_{uuid.uuid4().hex[:10]}"
    passed: list[tuple[str, str]] = []

    status, session = target.api_call("POST", f"/accounts/{account}/checkout", {
        "plan": "pro", "success_url": "https://example.com/ok", "cancel_url": "https://example.com/back",
        "email": f"{account}@example.com"})
    assert status == 200 and session.get("url"), f"checkout answered {status}: {session}"
    passed.append(("checkout", f"session {session['session_id']} for the pro plan"))

    if target.local:
        target.stripe("POST", f"/_sim/checkout/sessions/{session['session_id']}/complete")
    else:
        customer = target.stripe("POST", "/v1/customers", {
            "email": f"{account}@example.com", "metadata[account_id]": account, "payment_method": "pm_card_visa",
            "invoice_settings[default_payment_method]": "pm_card_visa"})
        target.stripe("POST", "/v1/subscriptions", {
            "customer": customer["id"], "metadata[account_id]": account,
            "items[0][price]": target.price("pro_monthly"), "items[1][price]": target.price("pro_overage")})

    def on_pro():
        status, body = target.api_call("GET", f"/accounts/{account}")
        return body if status == 200 and body.get("plan") == "pro" else None

    view = eventually(on_pro, "the account reaching the pro plan through the webhook")
    passed.append(("webhook", f"Stripe's events made {account} pro ({view.get('included_units'):,} units included)"))

    tracked = target.usage({"action": "track", "account_id": account, "request_id": "smoke-1", "model": "gpt-4o-mini",
                            "input_tokens": 1_000, "output_tokens": 500})
    assert tracked.get("allowed") is True and tracked.get("units") == 2_000, tracked
    passed.append(("track", f"{tracked['units']} units recorded"))

    balance = target.usage({"action": "balance", "account_id": account})
    status, usage = target.api_call("GET", f"/accounts/{account}/usage")
    assert status == 200, usage
    used = balance.get("included_units", 0) - balance.get("included_remaining", 0)
    assert balance.get("plan") == "pro" and used == 2_000, balance
    passed.append(("balance", f"{used:,} of {balance['included_units']:,} included units used"))

    if target.local:
        passed.append(("alarm", "skipped: the local stack has no CloudWatch"))
    else:
        cw = target.session.client("cloudwatch")
        name = next(a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]
                    if a["AlarmName"].startswith(f"{os.environ['SMOKE_STACK']}-ReporterNotRunAlarm"))
        started = time.time()
        cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="smoke test")

        def published():
            items = cw.describe_alarm_history(AlarmName=name, HistoryItemType="Action", MaxRecords=10)["AlarmHistoryItems"]
            return [i for i in items if i["Timestamp"].timestamp() >= started - 5 and "Successfully executed action" in i["HistorySummary"]]

        eventually(published, "CloudWatch publishing the alarm to the topic", timeout=120)
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="smoke test done")
        passed.append(("alarm", f"{name} reached the alarm topic"))
    return passed


def main() -> int:
    stack = os.environ.get("SMOKE_STACK") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not stack:
        raise SystemExit("usage: smoke.py STACK (a deployed stack's name, or `local`)")
    os.environ["SMOKE_STACK"] = stack
    try:
        passed = run(Target(stack))
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    for step, what in passed:
        print(f"passed  {step:<8} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
