"""Every function that holds the Stripe API key refuses, at cold start, a key whose mode is not the
stack's (`StripeLivemode`): a live key in a test stack would charge real cards for test traffic,
a test key in a live stack would bill no one. The message names both."""

import os
import tempfile
from pathlib import Path

import pytest

from conftest import Endpoints
from runtime import FunctionWorker, InvocationError, lambda_environment
from template import ROOT, load

BIN = Path(os.environ.get("LOCAL_BIN_DIR", ROOT / "target" / "debug"))


def key_holders(template) -> list:
    return [f for f in template.functions() if "STRIPE_API_KEY_SECRET_ID" in f.environment]


@pytest.mark.parametrize("key, livemode, key_mode, stack_mode", [
    ("sk_live_abc", "false", "live", "test"),
    ("rk_test_abc", "true", "test", "live"),
])
def test_a_key_of_the_other_mode_stops_every_function_that_holds_it(key, livemode, key_mode, stack_mode):
    state = Path(tempfile.mkdtemp(prefix="mode-"))
    e = Endpoints(load(), state, api_key=key)
    try:
        holders = key_holders(e.template)
        assert {f.logical_id for f in holders} == {
            "ProcessorFunction", "ApiFunction", "CheckoutFunction", "ReporterFunction",
            "ReconcilerFunction", "DunningFunction", "TopupFunction",
        }
        for fn in holders:
            env = lambda_environment(fn, e.aws, e.dynamodb)
            env.update(e.credentials[fn.logical_id].env())
            env["STRIPE_LIVEMODE"] = livemode
            worker = FunctionWorker(fn, BIN / fn.binary, env, state / f"{fn.logical_id}.log", concurrency=1)
            with pytest.raises(InvocationError) as refused:
                worker.start()
            worker.stop()
            # The binary stops before it takes an invocation, as Lambda then reports an init
            # failure; what it said is in its log (CloudWatch Logs in AWS).
            assert "exited during init" in str(refused.value), refused.value
            message = (state / f"{fn.logical_id}.log").read_text()
            assert f"the Stripe API key is a {key_mode}-mode key, but this stack runs in {stack_mode} mode" in message, (fn.logical_id, message)
            assert f"StripeLivemode={livemode}" in message, (fn.logical_id, message)
            assert "abc" not in message, "the key itself never reaches a log"
        # Refused for its mode, not for its role: every read was allowed.
        assert e.refusals() == []
    finally:
        e.close()
