"""`MEDIAJOBS_SKIP_BROWSER=1`: `make test` neither installs chromium nor runs the browser
tests, except in CI (`MEDIAJOBS_REQUIRE_SERVICES=1`), which always runs them.

`make browser` runs in a sandbox: a PATH without chromium whose `apt-get` and `id` are stubs
(the stub apt-get records its arguments), so nothing is installed for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.serving import clean_env

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make on this machine")


def make_browser(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`make -s browser` with stubs; the result and what apt-get was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")  # root: no sudo
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    full_env = clean_env(PATH=str(bin_dir), **env)  # none of ours but ``env``
    assert MAKE is not None
    done = subprocess.run(
        [MAKE, "-s", "-C", str(REPO), "browser"],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done, calls.read_text() if calls.exists() else ""


def test_make_browser_installs_nothing_when_the_browser_tests_are_skipped(tmp_path):
    done, apt = make_browser(tmp_path, MEDIAJOBS_SKIP_BROWSER="1")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (
        0,
        "MEDIAJOBS_SKIP_BROWSER=1: chromium not installed, the browser tests are skipped",
        "",
    )
    assert apt == ""


def test_make_browser_says_what_it_installs_and_how_to_skip_it(tmp_path):
    done, apt = make_browser(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        "installing Debian's chromium (about 400 MB, apt as root) for the browser tests; "
        "MEDIAJOBS_SKIP_BROWSER=1 make test skips them"
    )
    assert apt.splitlines() == ["install -y -q --no-install-recommends chromium"]


def test_make_browser_in_ci_installs_chromium_even_when_asked_to_skip(tmp_path):
    done, apt = make_browser(tmp_path, MEDIAJOBS_SKIP_BROWSER="1", MEDIAJOBS_REQUIRE_SERVICES="1")
    assert done.returncode == 0, done.stderr
    assert apt.splitlines() == ["install -y -q --no-install-recommends chromium"]


def test_the_browser_tests_skip_with_the_switch_and_say_why():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/acceptance/test_page.py",
        ],
        cwd=REPO,
        env=clean_env(MEDIAJOBS_SKIP_BROWSER="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "SKIPPED" in done.stdout and "MEDIAJOBS_SKIP_BROWSER=1" in done.stdout
    assert " passed" not in done.stdout and " failed" not in done.stdout
