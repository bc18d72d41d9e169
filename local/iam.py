"""IAM for the local stack: every AWS call a function makes is judged against that function's role,
as the deployed template grants it.

The roles come from template.yaml through the SAM transform (`samtranslator`, the library `sam
deploy` runs): SAM's policy templates expanded, the managed policies SAM attaches for event sources
(AWSLambdaSQSQueueExecutionRole, AWSLambdaDynamoDBExecutionRole) and the inline grant it adds for an
on-failure destination. Intrinsic functions are resolved against the local stack's names, and a
secret's `!Ref` against the ARN Secrets Manager gave it, as in AWS.

Each function process gets credentials of its own (an ASIA access key, a secret and a session
token, as Lambda hands a function its role's session). The endpoints read the access key from the
request's SigV4 `Authorization` header to know who calls, name the action and resources as AWS
authorises them (`iam_requests` below), and ask moto's policy evaluator
(`moto.iam.access_control`) whether the role allows each. A call outside the role is answered as
the service answers it in AWS and written to the denial log with the function, action and
resource. The access key `testing` is the operator's (provisioning, tests, the demo): it may do
anything. Any other key is refused, as AWS refuses a key it does not know.

What this cannot judge: resource policies and permission boundaries (the template has none), and
condition keys other than the ones named here (`ses:FromAddress`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from template import ACCOUNT_ID, REGION, STACK_NAME, Template

ADMIN_ACCESS_KEY = "testing"
NO_VALUE = object()


# --- the roles, from the template --------------------------------------------------------------


def managed_policy_document(arn: str) -> dict:
    """An AWS managed policy's document, from the copy moto keeps of IAM's published ones."""
    name = arn.rsplit("/", 1)[-1]
    policies = _managed_policies()
    if name not in policies:
        raise KeyError(f"managed policy {arn} is not known locally")
    return policies[name]["Document"]


@functools.cache
def _managed_policies() -> dict:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def transformed(doc: dict, parameters: dict[str, str]) -> dict:
    """The template after the SAM transform, as CloudFormation receives it."""
    import boto3
    from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The managed-policy name → ARN map `sam deploy` fetches from IAM, from the copy samtranslator
    # bundles; the session only names the region (nothing is called).
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    values = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::StackName": STACK_NAME, "AWS::Partition": "aws"}
    values.update(parameters)
    doc = copy.deepcopy(doc)
    for logical_id, res in doc.get("Resources", {}).items():
        if res.get("Type") == "AWS::Serverless::Function":
            # What `sam package` puts there: the transform takes only an S3 location.
            res["Properties"]["CodeUri"] = f"s3://local-artifacts/{logical_id}.zip"
    return translator.translate(doc, values, get_managed_policy_map=lambda: get_bundled_managed_policy_map("aws") or {})


class _PolicyResolver(Template):
    """Resolves a role's policies: conditions and `Fn::If` as CloudFormation evaluates them, and a
    secret's `Ref` to its ARN (what `Ref` of AWS::SecretsManager::Secret returns)."""

    def __init__(self, doc: dict, aws_endpoint: str, parameters: dict[str, str], secret_arns: dict[str, str]):
        super().__init__(doc, aws_endpoint, parameters)
        self.secret_arns = secret_arns
        self.conditions = doc.get("Conditions", {})

    def condition(self, name: str) -> bool:
        return bool(self.evaluate(self.conditions[name]))

    def evaluate(self, value):
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Fn::Equals":
                a, b = (self.evaluate(v) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.evaluate(arg[0])
            if key == "Fn::And":
                return all(self.evaluate(v) for v in arg)
            if key == "Fn::Or":
                return any(self.evaluate(v) for v in arg)
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(value)

    def resolve(self, value):
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.resolve(then if self.condition(name) else otherwise)
            if key == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if key == "Ref" and arg in self.secret_arns:
                return self.secret_arns[arg]
        out = super().resolve(value)
        if isinstance(out, list):
            return [v for v in out if v is not NO_VALUE]
        if isinstance(out, dict):
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        return out


def function_policies(doc: dict, aws_endpoint: str, parameters: dict[str, str], secret_arns: dict[str, str]) -> dict[str, list[dict]]:
    """Each function's policy documents, by the function's logical id: the inline policies of the
    role SAM creates for it (`<LogicalId>Role`) and the managed policies attached to that role."""
    cfn = transformed(doc, parameters)
    resolver = _PolicyResolver(cfn, aws_endpoint, {**parameters}, secret_arns)
    out: dict[str, list[dict]] = {}
    for logical_id, res in doc.get("Resources", {}).items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        role = cfn["Resources"].get(f"{logical_id}Role")
        if role is None:
            raise ValueError(f"template.yaml: {logical_id} has no role of SAM's making ({logical_id}Role)")
        props = resolver.resolve(role["Properties"])
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        docs += [managed_policy_document(arn) for arn in props.get("ManagedPolicyArns", [])]
        out[logical_id] = docs
    return out


# --- the principals, shared by the endpoints through a file ------------------------------------


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str

    @classmethod
    def new(cls) -> "Credentials":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        return cls(
            access_key_id="ASIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token=secrets.token_urlsafe(96),
        )

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }


def role_arn(logical_id: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{STACK_NAME}-{logical_id}Role"


def write_principals(path: Path, policies: dict[str, list[dict]], credentials: dict[str, Credentials],
                     secret_values: dict[str, dict[str, str]] | None = None) -> None:
    """What the endpoints judge by: each function's access key, role and policies, and what it
    reads from a secret in place of the secret's own value (`secret_values`: function → secret
    ARN → value; the local stack gives each function a Stripe key of its own this way)."""
    principals = {
        credentials[fid].access_key_id: {"function": fid, "role": role_arn(fid), "policies": docs,
                                         "secret_values": (secret_values or {}).get(fid, {})}
        for fid, docs in policies.items()
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"principals": principals}, indent=1))
    tmp.replace(path)


# --- judging a request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes for a call: an action on a resource, with condition values."""
    action: str
    resource: str
    conditions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Denial:
    function: str
    caller: str  # the assumed-role ARN AWS names in its message
    request: Request
    unknown_key: bool = False

    @property
    def message(self) -> str:
        if self.unknown_key:
            return "The security token included in the request is invalid."
        r = self.request
        return (f"User: {self.caller} is not authorized to perform: {r.action} on resource: {r.resource} "
                f"because no identity-based policy allows the {r.action} action")


def _lowered_actions(statement: dict) -> dict:
    s = dict(statement)
    for key in ("Action", "NotAction"):
        if key in s:
            s[key] = [a.lower() for a in s[key]] if isinstance(s[key], list) else s[key].lower()
    return s


class Judge:
    """Loads the principals file (again whenever it changes) and judges requests against it."""

    def __init__(self, path: str | None, denial_log: str | None = None):
        self.path = Path(path) if path else None
        self.denial_log = Path(denial_log) if denial_log else None
        self.lock = threading.Lock()
        self.mtime = None
        self.principals: dict = {}

    @classmethod
    def from_env(cls) -> "Judge":
        return cls(os.environ.get("LOCAL_IAM_PRINCIPALS"), os.environ.get("LOCAL_IAM_DENIALS"))

    def _load(self) -> dict:
        if self.path is None:
            return {}
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        with self.lock:
            if mtime != self.mtime:
                data = json.loads(self.path.read_text())
                for p in data["principals"].values():
                    p["statements"] = statements_of(p["policies"])
                self.principals, self.mtime = data["principals"], mtime
            return self.principals

    @property
    def enforcing(self) -> bool:
        return bool(self._load())

    def secret_value(self, access_key: str | None, secret_arn: str) -> str | None:
        """What this caller reads from that secret locally, if not the secret's own value."""
        principal = self._load().get(access_key or "")
        return principal.get("secret_values", {}).get(secret_arn) if principal else None

    def judge(self, access_key: str | None, requests: list[Request]) -> Denial | None:
        """None when every request is allowed; else the first one refused."""
        principals = self._load()
        if not principals or access_key == ADMIN_ACCESS_KEY:
            return None
        principal = principals.get(access_key or "")
        if principal is None:
            return self._deny(Denial("?", "?", requests[0] if requests else Request("?", "?"), unknown_key=True))
        caller = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{principal['role'].rsplit('/', 1)[-1]}/{principal['function']}"
        for r in requests:
            if not allowed(principal["statements"], r):
                return self._deny(Denial(principal["function"], caller, r))
        return None

    def _deny(self, denial: Denial) -> Denial:
        r = denial.request
        line = (f"[iam] denied {denial.function}: {r.action} on {r.resource}"
                + (" (unknown access key)" if denial.unknown_key else ""))
        print(line, file=sys.stderr, flush=True)
        if self.denial_log:
            with open(self.denial_log, "a") as f:
                f.write(json.dumps({"time": time.time(), "function": denial.function, "action": r.action,
                                    "resource": r.resource, "unknown_key": denial.unknown_key}) + "\n")
        return denial


def statements_of(policies: list[dict]) -> list:
    from moto.iam.access_control import IAMPolicyStatement

    class Statement(IAMPolicyStatement):
        @staticmethod
        def _match(pattern: str, string: str):
            # IAM's wildcards: `*` any run, `?` one character, everything else literal (moto
            # reads the pattern as a regular expression, so a `.` in an ARN matched anything).
            regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
            return re.match(f"^{regex}$", string, flags=re.DOTALL)

    return [Statement(_lowered_actions(s)) for doc in policies for s in _as_list(doc["Statement"])]


def allowed(statements, request: Request) -> bool:
    """IAM's identity-policy logic: an explicit Deny wins, else some Allow must match.

    Each statement is asked on its own: moto's evaluator answers DENIED for an Allow statement
    whose condition fails, where IAM treats that statement as not applying."""
    from moto.iam.access_control import PermissionResult

    action = request.action.lower()
    conditions = dict(request.conditions)
    permitted = False
    for statement in statements:
        result = statement.is_action_permitted(action, request.resource, None, conditions)
        effect = statement._statement.get("Effect")
        if result == PermissionResult.DENIED and effect == "Deny":
            return False
        if result == PermissionResult.PERMITTED and effect == "Allow":
            permitted = True
    return permitted


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def access_key_of(headers) -> str | None:
    """The access key of a SigV4-signed request (header or presigned query)."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    m = re.search(r"Credential=([^/,\s]+)/", auth)
    return m.group(1) if m else None


# --- what each call asks of IAM (Service Authorization Reference) ------------------------------

DYNAMODB_TRANSACT_PARTS = {
    # TransactWriteItems has no action of its own: each part is authorised as its single-item
    # twin (DynamoDB developer guide, "Using IAM with DynamoDB transactions").
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}


def table_arn(name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name_or_arn}"


def stream_arn(local_arn: str) -> str:
    """DynamoDB Local names streams in its own region and account; AWS names them in the table's."""
    m = re.match(r"arn:aws:dynamodb:[^:]*:[^:]*:(table/.+)$", local_arn or "")
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:{m.group(1)}" if m else "*"


def dynamodb_requests(target: str, body: dict) -> list[Request]:
    """DynamoDB's and DynamoDB Streams' JSON protocol: X-Amz-Target names the operation."""
    service, _, op = target.partition(".")
    if service.startswith("DynamoDBStreams"):
        if op in ("DescribeStream", "GetShardIterator"):
            return [Request(f"dynamodb:{op}", stream_arn(body.get("StreamArn", "")))]
        if op == "ListStreams":
            return [Request("dynamodb:ListStreams", "*")]
        return [Request(f"dynamodb:{op}", "*")]  # GetRecords names only an iterator
    if op in ("TransactWriteItems", "TransactGetItems"):
        out = []
        for item in body.get("TransactItems", []):
            (kind, part), = item.items()
            out.append(Request(DYNAMODB_TRANSACT_PARTS[kind], table_arn(part.get("TableName", ""))))
        return out
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [Request(f"dynamodb:{op}", table_arn(t)) for t in body.get("RequestItems", {})]
    if op in ("ListTables", "DescribeLimits", "DescribeEndpoints"):
        return [Request(f"dynamodb:{op}", "*")]
    table = table_arn(body.get("TableName", ""))
    if op in ("Query", "Scan") and body.get("IndexName"):
        return [Request(f"dynamodb:{op}", f"{table}/index/{body['IndexName']}")]
    return [Request(f"dynamodb:{op}", table)]


SQS_BATCH_ACTIONS = {
    # A batch call is authorised as the action it batches.
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def queue_arn_of_url(url: str) -> str:
    parts = urlsplit(url).path.strip("/").split("/")
    account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (ACCOUNT_ID, parts[-1])
    return f"arn:aws:sqs:{REGION}:{account}:{name}"


def aws_requests(method: str, path: str, query: str, headers, body: bytes, secret_arn) -> tuple[str, list[Request]] | None:
    """The service a request to moto is for and what it asks of IAM; None for what the local
    stack does not judge (its own `/moto-api` and `/_local` paths)."""
    if path.startswith(("/moto-api", "/_local")):
        return None
    target = headers.get("X-Amz-Target") or ""
    auth = headers.get("Authorization") or ""
    scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", auth)
    service = scope.group(1) if scope else ""
    if target.startswith("AmazonSQS.") or service == "sqs":
        if target:
            op, params = target.split(".", 1)[1], json.loads(body or b"{}")
            url = params.get("QueueUrl", "")
            name = params.get("QueueName", "")
        else:
            form = {k: v[0] for k, v in parse_qs(body.decode() if body else query).items()}
            op, url, name = form.get("Action", ""), form.get("QueueUrl", ""), form.get("QueueName", "")
        op = SQS_BATCH_ACTIONS.get(op, op)
        if op in ("ListQueues",):
            resource = "*"
        elif url:
            resource = queue_arn_of_url(url)
        else:
            resource = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
        return "sqs", [Request(f"sqs:{op}", resource)]
    if target.startswith("secretsmanager."):
        op, params = target.split(".", 1)[1], json.loads(body or b"{}")
        secret = params.get("SecretId")
        resource = secret_arn(secret) if secret else "*"
        return "secretsmanager", [Request(f"secretsmanager:{op}", resource)]
    if target.startswith("AWSEvents."):
        op, params = target.split(".", 1)[1], json.loads(body or b"{}")
        if op == "PutEvents":
            buses = {e.get("EventBusName") or "default" for e in params.get("Entries", [])}
            return "events", [Request("events:PutEvents", bus if bus.startswith("arn:") else
                                      f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{bus}") for bus in sorted(buses)]
        return "events", [Request(f"events:{op}", "*")]
    if service == "ses" and path.startswith("/v2/email/outbound-emails"):
        params = json.loads(body or b"{}")
        sender = params.get("FromEmailAddress", "")
        # SES authorises a send against the identity the sender belongs to, with the sender
        # as the ses:FromAddress condition key (SES developer guide, "Controlling access").
        identity = f"arn:aws:ses:{REGION}:{ACCOUNT_ID}:identity/{sender}"
        return "sesv2", [Request("ses:SendEmail", identity, (("ses:FromAddress", sender),))]
    return service or "unknown", [Request(f"{service or 'unknown'}:{method} {unquote(path)}", "*")]


# --- how each service refuses ------------------------------------------------------------------


def denial_response(service: str, json_protocol: bool, denial: Denial) -> tuple[int, dict[str, str], bytes]:
    """The refusal as the service sends it: status, headers and body (what the SDKs parse into
    their error code). An unknown access key gets each service's invalid-token error."""
    request_id = secrets.token_hex(16)
    msg = denial.message
    if service == "sqs":
        code = "InvalidClientTokenId" if denial.unknown_key else "AccessDenied"
        if json_protocol:
            # SQS's JSON protocol names the query-protocol code in x-amzn-query-error.
            body = {"__type": f"com.amazon.coral.service#{'UnrecognizedClientException' if denial.unknown_key else 'AccessDeniedException'}",
                    "message": msg}
            return 403, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code};Sender",
                         "x-amzn-RequestId": request_id}, json.dumps(body).encode()
        xml = (f'<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">'
               f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{_xml(msg)}</Message><Detail/></Error>"
               f"<RequestId>{request_id}</RequestId></ErrorResponse>")
        return 403, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, xml.encode()
    if service == "dynamodb":
        kind = "UnrecognizedClientException" if denial.unknown_key else "AccessDeniedException"
        body = {"__type": f"com.amazon.coral.service#{kind}", "Message": msg}
        return 400, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}, json.dumps(body).encode()
    if service == "sesv2":
        kind = "UnrecognizedClientException" if denial.unknown_key else "AccessDeniedException"
        return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": kind, "x-amzn-RequestId": request_id}, \
            json.dumps({"message": msg}).encode()
    # Secrets Manager, EventBridge and the other JSON services.
    kind = "UnrecognizedClientException" if denial.unknown_key else "AccessDeniedException"
    return 400, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}, \
        json.dumps({"__type": kind, "Message": msg, "message": msg}).encode()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
