#!/usr/bin/env python3
"""moto's AWS APIs on an HTTP/1.1 server that keeps connections alive.

    moto_server.py HOST PORT

`moto_server` runs moto's WSGI app on Werkzeug's development server, which answers every request
with `Connection: close`: every SDK call then pays a new TCP connection, which Lambda's path to
SQS does not, and which made the webhook's measured CPU per event mostly connection setup. This
serves the same app (`DomainDispatcherApplication(create_backend_app)`, what `moto_server` wraps)
from a threaded standard-library server with persistent connections and a deep listen backlog.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import iam  # noqa: E402

# SES keeps what it "sent" in memory; this path reads it back (SES itself has no such API).
SENT_MAIL_PATH = "/_local/ses/messages"


def sent_mail() -> list[dict]:
    """Every email SES (v1 or v2) accepted, oldest first. With a Simple message that has both
    parts, moto keeps only the HTML body."""
    from moto.ses.models import ses_backends

    out = []
    for account in ses_backends.values():
        for region, backend in account.items():
            for m in backend.sent_messages:
                out.append({
                    "id": m.id,
                    "region": region,
                    "source": m.source,
                    "destinations": getattr(m, "destinations", None),
                    "subject": getattr(m, "subject", None),
                    "body": getattr(m, "body", None),
                    "raw": getattr(m, "raw_data", None),
                })
    return out


def secret_arn(secret_id: str) -> str:
    """The ARN IAM judges a Secrets Manager call against: the secret's, whether the call names it
    by name or by ARN (an unknown one is judged as the ARN it would have, and then not found)."""
    from moto.secretsmanager.models import secretsmanager_backends

    from template import ACCOUNT_ID, REGION

    if secret_id.startswith("arn:"):
        return secret_id
    try:
        return secretsmanager_backends[ACCOUNT_ID][REGION].secrets[secret_id].arn
    except KeyError:
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{secret_id}"


def make_handler(app, host: str, port: int):
    judge = iam.Judge.from_env()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer below has a Content-Length
        disable_nagle_algorithm = True  # headers and body go out without waiting for an ACK

        def log_message(self, *args) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            if path == SENT_MAIL_PATH and self.command == "GET":
                return self._reply_json(sent_mail())
            refused = self._refusal(path, query, body)
            if refused:
                return self._reply(*refused)
            environ = {
                "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": path,
                "QUERY_STRING": query, "SERVER_NAME": host, "SERVER_PORT": str(port),
                "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
                "CONTENT_LENGTH": str(length), "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            for k, v in self.headers.items():
                key = "HTTP_" + k.upper().replace("-", "_")
                if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                    environ[key] = f"{environ[key]},{v}" if key in environ else v
            started: list = []
            chunks: list[bytes] = []

            def start_response(status, headers, exc_info=None):
                started[:] = [status, headers]
                return chunks.append

            result = app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                getattr(result, "close", lambda: None)()
            data = b"".join(chunks)
            status, headers = started
            data = self._secret_for_caller(path, body, status, data)
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for k, v in headers:
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _refusal(self, path: str, query: str, body: bytes):
            """AWS's answer when the caller's role does not allow the call (local/iam.py)."""
            if not judge.enforcing:
                return None
            asked = iam.aws_requests(self.command, path, query, self.headers, body, secret_arn)
            if asked is None:
                return None
            service, requests = asked
            denial = judge.judge(iam.access_key_of(self.headers), requests)
            if denial is None:
                return None
            return iam.denial_response(service, bool(self.headers.get("X-Amz-Target")), denial)

        def _secret_for_caller(self, path: str, body: bytes, status: str, data: bytes) -> bytes:
            """A function reads its own value of a secret where the stack gave it one."""
            if self.headers.get("X-Amz-Target") != "secretsmanager.GetSecretValue" or not status.startswith("200"):
                return data
            answer = json.loads(data)
            value = judge.secret_value(iam.access_key_of(self.headers), answer.get("ARN", ""))
            if value is None:
                return data
            answer["SecretString"] = value
            return json.dumps(answer).encode()

        def _reply(self, status: int, headers: dict, data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reply_json(self, value) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

    return Handler


def serialise_sqs_receives() -> None:
    """Makes moto's FIFO group locking hold under concurrent receivers.

    SQS promises that while a message of a FIFO group is in flight (received, and neither deleted
    nor visible again), no other message of that group is delivered (Developer Guide, "FIFO queue
    delivery logic"). moto breaks it two ways. It checks the in-flight groups against a snapshot
    taken without a lock, so two receivers racing on one queue can each take a message of the
    same group. And it forgets a message whose visibility ran out only when its receive loop
    reaches it, so after a failed batch of two (both messages visible again at once) the first
    is skipped because the second still counts as in flight, and the second is delivered before
    it. Here each queue's receives, deletes and visibility changes take turns (the long-poll
    wait happens outside the turn, so senders and other receivers are not held up by it), and
    every message visible again is forgotten as in flight before a receive looks at groups."""
    import threading
    import time
    from collections import defaultdict

    from moto.sqs.models import SQSBackend

    locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
    receive, delete, change = SQSBackend.receive_message, SQSBackend.delete_message, SQSBackend.change_message_visibility

    def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
        deadline = time.monotonic() + float(wait_seconds_timeout or 0)
        while True:
            with locks[queue_name]:
                queue = self.get_queue(queue_name)
                for message in [m for m in queue.pending_messages if m.visible]:
                    queue.pending_messages.remove(message)
                got = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            # Wakes when a message becomes visible; visible messages of a locked group would
            # wake it at once, so it also never spins faster than every 50 ms.
            self.get_queue(queue_name).wait_for_messages(min(left, 1))
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def delete_message(self, queue_name, receipt_handle):
        with locks[queue_name]:
            return delete(self, queue_name, receipt_handle)

    def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
        with locks[queue_name]:
            return change(self, queue_name, receipt_handle, visibility_timeout)

    SQSBackend.receive_message = receive_message
    SQSBackend.delete_message = delete_message
    SQSBackend.change_message_visibility = change_message_visibility


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    serialise_sqs_receives()
    app = DomainDispatcherApplication(create_backend_app)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server((host, port), make_handler(app, host, port)).serve_forever()


if __name__ == "__main__":
    main()
