"""The local endpoints judge every AWS call of a function against that function's role, as the
deployed template grants it, and refuse what AWS would refuse, in AWS's words.

Each test builds the roles from a copy of template.yaml (sometimes with one permission taken out),
through the same SAM transform and the same endpoints the local stack runs."""

import copy
import json
import tempfile
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import Endpoints, read_env
from template import Template, load

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/billing-local-billing"


def without(doc: dict, function: str, action: str) -> dict:
    """A copy of the template whose `function` no longer has `action` in its own statements."""
    doc = copy.deepcopy(doc)
    for policy in doc["Resources"][function]["Properties"]["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if action in actions:
                statement["Action"] = [a for a in actions if a != action]
    return doc


@pytest.fixture
def endpoints_for():
    opened = []

    def open_(doc):
        e = Endpoints(doc, Path(tempfile.mkdtemp(prefix="iam-")))
        opened.append(e)
        return e

    yield open_
    for e in opened:
        e.close()


def error_of(call) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_a_permission_taken_out_of_the_template_is_refused_as_dynamodb_refuses_it(endpoints_for):
    e = endpoints_for(without(load(), "ProcessorFunction", "dynamodb:Query"))
    processor = e.client("dynamodb", "ProcessorFunction")
    query = dict(TableName="billing-local-billing", KeyConditionExpression="pk = :pk",
                 ExpressionAttributeValues={":pk": {"S": "ACCOUNT#acct_1"}})

    code, message, status = error_of(lambda: processor.query(**query))
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == (
        "User: arn:aws:sts::123456789012:assumed-role/billing-local-ProcessorFunctionRole/ProcessorFunction "
        f"is not authorized to perform: dynamodb:Query on resource: {TABLE_ARN} "
        "because no identity-based policy allows the dynamodb:Query action"
    )
    # What the role still grants goes through; the operator's key may do anything.
    processor.get_item(TableName="billing-local-billing", Key={"pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": "ACCOUNT"}})
    assert e.client("dynamodb", None).query(**query)["Items"] == []
    assert e.refusals() == [{**e.refusals()[0], "function": "ProcessorFunction", "action": "dynamodb:Query",
                             "resource": TABLE_ARN, "unknown_key": False}]


def test_the_template_as_it_ships_grants_the_processor_its_query_and_transactional_delete(endpoints_for):
    e = endpoints_for(load())
    processor = e.client("dynamodb", "ProcessorFunction")
    processor.query(TableName="billing-local-billing", KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": "ACCOUNT#acct_1"}})
    processor.transact_write_items(TransactItems=[
        {"Put": {"TableName": "billing-local-billing", "Item": {"pk": {"S": "ORDER#k"}, "sk": {"S": "PARKED#2"}}}},
        {"Delete": {"TableName": "billing-local-billing", "Key": {"pk": {"S": "ORDER#k"}, "sk": {"S": "PARKED#1"}}}},
    ])
    assert e.refusals() == []


def test_each_part_of_a_transaction_and_each_index_is_judged_on_its_own(endpoints_for):
    e = endpoints_for(load())
    usage = e.client("dynamodb", "UsageFunction")
    code, message, _ = error_of(lambda: usage.transact_write_items(TransactItems=[
        {"Put": {"TableName": "billing-local-billing", "Item": {"pk": {"S": "A"}, "sk": {"S": "B"}}}},
        {"Delete": {"TableName": "billing-local-billing", "Key": {"pk": {"S": "A"}, "sk": {"S": "C"}}}},
    ]))
    assert code == "AccessDeniedException" and "dynamodb:DeleteItem" in message
    # Dunning reads open cases from their index, and may not query the table itself.
    dunning = e.client("dynamodb", "DunningFunction")
    dunning.query(TableName="billing-local-billing", IndexName="DunningCases", KeyConditionExpression="dunning_case = :c",
                  ExpressionAttributeValues={":c": {"S": "open"}})
    code, message, _ = error_of(lambda: dunning.query(
        TableName="billing-local-billing", KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "A"}}))
    assert code == "AccessDeniedException" and f"on resource: {TABLE_ARN} " in message
    code, message, _ = error_of(lambda: e.client("dynamodb", "ApiFunction").query(
        TableName="billing-local-billing", IndexName="ReportDue", KeyConditionExpression="report_due = :d",
        ExpressionAttributeValues={":d": {"S": "due"}}))
    assert code == "AccessDeniedException" and f"{TABLE_ARN}/index/ReportDue" in message


def test_queues_secrets_the_bus_and_ses_refuse_what_the_role_does_not_grant(endpoints_for):
    e = endpoints_for(load())
    events_queue = e.template.queue_url("EventsQueue")
    webhook_sqs = e.client("sqs", "WebhookFunction")
    webhook_sqs.send_message(QueueUrl=events_queue, MessageBody="{}", MessageGroupId="g", MessageDeduplicationId="d")
    code, message, status = error_of(lambda: webhook_sqs.receive_message(QueueUrl=events_queue))
    assert (code, status) == ("AccessDenied", 403) and "sqs:ReceiveMessage" in message
    # The internet-facing function never reads the API key.
    code, message, _ = error_of(lambda: e.client("secretsmanager", "WebhookFunction").get_secret_value(
        SecretId=e.template.ref("StripeApiKeySecret")))
    assert code == "AccessDeniedException" and e.secret_arns["StripeApiKeySecret"] in message
    e.client("secretsmanager", "WebhookFunction").get_secret_value(SecretId=e.template.ref("StripeWebhookSecret"))
    # The notifier publishes to its own bus only, and sends only as the configured sender.
    notifier_events = e.client("events", "NotifierFunction")
    code, _, _ = error_of(lambda: notifier_events.put_events(Entries=[{"Source": "billing", "DetailType": "x", "Detail": "{}"}]))
    assert code == "AccessDeniedException"
    e.client("sesv2", None).create_email_identity(EmailIdentity="billing@example.com")
    e.client("sesv2", None).create_email_identity(EmailIdentity="someone@example.com")
    ses = e.client("sesv2", "NotifierFunction")
    mail = {"Destination": {"ToAddresses": ["a@example.org"]},
            "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}}}
    ses.send_email(FromEmailAddress="billing@example.com", **mail)
    code, _, status = error_of(lambda: ses.send_email(FromEmailAddress="someone@example.com", **mail))
    assert (code, status) == ("AccessDeniedException", 403)
    assert [(r["function"], r["action"]) for r in e.refusals()] == [
        ("WebhookFunction", "sqs:ReceiveMessage"), ("WebhookFunction", "secretsmanager:GetSecretValue"),
        ("NotifierFunction", "events:PutEvents"), ("NotifierFunction", "ses:SendEmail"),
    ]


def test_a_key_no_function_holds_is_refused(endpoints_for):
    e = endpoints_for(load())
    stranger = boto3.client("dynamodb", endpoint_url=e.dynamodb, region_name="us-east-1",
                            aws_access_key_id="ASIASTRANGERSTRANGER", aws_secret_access_key="x")
    code, _, _ = error_of(lambda: stranger.list_tables())
    assert code == "UnrecognizedClientException"


def test_each_function_of_the_stack_runs_with_its_own_credentials(stack):
    env, state = stack
    principals = json.loads((state / "iam-principals.json").read_text())["principals"]
    seen = set()
    for path in sorted((state / "functions").glob("*.env")):
        function = path.stem
        fenv = read_env(path)
        key = fenv["AWS_ACCESS_KEY_ID"]
        assert key.startswith("ASIA") and fenv["AWS_SESSION_TOKEN"], function
        assert principals[key]["function"] == function
        seen.add(function)
    assert seen == {f.logical_id for f in Template(load(), "http://x").functions()}
