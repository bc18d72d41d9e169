"""Runs a function binary the way Lambda does: behind the Lambda Runtime API.

Each process lifetime gets its own Runtime API server. The binary long-polls
`GET /2018-06-01/runtime/invocation/next`, answers on `.../{request_id}/response` or
`.../{request_id}/error`, and reports init failures on `/init/error`, exactly as in Lambda.

A function scales out as Lambda does: each process (sandbox) runs one invocation at a time, and
concurrent invocations get more processes, up to the function's concurrency
(LOCAL_LAMBDA_CONCURRENCY, default 4; further invocations wait for a free sandbox). Warm
processes are reused; a crashed or timed-out one is replaced, as Lambda replaces a sandbox.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from template import ACCOUNT_ID, REGION, Function

PREFIX = "/2018-06-01/runtime"
DEFAULT_CONCURRENCY = 4


class Server(ThreadingHTTPServer):
    """A threaded HTTP server that accepts bursts: Python's default listen backlog is 5, and a
    burst beyond it gets "connection reset", which API Gateway and Lambda never do."""

    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        # A client gone mid-answer (a process stopped while it long-polled) is not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Invocation:
    payload: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    body: bytes = b""


class InvocationError(Exception):
    """The function did not produce a response: `error_type` as Lambda names it."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def payload(self) -> bytes:
        return json.dumps({"errorType": self.error_type, "errorMessage": self.message}).encode()


class _Session:
    """One process and the Runtime API it talks to."""

    def __init__(self, worker: "FunctionWorker"):
        self.worker = worker
        self.invocations: queue.Queue[Invocation] = queue.Queue()
        self.pending: dict[str, Invocation] = {}
        self.polled = threading.Event()  # the runtime asked for its first invocation: init is done
        self.exited = threading.Event()
        self.init_error: str | None = None
        self.server = Server(("127.0.0.1", 0), _RuntimeApi)
        self.server.session = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = dict(worker.environment)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.server.server_address[1]}"
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(worker.binary)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=worker.log,
            stderr=worker.log,
        )
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.exited.set()
        for inv in list(self.pending.values()):
            if not inv.done.is_set():
                inv.ok, inv.body = False, InvocationError(
                    "Runtime.ExitError", f"the runtime exited with status {self.proc.returncode}"
                ).payload()
                inv.done.set()
        self.server.shutdown()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.polled.wait(0.05):
                return
            if self.exited.is_set():
                raise InvocationError(
                    "Runtime.ExitError",
                    f"{self.worker.fn.logical_id} exited during init"
                    + (f": {self.init_error}" if self.init_error else "")
                    + f" (log: {self.worker.log_path})",
                )
        raise InvocationError("Sandbox.Timedout", f"{self.worker.fn.logical_id} did not finish init in {timeout:.0f} s")


class _RuntimeApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the function's own log says what happened
        pass

    @property
    def session(self) -> _Session:
        return self.server.session  # type: ignore[attr-defined]

    def _reply(self, status: int, body: bytes = b"{}", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(404)
        s = self.session
        s.polled.set()
        inv = s.invocations.get()
        fn = s.worker.fn
        deadline_ms = int((time.time() + fn.timeout) * 1000)
        self._reply(
            200,
            inv.payload,
            {
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{fn.logical_id}",
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            },
        )

    def do_POST(self) -> None:
        body = self._body()
        s = self.session
        if self.path == f"{PREFIX}/init/error":
            s.init_error = body.decode(errors="replace")
            return self._reply(202)
        parts = self.path[len(PREFIX):].strip("/").split("/")
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            inv = s.pending.get(parts[1])
            if inv is None:
                return self._reply(400, b'{"errorType":"InvalidRequestID"}')
            inv.ok, inv.body = parts[2] == "response", body
            inv.done.set()
            return self._reply(202)
        self._reply(404)


class FunctionWorker:
    """One function: its binary, its environment, and its warm processes (up to `concurrency`)."""

    def __init__(self, fn: Function, binary: Path, environment: dict[str, str], log_path: Path, concurrency: int | None = None):
        self.fn = fn
        self.binary = binary
        self.environment = environment
        self.log_path = log_path
        self.log = open(log_path, "ab", buffering=0)
        self.concurrency = concurrency or int(os.environ.get("LOCAL_LAMBDA_CONCURRENCY", DEFAULT_CONCURRENCY))
        # Each slot is one sandbox in use; an idle sandbox waits in `_idle` (most recent first,
        # as Lambda prefers a warm sandbox).
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._idle: queue.LifoQueue[_Session] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._sessions: list[_Session] = []
        self.started = 0  # processes started so far (cold starts)

    def start(self, init_timeout: float = 30.0) -> None:
        """Starts one warm process and waits for its init, as a first invocation would."""
        with self._slots:
            self._idle.put(self._new_session(init_timeout))

    def _new_session(self, init_timeout: float) -> _Session:
        if not self.binary.exists():
            raise InvocationError("Runtime.InvalidEntrypoint", f"{self.binary} does not exist; build it first")
        session = _Session(self)
        with self._lock:
            self._sessions = [s for s in self._sessions if not s.exited.is_set()] + [session]
            self.started += 1
        try:
            session.wait_ready(init_timeout)
        except InvocationError:
            session.stop()
            raise
        return session

    def _take_session(self) -> _Session:
        while True:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                return self._new_session(30.0)  # every warm sandbox is busy: scale out
            if not session.exited.is_set():
                return session

    def invoke(self, payload: bytes) -> bytes:
        """Runs one invocation; returns the response payload or raises `InvocationError`."""
        with self._slots:
            session = self._take_session()
            try:
                return self._run(session, payload)
            finally:
                if not session.exited.is_set() and session.proc.poll() is None:
                    self._idle.put(session)

    def _run(self, session: _Session, payload: bytes) -> bytes:
        inv = Invocation(payload)
        session.pending[inv.request_id] = inv
        session.invocations.put(inv)
        finished = inv.done.wait(self.fn.timeout)
        session.pending.pop(inv.request_id, None)
        if not finished:
            session.stop()
            raise InvocationError("Sandbox.Timedout", f"Task timed out after {self.fn.timeout} seconds")
        if not inv.ok:
            try:
                err = json.loads(inv.body)
            except ValueError:
                raise InvocationError("Unhandled", inv.body.decode(errors="replace")) from None
            if not isinstance(err, dict):
                raise InvocationError("Unhandled", inv.body.decode(errors="replace"))
            raise InvocationError(err.get("errorType", "Unhandled"), err.get("errorMessage", ""))
        return inv.body

    def live_processes(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if not s.exited.is_set())

    def stop(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.stop()


def lambda_environment(fn: Function, aws_endpoint: str, dynamodb_endpoint: str) -> dict[str, str]:
    """What Lambda sets for a function, plus the local endpoints and test credentials. The SDK's
    standard variables route DynamoDB to DynamoDB Local and every other service to moto."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": fn.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "LOG_FORMAT": "text",
    }
    env.update(fn.environment)
    return env
