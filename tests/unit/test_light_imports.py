"""An imaging process imports only what imaging needs: the packages it passes through
(``mediajobs.handlers``, ``mediajobs.queue``) load their modules on first use (PEP 562), so
a new process starts in a fraction of the time and memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mediajobs.handlers
import mediajobs.queue

HEAVY = ("psycopg", "psycopg_pool", "httpx", "redis", "boto3", "google.cloud.storage")


def test_the_imaging_process_modules_load_no_database_or_network_client() -> None:
    code = (
        "import sys\n"
        "import mediajobs.handlers.imaging_pool, mediajobs.queue.children\n"
        f"print([name for name in {HEAVY!r} if name in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("package", [mediajobs.handlers, mediajobs.queue])
def test_the_lazy_packages_give_their_names_and_refuse_others(package: object) -> None:
    for name in package.__all__:  # type: ignore[attr-defined]
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018
