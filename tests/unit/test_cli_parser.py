"""The command line's parser: every command of every module is listed once, in the order
``mediajobs --help`` shows, and every leaf command runs a function (none parses to nothing)."""

from __future__ import annotations

import argparse

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
    assert len(leaves) == 16
    arguments = {("jobs", "enqueue"): ["system.ping"], ("token",): ["dev"]}
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
