"""The hub's ordering and fan-out, with an in-memory event table in place of Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mediajobs.realtime.events import Event
from mediajobs.realtime.hub import EventHub, HubOptions
from mediajobs.realtime.store import Position

JOB_A = uuid.uuid4()
JOB_B = uuid.uuid4()


class TableStore:
    """The two reads the hub makes, over a dict of committed events."""

    def __init__(self) -> None:
        self.rows: dict[int, Event] = {}
        self.reads = 0

    def commit(self, *events: Event) -> None:
        for event in events:
            self.rows[event.id] = event

    async def after(self, after: int, *, through: int | None = None, limit: int = 500):
        self.reads += 1
        ids = sorted(i for i in self.rows if i > after and (through is None or i <= through))
        return [self.rows[i] for i in ids[:limit]]

    async def position(self) -> Position:
        return Position(max(self.rows, default=0), 0)


def event(event_id: int, owner: str = "alice", job: uuid.UUID = JOB_A) -> Event:
    return Event(event_id, owner, job, "job_progress", f'{{"n":{event_id}}}', published_at=1.0)


HubFactory = Callable[..., Awaitable[EventHub]]


@pytest.fixture
async def hub_with() -> AsyncIterator[HubFactory]:
    """Starts hubs over a ``TableStore`` (``await hub_with(store, **options)``); each is
    stopped when the test ends, passed or failed, so no hub task outlives its test."""
    started: list[EventHub] = []

    async def start(store: TableStore, **options: float) -> EventHub:
        hub = EventHub(store, None, "unused", options=HubOptions(**options))  # type: ignore[arg-type]
        await hub.start()
        started.append(hub)
        return hub

    yield start
    for hub in started:
        await hub.stop()


async def settle(hub: EventHub, watermark: int, timeout: float = 10.0) -> None:
    """Wait until the hub delivered every event up to ``watermark``."""
    async with asyncio.timeout(timeout):
        while hub.watermark < watermark:  # noqa: ASYNC110 (the hub has no event to await)
            await asyncio.sleep(0.005)


async def test_live_events_arriving_out_of_order_are_delivered_in_id_order(
    hub_with: HubFactory,
) -> None:
    store = TableStore()
    hub = await hub_with(store, gap_wait=1.0, poll_interval=60)
    sub = hub.register("alice")
    events = [event(i) for i in range(1, 6)]
    store.commit(*events)
    hub.offer([events[2], events[0]])
    hub.offer([events[4], events[1], events[3], events[0]])  # and a duplicate
    await settle(hub, 5)
    assert [e.id for e in sub.take()] == [1, 2, 3, 4, 5]
    assert store.reads == 0  # the late publishes filled the hole: no read needed
    await hub.stop()


async def test_a_hole_is_filled_from_the_table_and_a_rolled_back_id_is_skipped(
    hub_with: HubFactory,
):
    store = TableStore()
    hub = await hub_with(store, gap_wait=0.02, poll_interval=60)
    sub = hub.register("alice")
    # 2 committed but its publish was lost; 3 was rolled back (never exists); 4 arrives live.
    store.commit(event(1), event(2), event(4))
    hub.offer([event(1), event(4)])
    await settle(hub, 4)
    delivered = sub.take()
    assert [e.id for e in delivered] == [1, 2, 4]
    assert delivered[2].published_at == 1.0  # the live copy, with its publish time
    assert (
        hub.metrics.registry.get_sample_value("mediajobs_hub_gap_fills_total") == 1
    )  # only event 2 came from the table
    await hub.stop()


async def test_polling_delivers_events_whose_publish_never_came(hub_with: HubFactory) -> None:
    store = TableStore()
    hub = await hub_with(store, poll_interval=0.05)
    sub = hub.register("alice")
    store.commit(event(1), event(2))
    await settle(hub, 2)
    assert [e.id for e in sub.take()] == [1, 2]
    await hub.stop()


async def test_streams_get_only_their_owner_and_job_and_only_events_after_registering(
    hub_with: HubFactory,
):
    store = TableStore()
    store.commit(event(1))
    hub = await hub_with(store, poll_interval=60)
    alice = hub.register("alice")
    alice_job_b = hub.register("alice", JOB_B)
    bob = hub.register("bob")
    assert alice.start == 1
    live = [event(2), event(3, job=JOB_B), event(4, owner="bob")]
    store.commit(*live)
    hub.offer(live)
    await settle(hub, 4)
    assert [e.id for e in alice.take()] == [2, 3]
    assert [e.id for e in alice_job_b.take()] == [3]
    assert [e.id for e in bob.take()] == [4]
    hub.unregister(bob)
    assert hub.streams == 2
    await hub.stop()
    assert alice.closed == "shutdown"


async def test_a_full_buffer_closes_only_that_stream_and_never_blocks_the_others(
    hub_with: HubFactory,
):
    store = TableStore()
    hub = await hub_with(store, poll_interval=60, buffer=3)
    slow = hub.register("alice")
    fast = hub.register("alice")
    for i in range(1, 11):
        store.commit(event(i))
        hub.offer([event(i)])
        await settle(hub, i)
        fast.take()  # this one keeps up
    assert slow.closed == "slow"
    assert slow.take() == []
    assert fast.closed is None
    await hub.stop()
