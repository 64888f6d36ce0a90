"""Running out of a system resource is logged once per interval, with a count of the lines
held back; other records pass untouched."""

from __future__ import annotations

import errno
import logging

from mediajobs.logs import ExhaustionFilter


def record(exc: BaseException | None, name: str = "asyncio") -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(
        name, logging.ERROR, __file__, 1, "accept failed: %s", ("x",), exc_info
    )


def test_one_exhaustion_record_passes_per_interval_and_the_next_counts_the_held_ones() -> None:
    now = [100.0]
    keep = ExhaustionFilter(interval=10.0, clock=lambda: now[0])
    emfile = OSError(errno.EMFILE, "Too many open files")
    passed = []
    for step in range(1000):
        now[0] = 100.0 + step * 0.025  # 1000 attempts over 25 s
        one = record(emfile)
        if keep.filter(one):
            passed.append(one.getMessage())
    assert passed == [
        "accept failed: x",
        "accept failed: x [399 more like this in the last 10 s not logged]",
        "accept failed: x [399 more like this in the last 10 s not logged]",
    ]


def test_other_records_and_other_errors_pass_and_keys_are_separate() -> None:
    keep = ExhaustionFilter(interval=10.0, clock=lambda: 0.0)
    assert all(keep.filter(record(None)) for _ in range(5))
    assert all(keep.filter(record(OSError(errno.ECONNRESET, "reset"))) for _ in range(5))
    assert keep.filter(record(OSError(errno.EMFILE, "x"), "asyncio"))
    assert keep.filter(record(OSError(errno.ENFILE, "x"), "asyncio"))
    assert keep.filter(record(OSError(errno.EMFILE, "x"), "psycopg"))
    assert not keep.filter(record(OSError(errno.EMFILE, "x"), "asyncio"))
    # Found through the exception chain too.
    outer = RuntimeError("connect failed")
    outer.__cause__ = OSError(errno.EMFILE, "Too many open files")
    assert not keep.filter(record(outer, "psycopg"))


def test_a_driver_error_that_keeps_only_the_message_is_held_back_too() -> None:
    keep = ExhaustionFilter(interval=10.0, clock=lambda: 0.0)

    def warning(text: str) -> logging.LogRecord:
        return logging.LogRecord(
            "mediajobs.realtime.hub", logging.WARNING, __file__, 1, text, (), None
        )

    emfile = "Postgres away: could not create socket: Too many open files"
    enfile = "Postgres away: could not create socket: Too many open files in system"
    assert [keep.filter(warning(emfile)) for _ in range(3)] == [True, False, False]
    assert [keep.filter(warning(enfile)) for _ in range(3)] == [True, False, False]
    assert keep.filter(warning("Postgres away: connection refused"))
