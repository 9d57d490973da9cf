"""`bertflow submit`: the same `bertflow run` on a Ray cluster, through the Ray Jobs API.

The project folder is shipped as the job's working directory (without .venv, runs and
.git); the cluster's image must have bertflow's dependencies installed (see
bertflow/infra/deploy/Dockerfile). Storage must then be a URL every node reaches (gs://, s3://).
"""

from __future__ import annotations

import shlex
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

EXCLUDES = [".venv", ".git", "runs", "bench-envs", "**/__pycache__", "*.egg-info"]


def entrypoint(args) -> str:
    cmd = ["bertflow", "run", args.workflow, "-f", Path(args.file).name]
    if args.storage:
        cmd += ["--storage", args.storage]
    for s in args.set:
        cmd += ["--set", s]
    if args.only:
        cmd += ["--only", args.only]
    for f in args.force:
        cmd += ["--force", f]
    if getattr(args, "lease_wait", None) is not None:
        cmd += ["--lease-wait", str(args.lease_wait)]
    return shlex.join(cmd)


CONNECT_TIMEOUT = 3.0
AGENT_WAIT = 120  # a head just started answers before its job agent is up
DASHBOARD_PORT = 8265


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> str:
    """"" when the Ray dashboard's port at ``address`` takes a TCP connection, else one line."""
    if address.startswith("ray://"):
        return (f"{address}: submit talks to the Ray dashboard (the Jobs API, http://HEAD:{DASHBOARD_PORT}), "
                "not to the Ray client port")
    parts = urlsplit(address if "://" in address else f"http://{address}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else DASHBOARD_PORT)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return (f"cannot reach the Ray dashboard at {address} ({host}:{port}: {why}): is the cluster up? "
                "For the KubeRay cluster of bertflow/infra/deploy: kubectl port-forward svc/bertflow-head-svc 8265:8265")
    return ""


def submit(args) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from .runner import cause

    try:
        client = JobSubmissionClient(args.address)
        deadline, said = time.time() + AGENT_WAIT, False
        while True:
            try:
                job = client.submit_job(
                    entrypoint=entrypoint(args),
                    runtime_env={"working_dir": str(Path(args.file).resolve().parent), "excludes": EXCLUDES},
                    metadata={"bertflow_workflow": args.workflow},
                )
                break
            except RuntimeError as e:
                # A head that just started answers before its job agent is up.
                if "No available agent" not in str(e) or time.time() > deadline:
                    raise
                if not said:
                    print(f"the cluster's job agent is not up yet; waiting up to {AGENT_WAIT // 60} min", flush=True)
                    said = True
                time.sleep(2)
    except Exception as e:  # noqa: BLE001 - the cluster's answer in one line, not Ray's traceback
        text = cause(e)
        hint = ("; a cluster with token auth needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN set here (KubeRay's: "
                "kubectl get secret CLUSTER --template={{.data.auth_token}} | base64 -d)"
                if any(w in text.lower() for w in ("401", "403", "unauthori", "token")) else "")
        print(f"error: submitting to {args.address}: {text}{hint}", file=sys.stderr)
        return 1
    print(f"submitted {job} to {args.address}")
    if args.no_wait:
        return 0
    for line in _tail(client, job):
        print(line, end="")
    status = client.get_job_status(job)
    print(f"\njob {job}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def _tail(client, job):
    import asyncio

    async def lines():
        async for chunk in client.tail_job_logs(job):
            yield chunk

    loop = asyncio.new_event_loop()
    agen = lines()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()
