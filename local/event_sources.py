"""The event sources the local stack wires besides SQS: a table's stream (DynamoDB Local's streams
API) and schedules, each delivered the way Lambda delivers them.

Stream: one poller per stream, shards in order, records that pass the source's FilterCriteria in
batches of BatchSize; `batchItemFailures` resumes the next attempt at the first failed record, a
function error splits the batch when BisectBatchOnFunctionError is set, and after
MaximumRetryAttempts the batch's coordinates go to the on-failure queue in Lambda's format.
Local departure: retries come after LOCAL_STREAM_RETRY_SECONDS (1 s), not Lambda's backoff.

Schedules: `rate(...)` expressions fire on their period from the stack's start (LOCAL_SCHEDULES=off
turns them off); `cron(...)` ones are fired by hand (`make fire`). Either way the function gets
EventBridge's "Scheduled Event" with the `time` it was fired for.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone

from template import ACCOUNT_ID, REGION


def log(msg: str) -> None:
    import sys

    print(f"[stack] {msg}", file=sys.stderr, flush=True)


# --- filters -------------------------------------------------------------------------------------


def check_filter(pattern) -> None:
    """Refuses the parts of Lambda's filter syntax this matcher does not implement."""
    if isinstance(pattern, dict):
        for v in pattern.values():
            check_filter(v)
    elif isinstance(pattern, list):
        for v in pattern:
            if isinstance(v, (dict, list)):
                raise ValueError(f"filter {pattern!r}: only lists of literal values are matched locally")
    else:
        raise ValueError(f"filter {pattern!r}: a leaf must be a list of values")


def matches(pattern: dict, record) -> bool:
    """Lambda's event filtering for literal values: every key of the pattern must be present,
    and at a leaf the record's value must be one of the listed ones."""
    if not isinstance(record, dict):
        return False
    for key, want in pattern.items():
        if key not in record:
            return False
        got = record[key]
        if isinstance(want, dict):
            if not matches(want, got):
                return False
        elif got not in want:
            return False
    return True


# --- streams -------------------------------------------------------------------------------------


def lambda_record(r: dict, stream_arn: str) -> dict:
    """A GetRecords record, shaped as Lambda hands it to the function."""
    data = dict(r["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        data["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": r["eventID"],
        "eventName": r["eventName"],
        "eventVersion": r.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": data,
        "eventSourceARN": stream_arn,
    }


class StreamPoller:
    def __init__(self, worker, source, table_name: str, ddb, streams, sqs, dlq_url: str | None, stopping: threading.Event):
        self.worker = worker
        self.source = source
        self.table_name = table_name
        self.ddb = ddb
        self.streams = streams
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.stopping = stopping
        self.retry_seconds = float(os.environ.get("LOCAL_STREAM_RETRY_SECONDS", "1"))
        self.iterators: dict[str, str | None] = {}  # shard id -> next iterator (None: shard closed and read)
        self.last_sequence: dict[str, str] = {}  # shard id -> last record handed over
        for f in source.filters:
            check_filter(f)
        self.stream_arn = ddb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self.poll_once():
                    time.sleep(0.2)
            except Exception as e:  # DynamoDB Local restarting, a transient error: keep polling
                log(f"stream poller for {self.worker.fn.logical_id}: {e}")
                time.sleep(1)

    def shards(self) -> list[dict]:
        out, start = [], None
        while True:
            args = {"StreamArn": self.stream_arn}
            if start:
                args["ExclusiveStartShardId"] = start
            desc = self.streams.describe_stream(**args)["StreamDescription"]
            out.extend(desc.get("Shards", []))
            start = desc.get("LastEvaluatedShardId")
            if not start:
                return out

    def poll_once(self) -> bool:
        """Reads every open shard once (a child only once its parent is read to its end);
        returns whether any record came."""
        got_any = False
        for shard in self.shards():
            sid = shard["ShardId"]
            parent = shard.get("ParentShardId")
            if parent and parent in self.iterators and self.iterators[parent] is not None:
                continue
            if sid not in self.iterators:
                self.iterators[sid] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            it = self.iterators[sid]
            if it is None:
                continue
            try:
                out = self.streams.get_records(ShardIterator=it, Limit=1000)
            except self.streams.exceptions.ExpiredIteratorException:
                # Iterators expire after 15 minutes: resume after the last record handed over.
                last = self.last_sequence.get(sid)
                args = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": last} if last else {"ShardIteratorType": "TRIM_HORIZON"}
                self.iterators[sid] = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=sid, **args)["ShardIterator"]
                continue
            records = [lambda_record(r, self.stream_arn) for r in out.get("Records", [])]
            if records:
                got_any = True
            wanted = [r for r in records if not self.source.filters or any(matches(f, r) for f in self.source.filters)]
            for i in range(0, len(wanted), self.source.batch_size):
                self.deliver(wanted[i:i + self.source.batch_size], sid)
            # Only once every batch of the read is handed over (or parked): if delivering
            # raised, the next poll reads the same records again, as Lambda would.
            if records:
                self.last_sequence[sid] = records[-1]["dynamodb"]["SequenceNumber"]
            self.iterators[sid] = out.get("NextShardIterator")
        return got_any

    def deliver(self, batch: list[dict], shard_id: str, attempts: int = 0) -> None:
        while batch and not self.stopping.is_set():
            error = None
            try:
                result = json.loads(self.worker.invoke(json.dumps({"Records": batch}).encode()) or b"{}")
                failed_from = self.first_failure(batch, result)
            except Exception as e:  # InvocationError: the whole batch failed
                error = str(e)
                failed_from = 0
                if self.source.bisect and len(batch) > 1:
                    half = len(batch) // 2
                    log(f"{self.worker.fn.logical_id} failed a stream batch of {len(batch)}; splitting it")
                    self.deliver(batch[:half], shard_id, attempts + 1)
                    self.deliver(batch[half:], shard_id, attempts + 1)
                    return
            if failed_from is None:
                return
            batch = batch[failed_from:]
            attempts += 1
            limit = self.source.maximum_retry_attempts
            if limit >= 0 and attempts > limit:
                self.park(batch, shard_id, attempts, error)
                return
            time.sleep(self.retry_seconds)

    @staticmethod
    def first_failure(batch: list[dict], result) -> int | None:
        """The index the next attempt starts from, or None when the batch is done. As Lambda
        does, an identifier that names no record of the batch fails the whole batch."""
        failures = (result or {}).get("batchItemFailures") if isinstance(result, dict) else None
        if not failures:
            return None
        seqs = [r["dynamodb"]["SequenceNumber"] for r in batch]
        indexes = []
        for f in failures:
            ident = f.get("itemIdentifier") if isinstance(f, dict) else None
            if ident not in seqs:
                return 0
            indexes.append(seqs.index(ident))
        return min(indexes)

    def park(self, batch: list[dict], shard_id: str, attempts: int, error: str | None) -> None:
        now = datetime.now(timezone.utc)
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]

        def arrival(d):
            return datetime.fromtimestamp(d.get("ApproximateCreationDateTime", now.timestamp()), timezone.utc).isoformat()

        message = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.worker.fn.logical_id}",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" if error else None},
            "version": "1.0",
            "timestamp": now.isoformat(),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": arrival(first),
                "approximateArrivalOfLastRecord": arrival(last),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        log(f"{self.worker.fn.logical_id}: {len(batch)} stream record(s) parked after {attempts} attempts")
        if self.dlq_url:
            self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(message))


# --- schedules -----------------------------------------------------------------------------------

RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")


def rate_seconds(expression: str) -> int | None:
    m = RATE.match(expression.strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).rstrip("s")
    return n * {"minute": 60, "hour": 3600, "day": 86400}[unit]


def scheduled_event(function: str, at: datetime | None = None) -> dict:
    """EventBridge's Scheduled Event, as a schedule delivers it."""
    at = at or datetime.now(timezone.utc)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{function}-schedule"],
        "detail": {},
    }


class Scheduler:
    """Fires a function on its rate, from the stack's start; one run at a time per schedule."""

    def __init__(self, worker, period: int, stopping: threading.Event):
        self.worker = worker
        self.period = period
        self.stopping = stopping

    def run(self) -> None:
        due = time.monotonic() + self.period
        while not self.stopping.wait(max(0.0, due - time.monotonic())):
            due += self.period
            try:
                self.worker.invoke(json.dumps(scheduled_event(self.worker.fn.logical_id)).encode())
            except Exception as e:
                log(f"{self.worker.fn.logical_id} (scheduled) failed: {e}")
