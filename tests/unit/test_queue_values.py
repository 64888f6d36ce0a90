"""Pure parts of the queue: ids, backoff, specs, the registry, the error tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import random

import pytest

import mediajobs
from mediajobs import errors
from mediajobs.queue import Backoff, HandlerRegistry, JobSpec, JobState
from mediajobs.queue.models import new_job_id


def test_job_ids_are_uuid7_and_strictly_increasing_within_a_process():
    ids = [new_job_id() for _ in range(20000)]
    assert all(job_id.version == 7 for job_id in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_backoff_grows_exponentially_up_to_the_cap_with_bounded_jitter():
    backoff = Backoff(base=2.0, cap=60.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert max(delays) <= ceiling
        assert min(delays) >= ceiling * 0.5
        assert len({round(d, 6) for d in delays}) > 100  # jittered, not lockstep
    assert Backoff(base=1.0, jitter=0.0).delay(3) == 4.0


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"kind": ""}, "needs a kind"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": -1.0}, "delay"),
        ({"priority": 40000}, "smallint"),
    ],
)
def test_job_spec_refuses_impossible_values(bad, why):
    with pytest.raises(ValueError, match=why):
        JobSpec(**{"kind": "k", "owner_id": "u", **bad})


def test_registry_maps_kinds_to_handlers_once():
    registry = HandlerRegistry()

    @registry.handler("media.process")
    async def process(ctx, job):
        return None

    assert registry.get("media.process") is process
    assert "media.process" in registry and "media.delete" not in registry
    assert registry.kinds == ["media.process"] and len(registry) == 1
    with pytest.raises(ValueError, match="already registered"):
        registry.register("media.process", process)
    with pytest.raises(ValueError, match="invalid job kind"):
        registry.register(" spaced ", process)


def test_finished_states():
    assert {s for s in JobState if s.finished} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }


def public_exceptions() -> list[type[BaseException]]:
    """Every public exception class defined in a module of the mediajobs package."""
    found = []
    for info in pkgutil.walk_packages(mediajobs.__path__, "mediajobs."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.append(value)
    return found


def test_error_tree_has_one_root_and_stable_codes():
    found = public_exceptions()
    assert {cls.__name__ for cls in found} >= {"ConfigError", "ApiError", "ImagingFailed"}
    outside = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in found
        if not issubclass(cls, errors.MediaJobsError)
    ]
    assert outside == []
    drawn = (errors.__doc__ or "").split()  # the tree in the module docstring names each
    assert [cls.__name__ for cls in found if cls.__name__ not in drawn] == []
    failed = errors.JobFailed("not an image", code="unsupported_type")
    assert failed.to_dict() == {
        "code": "unsupported_type",
        "message": "not an image",
        "retryable": False,
    }
    retry = errors.Retry("later", delay=3)
    assert (retry.retryable, retry.delay, retry.code) == (True, 3, "retry")
    with pytest.raises(ValueError, match=">= 0"):
        errors.Retry(delay=-1)
