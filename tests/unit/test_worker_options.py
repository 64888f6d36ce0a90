"""The worker's options have one home for their defaults, ``Settings``: a worker built
without settings runs as one built from the default settings, and every worker setting in
the environment reaches the options the composition root builds."""

from __future__ import annotations

import dataclasses

from mediajobs.config import Settings
from mediajobs.queue import WorkerOptions


def test_worker_options_default_to_the_settings_defaults() -> None:
    defaults = WorkerOptions()
    from_settings = WorkerOptions.from_settings(Settings())
    assert dataclasses.replace(from_settings, name=defaults.name) == defaults
    assert (defaults.concurrency, defaults.lease, defaults.hot_age) == (
        Settings.worker_concurrency,
        Settings.lease_seconds,
        Settings.job_retention_hot,
    )


def test_every_worker_setting_in_the_environment_reaches_the_options() -> None:
    settings = Settings.from_env(
        {
            "MEDIAJOBS_WORKER_CONCURRENCY": "3",
            "MEDIAJOBS_LEASE_SECONDS": "12",
            "MEDIAJOBS_POLL_INTERVAL": "0.5",
            "MEDIAJOBS_SHUTDOWN_GRACE": "4",
            "MEDIAJOBS_JOB_RETENTION_HOT": "60",
            "MEDIAJOBS_JOB_RETENTION": "3600",
            "MEDIAJOBS_PROGRESS_INTERVAL": "0.1",
        }
    )
    options = WorkerOptions.from_settings(settings, kinds=["system.ping"], burst=True)
    assert options.concurrency == 3
    assert options.lease == 12.0
    assert options.poll_interval == 0.5
    assert options.shutdown_grace == 4.0
    assert options.hot_age == 60.0
    assert options.archive_age == 3600.0
    assert options.progress_interval == 0.1
    assert options.kinds == ["system.ping"]
    assert options.burst is True
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
