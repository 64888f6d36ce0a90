"""What the `mediajobs` command says to a person: an unreachable database in one line, the
store it checked, the commands it lists, and one (camelCase) naming in every JSON it prints."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from mediajobs.cli import build_parser
from mediajobs.queue.models import Job
from mediajobs.service.jobs import job_json
from tests.conftest import free_port
from tests.support.serving import Serving, clean_env, mediajobs
from tests.support.sse import realtime_env

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# A run that waits for the pool's 10 s connect timeout is killed before it can answer.
HANG_GUARD = 8.0

DATABASE_COMMANDS = [
    ("jobs", "stats"),
    ("jobs", "show", str(uuid.UUID(int=1))),
    ("jobs", "ping"),
    ("migrate",),
    ("policy", "show"),
    ("events", "prune"),
    ("worker", "--burst"),
]


def _keys(value: object) -> list[str]:
    """Every key of every object in a JSON value (nested), except inside free-form payloads."""
    if isinstance(value, dict):
        keys = [str(key) for key in value]
        for key, inner in value.items():
            if key not in ("payload", "result", "error"):
                keys += _keys(inner)
        return keys
    if isinstance(value, list):
        return [key for item in value for key in _keys(item)]
    return []


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("unreachable", ["closed-port", "missing-socket-dir", "silent-server"])
def test_an_unreachable_database_fails_at_once_in_one_line_naming_database_url(
    command, unreachable, tmp_path
):
    silent = socket.socket()  # accepts TCP connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    urls = {
        "closed-port": f"postgresql://postgres@127.0.0.1:{free_port()}/mediajobs",
        "missing-socket-dir": f"postgresql://postgres:@/mediajobs?host={tmp_path / 'gone' / 'pg'}",
        "silent-server": f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/mediajobs",
    }
    url = urls[unreachable]
    env = clean_env(DATABASE_URL=url, MEDIAJOBS_JWT_SECRET="s" * 40)
    with silent:
        result = mediajobs(*command, env=env, timeout=HANG_GUARD)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no driver warnings, no traceback
    assert lines[0].startswith(f"mediajobs: cannot reach the database at DATABASE_URL={url}: ")
    assert "in development, `make dev` must be running" in lines[0]
    reason = {
        "closed-port": "Connection refused",
        "missing-socket-dir": "No such file or directory",
        "silent-server": "timeout expired",
    }[unreachable]
    assert reason in lines[0]


def test_an_unreachable_database_in_production_gives_no_make_dev_hint():
    url = f"postgresql://app:secret@127.0.0.1:{free_port()}/mediajobs"
    env = clean_env(
        DATABASE_URL=url,
        REDIS_URL="redis://127.0.0.1:6379/0",
        GCS_BUCKET="media",
        MEDIAJOBS_ENV="production",
        MEDIAJOBS_JWT_SECRET="x" * 40,
    )
    result = mediajobs("jobs", "stats", env=env, timeout=HANG_GUARD)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "DATABASE_URL=postgresql://app:***@127.0.0.1" in line and "secret" not in line
    assert "make dev" not in line


def test_an_unset_database_url_in_development_says_what_to_export(tmp_path):
    data_dir = tmp_path / "data"
    result = mediajobs("jobs", "stats", env=clean_env(MEDIAJOBS_DATA_DIR=str(data_dir)))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mediajobs: configuration error: DATABASE_URL: is required for this command "
        "(for the database of a running `make dev`: "
        f'export DATABASE_URL="postgresql://postgres:@/mediajobs?host={data_dir / "pg"}")'
    )


def test_help_lists_every_command_with_its_help_line():
    shown = mediajobs("--help", env=clean_env())
    assert shown.returncode == 0
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    names = [choice.dest for choice in commands._choices_actions]  # type: ignore[attr-defined]
    assert {"policy", "storage", "jobs", "token", "events", "dev", "serve", "worker"} <= set(names)
    for name in names:
        assert re.search(rf"^\s+{name}\s+\S", shown.stdout, re.MULTILINE), (name, shown.stdout)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_storage_check_in_development_probes_the_running_servers_memory_store(
    database_url, redis_url
):
    env = realtime_env(database_url, redis_url)
    with Serving(env, command="dev") as serving:
        done = mediajobs("storage", "check", env={**env, "MEDIAJOBS_PORT": str(serving.port)})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"the memory store lives in the server process: checking the one at {serving.base}/storage"
    )
    assert lines[1] == "storage memory://memory: ok"
    [write] = [line for line in lines if line.strip().startswith("ok   write:")]
    key = write.split(" to ")[-1]
    assert key.startswith("_mediajobs/check/")
    assert "ok   read: same bytes back" in done.stdout
    assert "skip list: the server lists its memory store only to itself" in done.stdout
    assert "ok   delete: probe removed" in done.stdout
    # The server itself stored, served and deleted the probe.
    assert re.search(rf'"PUT /storage/{re.escape(key)}\?[^"]*" 200', serving.output)
    assert re.search(rf'"GET /storage/{re.escape(key)} [^"]*" 200', serving.output)
    assert re.search(rf'"DELETE /storage/{re.escape(key)}\?[^"]*" 204', serving.output)
    assert re.search(rf'"HEAD /storage/{re.escape(key)} [^"]*" 404', serving.output)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_storage_check_against_a_server_with_another_key_says_so(database_url, redis_url):
    env = realtime_env(database_url, redis_url)
    with Serving(env, command="dev") as serving:
        other = {**env, "MEDIAJOBS_PORT": str(serving.port), "MEDIAJOBS_JWT_SECRET": "o" * 40}
        done = mediajobs("storage", "check", env=other)
    assert done.returncode == 1
    assert "FAIL write: StorageDenied" in done.stdout
    assert done.stdout.splitlines()[-1] == (
        f"the server at {serving.base}/storage refused the signed probe: it signs with another "
        "key (MEDIAJOBS_JWT_SECRET, or the jwt-secret file of its MEDIAJOBS_DATA_DIR): run "
        "this with the server's settings"
    )


def test_storage_check_in_development_without_a_server_says_nothing_answers(tmp_path):
    port = free_port()
    env = clean_env(MEDIAJOBS_PORT=str(port), MEDIAJOBS_DATA_DIR=str(tmp_path))
    done = mediajobs("storage", "check", env=env)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    where = f"http://127.0.0.1:{port}/storage"
    assert lines[0] == f"the memory store lives in the server process: checking the one at {where}"
    assert lines[1] == "storage memory://memory: FAILED"
    assert "FAIL write: StorageUnavailable" in done.stdout
    assert lines[-1] == (
        f"nothing answers at {where}: the memory store is served only while `make dev` "
        "(or `mediajobs serve`) runs; start it, or set MEDIAJOBS_PORT to its port"
    )


def test_jobs_show_prints_the_apis_job_in_camel_case_with_the_operators_fields(database_url):
    env = clean_env(DATABASE_URL=database_url)
    enqueued = mediajobs("jobs", "enqueue", "media.process", "--owner", "u1", env=env)
    job_id = enqueued.stdout.strip()
    shown = json.loads(mediajobs("jobs", "show", job_id, env=env).stdout)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    api = job_json(Job.from_row(row))
    assert {key: shown[key] for key in api} == api  # the API's names and values
    assert (shown["ownerId"], shown["cancelRequested"], shown["leaseOwner"]) == ("u1", False, None)
    assert [key for key in shown if not CAMEL.match(key)] == []


def test_every_json_the_cli_prints_uses_camel_case(database_url):
    env = clean_env(DATABASE_URL=database_url)
    job_id = mediajobs("jobs", "enqueue", "test.none", "--delay", "600", env=env).stdout.strip()
    printed = {
        "config": mediajobs("config", env=env),
        "jobs show": mediajobs("jobs", "show", job_id, env=env),
        "jobs stats": mediajobs("jobs", "stats", env=env),
        "policy show": mediajobs("policy", "show", env=env),
        "policy set": mediajobs("policy", "set", "maxBatchSize=30", env=env),
        "worker": mediajobs("worker", "--burst", "--kinds", "system.ping", env=env),
        "jobs wait": mediajobs("jobs", "wait", job_id, "--timeout", "0", env=env),
    }
    for name, result in printed.items():
        text = result.stdout
        if name == "worker":
            text = text.strip().splitlines()[-1]
        keys = _keys(json.loads(text))
        assert keys, name
        assert [key for key in keys if not CAMEL.match(key)] == [], (name, text)
    worker = json.loads(printed["worker"].stdout.strip().splitlines()[-1])
    assert set(worker) >= {"claimed", "succeeded", "handedBack", "recovered"}
    assert json.loads(printed["policy set"].stdout)["maxBatchSize"] == 30
    assert printed["jobs wait"].returncode == 1
    assert f"job {job_id} still queued after 0s" in printed["jobs wait"].stderr


def test_jobs_wait_returns_the_finished_job_and_its_outcome(database_url):
    env = clean_env(DATABASE_URL=database_url)
    job_id = mediajobs("jobs", "enqueue", "system.ping", env=env).stdout.strip()
    mediajobs("worker", "--burst", "--kinds", "system.ping", env=env)
    waited = mediajobs("jobs", "wait", job_id, env=env)
    assert waited.returncode == 0, waited.stderr
    shown = json.loads(waited.stdout)
    assert (shown["id"], shown["state"]) == (job_id, "succeeded")
    cancelled = mediajobs("jobs", "enqueue", "system.ping", "--delay", "600", env=env)
    other = cancelled.stdout.strip()
    mediajobs("jobs", "cancel", other, env=env)
    waited = mediajobs("jobs", "wait", other, env=env)
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["state"] == "cancelled"
    assert waited.stderr.startswith(f"job {other} cancelled: ")


@pytest.mark.parametrize("user", ["x" * 256, "a\x01b", ""])
def test_token_refuses_a_user_id_the_api_would_refuse(user: str) -> None:
    done = mediajobs("token", user, env=clean_env(MEDIAJOBS_JWT_SECRET="s" * 48))
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith("mediajobs: configuration error: USER: a user id is"), done.stderr


def test_token_issues_any_sub_an_identity_provider_does() -> None:
    done = mediajobs("token", "auth0|5f7c8ec7", env=clean_env(MEDIAJOBS_JWT_SECRET="s" * 48))
    assert done.returncode == 0 and done.stdout.count(".") == 2, done


@pytest.mark.parametrize(
    ("variable", "value"), [("DATABASE_URL", "garbage://"), ("REDIS_URL", "garbage")]
)
def test_a_malformed_url_is_a_one_line_configuration_error(variable: str, value: str) -> None:
    done = mediajobs("jobs", "stats", env=clean_env(**{variable: value}))
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"mediajobs: configuration error: {variable}: "), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_unmigrated_database_says_to_migrate(empty_database_url: str) -> None:
    done = mediajobs("jobs", "stats", env=clean_env(DATABASE_URL=empty_database_url))
    assert done.returncode == 1, done
    assert "run `mediajobs migrate` first" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_on_a_database_behind_its_migrations_says_to_migrate_and_exits(
    empty_database_url: str,
) -> None:
    env = clean_env(DATABASE_URL=empty_database_url, REDIS_URL="redis://127.0.0.1:6379/0")
    done = mediajobs("worker", "--burst", env=env)  # no tables at all
    assert done.returncode == 1, done
    assert "run `mediajobs migrate` first" in done.stderr and "Traceback" not in done.stderr
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
        conn.execute("INSERT INTO schema_migrations VALUES ('0001_jobs')")
    behind = mediajobs("worker", "--burst", env=env)
    assert behind.returncode == 1, behind
    assert "lacks migration(s) 0002_stable_plans" in behind.stderr, behind.stderr
    assert "run `mediajobs migrate` first" in behind.stderr and "Traceback" not in behind.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "enqueue", "x", "--max-attempts", "0"),
        ("jobs", "enqueue", "x", "--max-attempts", "99999999999"),
        ("jobs", "enqueue", "x", "--delay", "-5"),
        ("jobs", "enqueue", "x", "--delay", "nan"),
        ("jobs", "enqueue", "x", "--delay", "1e14"),
        ("worker", "--concurrency", "0", "--burst"),
    ],
)
def test_out_of_range_flags_are_usage_errors_not_tracebacks(args: tuple[str, ...]) -> None:
    done = mediajobs(*args, env=clean_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"))
    assert done.returncode == 2, done
    assert "error: argument --" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_reader_that_stops_reading_ends_the_command_quietly() -> None:
    """`mediajobs config | head -0`: the pipe's reader is gone before the command writes;
    the command ends with 141 (128 + SIGPIPE, as a shell reports it) and no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediajobs", "config"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the interpreter has even started
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"Exception ignored" not in err, err
