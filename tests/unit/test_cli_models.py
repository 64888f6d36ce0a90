"""``mediajobs models check``: what it says with a model, without one, and with a broken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediajobs.cli import main


@pytest.fixture(autouse=True)
def _no_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MEDIAJOBS_CLIP_MODEL_DIR", "MEDIAJOBS_CLIP_VOCABULARY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_check_prints_the_model_and_its_speed(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDIAJOBS_CLIP_MODEL_DIR", str(tiny_clip_dir))
    monkeypatch.setenv("MEDIAJOBS_CLIP_BATCH_SIZE", "4")
    assert main(["models", "check", "--seconds", "0.2", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["enabled"] is True
    (report,) = answer["models"]
    assert report["name"] == "tiny-clip"
    assert report["embedDim"] == 32
    assert report["providers"] == ["CPUExecutionProvider"]
    assert report["batchSize"] == 4
    assert report["vocabulary"] > 250
    assert report["imagesPerSecond"] > 0
    assert main(["models", "check", "--seconds", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "dimension   32" in text and "images/s" in text


def test_check_measures_every_configured_model(
    tiny_clip_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mediajobs.vision.testing import write_tiny_clip

    other = write_tiny_clip(tmp_path / "wide", embed_dim=48)
    monkeypatch.setenv("MEDIAJOBS_CLIP_MODEL_DIR", f"{tiny_clip_dir}:{other}")
    assert main(["models", "check", "--seconds", "0.1", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["embedDim"]) for m in models] == [("tiny-clip", 32), ("wide", 48)]


def test_without_a_model_check_says_what_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check"]) == 1
    err = capsys.readouterr().err
    assert "MEDIAJOBS_CLIP_MODEL_DIR is unset" in err and "semantic search are off" in err
    assert main(["models", "check", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["enabled"] is False


def test_a_broken_model_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["models", "check", "--model-dir", str(tmp_path / "empty"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["code"] == "model_missing" and "config.json" in report["reason"]
