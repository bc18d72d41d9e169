"""The local Lambda runtime scales out as Lambda does: concurrent invocations run in separate
warm processes, each behind its own Runtime API, up to the function's concurrency."""

import sys
import threading
from pathlib import Path

from conftest import eventually

from runtime import FunctionWorker, InvocationError
from template import Function

# A function that speaks the Runtime API: each invocation answers its process id once the file
# named in its payload exists, so a test holds invocations open for as long as it needs.
FUNCTION = r'''#!/usr/bin/env python3
import json, os, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    if event.get("fail"):
        body, outcome = json.dumps({"errorType": "Boom", "errorMessage": "asked to fail"}), "error"
    else:
        while not os.path.exists(event["release"]):
            time.sleep(0.02)
        body, outcome = json.dumps({"pid": os.getpid()}), "response"
    urllib.request.urlopen(urllib.request.Request(f"{api}/invocation/{request_id}/{outcome}", data=body.encode(), method="POST")).read()
'''


def worker(tmp_path: Path, concurrency: int) -> FunctionWorker:
    binary = tmp_path / "function"
    binary.write_text(FUNCTION.replace("/usr/bin/env python3", sys.executable, 1))
    binary.chmod(0o755)
    fn = Function("TestFunction", "function", timeout=60, memory=128, environment={}, routes=[], sqs_sources=[], raw={})
    return FunctionWorker(fn, binary, {"PATH": "/usr/bin:/bin"}, tmp_path / "function.log", concurrency=concurrency)


def invoke_all(w: FunctionWorker, payloads: list[bytes]) -> tuple[list, list[threading.Thread]]:
    results: list = [None] * len(payloads)

    def run(i: int) -> None:
        try:
            results[i] = w.invoke(payloads[i])
        except InvocationError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    return results, threads


def test_concurrent_invocations_run_in_separate_processes(tmp_path):
    w = worker(tmp_path, concurrency=4)
    try:
        w.start()
        release = tmp_path / "release"
        results, threads = invoke_all(w, [f'{{"release": "{release}"}}'.encode()] * 4)
        # All four are in flight at once, each in its own process: none can finish before release.
        eventually(lambda: w.live_processes() == 4, timeout=60, what="four warm processes")
        release.touch()
        for t in threads:
            t.join()
        pids = {int(r.decode().split(":")[1].strip(" }")) for r in results}
        assert len(pids) == 4, results
        assert w.started == 4
        # Warm processes are reused: four more invocations start no new process.
        results, threads = invoke_all(w, [f'{{"release": "{release}"}}'.encode()] * 4)
        for t in threads:
            t.join()
        assert w.started == 4
        assert {int(r.decode().split(":")[1].strip(" }")) for r in results} <= pids
    finally:
        w.stop()


def test_invocations_beyond_the_concurrency_wait_for_a_free_process(tmp_path):
    w = worker(tmp_path, concurrency=2)
    try:
        release = tmp_path / "release"
        results, threads = invoke_all(w, [f'{{"release": "{release}"}}'.encode()] * 6)
        eventually(lambda: w.live_processes() == 2, timeout=60, what="two processes")
        release.touch()
        for t in threads:
            t.join()
        assert all(isinstance(r, bytes) for r in results), results
        assert w.started == 2
    finally:
        w.stop()


def test_a_function_error_is_reported_and_the_process_kept(tmp_path):
    w = worker(tmp_path, concurrency=1)
    try:
        w.start()
        results, threads = invoke_all(w, [b'{"fail": true}'])
        threads[0].join()
        assert isinstance(results[0], InvocationError) and results[0].error_type == "Boom"
        assert w.started == 1 and w.live_processes() == 1
    finally:
        w.stop()
