#!/usr/bin/env python3
"""Fires a scheduled function of the running local stack now, as its schedule would.

    fire.py FUNCTION [TIME]

FUNCTION is its logical id in template.yaml (ReporterFunction); TIME (ISO 8601, UTC by
default) is the scheduled event's `time`, for functions that take "now" from it. Prints the
function's answer; exits non-zero if the function failed.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from event_sources import scheduled_event  # noqa: E402
from template import ROOT  # noqa: E402


def endpoint() -> str:
    env = ROOT / ".local" / "env"
    if not env.exists():
        raise SystemExit("start the local stack first: make up")
    for line in env.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "LOCAL_LAMBDA_ENDPOINT":
            return value.strip("'")
    raise SystemExit(f"{env} names no LOCAL_LAMBDA_ENDPOINT")


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    function = argv[1]
    at = None
    if len(argv) == 3:
        at = datetime.fromisoformat(argv[2])
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    body = json.dumps(scheduled_event(function, at)).encode()
    req = urllib.request.Request(f"{endpoint()}/2015-03-31/functions/{function}/invocations", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            failed = resp.headers.get("X-Amz-Function-Error")
            print(resp.read().decode())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{function}: {e.code} {e.read().decode()}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv)
