"""``mediajobs ingest``: run a bulk ingest of a directory or a bucket prefix, follow it,
and look after its failures (docs/ingest.md).

``run`` records the run and queues its scan (the workers do the rest: nothing here needs to
stay up); on a terminal it then follows the run with a live progress bar, and Ctrl-C stops
the watching, never the ingest. ``status``, ``retry`` and ``report`` take a run id, or the
latest run when none is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import re
import shlex
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

from mediajobs.cli.common import Commands, bounded, handle_signals, print_json, with_pool
from mediajobs.config import Settings
from mediajobs.db.ingest import (
    SCAN_JOB_ENDED,
    IngestRepository,
    IngestRun,
    RunStatus,
    ScanJob,
    SourceOverlaps,
    SourceOwnedElsewhere,
)
from mediajobs.db.policies import PolicyInvalid, SitePolicies, UnknownProfile
from mediajobs.db.pool import Pool
from mediajobs.devenv import with_dev_secret
from mediajobs.ingest.runs import (
    RateMeter,
    SourceReowned,
    is_finished,
    overall_rate,
    overlaps_own_keys,
    retry_failed,
    run_eta,
    run_state,
    start_run,
    status_json,
)
from mediajobs.ingest.scan import APPROVED_EXTENSIONS
from mediajobs.ingest.source import SourceInvalid, parse_source
from mediajobs.queue.queue import JobQueue
from mediajobs.service.auth import MAX_USER_ID, is_user_id
from mediajobs.storage.factory import stores_for

FOLLOW_INTERVAL = 1.0  # seconds between two looks at a followed run
STALL_SECONDS = 60.0  # a followed run that has not moved this long is checked for strands
RUN_HELP = "the run's id (default: the latest run)"
REPORT_PAGE = 1000
SCAN_WAIT_HINT = 10.0  # seconds a followed run's scan job may wait before a hint is shown


# Characters that show as nothing: Unicode's Default_Ignorable_Code_Point property
# (DerivedCoreProperties.txt, Unicode 15.1) and the braille blank U+2800.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def owner_id(text: str) -> str:
    """An argparse ``type``: a user id a token of ours may carry (``service.auth.is_user_id``:
    1-255 characters, not blank, no control characters), without a space at either end
    or a character that shows as nothing (``_INVISIBLE``, and whatever ``str.isprintable``
    refuses: format characters, separators other than the space), so that two ids that
    look the same differ in what shows (letters of look-alike scripts still pass). Else
    argparse's usage error, quoting at most 60 characters of ``text``."""
    visible = text.isprintable() and not _INVISIBLE.search(text)
    if not (is_user_id(text) and visible and text == text.strip()):
        shown = text if len(text) <= 60 else f"{text[:60]}..."
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not a user id: 1-{MAX_USER_ID} characters (the `sub` of the "
            "owner's tokens), without spaces at either end or invisible characters"
        )
    return text


def add_ingest(commands: Commands) -> None:
    """The ``ingest`` command's parser and its subcommands."""
    ingest = commands.add_parser(
        "ingest",
        help="run SOURCE | runs | status | retry | report: bulk ingest of a directory or bucket",
    )
    sub = ingest.add_subparsers(dest="ingest_command", required=True)
    run = sub.add_parser(
        "run",
        help="ingest every image under a directory or bucket prefix",
        description="Record a run of SOURCE and queue its scan; the workers (`mediajobs "
        "worker`, any number, sharing DATABASE_URL, the store and access to SOURCE) do the "
        "rest. On a terminal, follow it with a progress bar (Ctrl-C stops watching, never "
        "the ingest); --json prints a progress line a second instead. A rerun of the same "
        "SOURCE skips the files already recorded and imports the new and changed ones.",
    )
    run.add_argument(
        "source",
        help="a directory (walked recursively), or a bucket prefix of a configured store: "
        "s3://bucket/prefix, gs://bucket/prefix",
    )
    run.add_argument(
        "--owner", required=True, type=owner_id, help="the user id the images go to (a token's sub)"
    )
    run.add_argument(
        "--profile", default="catalog", help="the site policy's ingest profile (default catalog)"
    )
    run.add_argument(
        "--batch",
        type=bounded(int, 1, 1000),
        help="files per batch job, 1..1000 (default MEDIAJOBS_INGEST_BATCH_SIZE or 32)",
    )
    output = run.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="progress as JSON lines")
    output.add_argument(
        "--detach", action="store_true", help="print the run as JSON and exit at once"
    )
    run.set_defaults(handler=cmd_ingest_run)
    runs = sub.add_parser("runs", help="the newest runs: id, state, files done, source")
    runs.add_argument("--owner", type=owner_id, help="only this owner's runs")
    runs.add_argument(
        "--limit", type=bounded(int, 1, 10_000), default=20, help="runs shown (default 20)"
    )
    runs.add_argument("--json", action="store_true", help="print JSON lines, one per run")
    runs.set_defaults(handler=cmd_ingest_runs)
    status = sub.add_parser(
        "status", help="a run's files by status and error code, its rate and ETA"
    )
    status.add_argument("run_id", nargs="?", type=uuid.UUID, help=RUN_HELP)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_ingest_status)
    retry = sub.add_parser(
        "retry",
        help="queue the failed files of a run's source again (whichever run failed them), "
        "and its stranded files",
    )
    retry.add_argument("run_id", nargs="?", type=uuid.UUID, help=RUN_HELP)
    only = retry.add_mutually_exclusive_group()
    only.add_argument(
        "--code",
        help="only the files failed with this error code ('unknown': those without one)",
    )
    only.add_argument(
        "--stranded",
        action="store_true",
        help="only the stranded files (open, but their batch job ended without them)",
    )
    retry.set_defaults(handler=cmd_ingest_retry)
    report = sub.add_parser(
        "report",
        help="each failed file of a run's source (whichever run failed it): path, code, message",
    )
    report.add_argument("run_id", nargs="?", type=uuid.UUID, help=RUN_HELP)
    report.add_argument(
        "--failed", action="store_true", required=True, help="the failed files (required)"
    )
    report.add_argument("--csv", action="store_true", help="CSV with a header row")
    report.set_defaults(handler=cmd_ingest_report)


def cmd_ingest_run(args: argparse.Namespace, settings: Settings) -> int:
    """Start a run; follow it on a terminal (or with ``--json``). Exit 1 when SOURCE or
    the profile is refused (one line on stderr)."""
    settings = with_dev_secret(settings)
    stores = stores_for(settings, remote_memory=True, direct=False)  # nothing written here
    try:
        source = parse_source(args.source, stores)
    except SourceInvalid as exc:
        print(f"mediajobs: {exc}", file=sys.stderr)
        return 1
    finally:
        asyncio.run(stores.close())

    async def start(pool: Pool) -> IngestRun | str:
        try:
            policy = await SitePolicies(pool).load()
            policy.ingest_profile(args.profile)
        except UnknownProfile as exc:
            return f"--profile: {exc.reason} ({exc.code})"
        except PolicyInvalid as exc:
            return str(exc)
        prefixes = [profile.prefix for profile in policy.all_ingest_profiles().values()]
        refused = overlaps_own_keys(source, stores.active, prefixes)
        if refused is not None:
            return refused
        ingest = IngestRepository(pool)
        try:
            return await start_run(
                ingest,
                JobQueue(pool),
                uri=source.uri,
                owner_id=args.owner,
                profile=args.profile,
                batch_size=args.batch or settings.ingest_batch_size,
            )
        except (SourceOwnedElsewhere, SourceOverlaps) as exc:
            return f"{exc} ({exc.code})"

    run = with_pool(settings, start)
    if isinstance(run, str):
        print(f"mediajobs: {run}", file=sys.stderr)
        return 1
    if args.detach or not (args.json or sys.stdout.isatty()):
        print_json({"runId": str(run.id), "source": run.source_uri, "state": run.state})
        return 0
    if not args.json:
        print(f"ingest run {run.id} of {run.source_uri}")
    return with_pool(settings, lambda pool: _follow(IngestRepository(pool), run, args.json))


async def _follow(ingest: IngestRepository, run: IngestRun, json_lines: bool) -> int:
    """Follow ``run`` until it is finished, or until Ctrl-C / SIGTERM (which stop only the
    watching). Exit 130 when stopped so; 1 when the scan failed (its scan job ended
    without it, too) or found no approved file (an empty source, or a typo in a prefix),
    or when the run stopped short of its end (its open files stranded); else 0, with a
    note when earlier runs of the source left files stranded."""
    stop = asyncio.Event()
    meter = RateMeter()
    with handle_signals(stop.set):
        if json_lines:
            await _follow_json(ingest, run, meter, stop)
        else:
            await _follow_bar(ingest, run, meter, stop)
    if stop.is_set():
        print(
            f"stopped watching; the ingest goes on: mediajobs ingest status {run.id}",
            file=sys.stderr,
        )
        return 130  # the shell's code for a command stopped by Ctrl-C
    final = await ingest.status(run.id)
    if final is None:
        return 1
    ended = final.run
    if ended.state == "scan_failed":
        print(f"mediajobs: {_scan_failure(ended)}", file=sys.stderr)
        return 1
    if run_state(ended, final.total, final.done) == "no_images":
        print(
            f"mediajobs: no image under {ended.source_uri} ({ended.skipped} other files "
            f"skipped, {ended.scan_errors} scan errors); the approved extensions are "
            f"{' '.join(sorted(APPROVED_EXTENSIONS))}",
            file=sys.stderr,
        )
        return 1
    if not is_finished(final):
        return 1  # its open files stranded
    others, _ = await ingest.source_stranded(ended)  # a top-up does not queue them again
    if others:
        print(
            f"mediajobs: {others} files of {ended.source_uri} from earlier runs are stranded "
            f"(their batch jobs ended without them): mediajobs ingest retry {ended.id} "
            "--stranded",
            file=sys.stderr,
        )
    return 0


def _waiting_scan_job(run: IngestRun) -> ScanJob | None:
    """The scan job of ``run`` while the run scans and the job waits in the queue: no
    worker took it yet, or it waits for a retry (``_scan_waits`` says which); else None."""
    job = run.scan_job if run.state == "scanning" else None
    return job if job is not None and (job.untaken or job.retrying) else None


def _scan_waits(run_id: uuid.UUID, job: ScanJob) -> str:
    """Why the run's scan job, queued, has not begun: no worker took it yet, or an attempt
    failed and it waits to be retried (with that attempt's error)."""
    if job.untaken:
        return (
            f"no worker has taken the scan of run {run_id} yet: is a `mediajobs worker` "
            "running against this database? (the run waits for one; Ctrl-C stops only the "
            "watching)"
        )
    error = job.error or {}
    return (
        f"the scan of run {run_id} failed its attempt {job.attempt} of {job.max_attempts} "
        f"({error.get('code', 'unknown')}: {_one_line(str(error.get('message', '')))}); "
        "it is retried"
    )


def _scan_failure(run: IngestRun) -> str:
    """Why the run's scan failed, from its error; how to start it again when its scan job
    ended without ending the scan (``SCAN_JOB_ENDED``)."""
    error = run.error if isinstance(run.error, dict) else {}
    code, message = error.get("code", "scan_failed"), error.get("message", "")
    failure = f"the scan of {run.source_uri} failed ({code}): {message}".rstrip(": ")
    if code == SCAN_JOB_ENDED:
        source, owner = shlex.quote(run.source_uri), shlex.quote(run.owner_id)
        again = f"mediajobs ingest run {source} --owner {owner}"
        failure += f"; to start it again: {again}"
    return failure


async def _looks(
    ingest: IngestRepository, run: IngestRun, meter: RateMeter, stop: asyncio.Event
) -> AsyncIterator[RunStatus]:
    """Each look at the run (``RunStatus``), a second apart, until it is finished, or until
    its open files are all stranded (their batch jobs ended without them: checked once
    nothing has moved for ``STALL_SECONDS``; ``ingest retry`` queues them again)."""
    loop = asyncio.get_running_loop()
    last: tuple[int, int] | None = None
    moved = started = loop.time()
    told: set[int] = set()  # the scan job's attempts a note was printed for
    while not stop.is_set():
        status = await ingest.status(run.id)
        if status is None:
            return
        meter.add(time.monotonic(), status.done)
        yield status
        if is_finished(status):
            return
        job = _waiting_scan_job(status.run)
        if job is not None and job.attempt not in told and loop.time() - started > SCAN_WAIT_HINT:
            told.add(job.attempt)
            print(f"mediajobs: {_scan_waits(run.id, job)}", file=sys.stderr)
        if (status.done, status.total) != last:
            last, moved = (status.done, status.total), loop.time()
        elif status.run.state != "scanning" and loop.time() - moved > STALL_SECONDS:
            stranded = await ingest.stranded(run.id)
            if stranded and stranded >= status.total - status.done:
                print(
                    f"mediajobs: {stranded} files of run {run.id} are stranded (their batch "
                    f"jobs ended without them): mediajobs ingest retry {run.id} --stranded",
                    file=sys.stderr,
                )
                return
            moved = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FOLLOW_INTERVAL)


async def _follow_json(
    ingest: IngestRepository, run: IngestRun, meter: RateMeter, stop: asyncio.Event
) -> None:
    async for status in _looks(ingest, run, meter, stop):
        print_json(status_json(status, meter.rate, run_eta(status, meter.rate)))
        sys.stdout.flush()


async def _follow_bar(
    ingest: IngestRepository, run: IngestRun, meter: RateMeter, stop: asyncio.Event
) -> None:
    console = Console()
    progress = _progress_bar(console)
    bar = next(column for column in progress.columns if isinstance(column, BarColumn))
    with progress:
        task = progress.add_task("scanning", total=None, rate="-", eta="-", failures="")
        async for status in _looks(ingest, run, meter, stop):
            bar.bar_width = _bar_width(console.width)  # the terminal may have been resized
            progress.update(task, **_bar_fields(status, meter, console.width))
    final = await ingest.status(run.id)
    if final is not None:
        print(_summary(final, overall_rate(final)))


def _bar_width(width: int) -> int:
    """Characters of the bar itself on a terminal ``width`` columns wide (narrower below
    100 columns, so the failure count fits on 80 at 5M files)."""
    return 20 if width >= 100 else 12


def _progress_bar(console: Console) -> Progress:
    """The bar ``ingest run`` draws: state, bar, files done/total, rate, ETA, failures.
    No column wraps; ``_bar_fields`` cuts the failures to what the terminal has left."""

    def fixed() -> Column:
        return Column(no_wrap=True)

    return Progress(
        TextColumn("[bold]{task.description}", table_column=fixed()),
        BarColumn(bar_width=_bar_width(console.width), table_column=fixed()),
        MofNCompleteColumn(table_column=fixed()),
        TextColumn("{task.fields[rate]}", table_column=fixed()),
        TextColumn("ETA {task.fields[eta]}", table_column=fixed()),
        TextColumn("{task.fields[failures]}", table_column=fixed()),
        console=console,
    )


def _bar_fields(status: RunStatus, meter: RateMeter, width: int) -> dict[str, Any]:
    """What the bar shows of one look at the run, on a terminal ``width`` columns wide: the
    failures (``N failed: code=n ...``) are cut with an ellipsis to the room the other
    columns leave, so the bar and the counts stay on 80 columns whatever the codes."""
    rate = meter.rate
    left = run_eta(status, rate)
    fields: dict[str, Any] = {
        "description": run_state(status.run, status.total, status.done).replace("_", " "),
        "completed": status.done,
        "total": status.total or None,
        "rate": "-" if rate is None else f"{rate:.1f} files/s",
        "eta": _duration(left),
    }
    total = str(status.total) if status.total else "?"
    counts = len(total) * 2 + 1  # MofNCompleteColumn pads the done count to the total's width
    used = len(fields["description"]) + _bar_width(width) + counts + len(fields["rate"])
    used += len("ETA ") + len(fields["eta"]) + 6  # a space between each two of six columns
    fields["failures"] = _cut(_failures(status), width - used)
    return fields


def _cut(text: str, room: int) -> str:
    """``text`` in at most ``room`` characters: cut with an ellipsis when longer."""
    if len(text) <= room:
        return text
    return text[: room - 1] + "…" if room > 1 else ""


def cmd_ingest_runs(args: argparse.Namespace, settings: Settings) -> int:
    """List the newest runs (of ``--owner``), newest first: id, start, owner, state
    (``ingest.runs.run_state``), files done of total and failed, source (tab-separated;
    ``--json``: a JSON line per run)."""
    listed = with_pool(
        settings,
        lambda pool: IngestRepository(pool).list_runs(owner_id=args.owner, limit=args.limit),
    )
    if not args.json:
        _tab_separated(["run", "created", "owner", "state", "done", "total", "failed", "source"])
    for run, total, done, failed in listed:
        if args.json:
            print_json(
                {
                    "runId": str(run.id),
                    "createdAt": run.created_at.isoformat(),
                    "ownerId": run.owner_id,
                    "state": run_state(run, total, done),
                    "done": done,
                    "total": total,
                    "failed": failed,
                    "source": run.source_uri,
                }
            )
        else:
            created = run.created_at.isoformat(timespec="seconds")
            state = run_state(run, total, done)
            row = [str(run.id), created, run.owner_id, state, str(done), str(total)]
            _tab_separated([*row, str(failed), run.source_uri])
    return 0


def cmd_ingest_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print a run's counts by status and error code, its rate and ETA, its stranded
    files and those of its source's other runs (open, but their batch job ended: ``ingest
    retry`` queues them again), and the failed files of its source, whichever of its runs
    failed them (what ``ingest report`` lists and ``ingest retry`` queues)."""

    async def look(pool: Pool) -> _Looked | None:
        ingest = IngestRepository(pool)
        run = await _the_run(ingest, args.run_id)
        status = None if run is None else await ingest.status(run.id)
        if status is None:
            return None
        run_id, finished = status.run.id, is_finished(status)
        return _Looked(
            status,
            stranded=await ingest.source_stranded(status.run),
            source_failed=await ingest.source_failures(status.run.source_id),
            waiting=(0, None) if finished else await ingest.waiting_batches(run_id),
        )

    looked = with_pool(settings, look)
    if looked is None:
        return _no_run(args.run_id)
    status, stranded = looked.status, looked.stranded
    waiting, waiting_error = looked.waiting
    run_id = status.run.id
    rate = overall_rate(status)
    left = run_eta(status, rate)
    if args.json:
        shown = {
            **status_json(status, rate, left),
            "stranded": stranded[1],
            "sourceStranded": stranded[0],
        }
        print_json(
            {
                **shown,
                "scanJob": _scan_job_json(status.run),
                "waitingBatches": {"batches": waiting, "error": waiting_error},
                "sourceFailedByCode": looked.source_failed,
            },
            indent=2,
        )
        return 0
    print(_summary(status, rate))
    job = _waiting_scan_job(status.run)
    if job is not None:
        print(f"  scan       {_scan_waits(run_id, job)}")
    if waiting:
        error = waiting_error or {}
        print(
            f"  waiting    {waiting} batches wait to be retried; the last error: "
            f"{error.get('code', 'unknown')}: {_one_line(str(error.get('message', '')))}"
        )
    source_stranded, run_stranded = stranded
    retry = _retry_command(status.run, " --stranded")
    if run_stranded:
        print(f"  stranded   {run_stranded} (their batch jobs ended): {retry}")
    if source_stranded > run_stranded:
        print(
            f"  + {source_stranded - run_stranded} stranded files of this source from other "
            f"runs (their batch jobs ended): {retry}"
        )
    for name, files in status.counts.items():
        print(f"  {name:<10} {files}")
    for code, files in status.failed_by_code.items():
        print(f"  failed: {code:<24} {files}")
    others = sum(looked.source_failed.values()) - status.counts.get("failed", 0)
    if others > 0:
        print(
            f"  + {others} failed files of this source from other runs (mediajobs ingest "
            f"report {run_id} --failed; {_retry_command(status.run)})"
        )
    if not is_finished(status):
        print(f"  ETA {_duration(left)}")
    return 0


def _retry_command(run: IngestRun, option: str = "") -> str:
    """The ``ingest retry`` (with ``option``) of ``run``'s source: through ``run``, or,
    when another owner claimed the source since (``SourceReowned``), through one of that
    owner's runs."""
    if run.owner_id == run.source_owner_id:
        return f"mediajobs ingest retry {run.id}{option}"
    owner = shlex.quote(run.source_owner_id)
    return (
        f"the source belongs to {owner} now: mediajobs ingest retry RUN{option}, RUN one of "
        f"mediajobs ingest runs --owner {owner}"
    )


@dataclass(frozen=True)
class _Looked:
    """What ``ingest status`` reads of a run: its status, its source's stranded files and
    how many of them are the run's, its source's failures per code, its batches waiting for
    a retry (how many, the last error)."""

    status: RunStatus
    stranded: tuple[int, int]
    source_failed: dict[str, int]
    waiting: tuple[int, Mapping[str, Any] | None]


def _scan_job_json(run: IngestRun) -> dict[str, Any] | None:
    """The run's scan job as ``ingest status --json`` shows it (its id, for ``jobs
    cancel``; null once archived)."""
    job = run.scan_job
    if job is None:
        return None
    return {
        "id": str(run.scan_job_id),
        "state": job.state,
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "error": None if job.error is None else dict(job.error),
    }


def cmd_ingest_retry(args: argparse.Namespace, settings: Settings) -> int:
    """Queue the failed and stranded files of the run's source again, in new batches of
    the run (``--code``: only the files failed with that code, exit 1 with nothing queued
    when no failed file has it; ``--stranded``: only the stranded files); print how many as
    JSON."""

    async def retry(pool: Pool) -> tuple[IngestRun, int | list[str]] | str | None:
        ingest = IngestRepository(pool)
        run = await _the_run(ingest, args.run_id)
        if run is None:
            return None
        if args.code is not None:
            codes = await ingest.source_failures(run.source_id)
            if args.code not in codes:
                return run, sorted(codes)
        try:
            queued = await retry_failed(
                ingest, JobQueue(pool), run, code=args.code, stranded_only=args.stranded
            )
        except SourceReowned as exc:
            return f"{exc} ({exc.code})"
        return run, queued

    done = with_pool(settings, retry)
    if done is None:
        return _no_run(args.run_id)
    if isinstance(done, str):
        print(f"mediajobs: {done}", file=sys.stderr)
        return 1
    run, files = done
    if isinstance(files, list):
        print(
            f"mediajobs: no failed file of {run.source_uri} has the code {args.code!r}; "
            f"its codes: {', '.join(files) or 'none'}",
            file=sys.stderr,
        )
        return 1
    print_json(
        {"runId": str(run.id), "requeued": files, "code": args.code, "stranded": args.stranded}
    )
    return 0


def cmd_ingest_report(args: argparse.Namespace, settings: Settings) -> int:
    """Print each failed file of the run's source, whichever of its runs failed it: path,
    error code and message (tab-separated, or CSV with ``--csv``), a page at a time (a
    million failures stream)."""
    writer: Callable[[list[str]], object] = (
        csv.writer(sys.stdout).writerow if args.csv else _tab_separated
    )

    async def report(pool: Pool) -> bool:
        ingest = IngestRepository(pool)
        run = await _the_run(ingest, args.run_id)
        if run is None:
            return False
        writer(["path", "code", "message"])
        after: str | None = None
        while True:
            page = await ingest.failed_files(run.source_id, after=after, limit=REPORT_PAGE)
            for file in page:
                writer([file.path, file.error_code or "", _one_line(file.error_message)])
            if len(page) < REPORT_PAGE:
                return True
            after = page[-1].path

    return 0 if with_pool(settings, report) else _no_run(args.run_id)


async def _the_run(ingest: IngestRepository, run_id: uuid.UUID | None) -> IngestRun | None:
    if run_id is None:
        return await ingest.latest_run()
    return await ingest.get_run(run_id)


def _no_run(run_id: uuid.UUID | None) -> int:
    print(
        f"mediajobs: no ingest run {run_id}" if run_id else "mediajobs: no ingest run yet",
        file=sys.stderr,
    )
    return 1


def _in_library(status: RunStatus) -> str:
    """Indexed files, with how many of them image understanding has finished."""
    understood = status.counts.get("ai_done", 0)
    indexed = status.counts.get("indexed", 0) + understood
    return f"{indexed} ({understood} understood)" if understood else str(indexed)


def _summary(status: RunStatus, rate: float | None) -> str:
    run = status.run
    state = run_state(run, status.total, status.done)
    if state == "scan_failed":
        state = _scan_failure(run)
    elif state == "no_images":
        state = "found no approved file"
    line = (
        f"run {run.id} ({run.source_uri}): {state}; {status.done} of {status.total} files done"
        f", {_in_library(status)} indexed, {status.counts.get('failed', 0)} failed"
    )
    if rate is not None:
        line += f", {rate:.1f} files/s"
    return line + (f"; scan: {run.scanned} files, {run.skipped} skipped, {run.scan_errors} errors")


def _failures(status: RunStatus) -> str:
    """``N failed: code=n ...`` (empty without failures), for the bar's last column."""
    failed = sum(status.failed_by_code.values())
    if not failed:
        return ""
    codes = " ".join(f"{code}={files}" for code, files in status.failed_by_code.items())
    return f"{failed} failed: {codes}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _tab_separated(row: list[str]) -> None:
    """One line of tab-separated values; a backslash, tab or line break inside a value is
    written as ``\\``, ``\t``, ``\n`` or ``\r`` (file names may hold them)."""
    print("\t".join(value.translate(_TSV_ESCAPES) for value in row))


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
