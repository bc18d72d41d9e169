"""Stopping the processes the local stack and the test wrappers start."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminates `proc` (if it still runs) and waits for it; kills it if it will not stop."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
