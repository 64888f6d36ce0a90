"""``mediajobs jobs``: ping a worker, show, wait for, cancel and enqueue one job, and the
queue's counts. Jobs print as ``GET /jobs/{id}`` shows them, plus the operator's fields."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from typing import Any

from mediajobs.cli.common import Commands, bounded, print_json, with_queue
from mediajobs.config import Settings
from mediajobs.errors import ConfigError
from mediajobs.handlers import PING_KIND
from mediajobs.queue import JobQueue, JobSpec
from mediajobs.queue.models import Job
from mediajobs.service.jobs import job_json
from mediajobs.service.models import KIND_PATTERN
from mediajobs.types import JSON

MAX_DELAY = 10 * 365 * 86400.0  # seconds: a job's run_at stays a sane timestamp
MAX_WAIT = 7 * 86400.0  # seconds: the longest --timeout of ping and wait
JOB_ID_HELP = "the job's id (a UUID, as the API and `jobs enqueue` print it)"


def job_kind(text: str) -> str:
    """An argparse ``type``: a job kind as the API accepts it (``KIND_PATTERN``), else
    argparse's one-line usage error."""
    if re.fullmatch(KIND_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job kind: lowercase letters, digits, '_' and '.', "
            f"starting with a letter ({KIND_PATTERN})"
        )
    return text


def add_jobs(commands: Commands) -> None:
    """The ``jobs`` command's parser and its subcommands."""
    jobs = commands.add_parser(
        "jobs", help="ping | show ID | wait ID | cancel ID | stats | enqueue KIND"
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    ping = jobs_commands.add_parser("ping", help="enqueue system.ping and wait for a worker")
    ping.add_argument(
        "--timeout",
        type=bounded(float, 0.001, MAX_WAIT),
        default=10.0,
        help="seconds to wait for a worker (default 10)",
    )
    ping.set_defaults(handler=cmd_jobs_ping)
    show = jobs_commands.add_parser("show", help="print one job as JSON")
    show.add_argument("job_id", type=uuid.UUID, help=JOB_ID_HELP)
    show.set_defaults(handler=cmd_jobs_show)
    wait = jobs_commands.add_parser(
        "wait", help="wait until a job has finished, print it as JSON; exit 0 if it succeeded"
    )
    wait.add_argument("job_id", type=uuid.UUID, help=JOB_ID_HELP)
    wait.add_argument(
        "--timeout",
        type=bounded(float, 0, MAX_WAIT),
        default=60.0,
        help="seconds to wait, not negative; 0 looks once (default 60)",
    )
    wait.set_defaults(handler=cmd_jobs_wait)
    cancel = jobs_commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=uuid.UUID, help=JOB_ID_HELP)
    cancel.set_defaults(handler=cmd_jobs_cancel)
    jobs_commands.add_parser("stats", help="jobs by state, oldest wait").set_defaults(
        handler=cmd_jobs_stats
    )
    enqueue = jobs_commands.add_parser(
        "enqueue",
        help="enqueue one job",
        description="Enqueue one job of KIND and print its id. A kind no handler of the "
        "default registry runs is accepted (a worker started with --app may run it); it "
        "waits until such a worker claims it.",
    )
    enqueue.add_argument(
        "kind",
        type=job_kind,
        help=f"the job kind, e.g. {PING_KIND} (as the API's: {KIND_PATTERN})",
    )
    enqueue.add_argument(
        "--owner", default="operator", help="the owning user id (default operator)"
    )
    enqueue.add_argument("--payload", default="{}", help="JSON object")
    enqueue.add_argument(
        "--delay", type=bounded(float, 0, MAX_DELAY), default=0.0, help="seconds (default 0)"
    )
    enqueue.add_argument(
        "--max-attempts",
        type=bounded(int, 1, 1000),
        default=5,
        help="runs before the job fails for good, 1..1000 (default 5)",
    )
    enqueue.set_defaults(handler=cmd_jobs_enqueue)


def operator_job_json(job: Job) -> dict[str, JSON]:
    """A job as ``GET /jobs/{id}`` shows it, plus what only an operator sees (owner,
    priority, lease, cancel flag, idempotency key), in the API's camelCase."""
    return {
        **job_json(job),
        "ownerId": job.owner_id,
        "priority": job.priority,
        "runAt": job.run_at.isoformat(),
        "leaseOwner": job.lease_owner,
        "leaseExpiresAt": job.lease_expires_at.isoformat() if job.lease_expires_at else None,
        "cancelRequested": job.cancel_requested,
        "idempotencyKey": job.idempotency_key,
    }


def cmd_jobs_ping(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue ``system.ping`` and wait for a worker to run it: print its state, result
    and round trip; exit 1 when no worker answers within ``--timeout``."""

    async def ping(queue: JobQueue) -> int:
        started = time.perf_counter()
        enqueued = await queue.enqueue(JobSpec(PING_KIND, "operator", max_attempts=1))
        deadline = started + args.timeout
        while time.perf_counter() < deadline:
            job = await queue.get(enqueued.id)
            if job is not None and job.state.finished:
                elapsed = (time.perf_counter() - started) * 1000
                print_json(
                    {
                        "state": job.state.value,
                        "result": job.result,
                        "roundTripMs": round(elapsed, 1),
                    }
                )
                return 0 if job.state.value == "succeeded" else 1
            await asyncio.sleep(0.01)
        await queue.cancel(enqueued.id)
        print(f"no worker answered within {args.timeout:g}s", file=sys.stderr)
        return 1

    return with_queue(settings, ping)


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print one job as JSON; exit 1 when there is none."""
    job = with_queue(settings, lambda queue: queue.get(args.job_id))
    if job is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print_json(operator_job_json(job), indent=2)
    return 0


def cmd_jobs_wait(args: argparse.Namespace, settings: Settings) -> int:
    """Poll the job until it has finished (or ``--timeout`` seconds): print it as JSON; exit
    0 when it succeeded, 1 when it failed or was cancelled (with its error on stderr), 1 on
    timeout."""

    async def wait(queue: JobQueue) -> Job | None:
        deadline = time.monotonic() + args.timeout
        while True:
            job = await queue.get(args.job_id)
            if job is None or job.state.finished or time.monotonic() > deadline:
                return job
            await asyncio.sleep(0.2)

    job = with_queue(settings, wait)
    if job is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print_json(operator_job_json(job), indent=2)
    if not job.state.finished:
        print(f"job {job.id} still {job.state.value} after {args.timeout:g}s", file=sys.stderr)
        return 1
    if job.state.value != "succeeded":
        error = job.error or {}
        print(
            f"job {job.id} {job.state.value}: {error.get('code', '-')}: {error.get('message', '')}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a queued job, or ask a running one to stop; exit 1 when no unfinished job
    has the id."""
    state = with_queue(settings, lambda queue: queue.cancel(args.job_id))
    if state is None:
        print(f"no unfinished job {args.job_id}", file=sys.stderr)
        return 1
    print("cancelled" if state.value == "cancelled" else "cancel requested (running)")
    return 0


def cmd_jobs_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print the jobs by state and the oldest queued job's wait, as JSON."""

    async def stats(queue: JobQueue) -> dict[str, Any]:
        counts = await queue.counts()
        return {
            "byState": {state.value: n for state, n in counts.items()},
            "oldestQueuedSeconds": round(await queue.oldest_queued_age(), 3),
        }

    print_json(with_queue(settings, stats))
    return 0


def cmd_jobs_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue one job of ``args.kind`` with a JSON object payload; print its id."""
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError("--payload", f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError("--payload", "must be a JSON object")
    spec = JobSpec(args.kind, args.owner, payload, delay=args.delay, max_attempts=args.max_attempts)
    enqueued = with_queue(settings, lambda queue: queue.enqueue(spec))
    print(enqueued.id)
    return 0
