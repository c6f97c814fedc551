"""Command line: lbd run | check | schema | cert ... | demo | status | version.

Each area owns its sub-commands in its own module and adds them here through a
``register(subparsers)`` function, so the CLI grows without one file becoming a
junction every change has to pass through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lbd import __version__

DESCRIPTION = "lbd: a Layer-4/Layer-7 load balancer daemon with Elastic Load Balancing semantics."

# Help for options whose module gives none yet (lbd/tls/commands.py); a module's own help always wins.
FALLBACK_HELP = {
    ("cert import", "--name"): "name to store the certificate under (listeners refer to it by this name)",
    ("cert list", "--json"): "print JSON instead of a table",
    ("cert delete", "--name"): "name of the certificate to delete",
    ("cert request", "--name"): "name to store the new certificate under",
    ("cert request", "--days"): "validity in days",
    ("cert request", "--key-type"): "key type of the new certificate",
}


class HelpFormatter(argparse.HelpFormatter):
    """Plain text, and every option's default where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and "default:" not in text
            and action.option_strings
            and not action.required
            and default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Every sub-command parser (nested ones too: add_subparsers uses the parent's class) gets the
    formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _cmd_version(args: argparse.Namespace) -> int:
    from lbd import build

    print(f"lbd {__version__}")
    print(f"data path: {build.data_path()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lbd import demo, supervisor
    from lbd.config import commands as config_commands
    from lbd.console import status
    from lbd.tls import commands as tls_commands

    parser = Parser(prog="lbd", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"lbd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    supervisor.register(sub)
    config_commands.register(sub)
    tls_commands.register(sub)
    demo.register(sub)
    status.register(sub)
    version = sub.add_parser("version", help="print the version and exit")
    version.set_defaults(func=_cmd_version)
    _fill_help(parser, "")
    return parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each sub-command's parser by name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _fill_help(parser: argparse.ArgumentParser, path: str) -> None:
    """Options without help get FALLBACK_HELP; sub-commands without a description get their one-line
    help as one (argparse keeps that help for the parent's list only)."""
    for action in parser._actions:
        if action.help is None and action.option_strings:
            action.help = FALLBACK_HELP.get((path, action.option_strings[-1]))
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                child = action.choices[choice.dest]
                if child.description is None and choice.help:
                    child.description = choice.help[:1].upper() + choice.help[1:] + "."
    for name, child in subparsers(parser).items():
        _fill_help(child, f"{path} {name}".strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
