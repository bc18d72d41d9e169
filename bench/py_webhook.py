"""The webhook as it is usually written in Python (stripe + boto3), behind the Lambda Runtime API.

A minimal custom runtime: the same loop AWS's Python runtime runs (GET .../invocation/next, call the
handler, POST .../response), kept on one persistent HTTP/1.1 connection as the real runtime
interface client does. Same work as the Rust binary: secret read once at init from Secrets
Manager, signature verified, envelope parsed, livemode checked, SendMessage with the same
group id, dedup id and three message attributes, one JSON log line per event, the same answer.
"""
import http.client
import json
import os
import sys
import time

import boto3
import stripe

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"

session = boto3.session.Session()
sqs = session.client("sqs")
secret = json.loads(session.client("secretsmanager").get_secret_value(SecretId=os.environ["STRIPE_WEBHOOK_SECRET_ID"])["SecretString"])
WEBHOOK_SECRETS = secret["webhook_secrets"]
QUEUE_URL = os.environ["EVENTS_QUEUE_URL"]
LIVEMODE = os.environ["STRIPE_LIVEMODE"] == "true"
MAX_INLINE = int(os.environ.get("EVENTS_QUEUE_MAX_MESSAGE_BYTES", 262144)) - 1024


def respond(status, body):
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def handler(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64
        body = base64.b64decode(body).decode()
    sig = (event.get("headers") or {}).get("stripe-signature")
    last = None
    for s in WEBHOOK_SECRETS:  # rotation: any live secret may have signed it
        try:
            evt = stripe.Webhook.construct_event(body, sig, s)
            break
        except (stripe.SignatureVerificationError, ValueError) as e:
            last = e
    else:
        return respond(400, {"error": {"code": "invalid_signature", "message": str(last)}})
    if bool(evt["livemode"]) != LIVEMODE:
        return respond(400, {"error": {"code": "wrong_livemode"}})
    obj = evt["data"]["object"]
    group = (obj["customer"] if "customer" in obj else None) or obj["id"]
    inline = len(body.encode()) <= MAX_INLINE
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody=body if inline else json.dumps({"id": evt["id"], "object": "event", "type": evt["type"]}),
        MessageGroupId=group if isinstance(group, str) else group["id"],
        MessageDeduplicationId=evt["id"],
        MessageAttributes={
            "stripe_event_id": {"DataType": "String", "StringValue": evt["id"]},
            "stripe_event_type": {"DataType": "String", "StringValue": evt["type"]},
            "payload": {"DataType": "String", "StringValue": "inline" if inline else "reference"},
        },
    )
    print(json.dumps({"level": "INFO", "message": "event queued", "event_id": evt["id"], "event_type": evt["type"]}), file=sys.stderr)
    return respond(200, {"received": True, "event_id": evt["id"]})


def main():
    host, _, port = API.partition(":")
    conn = http.client.HTTPConnection(host, int(port))
    while True:
        conn.request("GET", f"{PREFIX}/invocation/next")
        r = conn.getresponse()
        payload = r.read()
        request_id = r.getheader("Lambda-Runtime-Aws-Request-Id")
        try:
            out, kind = json.dumps(handler(json.loads(payload))).encode(), "response"
        except Exception as e:  # noqa: BLE001 - reported to the Runtime API as Lambda does
            out, kind = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode(), "error"
        conn.request("POST", f"{PREFIX}/invocation/{request_id}/{kind}", body=out, headers={"Content-Type": "application/json"})
        conn.getresponse().read()


if __name__ == "__main__":
    main()
