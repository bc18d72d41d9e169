"""Creates the template's queues, tables and secrets on the local AWS endpoints: the tables on
DynamoDB Local, everything else on moto.

Every property of every resource is either applied or refused: a property this file does not know
stops provisioning with its name, so a change to template.yaml cannot silently go missing locally.
The few that DynamoDB Local cannot apply are listed in `NOT_APPLIED_BY_DYNAMODB_LOCAL`, with why.
"""

from __future__ import annotations

import json

import boto3

from template import REGION, Template

# CloudFormation property -> SQS attribute, for the properties that map one to one.
SQS_ATTRIBUTES = {
    "FifoQueue": "FifoQueue",
    "ContentBasedDeduplication": "ContentBasedDeduplication",
    "DeduplicationScope": "DeduplicationScope",
    "FifoThroughputLimit": "FifoThroughputLimit",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "VisibilityTimeout": "VisibilityTimeout",
    "DelaySeconds": "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
    "KmsMasterKeyId": "KmsMasterKeyId",
}
SQS_SPECIAL = {"QueueName", "RedrivePolicy", "RedriveAllowPolicy", "Tags"}

TABLE_PROPERTIES = {
    "TableName",
    "BillingMode",
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "StreamSpecification",
    "SSESpecification",
    "PointInTimeRecoverySpecification",
    "TimeToLiveSpecification",
    "DeletionProtectionEnabled",
    "Tags",
}

# Known, declared in the template, and deliberately not applied: DynamoDB Local has no such feature.
NOT_APPLIED_BY_DYNAMODB_LOCAL = {
    # No backups at all locally (UpdateContinuousBackups is an unknown operation there).
    "PointInTimeRecoverySpecification",
    # Accepted and ignored: DynamoDB Local does not encrypt its in-memory tables.
    "SSESpecification",
}

SECRET_PROPERTIES = {"Name", "Description", "SecretString"}


class UnknownProperty(Exception):
    pass


def attr_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def client(service: str, endpoint: str, credentials=None):
    """A client with the operator's credentials, or with `credentials` (a function's, local/iam.py)."""
    keys = credentials.env() if credentials else {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=keys.get("AWS_SESSION_TOKEN"),
    )


def queue_attributes(tpl: Template, logical_id: str) -> dict[str, str]:
    props = tpl.resolve(tpl.resources[logical_id].get("Properties", {}))
    attrs = {}
    for key, value in props.items():
        if key in SQS_ATTRIBUTES:
            attrs[SQS_ATTRIBUTES[key]] = attr_value(value)
        elif key in ("RedrivePolicy", "RedriveAllowPolicy"):
            attrs[key] = json.dumps(value)
        elif key not in SQS_SPECIAL:
            raise UnknownProperty(f"{logical_id}: SQS property {key} is not applied locally")
    return attrs


def create_queues(tpl: Template, endpoint: str) -> dict[str, str]:
    sqs = client("sqs", endpoint)
    urls = {}
    queues = tpl.of_type("AWS::SQS::Queue")
    # Dead-letter targets must exist before a redrive policy names them: create plain queues first.
    for logical_id in queues:
        attrs = queue_attributes(tpl, logical_id)
        plain = {k: v for k, v in attrs.items() if k not in ("RedrivePolicy", "RedriveAllowPolicy")}
        urls[logical_id] = sqs.create_queue(QueueName=tpl.queue_name(logical_id), Attributes=plain)["QueueUrl"]
    for logical_id in queues:
        attrs = queue_attributes(tpl, logical_id)
        redrive = {k: v for k, v in attrs.items() if k in ("RedrivePolicy", "RedriveAllowPolicy")}
        if redrive:
            sqs.set_queue_attributes(QueueUrl=urls[logical_id], Attributes=redrive)
    return urls


def create_tables(tpl: Template, endpoint: str) -> list[str]:
    """Creates each table on DynamoDB Local (`endpoint`), streams and TTL included."""
    ddb = client("dynamodb", endpoint)
    names = []
    for logical_id, res in tpl.of_type("AWS::DynamoDB::Table").items():
        props = tpl.resolve(res.get("Properties", {}))
        unknown = set(props) - TABLE_PROPERTIES
        if unknown:
            raise UnknownProperty(f"{logical_id}: DynamoDB properties {sorted(unknown)} are not applied locally")
        name = props["TableName"]
        args = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if "StreamSpecification" in props:
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        if "DeletionProtectionEnabled" in props:
            args["DeletionProtectionEnabled"] = props["DeletionProtectionEnabled"]
        ddb.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        names.append(name)
    return names


def create_secrets(tpl: Template, endpoint: str, values: dict[str, str]) -> dict[str, str]:
    """Creates each secret; `values` (by logical id) replaces the template's placeholder value."""
    sm = client("secretsmanager", endpoint)
    arns = {}
    for logical_id, res in tpl.of_type("AWS::SecretsManager::Secret").items():
        props = tpl.resolve(res.get("Properties", {}))
        unknown = set(props) - SECRET_PROPERTIES
        if unknown:
            raise UnknownProperty(f"{logical_id}: secret properties {sorted(unknown)} are not applied locally")
        out = sm.create_secret(
            Name=props["Name"],
            Description=props.get("Description", ""),
            SecretString=values.get(logical_id, props.get("SecretString", "")),
        )
        arns[logical_id] = out["ARN"]
    return arns


EVENT_BUS_PROPERTIES = {"Name", "Description", "Tags"}


def create_event_buses(tpl: Template, endpoint: str) -> list[str]:
    events = client("events", endpoint)
    names = []
    for logical_id, res in tpl.of_type("AWS::Events::EventBus").items():
        props = tpl.resolve(res.get("Properties", {}))
        unknown = set(props) - EVENT_BUS_PROPERTIES
        if unknown:
            raise UnknownProperty(f"{logical_id}: event bus properties {sorted(unknown)} are not applied locally")
        events.create_event_bus(Name=props["Name"])
        names.append(props["Name"])
    return names


def provision(tpl: Template, aws_endpoint: str, dynamodb_endpoint: str, secret_values: dict[str, str]) -> dict[str, str]:
    """Creates everything; answers each secret's ARN by logical id (what `Ref` of a secret is)."""
    create_queues(tpl, aws_endpoint)
    create_event_buses(tpl, aws_endpoint)
    create_tables(tpl, dynamodb_endpoint)
    return create_secrets(tpl, aws_endpoint, secret_values)
