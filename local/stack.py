#!/usr/bin/env python3
"""The local stack: AWS APIs (moto; the billing table on DynamoDB Local), every function behind the
Lambda Runtime API, the HTTP API and the Lambda Invoke API, wired from template.yaml. No AWS
account, no Docker.

    stack.py up      start in the background; return once every function has finished init
    stack.py down    stop what `up` started
    stack.py serve   run in the foreground (what `up` runs)

Ports and the signing secret come from LOCAL_AWS_PORT (4566), LOCAL_DYNAMODB_PORT (8000),
LOCAL_HTTP_PORT (3000), LOCAL_LAMBDA_PORT (3001), LOCAL_STRIPE_PORT (12111) and
STRIPE_WEBHOOK_SECRET (whsec_local, comma-separated for several).
LOCAL_STATE_DIR (.local) holds env files, logs and the pid; LOCAL_BIN_DIR (target/release) the binaries.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dynamodb_local  # noqa: E402
import event_sources  # noqa: E402
import iam  # noqa: E402
import processes  # noqa: E402
import with_aws  # noqa: E402
import stripe_sim  # noqa: E402
from provision import client as provision_client  # noqa: E402
from provision import provision  # noqa: E402
from runtime import FunctionWorker, InvocationError, Server, lambda_environment  # noqa: E402
from template import ACCOUNT_ID, ROOT, STACK_NAME, Route, Template, load  # noqa: E402

# Deploy parameters the local stack sets: a sender SES (moto) accepts, and a billing page for
# the emails' links.
LOCAL_PARAMETERS = {
    "EmailFromAddress": "billing@example.com",
    "BillingPageUrl": "https://app.example.com/billing",
}
# Where the local stack routes the event bus, so the demo and tests can read what was published.
BUS_TAP_QUEUE = f"{STACK_NAME}-bus-tap"

# Lambda refuses synchronous payloads over 6 MB; API Gateway then answers 413.
MAX_INVOKE_PAYLOAD = 6 * 1024 * 1024
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "application/javascript")


class Settings:
    def __init__(self, env=os.environ):
        self.aws_port = int(env.get("LOCAL_AWS_PORT", "4566"))
        self.dynamodb_port = int(env.get("LOCAL_DYNAMODB_PORT", "8000"))
        self.http_port = int(env.get("LOCAL_HTTP_PORT", "3000"))
        self.lambda_port = int(env.get("LOCAL_LAMBDA_PORT", "3001"))
        self.stripe_port = int(env.get("LOCAL_STRIPE_PORT", "12111"))
        self.webhook_secrets = [s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "whsec_local").split(",") if s.strip()]
        self.state = Path(env.get("LOCAL_STATE_DIR", ROOT / ".local"))
        self.bin_dir = Path(env.get("LOCAL_BIN_DIR", ROOT / "target" / "release"))
        self.venv_bin = Path(sys.executable).parent

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def dynamodb_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.dynamodb_port}"


def log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


# --- AWS APIs ------------------------------------------------------------------------------------


def iam_env(settings: Settings) -> dict[str, str]:
    """Where the endpoints find the functions' roles and write what they refuse (local/iam.py)."""
    return {
        **os.environ,
        "LOCAL_IAM_PRINCIPALS": str(settings.state / "iam-principals.json"),
        "LOCAL_IAM_DENIALS": str(settings.state / "logs" / "iam-denials.log"),
    }


def start_moto(settings: Settings) -> subprocess.Popen:
    log = open(settings.state / "logs" / "aws.log", "ab")
    return with_aws.start_moto(settings.aws_port, log, env=iam_env(settings))


def start_dynamodb(settings: Settings) -> tuple[subprocess.Popen, subprocess.Popen]:
    """DynamoDB Local on a private port, behind the IAM gate on the port the functions know."""
    log = open(settings.state / "logs" / "dynamodb.log", "ab")
    private = with_aws.free_port()
    db = dynamodb_local.start(private, log)
    gate = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "dynamodb_gate.py"), "127.0.0.1",
         str(settings.dynamodb_port), str(private)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=iam_env(settings),
    )
    try:
        dynamodb_local.wait_ready(gate, settings.dynamodb_endpoint)
    except SystemExit:
        processes.stop(db)
        raise
    return db, gate


# --- SQS event source mapping ------------------------------------------------------------------


class SqsPoller:
    """Feeds a queue to a function the way Lambda's SQS event source does: batches, partial
    batch failures (`batchItemFailures`), a failed message returning to the queue and, after the
    queue's `maxReceiveCount`, SQS moving it to the dead-letter queue.

    It receives and deletes with the function's role, as Lambda's poller does. One local
    departure: a failed message becomes visible again after LOCAL_SQS_RETRY_SECONDS (2 s), not
    after the queue's visibility timeout, so retries take seconds, not minutes; Lambda makes no
    such call, so `retry_sqs` (the operator's client) makes it, outside the function's role."""

    def __init__(self, sqs, url: str, arn: str, worker: FunctionWorker, source, stopping: threading.Event, retry_sqs=None):
        self.worker = worker
        self.source = source
        self.stopping = stopping
        self.url = url
        self.arn = arn
        self.retry_seconds = int(os.environ.get("LOCAL_SQS_RETRY_SECONDS", "2"))
        self.sqs = sqs
        self.retry_sqs = retry_sqs or sqs

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception as e:  # the endpoint restarting, a transient error: keep polling
                log(f"SQS poller for {self.worker.fn.logical_id}: {e}")
                time.sleep(1)

    def poll_once(self) -> None:
        got = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=min(self.source.batch_size, 10), WaitTimeSeconds=1,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    k: {"stringValue": v.get("StringValue"), "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"]}
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": self.arn,
                "awsRegion": "us-east-1",
            }
            for m in got
        ]
        try:
            result = json.loads(self.worker.invoke(json.dumps({"Records": records}).encode()) or b"{}")
            if self.source.report_batch_item_failures and isinstance(result, dict):
                failed = {f.get("itemIdentifier") for f in result.get("batchItemFailures") or []}
            else:
                failed = set()
        except InvocationError as e:
            log(f"{self.worker.fn.logical_id} failed a batch of {len(got)}: {e.error_type}: {e.message}")
            failed = {m["MessageId"] for m in got}
        for m in got:
            if m["MessageId"] in failed:
                self.retry_sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=self.retry_seconds)
            else:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])


# --- API Gateway HTTP API (payload format 2.0) ---------------------------------------------------


def api_gateway_event(route: Route, params: dict, method: str, url: str, headers, body: bytes, client_ip: str) -> dict:
    parsed = urllib.parse.urlsplit(url)
    lowered: dict[str, str] = {}
    for k, v in headers.items():
        k = k.lower()
        lowered[k] = f"{lowered[k]},{v}" if k in lowered else v
    content_type = lowered.get("content-type", "")
    text = content_type.startswith(TEXT_TYPES) or not content_type
    try:
        body_text, encoded = (body.decode("utf-8"), False) if text else (base64.b64encode(body).decode(), True)
    except UnicodeDecodeError:
        body_text, encoded = base64.b64encode(body).decode(), True
    now = datetime.now(timezone.utc)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    event = {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": parsed.path,
        "rawQueryString": parsed.query,
        "headers": lowered,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": lowered.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": parsed.path,
                "protocol": "HTTP/1.1",
                "sourceIp": client_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
    if params:
        event["pathParameters"] = params
    if body:
        event["body"] = body_text
    return event


def http_response(result: bytes) -> tuple[int, dict[str, str], bytes]:
    """API Gateway's reading of a v2 function result."""
    try:
        out = json.loads(result)
    except ValueError:
        return 502, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
    if not (isinstance(out, dict) and "statusCode" in out):
        # The simple format: any JSON becomes a 200 with that JSON as the body.
        return 200, {"content-type": "application/json"}, result
    body = out.get("body") or ""
    raw = base64.b64decode(body) if out.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): str(v) for k, v in (out.get("headers") or {}).items()}
    return int(out["statusCode"]), headers, raw


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.template = Template(load(), settings.aws_endpoint, LOCAL_PARAMETERS)
        self.functions = {f.logical_id: f for f in self.template.functions()}
        self.routes = [r for f in self.functions.values() for r in f.routes]
        self.workers: dict[str, FunctionWorker] = {}
        self.servers: list[ThreadingHTTPServer] = []
        self.moto: subprocess.Popen | None = None
        self.dynamodb: subprocess.Popen | None = None
        self.dynamodb_gate: subprocess.Popen | None = None
        # Each function's own session, as Lambda hands a function its role's (local/iam.py).
        self.credentials = {lid: iam.Credentials.new() for lid in self.functions}
        # Each function that holds the Stripe key gets a restricted key of its own, with exactly
        # the permissions the README lists for it (stripe_sim.readme_permissions).
        self.stripe_keys = {
            lid: f"rk_test_{lid.removesuffix('Function').lower()}_{uuid.uuid4().hex[:16]}"
            for lid, fn in self.functions.items() if "STRIPE_API_KEY_SECRET_ID" in fn.environment
        }
        self.stopping = threading.Event()

    def function_env(self, logical_id: str) -> dict[str, str]:
        env = lambda_environment(self.functions[logical_id], self.settings.aws_endpoint, self.settings.dynamodb_endpoint)
        env.update(self.credentials[logical_id].env())
        # Locally, Stripe is the simulator.
        env["STRIPE_API_BASE"] = f"http://127.0.0.1:{self.settings.stripe_port}"
        return env

    def start(self) -> None:
        s = self.settings
        for sub in ("logs", "functions"):
            (s.state / sub).mkdir(parents=True, exist_ok=True)
        log(f"AWS APIs on {s.aws_endpoint}")
        self.moto = start_moto(s)
        log(f"DynamoDB Local on {s.dynamodb_endpoint}")
        (s.state / "iam-principals.json").unlink(missing_ok=True)
        self.dynamodb, self.dynamodb_gate = start_dynamodb(s)
        secrets = {
            "StripeApiKeySecret": json.dumps({"api_key": "sk_test_local"}),
            "StripeWebhookSecret": json.dumps({"webhook_secrets": s.webhook_secrets}),
        }
        secret_arns = provision(self.template, s.aws_endpoint, s.dynamodb_endpoint, secrets)
        # From here on every call with a function's credentials is judged against its role.
        policies = iam.function_policies(self.template.doc, s.aws_endpoint, self.template.parameters, secret_arns)
        api_key_secret = secret_arns["StripeApiKeySecret"]
        iam.write_principals(s.state / "iam-principals.json", policies, self.credentials, {
            lid: {api_key_secret: json.dumps({"api_key": key})} for lid, key in self.stripe_keys.items()
        })
        log(f"IAM: each function calls AWS with its own role's policies (refusals in {s.state / 'logs' / 'iam-denials.log'})")
        bus_tap_url = self.tap_event_buses()
        # What verifying the sender in SES is in AWS (README, "Deploy").
        provision_client("sesv2", s.aws_endpoint).create_email_identity(EmailIdentity=LOCAL_PARAMETERS["EmailFromAddress"])

        # Stripe: an empty account, set up by the same command a deploy runs (`make
        # stripe-setup`), which records the price ids in the table and gives the webhook
        # endpoint its signing secret; the stack then stores it, as the README's step does.
        webhook_url = f"http://127.0.0.1:{s.http_port}/webhooks/stripe"
        self.stripe, stripe_server = stripe_sim.serve(s.stripe_port, webhook_url, s.webhook_secrets)
        self.servers.append(stripe_server)
        listed = stripe_sim.readme_permissions((ROOT / "README.md").read_text())
        self.stripe.restricted_keys = {key: listed.get(lid, set()) for lid, key in self.stripe_keys.items()}
        self.stripe.refusal_log = s.state / "logs" / "stripe-permission-refusals.log"
        self.stripe_setup = stripe_sim.set_up(
            f"http://127.0.0.1:{s.stripe_port}", webhook_url, table=self.template.table_name("BillingTable"),
            dynamodb=provision_client("dynamodb", s.dynamodb_endpoint),
            meter_event_name=self.template.parameters["MeterEventName"],
            meter_customer_key=self.template.parameters["MeterCustomerKey"],
            return_url=LOCAL_PARAMETERS["BillingPageUrl"],
        )
        provision_client("secretsmanager", s.aws_endpoint).put_secret_value(
            SecretId=secret_arns["StripeWebhookSecret"],
            SecretString=json.dumps({"webhook_secrets": [self.stripe_setup.webhook_secret, *s.webhook_secrets]}),
        )
        log(f"Stripe simulator on http://127.0.0.1:{s.stripe_port}, set up from catalog.toml "
            f"({len(self.stripe_setup.changes)} changes), delivering webhooks to {webhook_url}")

        for logical_id, fn in self.functions.items():
            env = self.function_env(logical_id)
            (s.state / "functions" / f"{logical_id}.env").write_text(
                "".join(f"{k}={shell_quote(v)}\n" for k, v in sorted(env.items()) if k != "PATH")
            )
            worker = FunctionWorker(fn, s.bin_dir / fn.binary, env, s.state / "logs" / f"{logical_id}.log")
            worker.start()
            self.workers[logical_id] = worker
            log(f"{logical_id} ready ({s.bin_dir / fn.binary})")

        for fn in self.functions.values():
            worker = self.workers[fn.logical_id]
            for source in fn.sqs_sources:
                # Lambda polls a queue with several pollers, each invoking the function with its
                # own batch: one per sandbox the function may scale to. FIFO keeps a message
                # group on one batch at a time.
                for n in range(worker.concurrency):
                    poller = SqsPoller(
                        provision_client("sqs", s.aws_endpoint, self.credentials[fn.logical_id]),
                        self.template.queue_url(source.queue),
                        self.template.get_att(source.queue, "Arn"), worker, source, self.stopping,
                        retry_sqs=provision_client("sqs", s.aws_endpoint),
                    )
                    threading.Thread(target=poller.run, daemon=True, name=f"sqs-{fn.logical_id}-{n}").start()
                log(f"{fn.logical_id} consumes {self.template.queue_name(source.queue)} "
                    f"(batches of {source.batch_size}, {worker.concurrency} pollers)")

        self.start_streams_and_schedules()

        self.servers.append(serve(s.http_port, self.http_api_handler()))
        log(f"HTTP API on http://127.0.0.1:{s.http_port} ({', '.join(f'{r.method} {r.path}' for r in self.routes)})")
        self.servers.append(serve(s.lambda_port, self.invoke_api_handler()))
        log(f"Lambda Invoke API on http://127.0.0.1:{s.lambda_port} ({', '.join(self.functions)})")

        queues = {lid: self.template.queue_url(lid) for lid in self.template.of_type("AWS::SQS::Queue")}
        tables = {lid: self.template.table_name(lid) for lid in self.template.of_type("AWS::DynamoDB::Table")}
        env_lines = {
            "AWS_ENDPOINT_URL": s.aws_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": s.dynamodb_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "LOCAL_AWS_ENDPOINT": s.aws_endpoint,
            "LOCAL_DYNAMODB_ENDPOINT": s.dynamodb_endpoint,
            "LOCAL_HTTP_ENDPOINT": f"http://127.0.0.1:{s.http_port}",
            "LOCAL_LAMBDA_ENDPOINT": f"http://127.0.0.1:{s.lambda_port}",
            "WEBHOOK_URL": f"http://127.0.0.1:{s.http_port}/webhooks/stripe",
            "LOCAL_STRIPE_ENDPOINT": f"http://127.0.0.1:{s.stripe_port}",
            "STRIPE_API_KEY": "sk_test_local",
            "STRIPE_WEBHOOK_SECRET": ",".join(s.webhook_secrets),
            # What `make stripe-setup` resolved in the simulator: the ids its account gave.
            "STRIPE_METER_ID": self.stripe_setup.ids["meter"],
            **{f"STRIPE_PRICE_{k.upper()}": v for k, v in self.stripe_setup.ids["prices"].items()},
            **{f"QUEUE_URL_{to_env(k)}": v for k, v in queues.items()},
            **{f"TABLE_NAME_{to_env(k)}": v for k, v in tables.items()},
            "LOCAL_BUS_QUEUE_URL": bus_tap_url,
            "LOCAL_SES_MESSAGES_URL": f"{s.aws_endpoint}/_local/ses/messages",
            "LOCAL_STACK_PID": str(os.getpid()),
        }
        # For `sam local invoke FUNCTION --env-vars .local/sam-env.json` where Docker is: each
        # function's declared variables pointed at this stack (SAM passes only declared ones).
        declared = {lid: set(self.template.declared_variables(lid)) for lid in self.functions}
        (s.state / "sam-env.json").write_text(json.dumps({
            lid: {k: v for k, v in self.function_env(lid).items() if k in declared[lid]}
            for lid in self.functions
        }, indent=2))
        # Written last: its presence (with this pid) is what `up` waits for.
        tmp = s.state / "env.tmp"
        tmp.write_text("".join(f"{k}={shell_quote(v)}\n" for k, v in env_lines.items()))
        tmp.replace(s.state / "env")

    def tap_event_buses(self) -> str:
        """Routes every bus of the template to one local queue (what a rule to SQS is in AWS)."""
        sqs = provision_client("sqs", self.settings.aws_endpoint)
        url = sqs.create_queue(QueueName=BUS_TAP_QUEUE)["QueueUrl"]
        arn = f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:{BUS_TAP_QUEUE}"
        events = provision_client("events", self.settings.aws_endpoint)
        for logical_id in self.template.of_type("AWS::Events::EventBus"):
            bus = self.template.ref(logical_id)
            events.put_rule(Name="local-tap", EventBusName=bus, EventPattern=json.dumps({"source": ["billing"]}))
            events.put_targets(Rule="local-tap", EventBusName=bus, Targets=[{"Id": "local-tap", "Arn": arn}])
            log(f"event bus {bus} routed to {url}")
        return url

    def start_streams_and_schedules(self) -> None:
        s = self.settings
        schedules_on = os.environ.get("LOCAL_SCHEDULES", "on") != "off"
        for fn in self.functions.values():
            worker = self.workers[fn.logical_id]
            for source in fn.stream_sources:
                table = self.template.table_name(source.table)
                dlq = self.template.queue_url(source.on_failure_queue) if source.on_failure_queue else None
                poller = event_sources.StreamPoller(
                    worker, source, table,
                    # The event source mapping reads the stream and sends to its on-failure
                    # destination with the function's role; finding the stream is the deploy's.
                    provision_client("dynamodb", s.dynamodb_endpoint),
                    provision_client("dynamodbstreams", s.dynamodb_endpoint, self.credentials[fn.logical_id]),
                    provision_client("sqs", s.aws_endpoint, self.credentials[fn.logical_id]),
                    dlq, self.stopping,
                )
                threading.Thread(target=poller.run, daemon=True, name=f"stream-{fn.logical_id}").start()
                log(f"{fn.logical_id} consumes {table}'s stream (batches of {source.batch_size})")
            for schedule in fn.schedules:
                period = event_sources.rate_seconds(schedule.expression)
                if not (schedule.enabled and schedules_on and period):
                    log(f"{fn.logical_id}: {schedule.expression} fires by hand only (make fire FUNCTION={fn.logical_id})")
                    continue
                threading.Thread(
                    target=event_sources.Scheduler(worker, period, self.stopping).run,
                    daemon=True, name=f"schedule-{fn.logical_id}",
                ).start()
                log(f"{fn.logical_id} fires on {schedule.expression}")

    def stop(self) -> None:
        self.stopping.set()
        if getattr(self, "stripe", None):
            self.stripe.stopping = True
        for server in self.servers:
            server.shutdown()
        for worker in self.workers.values():
            worker.stop()
        processes.stop(self.moto)
        processes.stop(self.dynamodb_gate)
        processes.stop(self.dynamodb)
        (self.settings.state / "env").unlink(missing_ok=True)

    # --- handlers ---------------------------------------------------------------------------

    def http_api_handler(self):
        stack = self

        class HttpApi(_Handler):
            def handle_any(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                for route in stack.routes:
                    params = route.match(self.command, path)
                    if params is not None:
                        break
                else:
                    return self.reply(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                body = self.read_body(limit=MAX_INVOKE_PAYLOAD)
                if body is None:
                    return self.reply(413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}')
                event = api_gateway_event(route, params, self.command, self.path, self.headers, body, self.client_address[0])
                try:
                    result = stack.workers[route.function].invoke(json.dumps(event).encode())
                except InvocationError as e:
                    log(f"{route.function} failed: {e.error_type}: {e.message}")
                    return self.reply(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
                self.reply(*http_response(result))

        return HttpApi

    def invoke_api_handler(self):
        stack = self

        class InvokeApi(_Handler):
            def handle_any(self) -> None:
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                if self.command != "POST" or len(parts) != 4 or parts[:2] != ["2015-03-31", "functions"] or parts[3] != "invocations":
                    return self.reply(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                name = urllib.parse.unquote(parts[2]).split(":")[-1]
                worker = stack.workers.get(name)
                if worker is None:
                    body = json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode()
                    return self.reply(404, {"content-type": "application/json", "x-amzn-errortype": "ResourceNotFoundException"}, body)
                payload = self.read_body(limit=MAX_INVOKE_PAYLOAD)
                if payload is None:
                    return self.reply(413, {"content-type": "application/json", "x-amzn-errortype": "RequestTooLargeException"}, b'{"message":"Request must be smaller than 6291456 bytes"}')
                payload = payload or b"{}"
                if self.headers.get("X-Amz-Invocation-Type") == "Event":
                    threading.Thread(target=self._invoke_quietly, args=(worker, payload), daemon=True).start()
                    return self.reply(202, {}, b"")
                try:
                    result = worker.invoke(payload)
                    self.reply(200, {"content-type": "application/json", "x-amz-executed-version": "$LATEST"}, result)
                except InvocationError as e:
                    self.reply(
                        200,
                        {"content-type": "application/json", "x-amz-function-error": "Unhandled", "x-amz-executed-version": "$LATEST"},
                        e.payload(),
                    )

            @staticmethod
            def _invoke_quietly(worker: FunctionWorker, payload: bytes) -> None:
                try:
                    worker.invoke(payload)
                except InvocationError as e:
                    log(f"{worker.fn.logical_id} (async) failed: {e.error_type}: {e.message}")

        return InvokeApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def read_body(self, limit: int) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: self.handle_any()  # noqa: E731


def serve(port: int, handler) -> ThreadingHTTPServer:
    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def to_env(logical_id: str) -> str:
    out = ""
    for i, c in enumerate(logical_id):
        if c.isupper() and i and not logical_id[i - 1].isupper():
            out += "_"
        out += c.upper()
    return out


def shell_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_./:,=@+" for c in value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


# --- commands --------------------------------------------------------------------------------------


def cmd_serve(settings: Settings) -> None:
    stack = Stack(settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        stack.start()
        log("ready")
        stopping.wait()
    finally:
        log("stopping")
        stack.stop()


def read_pid(settings: Settings) -> int | None:
    try:
        pid = int((settings.state / "stack.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def cmd_up(settings: Settings) -> None:
    if read_pid(settings):
        print(f"the local stack is already running; endpoints in {settings.state / 'env'}")
        return
    (settings.state / "logs").mkdir(parents=True, exist_ok=True)
    (settings.state / "env").unlink(missing_ok=True)
    stack_log = open(settings.state / "logs" / "stack.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve"],
        stdout=stack_log,
        stderr=stack_log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives the shell that ran `make up`
    )
    (settings.state / "stack.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 120
    env_file = settings.state / "env"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (settings.state / "stack.pid").unlink(missing_ok=True)
            print((settings.state / "logs" / "stack.log").read_text()[-4000:], file=sys.stderr)
            raise SystemExit("the local stack failed to start (log above)")
        if env_file.exists() and f"LOCAL_STACK_PID={proc.pid}\n" in env_file.read_text():
            print(f"local stack up; endpoints in {env_file}:")
            print(env_file.read_text(), end="")
            return
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the local stack did not become ready within 120 s")


def cmd_down(settings: Settings) -> None:
    pid = read_pid(settings)
    if pid is None:
        print("the local stack is not running")
        (settings.state / "stack.pid").unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    else:
        os.killpg(pid, signal.SIGKILL)
    (settings.state / "stack.pid").unlink(missing_ok=True)
    print("local stack stopped")


def main(argv: list[str]) -> None:
    settings = Settings()
    commands = {"up": cmd_up, "down": cmd_down, "serve": cmd_serve}
    if len(argv) != 2 or argv[1] not in commands:
        raise SystemExit(__doc__)
    if shutil.which(str(settings.venv_bin / "moto_server")) is None:
        raise SystemExit("moto_server is missing from the virtual environment; run `make venv`")
    commands[argv[1]](settings)


if __name__ == "__main__":
    main(sys.argv)
