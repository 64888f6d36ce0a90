"""``/openapi.json`` describes every route the app has, and the app honours it: schemathesis
generates requests from the document against a real `mediajobs dev` process (real Postgres
and Redis) and checks that nothing answers 5xx and every response matches its schema."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount, Route

from mediajobs.config import Environment, Settings
from mediajobs.service.app import create_app
from mediajobs.service.openapi import spec
from tests.support.sse import bearer, dev_site

METHODS = {"get", "put", "post", "patch", "delete", "head"}


def app_operations(env: Environment) -> set[tuple[str, str]]:
    app = create_app(Settings(env=env, database_url="postgresql://unused/x"))
    found = set()
    for route in app.routes:
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((path, method.lower()))
        elif isinstance(route, Mount) and route.path == "/storage":
            # The store lists its methods itself (HEAD included): the document has each.
            for inner in route.routes:
                assert isinstance(inner, Route) and inner.path == "/{key:path}", inner
                found |= {("/storage/{key}", m.lower()) for m in inner.methods or ()}
        elif isinstance(route, Mount) and route.path == "/static":
            found.add(("/static/{file}", "get"))
    return found


def spec_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.mark.parametrize("env", [Environment.TEST, Environment.PRODUCTION])
def test_the_document_describes_every_route_and_nothing_else(env: Environment) -> None:
    production = env is Environment.PRODUCTION
    document = spec(development=not production, memory_store=not production, page=not production)
    operations = app_operations(env) if not production else None
    if operations is None:  # production has no memory store: compare without it
        operations = {
            op
            for op in app_operations(Environment.TEST)
            if not op[0].startswith(("/storage", "/dev", "/static")) and op[0] != "/"
        }
    assert spec_operations(document) == operations
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "default" in operation["responses"], (path, method)


@pytest.fixture(scope="module")
def live_api(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template) as base:
        yield base


@pytest.mark.timeout(300)
def test_no_5xx_and_every_response_matches_the_document(live_api: str, tmp_path: Path) -> None:
    token = bearer("fuzzer")["Authorization"]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{live_api}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,negative_data_rejection",
            "--mode",
            "all",  # valid requests, and invalid ones that must get a 4xx
            "--header",
            f"Authorization: {token}",
            "--exclude-path-regex",
            "events$",  # streams never end by themselves; test_sse.py covers them
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "20",
            "--max-time",
            "45",
            "--request-timeout",
            "5",
            "--seed",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,  # its cache directory goes there, not into the repository
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
