"""The local stack end to end: `up`, the HTTP API, the Invoke API, `down`.

Runs on free ports with its own state folder and a rotated pair of signing secrets, so it never
touches a stack started by `make up`. Uses the binaries in LOCAL_BIN_DIR (target/debug by default).
"""

import json
import time
import urllib.error
import urllib.request

import boto3
import stripe
from conftest import read_env

from template import ROOT

SAMPLE = json.loads((ROOT / "events" / "webhook.json").read_text())


def post(url: str, body: bytes, headers: dict) -> tuple[int, object, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def wait_for_marker(env, event_id: str, timeout: float = 20) -> str | None:
    ddb = boto3.client(
        "dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = ddb.get_item(
            TableName=env["TABLE_NAME_BILLING_TABLE"],
            Key={"pk": {"S": f"EVENT#{event_id}"}, "sk": {"S": "EVENT"}},
        ).get("Item")
        if item:
            return item["outcome"]["S"]
        time.sleep(0.2)
    return None


def event(event_id: str) -> str:
    body = json.loads(SAMPLE["body"])
    body["id"] = event_id
    return json.dumps(body, indent=2)


def signed_headers(body: str, secret: str) -> dict:
    # The header Stripe's own library produces for this body and secret, at the current time.
    sig = stripe.WebhookSignature.generate_signature_header(body, secret)
    return {"Stripe-Signature": sig, "Content-Type": "application/json"}


def test_env_files_name_the_endpoints(stack):
    env, state = stack
    assert env["WEBHOOK_URL"].endswith("/webhooks/stripe")
    assert env["STRIPE_WEBHOOK_SECRET"] == "whsec_old_local,whsec_new_local"
    fn_env = read_env(state / "functions" / "WebhookFunction.env")
    assert fn_env["EVENTS_QUEUE_URL"] == env["QUEUE_URL_EVENTS_QUEUE"]
    assert fn_env["AWS_ENDPOINT_URL"] == env["LOCAL_AWS_ENDPOINT"]
    # The billing table is on DynamoDB Local, reached through the SDK's standard variable.
    assert fn_env["AWS_ENDPOINT_URL_DYNAMODB"] == env["LOCAL_DYNAMODB_ENDPOINT"] != env["LOCAL_AWS_ENDPOINT"]


def test_webhook_over_http_queues_once_and_refuses_forgeries(stack):
    env, _ = stack
    body = event("evt_1QvStackHttp01")
    # Signed with the newer of the two live secrets: rotation works end to end.
    headers = signed_headers(body, "whsec_new_local")
    assert post(env["WEBHOOK_URL"], body.encode(), headers)[:2] == (200, {"received": True, "event_id": "evt_1QvStackHttp01"})
    assert post(env["WEBHOOK_URL"], body.encode(), headers)[0] == 200  # Stripe's redelivery
    tampered = body.replace("complete", "expired")
    status, answer, _ = post(env["WEBHOOK_URL"], tampered.encode(), headers)
    assert (status, answer["error"]["code"]) == (400, "invalid_signature")
    wrong = signed_headers(body, "whsec_someone_else")
    assert post(env["WEBHOOK_URL"], body.encode(), wrong)[0] == 400

    # The processor consumes the queue: the event is applied once, and recorded as such.
    assert wait_for_marker(env, "evt_1QvStackHttp01") == "applied"


def test_unknown_routes_are_404(stack):
    env, _ = stack
    assert post(env["LOCAL_HTTP_ENDPOINT"] + "/webhooks/paypal", b"{}", {})[0] == 404


def test_invoke_api_serves_functions_by_logical_id(stack):
    env, _ = stack
    body = event("evt_1QvStackInvoke1")
    request = json.loads(json.dumps(SAMPLE))
    request["body"] = body
    request["headers"]["stripe-signature"] = signed_headers(body, "whsec_old_local")["Stripe-Signature"]
    url = env["LOCAL_LAMBDA_ENDPOINT"] + "/2015-03-31/functions/WebhookFunction/invocations"
    status, result, headers = post(url, json.dumps(request).encode(), {})
    assert status == 200 and "x-amz-function-error" not in {k.lower() for k in headers}
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["event_id"] == "evt_1QvStackInvoke1"

    status, result, headers = post(url, b"[1, 2]", {})
    assert status == 200 and headers.get("x-amz-function-error") == "Unhandled"
    assert "errorType" in result and "errorMessage" in result

    missing = env["LOCAL_LAMBDA_ENDPOINT"] + "/2015-03-31/functions/NoSuchFunction/invocations"
    assert post(missing, b"{}", {})[0] == 404


def test_bursts_are_accepted_not_reset(stack):
    """100 concurrent deliveries to the webhook and 100 concurrent invocations: every one is
    answered (Python's default listen backlog of 5 reset up to 45 % of such bursts)."""
    import concurrent.futures

    env, _ = stack

    def deliver(i: int) -> int:
        body = event(f"evt_1QvBurst{i:04d}")
        return post(env["WEBHOOK_URL"], body.encode(), signed_headers(body, "whsec_new_local"))[0]

    def invoke(i: int) -> int:
        url = f"{env['LOCAL_LAMBDA_ENDPOINT']}/2015-03-31/functions/ApiFunction/invocations"
        payload = json.loads((ROOT / "events" / "api.json").read_text())
        return post(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        webhook = list(pool.map(deliver, range(100)))
        invokes = list(pool.map(invoke, range(100)))
    assert webhook == [200] * 100
    assert invokes == [200] * 100


def test_the_smoke_check_passes_against_the_local_stack(stack):
    """`make smoke STACK=local`: the same script an operator runs against a deployed stack."""
    import subprocess
    import sys

    from template import ROOT

    _, state = stack
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "smoke.py"), "local"], capture_output=True, text=True,
                         env={**__import__("os").environ, "LOCAL_STATE_DIR": str(state)}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    steps = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("passed")]
    assert steps == ["checkout", "webhook", "track", "balance", "alarm"], out.stdout


def test_make_up_writes_an_env_vars_file_for_sam_local_invoke(stack):
    """Under `sam local invoke`, SAM resolves the template's `!Ref`s to logical ids (a table named
    `BillingTable`) and passes a function only the variables its template declares; the file
    `make up` writes overrides exactly those with the local stack's names and endpoints."""
    import json

    from template import Template, load

    env, state = stack
    files = json.loads((state / "sam-env.json").read_text())
    template = Template(load(), "http://x")
    assert set(files) == {f.logical_id for f in template.functions()}
    for function, values in files.items():
        assert set(values) <= set(template.declared_variables(function)), function
        assert values["AWS_ENDPOINT_URL"] == env["LOCAL_AWS_ENDPOINT"]
        assert values["AWS_ENDPOINT_URL_DYNAMODB"] == env["LOCAL_DYNAMODB_ENDPOINT"]
        assert values["STRIPE_API_BASE"] == env["LOCAL_STRIPE_ENDPOINT"]
    assert files["UsageFunction"]["TABLE_NAME"] == env["TABLE_NAME_BILLING_TABLE"]
    assert files["ProcessorFunction"]["STRIPE_API_KEY_SECRET_ID"] == "billing-local/stripe-api-key"
    assert files["WebhookFunction"]["EVENTS_QUEUE_URL"] == env["QUEUE_URL_EVENTS_QUEUE"]
