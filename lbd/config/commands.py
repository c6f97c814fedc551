"""``lbd check -c FILE`` and ``lbd schema``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lbd.config.loader import ConfigError, load_config
from lbd.config.schema import Config
from lbd.tls.policies import policy_warnings


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.config}: {issue}")
        count = len(exc.issues)
        print(f"{args.config}: {count} error{'s' if count != 1 else ''}")
        return 2
    for warning in policy_warnings(config):
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    listeners = sum(len(lb.listeners) for lb in config.load_balancers)
    targets = sum(len(tg.targets) for tg in config.target_groups)
    print(
        f"{args.config}: OK ({_count(len(config.load_balancers), 'load balancer')}, "
        f"{_count(listeners, 'listener')}, {_count(len(config.target_groups), 'target group')}, "
        f"{_count(targets, 'target')})"
    )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    check = sub.add_parser("check", help="validate a config file and list every error")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=cmd_check)
    schema = sub.add_parser("schema", help="print the config's JSON Schema (for editors)")
    schema.set_defaults(func=cmd_schema)
