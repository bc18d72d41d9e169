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

from template import ROOT  # noqa: E402
from with_aws import free_port  # noqa: E402

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
