"""Configuration of the writer process: one frozen dataclass, from options and environment.

Every option has an environment variable that supplies its default (options
win): HYDRA_DATA, HYDRA_SYNC, HYDRA_SYNC_INTERVAL, HYDRA_SYNC_BATCH,
HYDRA_COMMAND_ENDPOINT, HYDRA_FEED_ENDPOINT, HYDRA_SEGMENT_SIZE,
HYDRA_HEARTBEAT_INTERVAL, HYDRA_LOG_LEVEL, HYDRA_LIMITS, HYDRA_ZMQ_CURVE.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hydra._curve import check_tcp_endpoint
from hydra.storage.manifest import check_segment_size
from hydra._protocol import check_endpoint, default_endpoints
from hydra.cli import ArgumentParser, parse_flag
from hydra.errors import InvalidArgument
from hydra.limits import DEFAULT_LIMITS, LIMIT_NAMES, Limits, parse_limits
from hydra.store import SYNC_MODES, SyncMode, check_sync_options

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """Everything the writer process needs to run."""

    data_dir: str
    command_endpoint: str
    feed_endpoint: str
    sync: SyncMode = "every-write"
    sync_interval: float = 0.01  # async mode: fsync at the latest this long after a write
    sync_batch: int = 1000  # async mode: fsync once this many events are unsynced
    segment_size: int | None = None  # for a new data directory; None = the default
    heartbeat_interval: float = 0.5  # seconds between feed heartbeats when idle
    log_level: LogLevel = "info"
    # The writer enforces the limits too: it is the last line before the log.
    limits: Limits = DEFAULT_LIMITS
    # CURVE on the command and feed sockets (hydra._curve); required for TCP
    # endpoints beyond loopback.
    zmq_curve: bool = False
    # Seconds between background scavenges; None: only on request.
    scavenge_interval: float | None = None
    # Longest wait of the writer's counts before a scrape shows them (hydra.writer._tally).
    metrics_flush: float = 0.1

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise InvalidArgument("a data directory is required (--data DIR or HYDRA_DATA)")
        check_sync_options(self.sync, self.sync_interval, self.sync_batch)
        if self.segment_size is not None:
            check_segment_size(self.segment_size)
        check_endpoint(self.command_endpoint, "command endpoint")
        check_endpoint(self.feed_endpoint, "feed endpoint")
        check_tcp_endpoint(self.command_endpoint, "command endpoint", self.zmq_curve)
        check_tcp_endpoint(self.feed_endpoint, "feed endpoint", self.zmq_curve)
        if self.command_endpoint == self.feed_endpoint:
            raise InvalidArgument("the command and feed endpoints must differ")
        if type(self.heartbeat_interval) not in (int, float) or not (
            0.01 <= self.heartbeat_interval <= 1.0
        ):
            raise InvalidArgument(
                f"heartbeat interval must be in [0.01, 1.0] seconds, got {self.heartbeat_interval!r}"
            )
        si = self.scavenge_interval
        if si is not None and (type(si) not in (int, float) or not 1.0 <= si <= 366 * 86400):
            raise InvalidArgument(
                f"scavenge interval must be 1 second to a year (or unset: off), got {si!r}"
            )
        mf = self.metrics_flush
        if type(mf) not in (int, float) or not 0 < mf <= 3600:
            raise InvalidArgument(
                f"metrics flush interval must be seconds in (0, 3600], got {mf!r}")
        if not isinstance(self.limits, Limits):
            raise InvalidArgument("limits must be a hydra.limits.Limits")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise InvalidArgument(f"unknown log level {self.log_level!r}")

    @classmethod
    def from_args(
        cls, argv: Sequence[str], environ: Mapping[str, str] | None = None
    ) -> WriterConfig:
        """Parse ``hydra writer`` options. Raises InvalidArgument on bad values.

        argparse itself exits (SystemExit 2) on unknown options and ``--help``.
        """
        env = os.environ if environ is None else environ
        args = _parser(env).parse_args(list(argv))
        data = args.data
        if not data:
            raise InvalidArgument("a data directory is required (--data DIR or HYDRA_DATA)")
        data = os.path.abspath(data)
        command, feed = args.command_endpoint, args.feed_endpoint
        if not command or not feed:
            default_command, default_feed = default_endpoints(data)
            command = command or default_command
            feed = feed or default_feed
        return cls(
            data_dir=data,
            command_endpoint=command,
            feed_endpoint=feed,
            sync=args.sync,
            sync_interval=_float(args.sync_interval, "--sync-interval"),
            sync_batch=_int(args.sync_batch, "--sync-batch"),
            segment_size=(
                None if args.segment_size in (None, "")
                else _int(args.segment_size, "--segment-size")
            ),
            heartbeat_interval=_float(args.heartbeat_interval, "--heartbeat-interval"),
            log_level=args.log_level,
            limits=parse_limits(args.limits),
            zmq_curve=parse_flag(args.zmq_curve, "--zmq-curve"),
            scavenge_interval=(
                None if args.scavenge_interval in (None, "", "off")
                else _float(args.scavenge_interval, "--scavenge-interval")
            ),
            metrics_flush=_float(args.metrics_flush, "--metrics-flush"),
        )


def _int(raw: str, option: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{option} must be an integer, got {raw!r}") from None


def _float(raw: str, option: str) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{option} must be a number of seconds, got {raw!r}") from None


def _parser(env: Mapping[str, str]) -> ArgumentParser:
    p = ArgumentParser(
        prog="hydra writer",
        description="Run the writer process: the only process that writes the log.",
        epilog="Each option's default comes from the environment variable shown, if set.",
    )
    p.add_argument("--data", default=env.get("HYDRA_DATA"), metavar="DIR",
                   help="data directory, created if missing [HYDRA_DATA]")
    p.add_argument("--sync", choices=SYNC_MODES, default=env.get("HYDRA_SYNC", "every-write"),
                   help="durability mode (default every-write) [HYDRA_SYNC]")
    p.add_argument("--sync-interval", default=env.get("HYDRA_SYNC_INTERVAL", "0.01"),
                   metavar="SECONDS",
                   help="async mode: fsync at most this long after a write "
                        "(default 0.01) [HYDRA_SYNC_INTERVAL]")
    p.add_argument("--sync-batch", default=env.get("HYDRA_SYNC_BATCH", "1000"), metavar="N",
                   help="async mode: fsync once N events are unsynced (default 1000) "
                        "[HYDRA_SYNC_BATCH]")
    p.add_argument("--segment-size", default=env.get("HYDRA_SEGMENT_SIZE"), metavar="BYTES",
                   help="segment size of a new data directory (default 64 MiB) "
                        "[HYDRA_SEGMENT_SIZE]")
    p.add_argument("--command-endpoint", default=env.get("HYDRA_COMMAND_ENDPOINT"),
                   metavar="ENDPOINT",
                   help="command socket (ROUTER), default ipc://DATA/run/cmd.sock; "
                        "tcp://127.0.0.1:PORT for TCP [HYDRA_COMMAND_ENDPOINT]")
    p.add_argument("--feed-endpoint", default=env.get("HYDRA_FEED_ENDPOINT"),
                   metavar="ENDPOINT",
                   help="feed socket (PUB), default ipc://DATA/run/feed.sock "
                        "[HYDRA_FEED_ENDPOINT]")
    p.add_argument("--heartbeat-interval", default=env.get("HYDRA_HEARTBEAT_INTERVAL", "0.5"),
                   metavar="SECONDS",
                   help="feed heartbeat period, at most 1 (default 0.5) "
                        "[HYDRA_HEARTBEAT_INTERVAL]")
    p.add_argument("--limits", default=env.get("HYDRA_LIMITS"), metavar="NAME=N,...",
                   help=f"override limits: {', '.join(LIMIT_NAMES)} [HYDRA_LIMITS]")
    p.add_argument("--zmq-curve", default=env.get("HYDRA_ZMQ_CURVE", "false"), metavar="BOOL",
                   help="CURVE-secure the command and feed sockets, keys in DATA/curve/ "
                        "(needed for TCP beyond loopback) [HYDRA_ZMQ_CURVE]")
    p.add_argument("--scavenge-interval", default=env.get("HYDRA_SCAVENGE_INTERVAL"),
                   metavar="SECONDS",
                   help="scavenge closed segments every SECONDS in the background "
                        "(default: off; on request only)")
    p.add_argument("--metrics-flush", default=env.get("HYDRA_METRICS_FLUSH", "0.1"),
                   metavar="SECONDS",
                   help="longest wait of the writer's counts (groups, records, fsyncs, "
                        "committed position) before /metrics shows them (default 0.1) "
                        "[HYDRA_METRICS_FLUSH]")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=env.get("HYDRA_LOG_LEVEL", "info"), help="[HYDRA_LOG_LEVEL]")
    return p
