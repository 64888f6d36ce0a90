"""The SSE peer for bench/sse_fanout.py: the mediajobs API with ``GET /events`` answered by
sse-starlette's ``EventSourceResponse`` instead of our ``EventStreamResponse``.

    python bench/sse_peer.py        (configured from the environment like `mediajobs serve`)

Everything else is the same process as `mediajobs serve`: the same app, hub, Redis
subscriber, authentication and uvicorn settings. The stream does what ours does for a live
``/events`` without Last-Event-ID: register with the hub, write the ``retry`` hint, then
write each batch of the user's events as it arrives, a ping comment every heartbeat, each
write bounded by the send timeout. Events are handed over as our pre-encoded frames (bytes
pass through sse-starlette unchanged), the cheapest path it offers; its own
``ServerSentEvent`` encoding per connection would only cost more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mediajobs.config import Settings
from mediajobs.service.app import create_app
from mediajobs.service.server import server_config
from mediajobs.service.state import services


async def events(request: Request) -> Response:
    """``GET /events`` (Bearer only, live only) through sse-starlette."""
    svc = services(request)
    principal = svc.auth.bearer(request.headers.get("authorization"))
    hub, options = svc.hub, svc.stream_options

    async def stream() -> AsyncIterator[bytes | ServerSentEvent]:
        sub = hub.register(principal.user_id)
        hub.metrics.clients.inc()
        try:
            yield ServerSentEvent(retry=options.retry_ms, sep="\n")
            last = sub.start
            while sub.closed is None:
                await sub.ready.wait()
                sub.ready.clear()
                frames = []
                for event in sub.take():
                    if event.id > last:
                        frames.append(event.frame)
                        last = event.id
                if frames:
                    yield b"".join(frames)
                    hub.metrics.delivered.inc(len(frames))
        finally:
            hub.unregister(sub)
            hub.metrics.clients.dec()

    return EventSourceResponse(
        stream(),
        ping=options.heartbeat,
        send_timeout=options.send_timeout,
        sep="\n",
        headers={"Cache-Control": "no-cache, no-transform"},
    )


def main() -> None:
    settings = Settings.from_env()
    app = create_app(settings)
    app.router.routes.insert(0, Route("/events", events, methods=["GET"]))
    config = server_config(app, settings)  # the same uvicorn settings as `mediajobs serve`
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
