"""The `mediajobs` command as real processes: dev mode, serve, migrate, config refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from mediajobs.db.migrate import available_migrations
from tests.conftest import free_port
from tests.support.serving import Serving, clean_env, mediajobs, wait_http
from tests.support.workers import REPO


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_runs_api_and_worker_with_nothing_else_configured(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    env = clean_env(MEDIAJOBS_PORT=str(port), MEDIAJOBS_DATA_DIR=str(data_dir))
    env.pop("XDG_RUNTIME_DIR", None)  # as in a container or an ssh session without one
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediajobs", "dev"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz", 90).json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"postgres": "ok", "redis": "ok", "storage": "ok"},
            # the embedded Postgres ships pgvector; no model is configured
            "understanding": {
                "semantic": False,
                "model": None,
                "pgvector": "0.6.2",
                "index": None,
                "reason": "no CLIP model is configured (MEDIAJOBS_CLIP_MODEL_DIR is unset)",
            },
        }
        missing = httpx.get(f"http://127.0.0.1:{port}/no/such/route", timeout=5)
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}

        # The embedded Postgres is real: another process reaches it, and the dev worker
        # answers a ping job.
        database_url = f"postgresql://postgres:@/mediajobs?host={data_dir / 'pg'}"
        ping = mediajobs(
            "jobs", "ping", "--timeout", "20", env=clean_env(DATABASE_URL=database_url)
        )
        assert ping.returncode == 0, ping.stderr
        answer = json.loads(ping.stdout)
        assert answer["state"] == "succeeded"
        assert answer["result"]["worker"].split(":")[1] == str(proc.pid)

        # `storage check` against it: the report on stdout, no httpx request lines.
        check = mediajobs("storage", "check", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "HTTP Request" not in check.stderr
        assert check.stderr == ""
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    # Quiet: our INFO lines (where Postgres is, the URL served), none of pgserver's initdb
    # and pg_ctl chatter at start or stop, no warning.
    assert "embedded Postgres: DATABASE_URL=" in output
    assert f"mediajobs dev: http://127.0.0.1:{port}" in output
    assert f"development store: objects kept under {data_dir / 'storage'}" in output
    assert " pgserver " not in output and "initdb" not in output and "pg_ctl" not in output
    assert "Warning" not in output and "XDG_RUNTIME_DIR" not in output
    logged = [line for line in output.splitlines() if line.strip()]
    assert all(" INFO " in line or " WARNING " in line for line in logged), logged
    assert not [line for line in logged if " WARNING " in line and "mediajobs" not in line]

    # `mediajobs config` in the same setup: the development secret is the one in use.
    config = mediajobs("config", env=env)
    assert config.returncode == 0, config.stderr
    shown = json.loads(config.stdout)
    secret_file = data_dir / "jwt-secret"
    assert shown["jwtSecret"] == f"set (the development secret in {secret_file})"
    assert secret_file.read_text().strip() not in config.stdout
    assert shown["storageDirectory"] == str(data_dir / "storage")
    with pytest.raises(psycopg.OperationalError):  # stopped with the dev process
        psycopg.connect(database_url, connect_timeout=2)


def test_two_concurrent_migrate_runs_apply_each_migration_once(empty_database_url):
    env = clean_env(DATABASE_URL=empty_database_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mediajobs", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    versions = [migration.version for migration in available_migrations()]
    assert said == [
        "applied 0 migration(s)",
        f"applied {len(versions)} migration(s): {', '.join(versions)}",
    ]
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version"
        ).fetchall()
    assert sorted(rows) == [(version, 1) for version in versions]
    again = mediajobs("migrate", env=env)
    assert (again.returncode, again.stdout.strip()) == (0, "applied 0 migration(s)")


def test_production_with_development_parts_refuses_to_start_naming_the_variable(database_url):
    env = clean_env(
        MEDIAJOBS_ENV="production",
        DATABASE_URL=database_url,
        REDIS_URL="redis://127.0.0.1:6379/0",
        MEDIAJOBS_JWT_SECRET="x" * 40,
    )
    result = mediajobs("serve", env=env)
    assert result.returncode == 2
    assert "GCS_BUCKET: the in-memory store is for development only" in result.stderr
    dev = mediajobs("dev", env={**env, "GCS_BUCKET": "media"})
    assert dev.returncode == 2
    assert "MEDIAJOBS_ENV: mediajobs dev is for development" in dev.stderr


@pytest.mark.slow
def test_serve_answers_readiness_with_the_real_postgres_and_redis(database_url, redis_url):
    with Serving(clean_env(DATABASE_URL=database_url, REDIS_URL=redis_url)) as serving:
        ready = httpx.get(f"{serving.base}/readyz", timeout=5)
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "storage": "ok"}
    assert serving.returncode == 0, serving.output[-2000:]


def test_worker_with_an_unknown_kind_refuses_to_start(database_url):
    result = mediajobs(
        "worker", "--kinds", "media.nonexistent", env=clean_env(DATABASE_URL=database_url)
    )
    assert result.returncode == 2
    assert "no handler registered for kinds: media.nonexistent" in result.stderr


def test_jobs_commands_enqueue_show_cancel_and_count(database_url):
    env = clean_env(DATABASE_URL=database_url)
    enqueued = mediajobs(
        "jobs",
        "enqueue",
        "media.process",
        "--owner",
        "u1",
        "--payload",
        '{"x": 1}',
        "--delay",
        "600",
        env=env,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    shown = json.loads(mediajobs("jobs", "show", job_id, env=env).stdout)
    assert (shown["kind"], shown["ownerId"], shown["payload"], shown["state"]) == (
        "media.process",
        "u1",
        {"x": 1},
        "queued",
    )
    stats = json.loads(mediajobs("jobs", "stats", env=env).stdout)
    assert stats["byState"]["queued"] == 1
    assert mediajobs("jobs", "cancel", job_id, env=env).stdout.strip() == "cancelled"
    assert json.loads(mediajobs("jobs", "show", job_id, env=env).stdout)["state"] == "cancelled"
    bad = mediajobs("jobs", "enqueue", "k", "--payload", "[1]", env=env)
    assert (bad.returncode, "--payload: must be a JSON object" in bad.stderr) == (2, True)


def test_policy_show_and_set_change_the_live_limits_with_validation(database_url):
    env = clean_env(DATABASE_URL=database_url)
    shown = json.loads(mediajobs("policy", "show", env=env).stdout)
    assert shown["photoReviewEnabled"] is False
    assert [v["name"] for v in shown["variants"]] == [
        "thumb",
        "card",
        "preview",
        "detail",
        "detail_xl",
    ]
    changed = mediajobs(
        "policy",
        "set",
        "photoReviewEnabled=true",
        "maxMegapixels=40",
        'variants=[{"name": "small", "size": 400}, {"name": "large", "size": 1200}]',
        env=env,
    )
    assert changed.returncode == 0, changed.stderr
    after = json.loads(mediajobs("policy", "show", env=env).stdout)
    assert (after["photoReviewEnabled"], after["maxMegapixels"]) == (True, 40.0)
    assert after["variants"] == [{"name": "small", "size": 400}, {"name": "large", "size": 1200}]
    for bad, field in [
        ("photoReviewEnabled=maybe", "photoReviewEnabled"),
        ("photo_review_enabled=true", "photo_review_enabled"),  # the column's name, not the API's
        ("minAspectRatio=5", "policy"),  # above the max of 4
        ("webpQuality=0", "webpQuality"),  # the table's check is 1..100: never a traceback
        ("maxAspectRatio=1e308", "maxAspectRatio"),
        ("minAspectRatio=nan", "minAspectRatio"),
        ('variants=[{"name": "thumb", "size": 100.7}]', "variants"),  # no silent rounding
        ('variants=[{"name": "thumb", "size": "320"}]', "variants"),
        ("variants={bad", "variants"),
        ("maxBatchSize=abc", "maxBatchSize"),
        ("photoReviewProvider=gemini", "photoReviewProvider"),
        ("no_such_field=1", "no_such_field"),
        ('variants=[{"name": "Bad Name", "size": 10}]', "variants"),
    ]:
        refused = mediajobs("policy", "set", bad, env=env)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert f"policy not changed: {field}" in refused.stderr, refused.stderr
    assert json.loads(mediajobs("policy", "show", env=env).stdout) == after


def test_stdlib_queue_is_not_shadowed_from_the_repo_root():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import queue, mediajobs.queue; q = queue.Queue(); q.put(1); "
            "print(q.get(), queue.__file__)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    value, path = result.stdout.split()
    assert value == "1"
    assert Path(path).parent != REPO and "mediajobs" not in path
