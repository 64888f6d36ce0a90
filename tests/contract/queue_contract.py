"""The queue contract: what every ``QueueBackend`` (and its ``Notifier``) must do.

``JobQueue`` runs it on real Postgres (tests/integration/test_queue.py) and
``InMemoryQueue`` runs it without any service (tests/unit/test_memory_queue.py): a test class
inherits ``QueueContract`` and provides a ``harness`` fixture. Time passes through
``harness.pass_time`` (the in-memory clock moves; on Postgres every timestamp moves back),
so no test waits for a lease to expire.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
import pytest

from mediajobs.errors import JobFailed, LeaseLost, Retry
from mediajobs.queue import Cause, JobSpec, JobState, Notifier, Transition
from mediajobs.queue.models import new_job_id
from tests.support.workers import wait_for


class RecordingHooks:
    """``TransitionHooks`` that keep what was recorded and what was committed."""

    def __init__(self) -> None:
        self.recorded: list[Transition] = []
        self.committed_transitions: list[Transition] = []
        self.fail_next = False

    async def record(self, conn: object, transitions: Sequence[Transition]) -> list[Transition]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the event write failed")
        self.recorded.extend(transitions)
        return list(transitions)

    async def committed(self, recorded: list[Transition]) -> None:
        self.committed_transitions.extend(recorded)

    def take(self) -> list[Transition]:
        """The transitions committed since the last call."""
        taken, self.committed_transitions = self.committed_transitions, []
        return taken


class QueueHarness(Protocol):
    """One queue under test, with what the contract needs around it."""

    queue: Any  # a QueueBackend; also for_owner() and oldest_queued_age()
    hooks: RecordingHooks

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for the queue (run_at, leases, retention)."""

    def notifier(self) -> Notifier:
        """A fresh notifier of this queue's wake-ups and cancel requests."""


@dataclass
class Heard:
    """What a notifier delivered."""

    wakeups: int = 0
    cancels: list[uuid.UUID] = field(default_factory=list)

    def wakeup(self) -> None:
        self.wakeups += 1

    def cancel(self, job_id: uuid.UUID) -> None:
        self.cancels.append(job_id)


class QueueContract:
    """Inherit it in a ``Test...`` class that defines the ``harness`` fixture."""

    async def test_idempotency_key_returns_the_same_job_per_owner_even_after_archiving(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        first = await queue.enqueue(JobSpec("k", "alice", {"a": 1}, idempotency_key="upload-1"))
        again = await queue.enqueue(JobSpec("k", "alice", {"a": 2}, idempotency_key="upload-1"))
        other = await queue.enqueue(JobSpec("k", "bob", {"a": 3}, idempotency_key="upload-1"))
        assert first.created and not again.created
        assert again.id == first.id
        assert other.created and other.id != first.id
        concurrent = await asyncio.gather(
            *(queue.enqueue(JobSpec("k", "carol", idempotency_key="race")) for _ in range(10))
        )
        assert len({e.id for e in concurrent}) == 1
        assert sum(e.created for e in concurrent) == 1

        [claimed] = await queue.claim("w", 1, lease=30, kinds=["k"])
        assert claimed.id == first.id
        assert await queue.complete(claimed, {"ok": True})
        archived = await queue.maintain(hot_age=0, archive_age=86400)
        assert archived.ran and archived.archived == 1
        after = await queue.enqueue(JobSpec("k", "alice", idempotency_key="upload-1"))
        assert after == type(after)(id=first.id, created=False)
        assert sum((await queue.counts()).values()) == 2  # alice, bob, carol; alice archived

    async def test_claim_takes_at_most_limit_in_priority_then_age_order(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        low = await queue.enqueue_many([JobSpec("k", "u", {"i": i}) for i in range(5)])
        high = await queue.enqueue(JobSpec("k", "u", priority=10))
        later = await queue.enqueue(JobSpec("k", "u", priority=100, delay=60))
        other_kind = await queue.enqueue(JobSpec("other", "u", priority=50))

        claimed = await queue.claim("w1", 3, lease=30, kinds=["k"])
        assert next(job.id for job in claimed) == high.id
        assert len(claimed) == 3
        assert {job.id for job in claimed} == {high.id, *low[:2]}
        assert all(job.state is JobState.RUNNING and job.attempt == 1 for job in claimed)
        assert all(job.lease_owner == "w1" for job in claimed)

        rest = await queue.claim("w2", 100, lease=30, kinds=["k"])
        assert {job.id for job in rest} == set(low[2:])  # not the delayed one
        assert later.id not in {job.id for job in rest}
        anything = await queue.claim("w3", 100, lease=30)
        assert [job.id for job in anything] == [other_kind.id]

    async def test_a_delayed_job_is_claimable_once_its_run_at_has_passed(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        later = await queue.enqueue(JobSpec("k", "u", {"n": 1}, delay=60))
        assert await queue.claim("w", 10, lease=30) == []
        await harness.pass_time(61)
        [claimed] = await queue.claim("w", 10, lease=30)
        assert (claimed.id, claimed.payload, claimed.attempt) == (later.id, {"n": 1}, 1)
        assert claimed.lease_expires_at is not None and claimed.started_at is not None
        lease = (claimed.lease_expires_at - claimed.started_at).total_seconds()
        assert lease == pytest.approx(30, abs=0.01)

    async def test_two_claimers_never_get_the_same_job(self, harness: QueueHarness):
        queue = harness.queue
        await queue.enqueue_many([JobSpec("k", "u")] * 500)
        batches = await asyncio.gather(*(queue.claim(f"w{i}", 37, lease=30) for i in range(20)))
        ids = [job.id for batch in batches for job in batch]
        assert len(ids) == len(set(ids)) == 500

    async def test_fencing_refuses_a_stale_attempt_after_its_lease_was_taken_over(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u"))
        [stale] = await queue.claim("dead-worker", 1, lease=1)
        assert await queue.reap_expired() == []  # the lease still holds
        await harness.pass_time(1.2)
        [recovered] = await queue.reap_expired()
        assert recovered.state is JobState.QUEUED
        assert recovered.error is not None and recovered.error["code"] == "lease_expired"
        [fresh] = await queue.claim("live-worker", 1, lease=30)
        assert fresh.id == stale.id and fresh.attempt == 2

        assert not await queue.complete(stale, {"from": "dead"})
        with pytest.raises(LeaseLost):
            await queue.set_progress(stale, 0.5, "late")
        assert await queue.fail(stale, JobFailed("late", code="late"), delay=0) is None
        assert not await queue.mark_cancelled(stale)
        assert await queue.hand_back([stale]) == {}

        assert await queue.complete(fresh, {"from": "live"})
        job = await queue.get(fresh.id)
        assert job is not None
        assert (job.state, job.attempt, job.result) == (JobState.SUCCEEDED, 2, {"from": "live"})

    async def test_group_completion_accepts_only_the_attempts_that_still_hold_their_job(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue_many([JobSpec("k", "u")] * 3)
        first, second, third = await queue.claim("w", 3, lease=1)
        assert await queue.complete(first, "early")
        await harness.pass_time(2)
        assert len(await queue.reap_expired()) == 2
        [again] = await queue.claim("w", 1, lease=30)
        assert again.id in (second.id, third.id)
        accepted = await queue.complete_many([(first, 1), (second, 2), (third, 3), (again, 4)])
        assert accepted == {again.id}
        stored = await queue.get(again.id)
        assert stored is not None and stored.result == 4 and stored.progress == 1.0
        assert stored.lease_owner is None and stored.finished_at is not None

    async def test_a_result_json_cannot_hold_is_refused_and_the_job_keeps_running(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u"))
        [job] = await queue.claim("w", 1, lease=30)
        with pytest.raises(ValueError, match="JSON compliant"):
            await queue.complete(job, {"x": float("nan")})
        with pytest.raises(TypeError):
            await queue.complete(job, {"x": object()})  # type: ignore[dict-item]
        stored = await queue.get(job.id)
        assert stored is not None and stored.state is JobState.RUNNING
        assert await queue.complete(job, [1, "two", {"three": None}])
        stored = await queue.get(job.id)
        assert stored is not None and stored.result == [1, "two", {"three": None}]

    async def test_expired_lease_out_of_attempts_fails_the_job(self, harness: QueueHarness):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u", max_attempts=1))
        [job] = await queue.claim("w", 1, lease=1)
        await harness.pass_time(1.2)
        [transition] = await queue.reap_expired()
        assert transition.state is JobState.FAILED
        stored = await queue.get(job.id)
        assert stored is not None and stored.state is JobState.FAILED
        assert stored.error == {
            "code": "lease_expired",
            "message": "the worker running attempt 1 stopped renewing its lease",
            "retryable": False,
        }

    async def test_an_expired_lease_of_a_job_whose_cancel_was_requested_ends_cancelled(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u"))
        [job] = await queue.claim("w", 1, lease=1)
        assert await queue.cancel(job.id) is JobState.RUNNING
        await harness.pass_time(1.2)
        [transition] = await queue.reap_expired()
        assert (transition.state, transition.cause) == (JobState.CANCELLED, Cause.CANCELLED)
        stored = await queue.get(job.id)
        assert stored is not None and stored.state is JobState.CANCELLED
        assert stored.error == {
            "code": "cancelled",
            "message": "cancelled while running; its worker stopped renewing the lease",
            "retryable": False,
        }

    async def test_fail_requeues_retryable_errors_with_delay_and_fails_the_rest(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u", max_attempts=2))
        [job] = await queue.claim("w", 1, lease=30)
        assert await queue.fail(job, Retry("flaky", code="upstream_timeout"), delay=60) is (
            JobState.QUEUED
        )
        stored = await queue.get(job.id)
        assert stored is not None and stored.lease_owner is None
        assert (stored.run_at - stored.updated_at).total_seconds() == pytest.approx(60, abs=1)
        assert stored.finished_at is None
        assert await queue.claim("w", 1, lease=30) == []  # not before run_at

        await harness.pass_time(60)
        [second] = await queue.claim("w", 1, lease=30)
        assert second.attempt == 2
        assert await queue.fail(second, Retry("flaky again"), delay=0) is JobState.FAILED
        stored = await queue.get(job.id)
        assert stored is not None and stored.finished_at is not None
        assert stored.error == {"code": "retry", "message": "flaky again", "retryable": True}

    async def test_a_failure_that_is_not_retryable_fails_at_once(self, harness: QueueHarness):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u", max_attempts=5))
        [job] = await queue.claim("w", 1, lease=30)
        broken = JobFailed("bad input", code="corrupt_image")
        assert await queue.fail(job, broken, delay=60) is JobState.FAILED
        stored = await queue.get(job.id)
        assert stored is not None and (stored.state, stored.attempt) == (JobState.FAILED, 1)
        assert stored.error == {
            "code": "corrupt_image",
            "message": "bad input",
            "retryable": False,
        }

    async def test_a_failure_after_a_cancel_request_ends_cancelled(self, harness: QueueHarness):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u"))
        [job] = await queue.claim("w", 1, lease=30)
        assert await queue.cancel(job.id) is JobState.RUNNING
        assert await queue.fail(job, Retry("flaky", code="upstream_timeout"), delay=0) is (
            JobState.CANCELLED
        )
        stored = await queue.get(job.id)
        assert stored is not None and stored.finished_at is not None
        assert stored.error == {
            "code": "cancelled",
            "message": "cancelled while running; the attempt then ended with upstream_timeout",
            "retryable": False,
        }

    async def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        queued = await queue.enqueue(JobSpec("k", "alice", delay=60))
        running = await queue.enqueue(JobSpec("k", "alice"))
        [claimed] = await queue.claim("w", 1, lease=30)
        assert claimed.id == running.id

        assert await queue.cancel(queued.id, owner_id="bob") is None  # not bob's job
        assert await queue.cancel(queued.id, owner_id="alice") is JobState.CANCELLED
        assert await queue.cancel(queued.id) is None  # already finished
        assert await queue.cancel(running.id) is JobState.RUNNING
        assert await queue.set_progress(claimed, 0.3) is True  # the handler sees the flag
        assert await queue.mark_cancelled(claimed)
        states = {j: (await queue.get(j)).state for j in (queued.id, running.id)}
        assert states == {queued.id: JobState.CANCELLED, running.id: JobState.CANCELLED}
        assert await queue.cancel(uuid.uuid4()) is None
        stored = await queue.get(running.id)
        assert stored.error == {
            "code": "cancelled",
            "message": "cancelled while running; the handler stopped",
            "retryable": False,
        }

    async def test_hand_back_requeues_unfinished_jobs_and_counts_only_started_attempts(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue_many([JobSpec("k", "u")] * 3)
        started, unstarted, flagged = await queue.claim("w", 3, lease=30)
        assert await queue.cancel(flagged.id) is JobState.RUNNING
        assert await queue.hand_back([]) == {}
        states = await queue.hand_back([started, flagged])
        assert states == {started.id: JobState.QUEUED, flagged.id: JobState.CANCELLED}
        assert await queue.hand_back([unstarted], started=False) == {unstarted.id: JobState.QUEUED}
        back = await queue.get(started.id)
        assert back is not None
        assert (back.state, back.attempt, back.lease_owner, back.finished_at) == (
            JobState.QUEUED,
            1,
            None,
            None,
        )
        assert back.message == "handed back by a stopping worker"
        never_ran = await queue.get(unstarted.id)
        assert never_ran is not None and never_ran.attempt == 0
        ended = await queue.get(flagged.id)
        assert ended is not None and ended.finished_at is not None
        assert ended.error == {
            "code": "cancelled",
            "message": "cancelled while running; its worker stopped first",
            "retryable": False,
        }
        again = await queue.claim("w2", 10, lease=30)
        assert {(job.id, job.attempt) for job in again} == {(started.id, 2), (unstarted.id, 1)}

    async def test_maintenance_moves_finished_jobs_to_the_archive_and_prunes_it(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        await queue.enqueue_many([JobSpec("k", "u")] * 30)
        claimed = await queue.claim("w", 20, lease=30)
        assert await queue.complete_many([(job, None) for job in claimed]) == {
            job.id for job in claimed
        }
        kept = await queue.maintain(hot_age=3600, archive_age=86400)
        assert (kept.ran, kept.archived) == (True, 0)
        moved = await queue.maintain(hot_age=0, archive_age=86400)
        assert moved.archived == 20
        counts = await queue.counts()
        assert counts[JobState.SUCCEEDED] == 0 and counts[JobState.QUEUED] == 10
        archived = await queue.get(claimed[0].id)
        assert archived is not None and archived.state is JobState.SUCCEEDED
        pruned = await queue.maintain(hot_age=0, archive_age=0)
        assert pruned.pruned == 20
        assert await queue.get(claimed[0].id) is None

    async def test_progress_is_stored_on_the_row_and_bounded(self, harness: QueueHarness):
        queue = harness.queue
        await queue.enqueue(JobSpec("k", "u"))
        [job] = await queue.claim("w", 1, lease=30)
        assert await queue.set_progress(job, 0.25, "decoding") is False
        stored = await queue.get(job.id)
        assert stored is not None and (stored.progress, stored.message) == (0.25, "decoding")
        with pytest.raises(ValueError, match="between 0 and 1"):
            await queue.set_progress(job, 1.5)

    async def test_enqueue_many_refuses_idempotency_keys_and_run_at(self, harness: QueueHarness):
        queue = harness.queue
        with pytest.raises(ValueError, match="idempotency keys"):
            await queue.enqueue_many([JobSpec("k", "u", idempotency_key="x")])
        with pytest.raises(ValueError, match="run_at"):
            await queue.enqueue_many([JobSpec("k", "u", run_at=datetime.now(UTC))])
        assert sum((await queue.counts()).values()) == 0

    async def test_enqueue_many_takes_ids_made_beforehand(self, harness: QueueHarness):
        queue = harness.queue
        ids = [new_job_id() for _ in range(3)]
        specs = [JobSpec("k", "u", {"i": i}) for i in range(3)]
        with pytest.raises(ValueError, match="2 ids for 3 jobs"):
            await queue.enqueue_many(specs, ids=ids[:2])
        assert sum((await queue.counts()).values()) == 0
        assert await queue.enqueue_many(specs, ids=ids) == ids
        with pytest.raises((ValueError, psycopg.errors.UniqueViolation)):  # an id in use
            await queue.enqueue_many(specs[:1], ids=ids[:1])
        for i, job_id in enumerate(ids):
            job = await queue.get(job_id)
            assert job is not None and job.payload == {"i": i}

    async def test_reading_an_owners_jobs_newest_first_and_the_oldest_wait(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        assert await queue.oldest_queued_age() == 0.0
        ids = [(await queue.enqueue(JobSpec("k", "alice", {"i": i}))).id for i in range(3)]
        await queue.enqueue(JobSpec("other", "alice", delay=600))
        await queue.enqueue(JobSpec("k", "bob"))
        await harness.pass_time(30)
        assert await queue.oldest_queued_age() == pytest.approx(30, abs=1)
        page = await queue.for_owner("alice", kind="k", limit=2)
        assert [job.id for job in page] == [ids[2], ids[1]]
        rest = await queue.for_owner("alice", kind="k", before=(page[-1].created_at, page[-1].id))
        assert [job.id for job in rest] == [ids[0]]
        assert len(await queue.for_owner("alice")) == 4
        [claimed] = await queue.claim("w", 1, lease=30, kinds=["k"])
        running = await queue.for_owner("alice", state=JobState.RUNNING)
        assert [job.id for job in running] == [claimed.id]
        assert await queue.get(uuid.uuid4()) is None

    async def test_each_change_reports_its_transitions_once_committed(self, harness: QueueHarness):
        queue, hooks = harness.queue, harness.hooks
        a = (await queue.enqueue(JobSpec("k", "alice", max_attempts=2))).id
        b = (await queue.enqueue(JobSpec("k", "bob"))).id
        assert hooks.take() == []  # enqueueing reports nothing
        one, two = sorted(await queue.claim("w", 2, lease=1), key=lambda job: job.owner_id)
        assert (one.id, two.id) == (a, b)
        assert sorted(hooks.take(), key=lambda t: t.owner_id) == [
            Transition(a, "alice", "k", JobState.RUNNING, 1, Cause.CLAIMED, progress=0.0),
            Transition(b, "bob", "k", JobState.RUNNING, 1, Cause.CLAIMED, progress=0.0),
        ]
        await queue.set_progress(one, 0.5, "half")
        assert await queue.cancel(b) is JobState.RUNNING
        assert hooks.take() == [
            Transition(a, "alice", "k", JobState.RUNNING, 1, Cause.PROGRESS, 0.5, "half"),
            Transition(
                b, "bob", "k", JobState.RUNNING, 1, Cause.CANCEL_REQUESTED,
                message="cancel requested",
            ),
        ]  # fmt: skip
        error = {"code": "retry", "message": "again", "retryable": True}
        assert await queue.fail(one, Retry("again"), delay=0) is JobState.QUEUED
        assert await queue.mark_cancelled(two)
        assert hooks.take() == [
            Transition(a, "alice", "k", JobState.QUEUED, 1, Cause.RETRYING, error=error),
            Transition(b, "bob", "k", JobState.CANCELLED, 1, Cause.CANCELLED),
        ]
        [again] = await queue.claim("w", 1, lease=1)
        await harness.pass_time(1.2)
        reaped = await queue.reap_expired()
        expired = {
            "code": "lease_expired",
            "message": "the worker running attempt 2 stopped renewing its lease",
            "retryable": False,
        }
        failed = Transition(
            a, "alice", "k", JobState.FAILED, 2, Cause.FAILED, None, "lease expired", None, expired
        )
        claimed = Transition(a, "alice", "k", JobState.RUNNING, 2, Cause.CLAIMED, progress=0.0)
        assert reaped == [failed]
        assert hooks.take() == [claimed, failed]

        c = (await queue.enqueue(JobSpec("k", "carol"))).id
        [third] = await queue.claim("w", 1, lease=30)
        await queue.hand_back([third])
        queued = await queue.cancel(c)
        assert queued is JobState.CANCELLED
        [_, handed, cancelled] = hooks.take()
        assert handed == Transition(
            c, "carol", "k", JobState.QUEUED, 1, Cause.REQUEUED, message="handed back"
        )
        assert cancelled == Transition(c, "carol", "k", JobState.CANCELLED, 1, Cause.CANCELLED)
        assert hooks.recorded[-3:] == [claimed_of(third), handed, cancelled]
        assert again.id == a

    async def test_a_change_whose_event_record_fails_is_undone(self, harness: QueueHarness):
        queue, hooks = harness.queue, harness.hooks
        job = await queue.enqueue(JobSpec("k", "u"))
        hooks.fail_next = True
        with pytest.raises(RuntimeError, match="event write failed"):
            await queue.claim("w", 1, lease=30)
        stored = await queue.get(job.id)
        assert stored is not None and (stored.state, stored.attempt) == (JobState.QUEUED, 0)
        assert hooks.take() == []
        [claimed] = await queue.claim("w", 1, lease=30)
        assert claimed.attempt == 1

    async def test_the_notifier_hears_new_jobs_requeues_and_cancel_requests(
        self, harness: QueueHarness
    ):
        queue = harness.queue
        notifier = harness.notifier()
        heard = Heard()
        listening = asyncio.create_task(notifier.run(heard.wakeup, heard.cancel))
        try:
            await asyncio.wait_for(notifier.connected.wait(), timeout=10)
            await wait_for(lambda: heard.wakeups >= 1, timeout=10)  # on connect
            wakeups = heard.wakeups
            await queue.enqueue(JobSpec("k", "u"))
            await wait_for(lambda: heard.wakeups > wakeups, timeout=10)
            wakeups = heard.wakeups
            [job] = await queue.claim("w", 1, lease=30)
            await queue.hand_back([job])
            await wait_for(lambda: heard.wakeups > wakeups, timeout=10)
            [job] = await queue.claim("w", 1, lease=30)
            assert await queue.cancel(job.id) is JobState.RUNNING
            await wait_for(lambda: heard.cancels == [job.id], timeout=10)
            wakeups = heard.wakeups
            await queue.notify_wakeup()
            await wait_for(lambda: heard.wakeups > wakeups, timeout=10)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        assert not notifier.connected.is_set()


def claimed_of(job: Any) -> Transition:
    return Transition(
        job.id, job.owner_id, job.kind, JobState.RUNNING, job.attempt, Cause.CLAIMED, progress=0.0
    )
