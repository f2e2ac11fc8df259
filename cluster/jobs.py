"""Ray job helpers (submit, wait, logs, stop) over the Jobs API; what the README and k8s use.

    c3dhash job submit --address http://127.0.0.1:8265 -- c3dhash train --config configs/synth-cpu.yaml
    c3dhash job wait --address http://127.0.0.1:8265 JOB_ID
    c3dhash job logs --address http://127.0.0.1:8265 JOB_ID [--follow]
    c3dhash job stop --address http://127.0.0.1:8265 JOB_ID

With token auth on (every cluster the k8s manifests create and the README's `ray start` recipe), export
RAY_AUTH_MODE=token and RAY_AUTH_TOKEN first; Ray's client sends it. A dead address or a refused token is one
line naming the address and the fix (cluster/connect.py's explain), not Ray's traceback.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from ray.job_submission import JobStatus, JobSubmissionClient

from c3dhash.cluster.connect import ConnectError, explain

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
AGENT_WAIT_S = 120.0  # how long submit retries while a fresh head's job agent starts


class JobError(RuntimeError):
    """A Ray job that failed, was stopped or did not finish in time; the message carries its log tail."""
    exit_code = 1  # a failed job, not a user error


@contextlib.contextmanager
def talking_to(address: str) -> Iterator[None]:
    """Connection and authentication failures of the Jobs API as one ConnectError line."""
    try:
        yield
    except (ConnectionError, OSError) as exc:
        raise ConnectError(explain(exc, address)) from None
    except Exception as exc:  # ray.exceptions.AuthenticationError and the HTTP errors of a refused request
        if "Authentication" in type(exc).__name__ or "Unauthorized" in str(exc):
            raise ConnectError(explain(exc, address)) from None
        raise


def client(address: str) -> JobSubmissionClient:
    with talking_to(address):
        return JobSubmissionClient(address)


def submit(address: str, entrypoint: str, *, working_dir: str | None = ".",
           env: dict[str, str] | None = None, pip: list[str] | None = None) -> str:
    """Submit `entrypoint` (a shell command) with this folder as the job's working dir; returns the job id."""
    runtime_env: dict[str, Any] = {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
        runtime_env["excludes"] = [".venv", "runs", "data", ".git", "**/__pycache__"]
    if env:
        runtime_env["env_vars"] = env
    if pip:
        runtime_env["pip"] = pip
    c = client(address)
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            with talking_to(address):
                return c.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None)
        except RuntimeError as exc:  # a head just started: its job agent comes up seconds after `ray start`
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2.0)


def wait(address: str, job_id: str, *, timeout_s: float = 3600, poll_s: float = 2.0) -> JobStatus:
    """Block until the job reaches a terminal state; raise JobError with the log tail unless it SUCCEEDED."""
    c = client(address)
    deadline = time.time() + timeout_s
    while True:
        with talking_to(address):
            status = c.get_job_status(job_id)
        if status in TERMINAL:
            break
        if time.time() > deadline:
            raise JobError(f"job {job_id} still {status} after {timeout_s:.0f}s; "
                           f"see `c3dhash job logs {job_id}` or stop it with `c3dhash job stop {job_id}`")
        time.sleep(poll_s)
    if status != JobStatus.SUCCEEDED:
        tail = "\n".join(c.get_job_logs(job_id).splitlines()[-30:])
        raise JobError(f"job {job_id} ended {status}:\n{tail}")
    return status


def logs(address: str, job_id: str) -> str:
    c = client(address)
    with talking_to(address):
        return c.get_job_logs(job_id)


def follow(address: str, job_id: str, out=None) -> JobStatus:
    """Stream the job's logs to `out` (stdout) as they are written, until it ends; returns its final status."""
    import asyncio
    import sys
    out = out or sys.stdout
    c = client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()
    with talking_to(address):
        asyncio.run(tail())
        return c.get_job_status(job_id)


def stop(address: str, job_id: str) -> bool:
    c = client(address)
    with talking_to(address):
        return c.stop_job(job_id)
