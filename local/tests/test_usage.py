"""The usage function through the local Invoke API, as an app calls it: concurrent invocations
spread over the stack's warm instances of `UsageFunction`, exact totals, and errors as Lambda
reports them."""

import concurrent.futures
import json

from conftest import http


def invoke(env, payload: dict) -> tuple[dict, str | None]:
    """One call as an app makes it: a ContentionError or RetryableError (the table slow to answer
    before the deadline) is retried with the same request id."""
    url = f"{env['LOCAL_LAMBDA_ENDPOINT']}/2015-03-31/functions/UsageFunction/invocations"
    while True:
        status, body, headers = http_with_headers(url, json.dumps(payload).encode())
        assert status == 200, body
        error = headers.get("x-amz-function-error")
        if not (error and body.get("errorType") in ("ContentionError", "RetryableError")):
            return body, error


def http_with_headers(url: str, body: bytes):
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}


def track(account: str, request: str, tokens: int) -> dict:
    return {"action": "track", "account_id": account, "request_id": request, "model": "unlisted-model",
            "input_tokens": tokens, "output_tokens": 0}


def test_a_hundred_concurrent_tracks_through_the_invoke_api_cover_exactly_what_is_left(stack):
    env, _ = stack
    account = "acct_stack_usage"
    # The free plan includes 100,000 units a month: leave 10.
    first, error = invoke(env, track(account, "setup", 99_990))
    assert error is None and first["covered"]["included"] == 99_990

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda i: invoke(env, track(account, f"req_{i}", 1)), range(100)))
    assert all(e is None for _, e in answers), [a for a, e in answers if e]
    covered = {k: sum(a["covered"][k] for a, _ in answers) for k in ("included", "credits", "overage", "uncovered")}
    assert covered == {"included": 10, "credits": 0, "overage": 0, "uncovered": 90}

    balance, _ = invoke(env, {"action": "balance", "account_id": account})
    assert (balance["included_remaining"], balance["uncovered_units"], balance["allowed"]) == (0, 90, False)
    # A duplicate, on whichever instance takes it, answers the first figures.
    again, _ = invoke(env, track(account, "req_7", 1))
    assert again["status"] == "duplicate"
    assert again["covered"] == answers[7][0]["covered"]


def test_invalid_input_fails_the_invocation_with_a_validation_error(stack):
    env, _ = stack
    body, error = invoke(env, {"action": "track", "account_id": "acct_1", "request_id": "r", "model": "m",
                               "input_tokens": -5, "output_tokens": 0})
    assert error == "Unhandled"
    assert body["errorType"] == "ValidationError"
    assert body["errorMessage"].startswith("input_tokens:")


def test_the_usage_read_side_shows_attribution_by_model(stack):
    env, _ = stack
    account = "acct_stack_usage_read"
    invoke(env, {**track(account, "a", 30), "model": "gpt-4o", "output_tokens": 1})
    invoke(env, track(account, "b", 7))
    status, usage = http("GET", f"{env['LOCAL_HTTP_ENDPOINT']}/v1/accounts/{account}/usage")
    assert status == 200, usage
    (period,) = usage["periods"]
    by_model = {m["model"]: m for m in period["models"]}
    assert by_model["gpt-4o"]["units"] == 30 * 2 + 8
    assert by_model["gpt-4o"]["covered"] == {"included": 68, "credits": 0, "overage": 0, "uncovered": 0}
    assert by_model["unlisted-model"]["requests"] == 1
    assert period["totals"]["units"] == 68 + 7
