"""The local queues, table and secret are exactly what template.yaml declares."""

import json
import os
import tomllib

import pytest

from provision import NOT_APPLIED_BY_DYNAMODB_LOCAL, UnknownProperty, client, provision, queue_attributes
from template import Template, load
from with_aws import local_aws


@pytest.fixture(scope="module")
def provisioned():
    with local_aws() as endpoints:
        tpl = Template(load(), endpoints.aws)
        secret = {
            "StripeApiKeySecret": json.dumps({"api_key": "sk_test_x"}),
            "StripeWebhookSecret": json.dumps({"webhook_secrets": ["whsec_x"]}),
        }
        provision(tpl, endpoints.aws, endpoints.dynamodb, secret)
        yield tpl, endpoints


def test_every_queue_has_every_declared_attribute(provisioned):
    tpl, endpoints = provisioned
    sqs = client("sqs", endpoints.aws)
    queues = tpl.of_type("AWS::SQS::Queue")
    assert queues, "the template declares queues"
    for logical_id in queues:
        url = sqs.get_queue_url(QueueName=tpl.queue_name(logical_id))["QueueUrl"]
        actual = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for name, expected in queue_attributes(tpl, logical_id).items():
            if name in ("RedrivePolicy", "RedriveAllowPolicy"):
                assert json.loads(actual[name]) == json.loads(expected), f"{logical_id}.{name}"
            else:
                assert actual.get(name) == expected, f"{logical_id}.{name}: {actual.get(name)} != {expected}"


def test_events_queue_is_fifo_with_a_dead_letter_queue(provisioned):
    tpl, _ = provisioned
    props = tpl.resolve(tpl.resources["EventsQueue"]["Properties"])
    assert props["FifoQueue"] is True
    assert props["RedrivePolicy"]["maxReceiveCount"] == 5
    assert props["RedrivePolicy"]["deadLetterTargetArn"].endswith(tpl.queue_name("EventsDeadLetterQueue"))


def test_every_table_matches_its_declaration(provisioned):
    tpl, endpoints = provisioned
    ddb = client("dynamodb", endpoints.dynamodb)
    for logical_id, res in tpl.of_type("AWS::DynamoDB::Table").items():
        props = tpl.resolve(res["Properties"])
        table = ddb.describe_table(TableName=props["TableName"])["Table"]
        assert table["KeySchema"] == props["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == sorted(
            props["AttributeDefinitions"], key=lambda a: a["AttributeName"]
        )
        assert table["BillingModeSummary"]["BillingMode"] == props["BillingMode"]
        assert table["StreamSpecification"] == {"StreamEnabled": True, **props["StreamSpecification"]}
        assert {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])} == {
            g["IndexName"] for g in props.get("GlobalSecondaryIndexes", [])
        }
        assert table["LatestStreamArn"], "the stream that later consumers read"
        ttl = ddb.describe_time_to_live(TableName=props["TableName"])["TimeToLiveDescription"]
        assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]
        assert ttl["TimeToLiveStatus"] == "ENABLED"
        # Declared for AWS, not applicable on DynamoDB Local (see provision.py).
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
        assert {"PointInTimeRecoverySpecification", "SSESpecification"} <= NOT_APPLIED_BY_DYNAMODB_LOCAL


def test_concurrent_conditional_transactions_on_one_item_serialise(provisioned):
    """What the billing table's emulator must get right, and moto's threaded server does not:
    50 concurrent `[Put marker if absent, ADD 1 to a counter]` transactions on one item give
    exactly one success and a counter of exactly one, round after round. A transaction that
    DynamoDB cancels for a conflict is retried, as the processor retries it."""
    import concurrent.futures
    import time

    import boto3
    from botocore.config import Config

    tpl, endpoints = provisioned
    table = tpl.table_name("BillingTable")
    # One client per caller, as 50 function instances would have, built up front: boto3's
    # session setup is not thread-safe.
    clients = [
        boto3.session.Session().client(
            "dynamodb", endpoint_url=endpoints.dynamodb, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )
        for _ in range(50)
    ]
    ddb = clients[0]
    for round_no in range(int(os.environ.get("RACE_ROUNDS", "30"))):
        marker = f"EVENT#race-{round_no}"
        account = f"ACCOUNT#race-{round_no}"

        def deliver(caller: int) -> str:
            client = clients[caller]
            for attempt in range(50):
                try:
                    client.transact_write_items(TransactItems=[
                        {"Put": {"TableName": table, "Item": {"pk": {"S": marker}, "sk": {"S": "EVENT"}},
                                 "ConditionExpression": "attribute_not_exists(pk)"}},
                        {"Update": {"TableName": table, "Key": {"pk": {"S": account}, "sk": {"S": "ACCOUNT"}},
                                    "UpdateExpression": "ADD credits :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                    ])
                    return "applied"
                except client.exceptions.TransactionCanceledException as e:
                    reasons = [r.get("Code") for r in e.response.get("CancellationReasons", [])]
                    if reasons[0] == "ConditionalCheckFailed":
                        return "duplicate"
                    time.sleep(0.01 * (attempt + 1))  # a conflict: retry, as the processor does
                except client.exceptions.TransactionConflictException:
                    time.sleep(0.01 * (attempt + 1))
            return "gave up"

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            outcomes = list(pool.map(deliver, range(50)))
        assert outcomes.count("applied") == 1, outcomes
        assert outcomes.count("duplicate") == 49, outcomes
        item = ddb.get_item(TableName=table, Key={"pk": {"S": account}, "sk": {"S": "ACCOUNT"}}, ConsistentRead=True)["Item"]
        assert item["credits"] == {"N": "1"}, (round_no, item, outcomes)


def test_the_secret_holds_the_local_keys(provisioned):
    tpl, endpoints = provisioned
    sm = client("secretsmanager", endpoints.aws)
    value = sm.get_secret_value(SecretId=tpl.ref("StripeWebhookSecret"))["SecretString"]
    assert json.loads(value) == {"webhook_secrets": ["whsec_x"]}
    value = sm.get_secret_value(SecretId=tpl.ref("StripeApiKeySecret"))["SecretString"]
    assert json.loads(value) == {"api_key": "sk_test_x"}


def test_each_function_reads_only_the_secret_it_uses():
    """The internet-facing webhook may read the signing secrets and never the API key; every
    function that calls Stripe the API key and never the signing secrets; the usage function and
    the notifier neither."""
    doc = load()

    def secrets_of(fn: str) -> set[str]:
        props = doc["Resources"][fn]["Properties"]
        named = {p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]
                 for p in props.get("Policies", []) if isinstance(p, dict) and "AWSSecretsManagerGetSecretValuePolicy" in p}
        env = {v["Ref"] for v in props.get("Environment", {}).get("Variables", {}).values() if isinstance(v, dict) and "Ref" in v}
        return named | (env & {"StripeApiKeySecret", "StripeWebhookSecret"})

    assert secrets_of("WebhookFunction") == {"StripeWebhookSecret"}
    assert secrets_of("ProcessorFunction") == {"StripeApiKeySecret"}
    for fn in ("ApiFunction", "CheckoutFunction", "ReporterFunction", "ReconcilerFunction", "DunningFunction",
               "TopupFunction"):
        assert secrets_of(fn) == {"StripeApiKeySecret"}, fn
    assert secrets_of("UsageFunction") == set()
    assert secrets_of("NotifierFunction") == set()
    assert "STRIPE_SECRET_ID" not in str(doc.get("Globals", {}))


def test_a_property_the_local_stack_cannot_apply_stops_it():
    doc = load()
    doc["Resources"]["EventsQueue"]["Properties"]["SomeNewProperty"] = 1
    with pytest.raises(UnknownProperty, match="SomeNewProperty"):
        queue_attributes(Template(doc, "http://127.0.0.1:1"), "EventsQueue")


def test_function_environment_is_resolved_from_the_template():
    tpl = Template(load(), "http://127.0.0.1:4566")
    (webhook,) = [f for f in tpl.functions() if f.logical_id == "WebhookFunction"]
    assert webhook.binary == "webhook"
    assert webhook.environment["EVENTS_QUEUE_URL"] == "http://127.0.0.1:4566/123456789012/billing-local-stripe-events.fifo"
    assert webhook.environment["STRIPE_WEBHOOK_SECRET_ID"] == "billing-local/stripe-webhook"
    assert "STRIPE_API_KEY_SECRET_ID" not in webhook.environment
    assert webhook.environment["STRIPE_LIVEMODE"] == "false"
    assert [(r.method, r.path) for r in webhook.routes] == [("POST", "/webhooks/stripe")]


def test_the_local_stack_sets_stripe_up_from_the_catalog(stack):
    """The stack starts with an empty simulator and runs `make stripe-setup` on it: every price of
    the catalog exists under its lookup key, the ids are in the table where checkout reads
    them, and a second run changes nothing."""
    import boto3

    from stripe_sim import set_up
    from template import ROOT

    env, _ = stack
    catalog = tomllib.loads((ROOT / "catalog.toml").read_text())
    keys = sorted(catalog["prices"])
    ddb = boto3.client("dynamodb", endpoint_url=env["LOCAL_DYNAMODB_ENDPOINT"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    item = ddb.get_item(TableName=env["TABLE_NAME_BILLING_TABLE"],
                        Key={"pk": {"S": "STRIPE#SETUP"}, "sk": {"S": "STRIPE#SETUP"}})["Item"]
    recorded = {k: v["S"] for k, v in item["prices"]["M"].items()}
    assert sorted(recorded) == keys
    assert all(env[f"STRIPE_PRICE_{k.upper()}"] == recorded[k] for k in keys)
    again = set_up(env["LOCAL_STRIPE_ENDPOINT"], env["WEBHOOK_URL"], table=None,
                   meter_event_name="llm_overage_units", return_url="https://app.example.com/billing")
    assert again.changes == [] and again.problems == []
    assert again.ids["prices"] == recorded
