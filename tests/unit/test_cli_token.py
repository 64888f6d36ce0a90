"""``mediajobs token``: which secret it signs with, said when it had to create one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediajobs.cli import main


@pytest.fixture
def dev_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("MEDIAJOBS_JWT_SECRET", "MEDIAJOBS_ENV", "MEDIAJOBS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_newly_created_development_secret_is_named_on_stderr(
    dev_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "dev"]) == 0
    out, err = capsys.readouterr()
    secret = dev_env / ".mediajobs" / "jwt-secret"
    assert secret.exists()
    assert out.count(".") == 2  # the token alone on stdout
    assert "warning" in err
    assert str(secret) in err
    assert "401" in err
    assert "MEDIAJOBS_DATA_DIR" in err and "MEDIAJOBS_JWT_SECRET" in err


def test_an_existing_secret_signs_without_a_warning(
    dev_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "dev"]) == 0
    capsys.readouterr()
    assert main(["token", "dev"]) == 0
    assert capsys.readouterr().err == ""


def test_a_configured_secret_signs_without_a_warning(
    dev_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDIAJOBS_JWT_SECRET", "s" * 40)
    assert main(["token", "dev"]) == 0
    assert capsys.readouterr().err == ""
    assert not (dev_env / ".mediajobs").exists()
