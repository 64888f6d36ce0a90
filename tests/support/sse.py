"""Following real SSE streams in tests (httpx + httpx-sse against real uvicorn processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from httpx_sse import ServerSentEvent, aconnect_sse

from mediajobs.service.auth import Authenticator
from tests.support.serving import clean_env

SECRET = "test-secret-" + "s" * 40


def realtime_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of an API or worker process in these tests: real Postgres and Redis,
    a channel of this test's own, every progress report written."""
    return clean_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MEDIAJOBS_ENV="test",
        MEDIAJOBS_JWT_SECRET=SECRET,
        MEDIAJOBS_EVENTS_CHANNEL=f"test:events:{uuid.uuid4().hex}",
        MEDIAJOBS_PROGRESS_INTERVAL="0",
        **extra,
    )


def bearer(user: str, ttl: float = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {Authenticator(SECRET).issue_token(user, ttl=ttl)}"}


@dataclass
class Stream:
    """What one connection received."""

    events: list[ServerSentEvent] = field(default_factory=list)
    ended: bool = False  # the server ended the stream (not us)

    @property
    def ids(self) -> list[int]:
        return [int(event.id) for event in self.events if event.id]

    @property
    def types(self) -> list[str]:
        return [event.event for event in self.events]

    def data(self) -> list[dict[str, Any]]:
        return [json.loads(event.data) for event in self.events]


def terminal_of(job_id: uuid.UUID | str) -> Callable[[ServerSentEvent], bool]:
    """A stop condition: the terminal event of that job."""

    def stop(event: ServerSentEvent) -> bool:
        if not event.event.endswith(("_complete", "_failed", "job_cancelled")):
            return False
        return bool(json.loads(event.data).get("jobId") == str(job_id))

    return stop


async def follow(
    client: httpx.AsyncClient,
    url: str,
    *,
    stop: Callable[[ServerSentEvent], bool] | None = None,
    count: int | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    connected: asyncio.Event | None = None,
    into: Stream | None = None,
) -> Stream:
    """Read ``url`` until ``stop(event)``, ``count`` events, or the server ends it. Events
    are added to ``into`` (when given) as they arrive, so a test can wait on them."""
    stream = into if into is not None else Stream()
    async with asyncio.timeout(timeout):
        async with aconnect_sse(client, "GET", url, headers=dict(headers or {})) as source:
            source.response.raise_for_status()
            if connected is not None:
                connected.set()
            async for event in source.aiter_sse():
                if not event.data:
                    continue  # httpx-sse yields the bare `retry:` field too; browsers do not
                stream.events.append(event)
                if (stop is not None and stop(event)) or (count and len(stream.events) >= count):
                    return stream
            stream.ended = True
    return stream


async def following(client: httpx.AsyncClient, url: str, **kwargs: Any) -> asyncio.Task[Stream]:
    """``follow`` in a task, returned once the server has registered the stream: every
    event from then on reaches it."""
    connected = asyncio.Event()
    task = asyncio.create_task(follow(client, url, connected=connected, **kwargs))
    waiting = asyncio.create_task(connected.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not connected.is_set():
        task.result()  # raises what went wrong
    return task


@dataclass
class JobWatch:
    """A user's ``/events`` stream, open before the job exists: set ``job`` once it is
    enqueued, then ``await watch.stream`` returns at that job's terminal event."""

    job: uuid.UUID | None = None
    stream: asyncio.Task[Stream] = field(init=False)
    received: Stream = field(default_factory=Stream)  # what has arrived so far

    def reached_terminal(self, event: ServerSentEvent) -> bool:
        return self.job is not None and terminal_of(self.job)(event)


async def watch_job(client: httpx.AsyncClient, base: str, user: str) -> JobWatch:
    watch = JobWatch()
    watch.stream = await following(
        client,
        f"{base}/events",
        stop=watch.reached_terminal,
        headers=bearer(user),
        into=watch.received,
    )
    return watch


def event_ids(database_url: str, job_id: uuid.UUID | None = None) -> list[int]:
    """The ids Postgres holds (of one job), in order: what a client must have received."""
    with psycopg.connect(database_url) as conn:
        if job_id is None:
            rows = conn.execute("SELECT id FROM job_events ORDER BY id").fetchall()
        else:
            rows = conn.execute(
                "SELECT id FROM job_events WHERE job_id = %s ORDER BY id", (job_id,)
            ).fetchall()
    return [row[0] for row in rows]


def metric(text: str, name: str, default: float | None = None) -> float:
    """One sample of Prometheus text, by its full name with labels (``default`` when absent:
    a label value appears only once counted)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    if default is None:
        raise AssertionError(f"no metric {name}")
    return default


@contextlib.contextmanager
def dev_site(services: Any, template: str, **extra: str) -> Iterator[str]:
    """`mediajobs dev` (API, worker and page in one process) on a fresh copy of the migrated
    database and the real Redis; yields its base URL."""
    from tests.conftest import create_database, drop_database
    from tests.support.serving import Serving

    name = f"site_{uuid.uuid4().hex[:8]}"
    url = create_database(services.pg_admin_url, name, template=template)
    try:
        with Serving(realtime_env(url, services.redis_url, **extra), command="dev") as serving:
            yield serving.base
    finally:
        drop_database(services.pg_admin_url, name)
