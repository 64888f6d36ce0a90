"""The README's 60-second tour, run as written: its shell blocks are read from README.md (so
the test breaks when the README drifts) and pasted, command by command, into shells against
a real `mediajobs dev` started the way `make dev` starts it, in a fresh directory."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port
from tests.support.serving import clean_env, wait_http

README = REPO / "README.md"
RC = "__tour_rc__"


def tour_blocks() -> list[tuple[str, str]]:
    """The tour's shell blocks in order: ``[(terminal number, code)]``."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## 60-second tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\*\*Terminal (\d)\*\*.*?^```sh\n(.*?)^```", section, re.M | re.S)


def commands(code: str) -> list[str]:
    """The commands of a block as a shell reads them: continued lines joined, comment-only
    and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


class Shell:
    """One bash, fed a command at a time like a terminal someone pastes into."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            ["bash"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, command: str, timeout: float = 90) -> tuple[int, str]:
        """Run one command; its exit status and output."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f'{command}\necho "{RC} $?"\n')
        self._proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the shell ended during {command!r}: {''.join(output)}")
            if line.startswith(RC):
                return int(line.split()[1]), "".join(output)
            output.append(line)

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)
        self._proc.stdin.close()
        self._proc.stdout.close()


@contextlib.contextmanager
def make_dev(workdir: Path, port: int) -> Iterator[Path]:
    """What `make dev` runs (`.venv/bin/mediajobs dev`), in ``workdir``, nothing configured
    but the port; yields its log file."""
    log_path = workdir / "dev.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(workdir / ".venv" / "bin" / "mediajobs"), "dev"],
            cwd=workdir,
            env=clean_env(MEDIAJOBS_PORT=str(port)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", 90)
            yield log_path
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_the_tour_blocks_name_their_terminals_and_terminal_1_is_make_dev():
    blocks = tour_blocks()
    assert [terminal for terminal, _ in blocks] == ["1", "2", "3", "2"]
    assert commands(blocks[0][1]) == ["make dev"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "\ndev: $(STAMP)\n\t$(BIN)/mediajobs dev\n" in makefile
    page = (REPO / "src/mediajobs/service/static/app.js").read_text(encoding="utf-8")
    assert 'fetch("/dev/token", { method: "POST" })' in page  # the page signs in as "dev"
    assert "mediajobs token dev" in blocks[2][1] and "mediajobs token dev" in blocks[3][1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_readme_tour_works_pasted_line_by_line(tmp_path):
    blocks = tour_blocks()
    setup, watch, upload = (commands(code) for _, code in blocks[1:])
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port = free_port()
    # `export MEDIAJOBS_PORT=...` as the tour says for another port; a TMPDIR of its own
    terminal_env = clean_env(MEDIAJOBS_PORT=str(port), TMPDIR=str(tmp_path))
    base = f"http://127.0.0.1:{port}"

    with make_dev(workdir, port) as dev_log:
        transcript: list[str] = []
        terminal_2 = Shell(workdir, terminal_env)
        terminal_3 = None
        try:
            results = []
            for command in setup:
                rc, output = terminal_2.run(command)
                transcript.append(f"$ {command}\n{output}")
                results.append((rc, output))
            assert [rc for rc, _ in results] == [0] * len(setup), "\n".join(transcript)
            assert json.loads(results[1][1])["status"] == "ready"
            assert json.loads(results[3][1])["state"] == "succeeded"

            [follow] = watch
            events_path = workdir / "terminal-3.out"
            with events_path.open("w") as events_out:
                terminal_3 = subprocess.Popen(
                    ["bash", "-c", follow],
                    cwd=workdir,
                    env=terminal_env,
                    stdout=events_out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 30
            while "retry:" not in events_path.read_text():  # the stream is registered
                assert terminal_3.poll() is None, events_path.read_text()
                assert time.monotonic() < deadline, events_path.read_text()
                time.sleep(0.1)

            outputs = []
            for command in upload:
                rc, output = terminal_2.run(command)
                transcript.append(f"$ {command}\n{output}")
                assert rc == 0, "\n".join(transcript)
                outputs.append(output)
            done = json.loads(outputs[6])
            waited = json.loads(outputs[7])
            assert (waited["id"], waited["state"]) == (done["jobId"], "succeeded")
            library = json.loads(outputs[8])
            [item] = [media for media in library["items"] if media["id"] == done["mediaId"]]
            assert item["status"] == "ready" and item["variants"]

            # The page's user (POST /dev/token, as app.js does) sees the photo.
            page_token = httpx.post(f"{base}/dev/token", timeout=10).json()["token"]
            page_view = httpx.get(
                f"{base}/media", headers={"Authorization": f"Bearer {page_token}"}, timeout=10
            ).json()
            assert done["mediaId"] in [media["id"] for media in page_view["items"]]
            public = json.loads(outputs[10])  # the collection's public read, no token
            assert public["profileImage"]["id"] == done["mediaId"]
            assert [media["id"] for media in public["items"]] == [done["mediaId"]]

            # Terminal 3 saw it through to the end.
            deadline = time.monotonic() + 30
            while True:
                seen = events_path.read_text()
                complete = [
                    json.loads(line.removeprefix("data: "))
                    for block in seen.split("\n\n")
                    if "event: upload_complete" in block
                    for line in block.splitlines()
                    if line.startswith("data: ")
                ]
                if any(event.get("jobId") == done["jobId"] for event in complete):
                    break
                assert time.monotonic() < deadline, seen
                time.sleep(0.1)
            assert "event: upload_started" in seen
            deadline = time.monotonic() + 30
            while "event: collection_updated" not in events_path.read_text():
                assert time.monotonic() < deadline, events_path.read_text()
                time.sleep(0.1)
        finally:
            terminal_2.close()
            if terminal_3 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(terminal_3.pid, signal.SIGTERM)
                terminal_3.wait(timeout=10)
    everything = "\n".join(transcript) + dev_log.read_text()
    assert "Traceback" not in everything, everything


@pytest.mark.timeout(120)
def test_the_tour_without_make_dev_fails_step_by_step_in_words_not_tracebacks(tmp_path):
    blocks = tour_blocks()
    setup, watch, upload = (commands(code) for _, code in blocks[1:])
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    terminal = Shell(workdir, clean_env(MEDIAJOBS_PORT=str(free_port()), TMPDIR=str(tmp_path)))
    transcript: dict[str, tuple[int, str]] = {}
    try:
        for command in [*setup, *watch, *upload]:
            transcript[command] = terminal.run(command)
    finally:
        terminal.close()
    shown = "\n".join(f"$ {command}\n[{rc}] {out}" for command, (rc, out) in transcript.items())
    assert "Traceback" not in shown, shown
    failed = [command for command, (rc, _) in transcript.items() if rc != 0]
    # Every step that needs the server fails, and says why in a line or two.
    for needs_server in ("/readyz", "jobs ping", "jobs stats", "/events", "/upload/init", "PUT"):
        assert any(needs_server in command for command in failed), (needs_server, shown)
    for command in failed:
        assert 1 <= len(transcript[command][1].strip().splitlines()) <= 3, shown
    [ping] = [out for command, (_, out) in transcript.items() if "jobs ping" in command]
    assert "cannot reach the database at DATABASE_URL=" in ping and "make dev" in ping
