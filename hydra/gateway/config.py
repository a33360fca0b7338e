"""Configuration of a gateway worker: one frozen dataclass, from options and environment.

Every option has an environment variable that supplies its default (options
win): HYDRA_DATA, HYDRA_HOST, HYDRA_HTTP_PORT, HYDRA_GRPC_PORT,
HYDRA_COMMAND_ENDPOINT, HYDRA_FEED_ENDPOINT, HYDRA_LIMITS, HYDRA_MAX_REQUEST_SIZE,
HYDRA_WRITER_TIMEOUT, HYDRA_READ_WAIT_TIMEOUT, HYDRA_SHUTDOWN_GRACE, HYDRA_LOOP,
HYDRA_LOG_LEVEL, HYDRA_ACCESS_LOG, HYDRA_SSE_HEARTBEAT, HYDRA_SUBSCRIBER_BUFFER,
HYDRA_STALL_TIMEOUT, HYDRA_METRICS_FLUSH,
HYDRA_TOKENS_FILE, HYDRA_INSECURE, HYDRA_TLS_CERT, HYDRA_TLS_KEY, HYDRA_STARTUP_TIMEOUT,
HYDRA_ZMQ_CURVE, and the connection limits' HYDRA_MAX_HEADER_SIZE, HYDRA_MAX_HEADERS,
HYDRA_HEADER_TIMEOUT, HYDRA_BODY_TIMEOUT, HYDRA_IDLE_TIMEOUT, HYDRA_GRPC_* (see
``connection_options``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hydra._curve import check_tcp_endpoint
from hydra._protocol import check_endpoint, default_endpoints
from hydra.cli import ArgumentParser, parse_flag
from hydra.errors import InvalidArgument
from hydra.limits import (
    CONNECTION_TIMEOUTS,
    DEFAULT_CONNECTION_LIMITS,
    DEFAULT_LIMITS,
    LIMIT_NAMES,
    ConnectionLimits,
    Limits,
    parse_limits,
)

LogLevel = Literal["debug", "info", "warning", "error"]
Loop = Literal["uvloop", "asyncio"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a gateway worker needs to run."""

    data_dir: str
    command_endpoint: str
    feed_endpoint: str
    host: str = "127.0.0.1"  # nothing listens beyond loopback unless configured
    http_port: int = 8080
    grpc_port: int = 9090
    limits: Limits = DEFAULT_LIMITS
    connections: ConnectionLimits = DEFAULT_CONNECTION_LIMITS
    # Largest HTTP request body / gRPC request message. The default leaves room
    # for a batch of max_batch_size bytes of data in base64 (4/3) plus JSON.
    max_request_size: int = 24 << 20
    writer_timeout: float = 5.0  # seconds an append waits for the writer
    read_wait_timeout: float = 5.0  # longest min_position wait of a read
    startup_timeout: float = 30.0  # how long to wait for the writer's data directory
    shutdown_grace: float = 10.0  # seconds in-flight requests get on SIGTERM
    sse_heartbeat: float = 15.0  # seconds of silence before an SSE `: keepalive` comment
    # Events a live subscriber may have queued before it is detached and reads the
    # log instead (docs/SUBSCRIPTIONS.md).
    subscriber_buffer: int = 10_000
    # Seconds a gRPC subscription or streaming read may wait on a client that takes
    # nothing before it is cut off with UNAVAILABLE (docs/SUBSCRIPTIONS.md).
    stall_timeout: float = 30.0
    # Longest time the gateway's request counts wait before they reach the shared
    # metrics files that other gateways' scrapes read (its own scrapes flush first).
    metrics_flush: float = 0.1
    loop: Loop = "uvloop"
    log_level: LogLevel = "info"
    access_log: bool = False
    name: str = field(default="gateway")  # shown in logs and /health
    # Bearer tokens (hydra._tokens); None: no authentication, loopback only.
    tokens_file: str | None = None
    # Listen beyond loopback without authentication (an explicit decision).
    insecure: bool = False
    tls_cert: str | None = None  # PEM certificate (chain) for HTTPS and gRPC over TLS
    tls_key: str | None = None  # its PEM private key
    zmq_curve: bool = False  # the writer's sockets are CURVE-secured (hydra._curve)

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise InvalidArgument("a data directory is required (--data DIR or HYDRA_DATA)")
        check_endpoint(self.command_endpoint, "command endpoint")
        check_endpoint(self.feed_endpoint, "feed endpoint")
        if not self.host:
            raise InvalidArgument("host must not be empty")
        for what, port in (("HTTP port", self.http_port), ("gRPC port", self.grpc_port)):
            if type(port) is not int or not 0 <= port <= 65535:
                raise InvalidArgument(f"{what} must be in [0, 65535], got {port!r}")
        if self.http_port and self.http_port == self.grpc_port:
            raise InvalidArgument("the HTTP and gRPC ports must differ")
        if not isinstance(self.limits, Limits):
            raise InvalidArgument("limits must be a hydra.limits.Limits")
        if not isinstance(self.connections, ConnectionLimits):
            raise InvalidArgument("connections must be a hydra.limits.ConnectionLimits")
        if type(self.max_request_size) is not int or not 1024 <= self.max_request_size <= 1 << 30:
            raise InvalidArgument(
                f"max request size must be 1 KiB .. 1 GiB, got {self.max_request_size!r}"
            )
        for what, value, top in (
            ("writer timeout", self.writer_timeout, 3600),
            ("read wait timeout", self.read_wait_timeout, 3600),
            ("startup timeout", self.startup_timeout, 3600),
            ("shutdown grace", self.shutdown_grace, 3600),
            ("SSE heartbeat", self.sse_heartbeat, 3600),
            ("stall timeout", self.stall_timeout, 3600),
            ("metrics flush interval", self.metrics_flush, 3600),
        ):
            if type(value) not in (int, float) or not 0 < value <= top:
                raise InvalidArgument(f"{what} must be seconds in (0, {top}], got {value!r}")
        if type(self.subscriber_buffer) is not int or not 1 <= self.subscriber_buffer <= 10**7:
            raise InvalidArgument(
                f"subscriber buffer must be 1 .. 10000000 events, got {self.subscriber_buffer!r}"
            )
        if self.loop not in ("uvloop", "asyncio"):
            raise InvalidArgument(f"loop must be uvloop or asyncio, got {self.loop!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise InvalidArgument(f"unknown log level {self.log_level!r}")
        check_tcp_endpoint(self.command_endpoint, "command endpoint", self.zmq_curve)
        check_tcp_endpoint(self.feed_endpoint, "feed endpoint", self.zmq_curve)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("TLS needs both a certificate and a key "
                                  "(HYDRA_TLS_CERT and HYDRA_TLS_KEY)")
        if not self.tokens_file and not self.insecure and not is_loopback(self.host):
            raise InvalidArgument(
                f"refusing to listen on {self.host} without authentication: set "
                "HYDRA_TOKENS_FILE (see `hydra token add`), or HYDRA_INSECURE=1 to serve "
                "an open API beyond this machine"
            )

    @classmethod
    def from_args(
        cls, argv: Sequence[str], environ: Mapping[str, str] | None = None
    ) -> GatewayConfig:
        """Parse ``hydra gateway`` options. Raises InvalidArgument on bad values.

        argparse itself exits (SystemExit 2) on unknown options and ``--help``.
        """
        env = os.environ if environ is None else environ
        args = _parser(env).parse_args(list(argv))
        if not args.data:
            raise InvalidArgument("a data directory is required (--data DIR or HYDRA_DATA)")
        data = os.path.abspath(args.data)
        command, feed = args.command_endpoint, args.feed_endpoint
        if not command or not feed:
            default_command, default_feed = default_endpoints(data)
            command = command or default_command
            feed = feed or default_feed
        return cls(
            data_dir=data,
            command_endpoint=command,
            feed_endpoint=feed,
            host=args.host,
            http_port=int(_number(args.http_port, int, "--http-port")),
            grpc_port=int(_number(args.grpc_port, int, "--grpc-port")),
            limits=parse_limits(args.limits),
            connections=_connection_limits(args),
            max_request_size=int(_number(args.max_request_size, int, "--max-request-size")),
            writer_timeout=_number(args.writer_timeout, float, "--writer-timeout"),
            read_wait_timeout=_number(args.read_wait_timeout, float, "--read-wait-timeout"),
            shutdown_grace=_number(args.shutdown_grace, float, "--shutdown-grace"),
            startup_timeout=_number(args.startup_timeout, float, "--startup-timeout"),
            sse_heartbeat=_number(args.sse_heartbeat, float, "--sse-heartbeat"),
            subscriber_buffer=int(_number(args.subscriber_buffer, int, "--subscriber-buffer")),
            stall_timeout=_number(args.stall_timeout, float, "--stall-timeout"),
            metrics_flush=_number(args.metrics_flush, float, "--metrics-flush"),
            loop=args.loop,
            log_level=args.log_level,
            access_log=_flag(args.access_log, "--access-log"),
            name=args.name or f"gateway-{os.getpid()}",
            tokens_file=os.path.abspath(args.tokens_file) if args.tokens_file else None,
            insecure=_flag(args.insecure, "--insecure"),
            tls_cert=os.path.abspath(args.tls_cert) if args.tls_cert else None,
            tls_key=os.path.abspath(args.tls_key) if args.tls_key else None,
            zmq_curve=_flag(args.zmq_curve, "--zmq-curve"),
        )


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False  # the bind will fail and say why
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def _connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    values: dict[str, int | float] = {}
    for name in ConnectionLimits.__dataclass_fields__:
        kind = float if name in CONNECTION_TIMEOUTS else int
        values[name] = _number(getattr(args, name), kind, "--" + name.replace("_", "-"))
    return ConnectionLimits(**values)  # type: ignore[arg-type]


def connection_options(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The options (and HYDRA_* variables) of ``ConnectionLimits``' fields."""
    d = DEFAULT_CONNECTION_LIMITS
    helps = {
        "max_header_size": "bytes of an HTTP request line + headers, or of gRPC metadata",
        "max_headers": "header fields of an HTTP request",
        "header_timeout": "seconds for an HTTP request's headers (and the gRPC handshake) "
                          "to arrive",
        "body_timeout": "seconds an HTTP request body may take, plus one per 64 KiB received",
        "idle_timeout": "seconds a keep-alive HTTP connection may wait for its next request",
        "grpc_keepalive_time": "seconds between the server's pings of a quiet gRPC connection",
        "grpc_keepalive_timeout": "seconds a ping may go unanswered before the connection "
                                  "is dropped",
        "grpc_min_ping_interval": "least seconds between a client's pings",
        "grpc_max_connection_idle": "seconds without calls before a gRPC connection is "
                                    "closed (0: never)",
        "grpc_max_connection_age": "seconds after which a gRPC connection is closed (0: never)",
        "grpc_max_connection_age_grace": "seconds calls get to finish once a connection is "
                                         "too old",
    }
    for name, text in helps.items():
        var = "HYDRA_" + name.upper()
        default = getattr(d, name)
        p.add_argument("--" + name.replace("_", "-"), dest=name,
                       default=env.get(var, str(default)), metavar="N",
                       help=f"{text} (default {default:g}) [{var}]")


def _number(raw: object, kind: type[int | float], option: str) -> int | float:
    try:
        return kind(raw)  # type: ignore[arg-type,call-overload]
    except (TypeError, ValueError):
        raise InvalidArgument(f"{option} must be a number, got {raw!r}") from None


_flag = parse_flag


def _parser(env: Mapping[str, str]) -> ArgumentParser:
    p = ArgumentParser(
        prog="hydra gateway",
        description="Run a gateway worker: the HTTP and gRPC APIs on one event loop. "
                    "Any number of workers share the ports (SO_REUSEPORT).",
        epilog="Each option's default comes from the environment variable shown, if set.",
    )
    p.add_argument("--data", default=env.get("HYDRA_DATA"), metavar="DIR",
                   help="the writer's data directory [HYDRA_DATA]")
    p.add_argument("--host", default=env.get("HYDRA_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1) [HYDRA_HOST]")
    p.add_argument("--http-port", default=env.get("HYDRA_HTTP_PORT", "8080"), metavar="PORT",
                   help="HTTP port (default 8080) [HYDRA_HTTP_PORT]")
    p.add_argument("--grpc-port", default=env.get("HYDRA_GRPC_PORT", "9090"), metavar="PORT",
                   help="gRPC port (default 9090) [HYDRA_GRPC_PORT]")
    p.add_argument("--command-endpoint", default=env.get("HYDRA_COMMAND_ENDPOINT"),
                   metavar="ENDPOINT",
                   help="the writer's command socket, default ipc://DATA/run/cmd.sock "
                        "[HYDRA_COMMAND_ENDPOINT]")
    p.add_argument("--feed-endpoint", default=env.get("HYDRA_FEED_ENDPOINT"),
                   metavar="ENDPOINT",
                   help="the writer's feed socket, default ipc://DATA/run/feed.sock "
                        "[HYDRA_FEED_ENDPOINT]")
    p.add_argument("--limits", default=env.get("HYDRA_LIMITS"), metavar="NAME=N,...",
                   help=f"override limits: {', '.join(LIMIT_NAMES)} [HYDRA_LIMITS]")
    p.add_argument("--max-request-size", default=env.get("HYDRA_MAX_REQUEST_SIZE", str(24 << 20)),
                   metavar="BYTES",
                   help="largest HTTP body / gRPC message (default 24 MiB) "
                        "[HYDRA_MAX_REQUEST_SIZE]")
    p.add_argument("--writer-timeout", default=env.get("HYDRA_WRITER_TIMEOUT", "5"),
                   metavar="SECONDS",
                   help="how long a write waits for the writer (default 5) [HYDRA_WRITER_TIMEOUT]")
    p.add_argument("--read-wait-timeout", default=env.get("HYDRA_READ_WAIT_TIMEOUT", "5"),
                   metavar="SECONDS",
                   help="longest min_position wait of a read (default 5) "
                        "[HYDRA_READ_WAIT_TIMEOUT]")
    p.add_argument("--shutdown-grace", default=env.get("HYDRA_SHUTDOWN_GRACE", "10"),
                   metavar="SECONDS",
                   help="time in-flight requests get on SIGTERM (default 10) "
                        "[HYDRA_SHUTDOWN_GRACE]")
    p.add_argument("--startup-timeout", default=env.get("HYDRA_STARTUP_TIMEOUT", "30"),
                   metavar="SECONDS",
                   help="how long to wait for the writer to open the data directory "
                        "(default 30) [HYDRA_STARTUP_TIMEOUT]")
    p.add_argument("--sse-heartbeat", default=env.get("HYDRA_SSE_HEARTBEAT", "15"),
                   metavar="SECONDS",
                   help="idle time before an SSE keepalive comment (default 15) "
                        "[HYDRA_SSE_HEARTBEAT]")
    p.add_argument("--subscriber-buffer", default=env.get("HYDRA_SUBSCRIBER_BUFFER", "10000"),
                   metavar="EVENTS",
                   help="events a live subscriber may have queued before it reads the log "
                        "instead (default 10000) [HYDRA_SUBSCRIBER_BUFFER]")
    p.add_argument("--stall-timeout", default=env.get("HYDRA_STALL_TIMEOUT", "30"),
                   metavar="SECONDS",
                   help="a gRPC subscription or streaming read whose client takes nothing "
                        "for this long is cut off with UNAVAILABLE (default 30) "
                        "[HYDRA_STALL_TIMEOUT]")
    p.add_argument("--metrics-flush", default=env.get("HYDRA_METRICS_FLUSH", "0.1"),
                   metavar="SECONDS",
                   help="longest wait of this gateway's request counts before other "
                        "gateways' /metrics show them (default 0.1) [HYDRA_METRICS_FLUSH]")
    p.add_argument("--loop", choices=("uvloop", "asyncio"),
                   default=env.get("HYDRA_LOOP", "uvloop"), help="[HYDRA_LOOP]")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=env.get("HYDRA_LOG_LEVEL", "info"), help="[HYDRA_LOG_LEVEL]")
    p.add_argument("--access-log", default=env.get("HYDRA_ACCESS_LOG", "false"),
                   metavar="BOOL", help="log every HTTP request (default false) "
                                        "[HYDRA_ACCESS_LOG]")
    p.add_argument("--name", default=env.get("HYDRA_WORKER_NAME"),
                   help="worker name for logs and /health [HYDRA_WORKER_NAME]")
    p.add_argument("--tokens-file", default=env.get("HYDRA_TOKENS_FILE") or None,
                   metavar="FILE",
                   help="bearer tokens (hydra token add); reloaded on SIGHUP. Without it "
                        "only loopback addresses are allowed [HYDRA_TOKENS_FILE]")
    p.add_argument("--insecure", default=env.get("HYDRA_INSECURE", "false"), metavar="BOOL",
                   help="allow a non-loopback address without authentication "
                        "[HYDRA_INSECURE]")
    p.add_argument("--zmq-curve", default=env.get("HYDRA_ZMQ_CURVE", "false"), metavar="BOOL",
                   help="the writer's sockets use CURVE, keys in DATA/curve/ [HYDRA_ZMQ_CURVE]")
    p.add_argument("--tls-cert", default=env.get("HYDRA_TLS_CERT") or None, metavar="PEM",
                   help="certificate for HTTPS and gRPC over TLS [HYDRA_TLS_CERT]")
    p.add_argument("--tls-key", default=env.get("HYDRA_TLS_KEY") or None, metavar="PEM",
                   help="private key of --tls-cert [HYDRA_TLS_KEY]")
    connection_options(p, env)
    return p
