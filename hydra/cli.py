"""The ``hydra`` command: one entry point, one module per subcommand.

Each subcommand lives with the code it runs and exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

_COMMANDS = {
    "verify": ("hydra.storage.verify", "check every record of a data directory"),
    "repair": ("hydra.storage.repair", "what damage before the checkpoint costs; keep the prefix"),
    "writer": ("hydra.writer.__main__", "run the writer process (owns the log)"),
    "gateway": ("hydra.gateway.__main__", "run a gateway worker (HTTP + gRPC)"),
    "stress": ("hydra.stress", "load-test a running server"),
    "token": ("hydra._tokens", "add, remove or list bearer tokens (HYDRA_TOKENS_FILE)"),
    "watchdog": ("hydra._watchdog", "supervisord event listener: stop a server that cannot start"),
    "status": ("hydra._status", "show the processes of `make run` and the committed position"),
    "scavenge": ("hydra.storage.scavenge:main", "reclaim the space of deleted and retention-hidden events (offline)"),
    "backup": ("hydra.storage.backup", "copy a store, running or stopped, up to its committed position"),
    "restore": ("hydra.storage.backup:restore_main", "make a new data directory from a backup"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with an operator's mistake reported on one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_flag(raw: object, option: str) -> bool:
    """A boolean option or environment value: 1/true/yes/on or 0/false/no/off/""."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    from hydra.errors import InvalidArgument

    raise InvalidArgument(f"{option} must be true or false, got {raw!r}")


def _usage() -> str:
    lines = ["usage: hydra [--version] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in _COMMANDS.items()]
    lines.append("\n`hydra COMMAND --help` describes a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"hydra {version('hydra')}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in _COMMANDS:
        print(f"hydra: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, function = _COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
