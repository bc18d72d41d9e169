#!/usr/bin/env python3
"""IAM in front of DynamoDB Local: `dynamodb_gate.py HOST PORT UPSTREAM_PORT`.

DynamoDB Local checks that a request is signed, never what the signer may do. This gate sits on
the port the stack's functions know as DynamoDB's endpoint, judges each call against the caller's
role (local/iam.py: the action of every part of a transaction, the index a query names, the
stream a poller reads) and forwards what is allowed, byte for byte, on a kept-alive connection.
A refused call is answered as DynamoDB answers it: 400 with
`com.amazon.coral.service#AccessDeniedException`.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import iam  # noqa: E402

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


def make_handler(upstream_port: int, judge: iam.Judge):
    local = threading.local()

    def upstream() -> http.client.HTTPConnection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
        return conn

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = self.headers.get("X-Amz-Target") or ""
            if target and judge.enforcing:
                try:
                    asked = iam.dynamodb_requests(target, json.loads(body or b"{}"))
                except (ValueError, KeyError, AttributeError):
                    asked = []  # not judged: DynamoDB Local answers the malformed request
                denial = judge.judge(iam.access_key_of(self.headers), asked) if asked else None
                if denial is not None:
                    return self._reply(*iam.denial_response("dynamodb", True, denial))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            for attempt in (0, 1):
                conn = upstream()
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.HTTPException, ConnectionError, OSError):
                    # A kept-alive connection DynamoDB Local closed: reconnect once.
                    conn.close()
                    local.conn = None
                    if attempt:
                        raise
            self._reply(resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}, data)

        def _reply(self, status: int, headers: dict, data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    host, port, upstream_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server((host, port), make_handler(upstream_port, iam.Judge.from_env())).serve_forever()


if __name__ == "__main__":
    main()
