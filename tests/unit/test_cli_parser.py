"""The command line's parser: every command of every module is listed once, in the order
``mediajobs --help`` shows, and every leaf command runs a function (none parses to nothing)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mediajobs.cli import build_parser, main

HELP_ORDER = [
    "dev",
    "serve",
    "worker",
    "migrate",
    "config",
    "jobs",
    "token",
    "events",
    "storage",
    "policy",
    "ingest",
    "models",
]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    children = _subcommands(parser)
    if not children:
        return [path]
    return [leaf for name, child in children.items() for leaf in _leaves(child, (*path, name))]


def test_the_commands_are_listed_in_help_order() -> None:
    assert list(_subcommands(build_parser())) == HELP_ORDER


def test_every_leaf_command_runs_a_function() -> None:
    parser = build_parser()
    leaves = _leaves(parser)
    assert ("jobs", "enqueue") in leaves
    assert ("policy", "set") in leaves
    assert len(leaves) == 23
    arguments = {
        ("jobs", "enqueue"): ["system.ping"],
        ("token",): ["dev"],
        ("ingest", "run"): ["/photos", "--owner", "u1"],
        ("ingest", "report"): ["--failed"],
    }
    for leaf in leaves:
        extra = arguments.get(leaf, [])
        if leaf[0] == "jobs" and leaf[1] in ("show", "wait", "cancel"):
            extra = ["00000000-0000-0000-0000-000000000001"]
        if leaf == ("policy", "set"):
            extra = ["minWidth=1"]
        args = parser.parse_args([*leaf, *extra])
        assert callable(args.handler), leaf
        assert args.handler.__name__ == "cmd_" + "_".join(leaf), leaf


def test_a_usage_error_exits_2_before_reading_the_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--concurrency", "0"])
    assert exited.value.code == 2
    assert "argument --concurrency: must be 1..1000, not 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "dev"])
@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(
    command: str, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--port", port])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port:" in err
    assert "Traceback" not in err


def test_a_port_in_range_is_taken() -> None:
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535
    assert build_parser().parse_args(["dev", "--port", "1"]).port == 1


def _parser_at(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = _subcommands(parser)[name]
    return parser


@pytest.mark.parametrize("command", ["dev", "serve", "worker", "migrate", "config"])
def test_the_top_commands_have_a_description(command: str) -> None:
    assert _parser_at(command).description


def _help_of(parser: argparse.ArgumentParser, dest: str) -> str | None:
    (action,) = [action for action in parser._actions if action.dest == dest]
    return action.help


@pytest.mark.parametrize(
    ("path", "dest"),
    [
        (("jobs", "ping"), "timeout"),
        (("jobs", "show"), "job_id"),
        (("jobs", "wait"), "job_id"),
        (("jobs", "cancel"), "job_id"),
        (("jobs", "enqueue"), "kind"),
        (("jobs", "enqueue"), "owner"),
        (("jobs", "enqueue"), "max_attempts"),
    ],
)
def test_every_argument_has_help(path: tuple[str, ...], dest: str) -> None:
    assert _help_of(_parser_at(*path), dest)


def test_the_worker_concurrency_help_names_its_variable() -> None:
    assert "MEDIAJOBS_WORKER_CONCURRENCY" in (_help_of(_parser_at("worker"), "concurrency") or "")


def test_the_storage_check_help_says_what_development_checks() -> None:
    text = _parser_at("storage").format_help()
    assert "memory store" not in text
    assert ".mediajobs/storage" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "dev", "--ttl", "soon"], "argument --ttl: expected seconds or a duration"),
        (["token", "dev", "--ttl", "0"], "argument --ttl: must be at least one second"),
        (
            ["jobs", "wait", "00000000-0000-0000-0000-000000000001", "--timeout", "-1"],
            "argument --timeout: must be",
        ),
        (
            ["jobs", "wait", "00000000-0000-0000-0000-000000000001", "--timeout", "nan"],
            "argument --timeout: must be",
        ),
        (["jobs", "ping", "--timeout", "-1"], "argument --timeout: must be"),
        (["jobs", "enqueue", "Bad.Kind"], "argument kind: 'Bad.Kind' is not a job kind"),
        (["jobs", "enqueue", "image resize"], "argument kind:"),
    ],
)
def test_bad_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "configuration error" not in err


def test_a_well_formed_kind_without_a_default_handler_is_accepted() -> None:
    args = build_parser().parse_args(["jobs", "enqueue", "custom.thing"])
    assert args.kind == "custom.thing"
    assert "--app" in (_parser_at("jobs", "enqueue").description or "")


def test_token_ttl_parses_durations() -> None:
    assert build_parser().parse_args(["token", "dev", "--ttl", "30m"]).ttl == 1800
    assert build_parser().parse_args(["token", "dev"]).ttl == 12 * 3600


def test_readme_lists_the_commands_in_help_order() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `mediajobs (\w+)", readme, flags=re.MULTILINE)
    assert rows == HELP_ORDER


def test_jobs_wait_timeout_0_looks_once() -> None:
    wait = ["jobs", "wait", "00000000-0000-0000-0000-000000000001"]
    assert build_parser().parse_args([*wait, "--timeout", "0"]).timeout == 0
