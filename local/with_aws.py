#!/usr/bin/env python3
"""Runs a command with a private local AWS endpoint: `with_aws.py CMD ARGS...`.

Starts moto on a free port, exports LOCAL_AWS_ENDPOINT for the command, and stops moto afterwards,
whatever the command's outcome. Tests never share the endpoint of a running `make up`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def aws_endpoint():
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the local AWS endpoint did not start")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    with aws_endpoint() as endpoint:
        env = dict(os.environ, LOCAL_AWS_ENDPOINT=endpoint)
        return subprocess.call(sys.argv[1:], env=env)


if __name__ == "__main__":
    sys.exit(main())
