"""The ``hydra`` command: one entry point, one module per subcommand.

Each subcommand lives with the code it runs and exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "verify": ("hydra.storage.verify", "check every record of a data directory"),
    "writer": ("hydra.writer.__main__", "run the writer process (owns the log)"),
    "gateway": ("hydra.gateway.__main__", "run a gateway worker (HTTP + gRPC)"),
    "stress": ("hydra.stress", "load-test a running server"),
}


def _usage() -> str:
    lines = ["usage: hydra COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in _COMMANDS.items()]
    lines.append("\n`hydra COMMAND --help` describes a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in _COMMANDS:
        print(f"hydra: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
