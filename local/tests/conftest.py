import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dynamodb_local  # noqa: E402
import iam  # noqa: E402
from processes import stop  # noqa: E402
from provision import client, provision  # noqa: E402
from stack import LOCAL_PARAMETERS  # noqa: E402
from template import ROOT, Template  # noqa: E402
from with_aws import free_port, start_moto  # noqa: E402

STACK = ROOT / "local" / "stack.py"


def read_env(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        k, v = line.split("=", 1)
        out[k] = v.strip("'")
    return out


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The whole local stack on free ports, with its own state folder and a rotated pair of
    signing secrets, so it never touches a stack started by `make up`."""
    state = tmp_path_factory.mktemp("state")
    env = dict(
        os.environ,
        LOCAL_AWS_PORT=str(free_port()),
        LOCAL_DYNAMODB_PORT=str(free_port()),
        LOCAL_HTTP_PORT=str(free_port()),
        LOCAL_LAMBDA_PORT=str(free_port()),
        LOCAL_STRIPE_PORT=str(free_port()),
        LOCAL_STATE_DIR=str(state),
        LOCAL_BIN_DIR=os.environ.get("LOCAL_BIN_DIR", str(ROOT / "target" / "debug")),
        STRIPE_WEBHOOK_SECRET="whsec_old_local,whsec_new_local",
        # Scheduled functions run when a test fires them (test_event_sources.py tests the timer).
        LOCAL_SCHEDULES="off",
    )
    subprocess.run([sys.executable, str(STACK), "up"], env=env, check=True, timeout=180, stdout=subprocess.DEVNULL)
    try:
        yield read_env(state / "env"), state
    finally:
        subprocess.run([sys.executable, str(STACK), "down"], env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
        assert not (state / "env").exists()
        # Every function ran under its deployed role: a refusal a function swallowed or retried
        # past would still fail its first deploy.
        denials = state / "logs" / "iam-denials.log"
        refused = denials.read_text() if denials.exists() else ""
        assert refused == "", f"calls outside a function's role (template.yaml):\n{refused}"
        # And every Stripe call was within the README's permissions for its function.
        stripe_refusals = state / "logs" / "stripe-permission-refusals.log"
        refused = stripe_refusals.read_text() if stripe_refusals.exists() else ""
        assert refused == "", f"Stripe calls outside the README's restricted-key permissions:\n{refused}"


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, object]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Stripe:
    """Calls the simulator as a Stripe client does: form-encoded, with a secret key."""

    def __init__(self, env: dict):
        self.base = env["LOCAL_STRIPE_ENDPOINT"]
        self.key = env["STRIPE_API_KEY"]
        self.env = env

    def price(self, lookup_key: str) -> str:
        """The id the local account gave a catalog price (`make stripe-setup` resolved it)."""
        return self.env[f"STRIPE_PRICE_{lookup_key.upper()}"]

    @property
    def meter(self) -> str:
        """The overage meter's id in the local account."""
        return self.env["STRIPE_METER_ID"]

    def call(self, method: str, path: str, params: dict | None = None, idempotency_key: str | None = None):
        headers = {"Authorization": f"Bearer {self.key}", "Stripe-Version": "2026-09-30.endive"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        body = urllib.parse.urlencode(params or {}).encode() if method != "GET" else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return http(method, self.base + path, body, headers)

    def sim(self, path: str, body: dict | None = None):
        status, out = http("POST", f"{self.base}/_sim/{path}", json.dumps(body or {}).encode(), {"Content-Type": "application/json"})
        assert status == 200, out
        return out


def eventually(check, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout} s (last: {last!r})")


class Endpoints:
    """moto and DynamoDB Local behind the IAM gate, provisioned from a template, with one set of
    credentials per function."""

    def __init__(self, doc: dict, state: Path, api_key: str = "sk_test_local"):
        self.state = state
        self.principals = state / "principals.json"
        self.denials = state / "denials.log"
        env = {**os.environ, "LOCAL_IAM_PRINCIPALS": str(self.principals), "LOCAL_IAM_DENIALS": str(self.denials)}
        log = open(state / "endpoints.log", "ab")
        aws_port, db_port, gate_port = free_port(), free_port(), free_port()
        self.procs = [start_moto(aws_port, log, env=env)]
        self.procs.append(dynamodb_local.start(db_port, log))
        self.procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "local" / "dynamodb_gate.py"), "127.0.0.1", str(gate_port), str(db_port)],
            stdout=log, stderr=log, env=env,
        ))
        self.aws, self.dynamodb = f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{gate_port}"
        dynamodb_local.wait_ready(self.procs[-1], self.dynamodb)
        self.template = Template(doc, self.aws, LOCAL_PARAMETERS)
        secrets = {"StripeApiKeySecret": json.dumps({"api_key": api_key}),
                   "StripeWebhookSecret": json.dumps({"webhook_secrets": ["whsec_local"]})}
        arns = provision(self.template, self.aws, self.dynamodb, secrets)
        self.secret_arns = arns
        self.credentials = {f.logical_id: iam.Credentials.new() for f in self.template.functions()}
        policies = iam.function_policies(doc, self.aws, self.template.parameters, arns)
        iam.write_principals(self.principals, policies, self.credentials)

    def client(self, service: str, function: str | None):
        endpoint = self.dynamodb if service == "dynamodb" else self.aws
        return client(service, endpoint, self.credentials[function] if function else None)

    def refusals(self) -> list[dict]:
        return [json.loads(line) for line in self.denials.read_text().splitlines()] if self.denials.exists() else []

    def close(self):
        for p in reversed(self.procs):
            stop(p)
