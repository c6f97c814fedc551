"""``lbd check -c FILE`` and ``lbd schema``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The schema, yaml and pydantic load with the command that uses them: ``lbd run``'s supervisor builds the
# same parser and must not hold them (it validates in a child, lbd/validator.py).
from lbd.config.issues import ConfigError


def cmd_check(args: argparse.Namespace) -> int:
    """Exactly what ``lbd run`` checks before it binds (load_for_run): errors on stderr, exit 2."""
    from lbd.config.preflight import load_for_run
    from lbd.tls.policies import policy_warnings

    try:
        config = load_for_run(args.config).config
    except ConfigError as exc:
        print_issues(args.config, exc)
        count = len(exc.issues)
        print(f"{args.config}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 2
    for warning in policy_warnings(config):
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    listeners = sum(len(lb.listeners) for lb in config.load_balancers)
    targets = sum(len(tg.targets) for tg in config.target_groups)
    print(
        f"{args.config}: OK ({_count(len(config.load_balancers), 'load balancer')}, "
        f"{_count(listeners, 'listener')}, {_count(len(config.target_groups), 'target group')}, "
        f"{_count(targets, 'target')}"
        + (f", {_count(len(config.apis), 'API')}" if config.apis else "")
        + (f", {_count(len(config.distributions), 'distribution')}" if config.distributions else "")
        + ")"
    )
    return 0


def print_issues(path: str, exc: ConfigError) -> None:
    for issue in exc.issues:
        print(f"{path}: {issue}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_schema(args: argparse.Namespace) -> int:
    from lbd.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    check = sub.add_parser(
        "check",
        help="validate a config file as lbd run would, and list every error",
        description="Validate a config file with every check lbd run makes before it binds a port "
        "(schema, references, port collisions, certificates in the store, admin.token_file, features "
        "this build serves). Errors go to stderr; exit status 2 if there are any.",
    )
    check.add_argument(
        "-c",
        "--config",
        required=True,
        metavar="FILE",
        help="YAML config file, or an etcd key holding it: etcd://HOST:PORT[,HOST:PORT...]/KEY",
    )
    check.set_defaults(func=cmd_check)
    schema = sub.add_parser(
        "schema",
        help="print the config file's JSON Schema (draft 2020-12, for editors)",
        description="Print the JSON Schema (draft 2020-12) of the config file, for editor completion.",
    )
    schema.set_defaults(func=cmd_schema)
