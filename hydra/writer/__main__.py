"""``hydra writer``: run the writer process. See ``hydra writer --help``."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from hydra._watchdog import CANNOT_START
from hydra.errors import HydraError
from hydra.writer.config import WriterConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Run the writer until SIGTERM/SIGINT. Returns the process exit status.

    0 after a clean shutdown, 78 (``CANNOT_START``) when the writer cannot start,
    1 when it stops on a storage failure, 2 for bad options.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    # Everything the writer creates (data directory, segments, index, manifest,
    # sockets) is for this user alone, whatever umask it inherited.
    os.umask(0o077)
    try:
        config = WriterConfig.from_args(args)
    except SystemExit as exc:  # argparse: --help, or an unknown or malformed option
        return exc.code if isinstance(exc.code, int) else 2
    except HydraError as exc:
        print(f"hydra writer: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    from hydra import _metrics
    from hydra.writer._server import WriterServer

    import lmdb

    try:
        # Its series live in DATA/run/metrics/ (created, with DATA, if need be).
        _metrics.start("writer", _metrics.metrics_dir(config.data_dir))
        server = WriterServer(config)
    except (HydraError, OSError, lmdb.Error) as exc:
        # One line, no traceback: this is the operator's to fix (supervisord's
        # watchdog shows it on the console).
        print(f"hydra writer: cannot start: {_describe(exc)}", file=sys.stderr, flush=True)
        return CANNOT_START
    return server.run()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
