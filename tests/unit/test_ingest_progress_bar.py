"""The progress bar of `mediajobs ingest run` on a narrow terminal: the bar and the counts
stay; the failures per code are cut to the room left. The ETA and the state a run is
shown in."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from rich.console import Console

from mediajobs.cli.ingest import _bar_fields, _progress_bar, _retry_command
from mediajobs.db.ingest import IngestRun, RunStatus
from mediajobs.ingest.runs import RateMeter, run_eta, run_state

CODES = {"corrupt_image": 1200, "decoder_crashed": 3, "empty_file": 51, "file_too_large": 2}


def status(total: int, done: int, codes: dict[str, int]) -> RunStatus:
    now = datetime.now(UTC)
    run = IngestRun(
        uuid.uuid4(), uuid.uuid4(), "file:///srv/photos", "ada", "ada", "catalog", 32, "scanned",
        None, total, 0, 0, total, None, now, now, now,
    )  # fmt: skip
    counts = {"indexed": done - sum(codes.values()), "failed": sum(codes.values())}
    return RunStatus(run, counts, codes, total, done, now)


def drawn(width: int, looked: RunStatus) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress = _progress_bar(console)
    task = progress.add_task("scanning", total=None, rate="-", eta="-", failures="")
    meter = RateMeter()
    meter.add(0.0, 0)
    meter.add(100.0, 123_456)
    progress.update(task, **_bar_fields(looked, meter, width))
    console.print(progress.make_tasks_table(progress.tasks))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out).rstrip()


@pytest.mark.parametrize("total", [2_000, 5_000_000])
@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_bar_and_the_counts_stay_and_the_failures_take_the_rest(width: int, total: int) -> None:
    line = drawn(width, status(total, 1_234 if total < 5_000 else 1_234_567, CODES))
    assert len(line) <= width and "\n" not in line, line
    assert line.startswith("importing ") and "━" in line, line
    assert f"/{total} " in line and "1234.6 files/s" in line and "ETA " in line, line
    assert "1256 failed" in line, line
    whole = "1256 failed: corrupt_image=1200 decoder_crashed=3 empty_file=51 file_too_large=2"
    assert (whole in line) == (width >= 160), line
    assert line.endswith("…") != (width >= 160), line


def test_without_failures_the_last_column_is_empty() -> None:
    line = drawn(80, status(2_000, 10, {}))
    assert "failed" not in line and line.endswith("ETA 0:02"), line


def test_a_scan_with_nothing_open_yet_has_no_eta_and_no_total() -> None:
    looked = status(0, 0, {})
    scanning = RunStatus(replace(looked.run, state="scanning"), {}, {}, 0, 0, looked.last_update)
    assert run_eta(scanning, 50.0) is None  # not 0: the scan may find any number yet
    fields = _bar_fields(scanning, RateMeter(), 80)
    assert (fields["description"], fields["total"], fields["eta"]) == ("scanning", None, "-")
    assert run_eta(looked, 50.0) == 0.0  # scanned, and nothing open: done
    done = replace(looked, run=replace(looked.run, scanned=3), total=3, done=3)
    assert _bar_fields(done, RateMeter(), 80)["description"] == "finished"  # the last look
    assert run_eta(replace(scanning, total=100, done=50), 50.0) == 1.0


def test_the_state_a_run_is_shown_in() -> None:
    run = status(0, 0, {}).run
    assert run_state(replace(run, state="scanning"), 0, 0) == "scanning"
    assert run_state(replace(run, state="scan_failed"), 0, 0) == "scan_failed"
    assert run_state(replace(run, scanned=0), 0, 0) == "no_images"
    assert run_state(replace(run, scanned=5), 0, 0) == "finished"  # a rescan: nothing new
    assert run_state(run, 10, 9) == "importing"
    assert run_state(run, 10, 10) == "finished"


def test_a_retry_is_offered_through_the_run_or_its_sources_new_owner() -> None:
    run = status(0, 0, {}).run
    assert _retry_command(run, " --stranded") == f"mediajobs ingest retry {run.id} --stranded"
    handed_over = replace(run, source_owner_id="Jane Doe")
    assert _retry_command(handed_over) == (
        "the source belongs to 'Jane Doe' now: mediajobs ingest retry RUN, RUN one of mediajobs "
        "ingest runs --owner 'Jane Doe'"
    )
