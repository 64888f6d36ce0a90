"""What `mediajobs ingest` decides before anything is recorded, and how it reports."""

from __future__ import annotations

import pytest

from mediajobs.cli import build_parser
from mediajobs.cli.ingest import _tab_separated
from mediajobs.ingest.runs import RateMeter, overlaps_own_keys
from mediajobs.ingest.source import Source
from mediajobs.storage import MemoryStore

ACTIVE = MemoryStore("http://127.0.0.1:9/storage", bucket="media")
OTHER = MemoryStore("http://127.0.0.1:9/storage", bucket="archive")


@pytest.mark.parametrize(
    "owner",
    [
        *("", "   ", "a\nb", "x" * 256, " dev", "dev ", "\u200b", "a\u202eb", "a\u00a0b"),
        *("\u3164", "alice\u3164", "\u2800", "\u115f", "a\u034fb", "a\U000e0041"),
    ],
)
def test_an_owner_must_be_a_user_id(owner: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["ingest", "run", "/photos", "--owner", owner])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "is not a user id" in err
    assert "x" * 61 not in err  # a long one is cut


@pytest.mark.parametrize("owner", ["dev", "user 7", "Zoë", "李雷", "auth0|5f7c8ec7"])
def test_an_owner_of_any_script_with_inner_spaces_is_taken(owner: str) -> None:
    args = build_parser().parse_args(["ingest", "run", "/photos", "--owner", owner])
    assert args.owner == owner


@pytest.mark.parametrize(
    ("store", "prefix", "refused"),
    [
        (ACTIVE, "", True),  # the whole active bucket holds media/ and catalog/
        (ACTIVE, "media/", True),
        (ACTIVE, "media/u1/images/", True),
        (ACTIVE, "catalog/watermarked/", True),
        (ACTIVE, "legacy/photos/", False),
        (ACTIVE, "catalogue/", False),
        (OTHER, "", False),
        (OTHER, "media/", False),
    ],
)
def test_a_source_holding_our_own_objects_is_refused(
    store: MemoryStore, prefix: str, refused: bool
) -> None:
    source = Source(f"memory://{store.bucket}/{prefix}", store=store, prefix=prefix)
    reason = overlaps_own_keys(source, ACTIVE, ["catalog"])
    assert (reason is not None) is refused
    if reason is not None:
        assert "its own objects" in reason


def test_a_directory_source_never_overlaps() -> None:
    source = Source("file:///photos", directory=None)
    assert overlaps_own_keys(source, ACTIVE, ["catalog"]) is None


def test_the_rate_meter_gives_files_per_second_and_an_eta() -> None:
    meter = RateMeter(window=10)
    assert meter.rate is None and meter.eta(10) is None
    meter.add(0.0, 0)
    meter.add(2.0, 20)
    assert meter.rate == 10.0
    assert meter.eta(50) == 5.0
    assert meter.eta(0) == 0.0
    for second in range(3, 30):
        meter.add(float(second), 20)  # stalled: the window forgets the burst
    assert meter.rate == 0.0 and meter.eta(5) is None


def test_a_tab_separated_report_escapes_what_file_names_may_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _tab_separated(["a\tb\nc\\d\re.jpg", "corrupt_image"])
    assert capsys.readouterr().out == "a\\tb\\nc\\\\d\\re.jpg\tcorrupt_image\n"
