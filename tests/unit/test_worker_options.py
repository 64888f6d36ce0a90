"""The worker's options have one home for their defaults, ``Settings``: a worker built
without settings runs as one built from the default settings (but for the kind limits,
which only the composition root sets), and every worker setting in the environment reaches
the options the composition root builds."""

from __future__ import annotations

import dataclasses

import pytest

from mediajobs.config import Settings
from mediajobs.queue import WorkerOptions, kinds


def test_worker_options_default_to_the_settings_defaults() -> None:
    defaults = WorkerOptions()
    from_settings = WorkerOptions.from_settings(Settings())
    assert dict(defaults.kind_limits) == {}
    assert dict(from_settings.kind_limits) == {
        kinds.INGEST_BATCH: Settings.ingest_concurrency,
        kinds.MEDIA_EMBED: 2,  # one through the model while the other reads or writes
    }
    assert dataclasses.replace(from_settings, name=defaults.name, kind_limits={}) == defaults
    assert (defaults.concurrency, defaults.lease, defaults.hot_age) == (
        Settings.worker_concurrency,
        Settings.lease_seconds,
        Settings.job_retention_hot,
    )


def test_every_worker_setting_in_the_environment_reaches_the_options() -> None:
    settings = Settings.from_env(
        {
            "MEDIAJOBS_WORKER_CONCURRENCY": "7",
            "MEDIAJOBS_LEASE_SECONDS": "12",
            "MEDIAJOBS_POLL_INTERVAL": "0.5",
            "MEDIAJOBS_SHUTDOWN_GRACE": "4",
            "MEDIAJOBS_JOB_RETENTION_HOT": "60",
            "MEDIAJOBS_JOB_RETENTION": "3600",
            "MEDIAJOBS_PROGRESS_INTERVAL": "0.1",
            "MEDIAJOBS_INGEST_CONCURRENCY": "5",
        }
    )
    options = WorkerOptions.from_settings(settings, kinds=["system.ping"], burst=True)
    assert options.concurrency == 7
    assert options.lease == 12.0
    assert options.poll_interval == 0.5
    assert options.shutdown_grace == 4.0
    assert options.hot_age == 60.0
    assert options.archive_age == 3600.0
    assert options.progress_interval == 0.1
    assert options.kinds == ["system.ping"]
    assert dict(options.kind_limits) == {"ingest.batch": 5, "media.embed": 2}
    assert options.burst is True
    # A limited kind never takes a worker's last slot: at most concurrency - 1.
    narrow = dataclasses.replace(options, concurrency=3)
    assert dict(narrow.kind_limits) == {"ingest.batch": 2, "media.embed": 2}
    assert dict(dataclasses.replace(options, concurrency=1).kind_limits) == {
        "ingest.batch": 1,
        "media.embed": 1,
    }
    assert WorkerOptions.from_settings(settings).kinds is None
    assert WorkerOptions.from_settings(settings).burst is False


def test_worker_options_take_explicit_values() -> None:
    options = WorkerOptions(concurrency=2, lease=5.0, shutdown_grace=0.0, name="w1")
    assert (options.concurrency, options.lease, options.shutdown_grace, options.name) == (
        2,
        5.0,
        0.0,
        "w1",
    )
    assert options.poll_interval == Settings.poll_interval


def test_kind_limits_are_a_read_only_copy_and_refuse_a_limit_below_one() -> None:
    limits = {"ingest.batch": 2}
    options = WorkerOptions(kind_limits=limits)
    limits["ingest.batch"] = 50
    assert options.kind_limits["ingest.batch"] == 2
    with pytest.raises(TypeError):
        options.kind_limits["ingest.batch"] = 3  # type: ignore[index]
    with pytest.raises(ValueError, match=r"kind_limits\['ingest.batch'\] must be at least 1"):
        WorkerOptions(kind_limits={"ingest.batch": 0})
