"""``mediajobs policy``: show the live site policy, or change fields of it by the API's
names (``SitePolicyUpdate`` parses them, as it does ``PATCH /policy``)."""

from __future__ import annotations

import argparse
import sys

from mediajobs.cli.common import Commands, print_json, with_pool
from mediajobs.config import Settings
from mediajobs.db.policies import PolicyInvalid, SitePolicies
from mediajobs.service.models import SitePolicyUpdate, api_names
from mediajobs.service.policy import policy_json
from mediajobs.service.policy_text import fields_help, parse_assignments


def add_policy(commands: Commands) -> None:
    """The ``policy`` command's parser and its subcommands (``set --help`` lists the
    fields from the model)."""
    policy = commands.add_parser(
        "policy", help="show | set FIELD=VALUE...: the live site policy (limits, review gate)"
    )
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    policy_commands.add_parser("show", help="print the site policy as JSON").set_defaults(
        handler=cmd_policy_show
    )
    policy_set = policy_commands.add_parser(
        "set",
        help="change fields, e.g. photoReviewEnabled=true maxMegapixels=40",
        epilog=fields_help(SitePolicyUpdate),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy_set.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    policy_set.set_defaults(handler=cmd_policy_set)


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the site policy as JSON, by the API's names."""
    policy = with_pool(settings, lambda pool: SitePolicies(pool).load())
    print_json(policy_json(policy), indent=2)
    return 0


def cmd_policy_set(args: argparse.Namespace, settings: Settings) -> int:
    """``FIELD=VALUE`` pairs, parsed by the API's model (``policy set --help`` lists the
    fields); workers apply the change from their next job."""
    try:
        changes = parse_assignments(args.changes)
    except PolicyInvalid as exc:  # names the field as it was given
        return _policy_refused(exc.field, exc)

    try:
        policy = with_pool(settings, lambda pool: SitePolicies(pool).update(changes, by="cli"))
    except PolicyInvalid as exc:  # the domain's check: named by the domain's field
        return _policy_refused(api_names(SitePolicyUpdate).get(exc.field, exc.field), exc)
    print_json(policy_json(policy), indent=2)
    return 0


def _policy_refused(name: str, exc: PolicyInvalid) -> int:
    reason = str(exc).removeprefix(f"{exc.field}: ")
    print(f"mediajobs: policy not changed: {name}: {reason}", file=sys.stderr)
    return 2
