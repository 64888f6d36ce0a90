"""The CLI's log levels: libraries' chatter (pgserver's initdb and pg_ctl lines, httpx's
request lines) stays at WARNING unless MEDIAJOBS_LOG_LEVEL=DEBUG asks for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mediajobs.cli.common import CHATTY_LOGGERS, quiet_libraries


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("INFO", logging.WARNING),
        ("WARNING", logging.WARNING),
        ("ERROR", logging.ERROR),
        ("DEBUG", logging.DEBUG),
    ],
)
def test_library_loggers_stay_at_warning_unless_debug_is_asked_for(configured, expected):
    quiet_libraries(configured)
    assert {name: logging.getLogger(name).getEffectiveLevel() for name in CHATTY_LOGGERS} == {
        "pgserver": expected,
        "httpx": expected,
        "httpcore": expected,
    }
    assert logging.getLogger("pgserver").isEnabledFor(logging.INFO) is (configured == "DEBUG")
