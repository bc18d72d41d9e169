#!/usr/bin/env python3
"""`make bench`: every performance figure of the brief, measured here, printed beside its target.

1. Webhook CPU per delivery (signature + envelope of a 5 KB event), from the criterion bench in
   thread CPU time, and the Python `stripe` library's `Webhook.construct_event` on the same payload,
   measured in the same run, with the ratio.
2. Cold start of the release webhook binary behind a Runtime API stub: process start to its first
   `GET /invocation/next`, with its SDK clients built and its secret read from the local AWS
   endpoint; CPU of that start; peak memory after serving one event. Beside it, the CPU of starting
   the Python stack the same job is usually written in (stripe + boto3 + FastAPI, clients built).
3. AWS round trips of that binary, counted exactly by a proxy in front of the local AWS endpoint.
4. Size of the arm64 deployment zip that cargo-lambda (and so `sam build`) produces.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "local"))

from provision import client  # noqa: E402
from with_aws import aws_endpoint  # noqa: E402

PY = sys.executable
EVENT = ROOT / "shared" / "tests" / "fixtures" / "invoice.paid.json"
SAMPLE = json.loads((ROOT / "events" / "webhook.json").read_text())
COLD_RUNS = 20
rows: list[tuple[str, str, str, str]] = []


class QuietServer(ThreadingHTTPServer):
    """The bench kills each binary mid-connection on purpose; the resets are not errors."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


def row(what: str, measured: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("meets" if ok else "MISSES")
    rows.append((what, measured, target, verdict))


def run(cmd: list[str], **kw) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


# --- 1. webhook CPU -----------------------------------------------------------------------------


def criterion_ns(bench: str) -> float:
    estimates = ROOT / "target" / "criterion" / "webhook" / bench / "new" / "estimates.json"
    return json.loads(estimates.read_text())["mean"]["point_estimate"]


PYTHON_CONSTRUCT_EVENT = r"""
import json, sys, time, stripe
payload = open(sys.argv[1]).read()
secret = "whsec_bench_current"
n = int(sys.argv[2])
samples = []
for _ in range(7):
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    t0 = time.process_time()
    for _ in range(n):
        stripe.Webhook.construct_event(payload, header, secret)
    samples.append((time.process_time() - t0) / n * 1e9)
samples.sort()
print(json.dumps({"median_ns": samples[len(samples) // 2], "version": stripe.VERSION}))
"""


def webhook_cpu() -> None:
    run(["cargo", "bench", "-p", "shared", "--bench", "webhook_verify", "--", "--noplot"])
    ours = criterion_ns("verify_and_parse")
    rotating = criterion_ns("verify_and_parse_rotating")
    out = subprocess.run([PY, "-c", PYTHON_CONSTRUCT_EVENT, str(EVENT), "2000"],
                         check=True, capture_output=True, text=True)
    python = json.loads(out.stdout)
    size = EVENT.stat().st_size
    row(f"webhook CPU/event, {size} B event, 1 secret", f"{ours / 1000:.2f} µs", "≤ 20 µs", ours <= 20_000)
    row("webhook CPU/event, 2 secrets (rotation)", f"{rotating / 1000:.2f} µs", "≤ 20 µs", rotating <= 20_000)
    row(f"stripe {python['version']} construct_event, same payload", f"{python['median_ns'] / 1000:.1f} µs", "(reference)", None)
    ratio = python["median_ns"] / ours
    row("CPU ratio Python / Rust", f"{ratio:.0f}×", "≥ 100×", ratio >= 100)


# --- 2 & 3. cold start, memory, round trips -----------------------------------------------------


class CountingProxy:
    """Forwards to the AWS endpoint and counts requests per service (from the SigV4 scope)."""

    def __init__(self, upstream: str):
        self.counts: dict[str, int] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization", "")
                service = auth.split("Credential=")[1].split("/")[3] if "Credential=" in auth else "?"
                proxy.counts[service] = proxy.counts.get(service, 0) + 1
                req = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(req) as r:
                        status, headers, data = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, e.headers, e.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


def proc_cpu_ns(pid: int) -> int:
    """CPU the process has used so far, all threads, in ns (schedstat, not the 10 ms tick)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class RuntimeStub:
    """The Lambda Runtime API, just enough for one invocation, recording when it is first asked."""

    def __init__(self, event: bytes, on_first_next=None):
        self.on_first_next = on_first_next
        self.first_next_result = None
        self.first_next = threading.Event()
        self.responded = threading.Event()
        self.t_first_next = 0.0
        self.pid = 0
        self.cpu_at_init = 0
        self.response = b""
        self.served = False
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if not stub.first_next.is_set():
                    stub.t_first_next = time.perf_counter()
                    stub.cpu_at_init = proc_cpu_ns(stub.pid)
                    if stub.on_first_next:
                        stub.first_next_result = stub.on_first_next()
                    stub.first_next.set()
                if stub.served:
                    time.sleep(3600)  # a warm sandbox waiting for work: the bench kills it first
                stub.served = True
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 10) * 1000)))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:WebhookFunction")
                self.send_header("Content-Length", str(len(event)))
                self.end_headers()
                self.wfile.write(event)

            def do_POST(self):
                stub.response = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                stub.responded.set()

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


def signed_sample() -> bytes:
    import stripe

    event = json.loads(json.dumps(SAMPLE))
    event["headers"]["stripe-signature"] = stripe.WebhookSignature.generate_signature_header(event["body"], "whsec_local")
    return json.dumps(event).encode()


def cold_start() -> None:
    binary = ROOT / "target" / "release" / "webhook"
    run(["cargo", "build", "--release", "-p", "webhook"])
    with aws_endpoint() as endpoint:
        client("secretsmanager", endpoint).create_secret(
            Name="bench/stripe", SecretString=json.dumps({"api_key": "sk_test_bench", "webhook_secrets": ["whsec_local"]}))
        queue_url = client("sqs", endpoint).create_queue(
            QueueName="bench-events.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        env = {
            "PATH": os.environ["PATH"], "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": "WebhookFunction", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench", "RUST_LOG": "warn",
            "EVENTS_QUEUE_URL": queue_url, "STRIPE_SECRET_ID": "bench/stripe", "STRIPE_LIVEMODE": "false",
        }

        def start_once(aws_url: str, proxy: CountingProxy | None = None) -> dict:
            """One cold start and one event, measured; with `proxy`, its AWS calls counted too."""
            stub = RuntimeStub(signed_sample(), on_first_next=proxy.take if proxy else None)
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(binary)], env={**env, "AWS_ENDPOINT_URL": aws_url, "AWS_LAMBDA_RUNTIME_API": stub.address},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stub.pid = proc.pid
            try:
                if not stub.first_next.wait(30):
                    raise SystemExit("the webhook binary never asked for an invocation")
                if not stub.responded.wait(30):
                    raise SystemExit("the webhook binary did not answer its invocation")
                assert json.loads(stub.response)["statusCode"] == 200, stub.response
                return {
                    "wall": stub.t_first_next - t0,
                    "cpu": stub.cpu_at_init,
                    "peak": vm_hwm_kib(proc.pid),
                    "init_calls": stub.first_next_result,
                    "event_calls": proxy.take() if proxy else None,
                }
            finally:
                proc.kill()
                proc.wait()
                stub.server.shutdown()

        # Timed runs talk to the AWS endpoint directly: a proxy would add its own latency.
        runs = [start_once(endpoint) for _ in range(COLD_RUNS)]
        # One more run through the counting proxy: round trips during init, then for one event.
        counted = start_once((proxy := CountingProxy(endpoint)).url, proxy)

    walls = [r["wall"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    peaks = [r["peak"] for r in runs]
    wall, cpu, peak = statistics.median(walls), statistics.median(cpus), max(peaks)
    row(f"webhook cold start, process → first /next (median of {COLD_RUNS})", f"{wall * 1000:.1f} ms", "≤ 20 ms", wall <= 0.020)
    row("webhook cold start CPU", f"{cpu / 1e6:.1f} ms", "", None)
    row("webhook peak memory after one event (max)", f"{peak / 1024:.1f} MiB", "≤ 32 MiB", peak <= 32 * 1024)

    init, per_event = counted["init_calls"], counted["event_calls"]
    row("AWS calls at init", ", ".join(f"{k} {v}" for k, v in sorted(init.items())) or "none", "secret read once", init == {"secretsmanager": 1})
    sqs_calls, ddb_calls = per_event.get("sqs", 0), per_event.get("dynamodb", 0)
    row("SQS calls per event (counted)", str(sqs_calls), "1", sqs_calls == 1)
    row("DynamoDB calls per event (counted)", str(ddb_calls), "0", ddb_calls == 0)

    # The Python stack the same job is usually written in, started and its clients built.
    python_start = (
        "import boto3, stripe, fastapi\n"
        "s = boto3.session.Session(region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n"
        "s.client('sqs'); s.client('secretsmanager')\n"
        "app = fastapi.FastAPI()\n"
    )
    py_cpu = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([PY, "-c", python_start], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        py_cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    py = statistics.median(py_cpu)
    row("Python stack start CPU (stripe + boto3 + FastAPI)", f"{py * 1000:.0f} ms", "(reference)", None)
    ratio = py / (cpu / 1e9)
    row("cold start CPU ratio Python / Rust", f"{ratio:.0f}×", "≥ 20×", ratio >= 20)


# --- 4. deployment size ---------------------------------------------------------------------------


def zip_size() -> None:
    run(["cargo", "lambda", "build", "--release", "--arm64", "-p", "webhook", "--output-format", "zip"])
    z = ROOT / "target" / "lambda" / "webhook" / "bootstrap.zip"
    size = z.stat().st_size
    row("webhook deployment zip (arm64)", f"{size / 1e6:.2f} MB", "≤ 5 MB", size <= 5_000_000)


def main() -> None:
    webhook_cpu()
    cold_start()
    zip_size()
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * 100)
    print(f"{'figure':<{width}}  {'measured':>14}  {'target':<18} verdict")
    for what, measured, target, verdict in rows:
        print(f"{what:<{width}}  {measured:>14}  {target:<18} {verdict}")
    if any(r[3] == "MISSES" for r in rows):
        print("\nsome figures miss their targets (see above)")


if __name__ == "__main__":
    main()
