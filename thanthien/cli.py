"""The one `thanthien` command. Each role registers its own subcommand.

Role modules are imported only to add their argument parsers; they must do no work and
import nothing heavy (Kivy, FastAPI, audio) at import time, so `thanthien --help` is
fast on a Pi Zero and a speaker node never needs the kiosk's or station's packages.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

from . import __version__

#: Modules that define `register(subparsers)`; a role whose extra is not installed on
#: this machine is simply absent from the help.
ROLE_MODULES = (
    "devices.agent.cli",     # thanthien speaker
    "broadcast.cli",         # thanthien station
    "kiosk.cli",             # thanthien kiosk
    "devices.fleet.cli",     # thanthien fleet
    "thanthien.tools",       # thanthien config / keys
    "thanthien.demo",        # thanthien demo
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thanthien",
        formatter_class=HelpFormatter,
        description="Ward one-stop kiosk, radio station and smart loudspeaker nodes "
                    "(Chính quyền thân thiện).",
        epilog="Run `thanthien COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"thanthien {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in ROLE_MODULES:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) is None:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # that role is not part of this install
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from devices.errors import ConfigError
    from devices.config import exit_on_config_error

    try:
        rc = args.func(args)
    except ConfigError as exc:
        exit_on_config_error(exc)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str | None = None,
                **kwargs) -> argparse.ArgumentParser:
    """Add a subcommand with the house help formatting."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter,
                          **kwargs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
