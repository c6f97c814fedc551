"""Command line: ``lbd run | check | schema | cert ... | demo | version``.

Each area owns its sub-commands in its own module and adds them here through a
``register(subparsers)`` function, so the CLI grows without one file becoming a
junction every change has to pass through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbd import __version__


def _cmd_version(args: argparse.Namespace) -> int:
    from lbd import build

    print(f"lbd {__version__}")
    print(f"data path: {build.data_path()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lbd import demo, supervisor
    from lbd.config import commands as config_commands
    from lbd.tls import commands as tls_commands

    parser = argparse.ArgumentParser(prog="lbd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    supervisor.register(sub)
    config_commands.register(sub)
    tls_commands.register(sub)
    demo.register(sub)
    version = sub.add_parser("version", help="print the version and exit")
    version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
