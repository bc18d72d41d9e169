"""The local event sources' rules: Lambda's filter matching, where a partially failed stream batch
resumes, rate expressions, and the scheduler firing a function with a Scheduled Event."""

import json
import threading

import pytest

from event_sources import Scheduler, StreamPoller, check_filter, matches, rate_seconds
from template import Template, load

INSERT = {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "OUTBOX#x"}, "sk": {"S": "OUTBOX"}}, "NewImage": {"status": {"S": "pending"}}}}


def notifier_filters():
    fn = next(f for f in Template(load(), "http://127.0.0.1:1").functions() if f.logical_id == "NotifierFunction")
    return fn.stream_sources[0].filters


def test_the_notifier_takes_new_entries_and_retries_but_not_its_own_writes_or_other_items():
    filters = notifier_filters()
    passes = lambda r: any(matches(f, r) for f in filters)  # noqa: E731
    assert passes(INSERT)
    retry = {"eventName": "MODIFY", "dynamodb": {"Keys": INSERT["dynamodb"]["Keys"], "NewImage": {"status": {"S": "retry"}}}}
    assert passes(retry)
    own = {"eventName": "MODIFY", "dynamodb": {"Keys": INSERT["dynamodb"]["Keys"], "NewImage": {"status": {"S": "delivered"}}}}
    assert not passes(own)
    account = {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "ACCOUNT#a"}, "sk": {"S": "ACCOUNT"}}}}
    assert not passes(account)
    assert not passes({"eventName": "REMOVE", "dynamodb": INSERT["dynamodb"]})


def test_filter_syntax_the_local_matcher_cannot_honour_is_refused():
    check_filter({"eventName": ["INSERT"]})
    with pytest.raises(ValueError):
        check_filter({"eventName": [{"prefix": "IN"}]})
    with pytest.raises(ValueError):
        check_filter({"eventName": "INSERT"})


def test_a_partly_failed_batch_resumes_at_its_first_failed_record():
    batch = [{"dynamodb": {"SequenceNumber": s}} for s in ("10", "11", "12")]
    assert StreamPoller.first_failure(batch, {"batchItemFailures": []}) is None
    assert StreamPoller.first_failure(batch, {}) is None
    assert StreamPoller.first_failure(batch, {"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]}) == 1
    # An identifier that names no record fails the whole batch, as in Lambda.
    assert StreamPoller.first_failure(batch, {"batchItemFailures": [{"itemIdentifier": "99"}]}) == 0
    assert StreamPoller.first_failure(batch, {"batchItemFailures": [{"itemIdentifier": ""}]}) == 0


def test_rate_expressions():
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(15 minutes)") == 900
    assert rate_seconds("rate(1 day)") == 86400
    assert rate_seconds("cron(0 3 * * ? *)") is None


def test_the_scheduler_fires_the_function_with_a_scheduled_event_on_its_period():
    class Worker:
        class fn:
            logical_id = "ReporterFunction"

        def __init__(self):
            self.events, self.fired = [], threading.Event()

        def invoke(self, payload: bytes) -> bytes:
            self.events.append(json.loads(payload))
            if len(self.events) >= 2:
                self.fired.set()
            return b"{}"

    worker, stopping = Worker(), threading.Event()
    threading.Thread(target=Scheduler(worker, 1, stopping).run, daemon=True).start()
    assert worker.fired.wait(120), "the scheduler never fired twice"
    stopping.set()
    event = worker.events[0]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"].endswith("Z") and event["resources"][0].endswith("ReporterFunction-schedule")
