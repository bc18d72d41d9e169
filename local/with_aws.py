#!/usr/bin/env python3
"""Runs a command with private local AWS endpoints: `with_aws.py CMD ARGS...`.

Starts moto (SQS, Secrets Manager, SES, EventBridge) and DynamoDB Local on free ports, exports
LOCAL_AWS_ENDPOINT and LOCAL_DYNAMODB_ENDPOINT for the command, and stops both afterwards, whatever
the command's outcome. Tests never share the endpoints of a running `make up`.

It also exports LOCAL_BILLING_TABLE_SCHEMA: template.yaml's `BillingTable` keys, attributes,
indexes and stream, as JSON, from which each integration test creates its private table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dynamodb_local  # noqa: E402
from processes import stop  # noqa: E402


@dataclass(frozen=True)
class Endpoints:
    aws: str  # moto: every AWS API but DynamoDB
    dynamodb: str  # DynamoDB Local


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int, log, env: dict | None = None) -> subprocess.Popen:
    # moto's app on a keep-alive server (moto_server.py), as AWS's endpoints keep connections.
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "moto_server.py"), "127.0.0.1", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).read()
            return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the local AWS endpoint did not start (port {port} taken?)")
            time.sleep(0.1)


@contextmanager
def local_aws():
    aws_port, ddb_port = free_port(), free_port()
    moto = ddb = None
    with tempfile.TemporaryFile() as log:
        try:
            moto = start_moto(aws_port, log)
            ddb = dynamodb_local.start(ddb_port, log)
            yield Endpoints(aws=f"http://127.0.0.1:{aws_port}", dynamodb=f"http://127.0.0.1:{ddb_port}")
        except SystemExit:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:].decode(errors="replace"))
            raise
        finally:
            stop(moto)
            dynamodb_local.stop(ddb)


def billing_table_schema() -> str:
    from template import Template, load

    tpl = Template(load(), "http://127.0.0.1:1")
    props = tpl.resolve(tpl.resources["BillingTable"]["Properties"])
    keep = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "StreamSpecification")
    return json.dumps({k: props[k] for k in keep if k in props})


def main() -> int:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    with local_aws() as endpoints:
        env = dict(
            os.environ,
            LOCAL_AWS_ENDPOINT=endpoints.aws,
            LOCAL_DYNAMODB_ENDPOINT=endpoints.dynamodb,
            LOCAL_BILLING_TABLE_SCHEMA=billing_table_schema(),
        )
        return subprocess.call(sys.argv[1:], env=env)


if __name__ == "__main__":
    sys.exit(main())
