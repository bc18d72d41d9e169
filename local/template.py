"""Reads template.yaml for the local stack: resources, functions, routes and their environment.

The local stack never declares a queue, a table or a variable of its own: it reads them here from
the same template that deploys to AWS, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from samcli.yamlhelper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
STACK_NAME = "billing-local"


def load(path: Path = TEMPLATE) -> dict:
    return yaml_parse(path.read_text())


@dataclass
class Route:
    method: str
    path: str
    function: str
    pattern: re.Pattern = field(repr=False)

    @classmethod
    def of(cls, method: str, path: str, function: str) -> "Route":
        # `/v1/accounts/{account_id}` matches one path segment per parameter.
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        return cls(method.upper(), path, function, re.compile(f"^{regex}$"))

    def match(self, method: str, path: str) -> dict | None:
        if method.upper() != self.method:
            return None
        m = self.pattern.match(path)
        return m.groupdict() if m else None


@dataclass
class SqsSource:
    queue: str  # logical id of the queue
    batch_size: int
    report_batch_item_failures: bool


@dataclass
class StreamSource:
    """A DynamoDB stream event source, with the properties the local poller honours."""
    table: str  # logical id of the table
    batch_size: int
    report_batch_item_failures: bool
    maximum_retry_attempts: int
    bisect: bool
    on_failure_queue: str | None  # logical id of the on-failure SQS destination
    filters: list[dict]  # parsed FilterCriteria patterns (any one matching lets a record through)


@dataclass
class ScheduleSource:
    expression: str  # rate(...) or cron(...)
    enabled: bool


@dataclass
class Function:
    logical_id: str
    binary: str
    timeout: int
    memory: int
    environment: dict
    routes: list[Route]
    sqs_sources: list[SqsSource]
    stream_sources: list[StreamSource] = field(default_factory=list)
    schedules: list[ScheduleSource] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)


class Template:
    """The template, with intrinsic functions resolved against local names and endpoints."""

    def __init__(self, doc: dict, aws_endpoint: str, parameters: dict | None = None):
        self.doc = doc
        self.aws_endpoint = aws_endpoint.rstrip("/")
        self.resources: dict = doc.get("Resources", {})
        self.parameters = {
            name: str(spec.get("Default", ""))
            for name, spec in doc.get("Parameters", {}).items()
        }
        self.parameters.update(parameters or {})

    # --- intrinsic functions --------------------------------------------------------------

    def resolve(self, value):
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attr)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(self.resolve(i)) for i in items)
        return {k: self.resolve(v) for k, v in value.items()}

    def sub(self, arg) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name and not name.startswith("AWS::"):
                res, attr = name.split(".", 1)
                return str(self.get_att(res, attr))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", repl, text)

    def ref(self, name: str):
        pseudo = {
            "AWS::StackName": STACK_NAME,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return None  # CloudFormation drops the property; callers drop a None
        if name in self.parameters:
            return self.parameters[name]
        res = self.resources.get(name)
        if res is None:
            raise KeyError(f"template.yaml: !Ref {name} names nothing")
        kind = res["Type"]
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name)
        if kind == "AWS::DynamoDB::Table":
            return self.table_name(name)
        if kind == "AWS::Events::EventBus":
            return self.resolve(res["Properties"]["Name"])
        if kind == "AWS::SecretsManager::Secret":
            # Secrets Manager takes the name wherever it takes the ARN.
            return self.resolve(res["Properties"]["Name"])
        return name  # functions, topics, APIs: the logical id names them locally

    def get_att(self, name: str, attr: str):
        res = self.resources[name]
        kind = res["Type"]
        if kind == "AWS::SQS::Queue":
            queue = self.queue_name(name)
            return {
                "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue}",
                "QueueName": queue,
                "QueueUrl": self.queue_url(name),
            }[attr]
        if kind == "AWS::DynamoDB::Table":
            table = self.table_name(name)
            return {
                "Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}",
                "StreamArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}/stream/local",
            }[attr]
        if kind == "AWS::Events::EventBus" and attr in ("Arn", "Name"):
            bus = self.ref(name)
            return bus if attr == "Name" else f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{bus}"
        if attr == "Arn":
            return f"arn:aws:local:{REGION}:{ACCOUNT_ID}:{name}"
        raise KeyError(f"template.yaml: !GetAtt {name}.{attr} is not known locally")

    # --- names ----------------------------------------------------------------------------

    def queue_name(self, logical_id: str) -> str:
        props = self.resources[logical_id].get("Properties", {})
        return self.resolve(props.get("QueueName", logical_id))

    def queue_url(self, logical_id: str) -> str:
        return f"{self.aws_endpoint}/{ACCOUNT_ID}/{self.queue_name(logical_id)}"

    def table_name(self, logical_id: str) -> str:
        props = self.resources[logical_id].get("Properties", {})
        return self.resolve(props.get("TableName", logical_id))

    def of_type(self, kind: str) -> dict:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    # --- functions ------------------------------------------------------------------------

    def declared_variables(self, logical_id: str) -> list[str]:
        """The environment variables the template declares for a function (Globals included),
        NoValue ones too: the ones `sam local invoke --env-vars` may set."""
        glob = self.doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.resources[logical_id].get("Properties", {}).get("Environment", {}).get("Variables", {})
        return sorted({**glob, **own})

    def functions(self) -> list[Function]:
        glob = self.doc.get("Globals", {}).get("Function", {})
        out = []
        for logical_id, res in self.of_type("AWS::Serverless::Function").items():
            props = res.get("Properties", {})
            binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if not binary:
                raise ValueError(f"template.yaml: {logical_id} has no Metadata.BuildProperties.Binary")
            env = dict(glob.get("Environment", {}).get("Variables", {}))
            env.update(props.get("Environment", {}).get("Variables", {}))
            routes, sqs_sources, stream_sources, schedules = [], [], [], []
            for event in props.get("Events", {}).values():
                p = event.get("Properties", {})
                if event.get("Type") == "HttpApi":
                    routes.append(Route.of(p["Method"], p["Path"], logical_id))
                elif event.get("Type") == "SQS":
                    queue = p["Queue"]
                    if not (isinstance(queue, dict) and "Fn::GetAtt" in queue):
                        raise ValueError(f"template.yaml: {logical_id}'s SQS event must name its queue with !GetAtt Queue.Arn")
                    target = queue["Fn::GetAtt"]
                    queue_id = target[0] if isinstance(target, list) else target.split(".")[0]
                    sqs_sources.append(SqsSource(
                        queue=queue_id,
                        batch_size=int(p.get("BatchSize", 10)),
                        report_batch_item_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
                    ))
                elif event.get("Type") == "DynamoDB":
                    stream_sources.append(self._stream_source(logical_id, p))
                elif event.get("Type") == "Schedule":
                    schedules.append(ScheduleSource(
                        expression=str(self.resolve(p["Schedule"])),
                        enabled=bool(p.get("Enabled", True)) and p.get("State", "ENABLED") == "ENABLED",
                    ))
                else:
                    raise ValueError(f"template.yaml: {logical_id} has a {event.get('Type')} event, which the local stack does not wire")
            out.append(
                Function(
                    logical_id=logical_id,
                    binary=binary,
                    timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
                    memory=int(props.get("MemorySize", glob.get("MemorySize", 128))),
                    environment={k: str(r) for k, r in ((k, self.resolve(v)) for k, v in env.items()) if r is not None},
                    routes=routes,
                    sqs_sources=sqs_sources,
                    stream_sources=stream_sources,
                    schedules=schedules,
                    raw=res,
                )
            )
        return out

    STREAM_PROPERTIES = {
        "Stream", "StartingPosition", "BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes",
        "MaximumRetryAttempts", "BisectBatchOnFunctionError", "MaximumRecordAgeInSeconds", "DestinationConfig",
        "FilterCriteria",
    }

    def _stream_source(self, logical_id: str, p: dict) -> StreamSource:
        import json

        unknown = set(p) - self.STREAM_PROPERTIES
        if unknown:
            raise ValueError(f"template.yaml: {logical_id}'s DynamoDB event has {sorted(unknown)}, which the local stack does not honour")
        stream = p["Stream"]
        if not (isinstance(stream, dict) and "Fn::GetAtt" in stream):
            raise ValueError(f"template.yaml: {logical_id}'s DynamoDB event must name its stream with !GetAtt Table.StreamArn")
        target = stream["Fn::GetAtt"]
        table = target[0] if isinstance(target, list) else target.split(".")[0]
        on_failure = None
        dest = p.get("DestinationConfig", {}).get("OnFailure")
        if dest:
            ref = dest["Destination"]["Fn::GetAtt"]
            on_failure = ref[0] if isinstance(ref, list) else ref.split(".")[0]
        filters = [json.loads(f["Pattern"]) for f in p.get("FilterCriteria", {}).get("Filters", [])]
        return StreamSource(
            table=table,
            batch_size=int(p.get("BatchSize", 100)),
            report_batch_item_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
            maximum_retry_attempts=int(p.get("MaximumRetryAttempts", -1)),
            bisect=bool(p.get("BisectBatchOnFunctionError", False)),
            on_failure_queue=on_failure,
            filters=filters,
        )
