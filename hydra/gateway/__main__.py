"""``hydra gateway [options]``: run one gateway worker (see ``hydra gateway --help``)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from hydra._watchdog import CANNOT_START
from hydra.errors import HydraError, Unavailable
from hydra.gateway.config import GatewayConfig


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # whatever this process creates is for this user alone
    try:
        config = GatewayConfig.from_args(sys.argv[1:] if argv is None else argv)
    except HydraError as exc:
        print(f"hydra gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s {config.name} %(levelname)s %(name)s: %(message)s",
    )
    from hydra.gateway._server import serve

    loop_factory = None
    if config.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(config))
    except (HydraError, OSError) as exc:
        # One line, no traceback: this is the operator's to fix (supervisord's
        # watchdog shows it on the console). A writer that never came may yet
        # come (1: supervisord retries); anything else will not mend itself.
        print(f"hydra gateway: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1 if isinstance(exc, Unavailable) else CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
