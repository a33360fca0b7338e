"""One gateway worker process: uvicorn (HTTP) and grpc.aio (gRPC) on one event loop.

Any number of workers listen on the same two ports: both listening sockets set
SO_REUSEPORT, and the kernel spreads new connections over the workers.

Before anything binds, the worker claims both ports for its data directory
(``_ports``): a gateway of another deployment fails at once, naming the owner.
With a tokens file both servers authenticate every call (``_auth``; SIGHUP
reloads the file); with a certificate both speak TLS (``_tls``).

Shutdown on SIGTERM or SIGINT (also while still waiting for the writer), in
order: the gRPC health service reports NOT_SERVING, both servers stop
accepting, in-flight requests get ``shutdown_grace`` seconds to finish, then the
writer client, tailer and view are closed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Generator

import grpc  # type: ignore[import-untyped]
import uvicorn

from hydra import _metrics
from hydra._gc import settle as settle_gc
from hydra.errors import AddressInUse
from hydra.gateway._auth import Authenticator, AuthInterceptor, AuthMiddleware
from hydra.gateway._backend import Backend, ServerBackend
from hydra.gateway._connections import grpc_options as connection_grpc_options
from hydra.gateway._connections import http_protocol
from hydra.gateway._grpc import add_services, set_serving
from hydra.gateway._http import build_app
from hydra.gateway._metered import MeteredBackend, sample
from hydra.gateway._tally import Tally
from hydra.gateway._ports import PortClaims
from hydra.gateway._tls import ServerTls, load_server_tls
from hydra.gateway._subscriptions import Subscriptions
from hydra.gateway.config import GatewayConfig

log = logging.getLogger("hydra.gateway")


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process handles signals once,
    for both servers (uvicorn would re-raise SIGTERM after its own shutdown and
    kill the process before gRPC finished its in-flight calls)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other workers can bind too (SO_REUSEPORT)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise AddressInUse(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}"
                               + (" (another program holds the port)"
                                  if exc.errno == errno.EADDRINUSE else "")) from None
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def grpc_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """The gRPC server's options (also used by the benchmark's bare floor server)."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", config.max_request_size),
        ("grpc.max_send_message_length", -1),
        # Appends are small and many: let one connection carry many at once.
        ("grpc.max_concurrent_streams", 1024),
        *connection_grpc_options(config.connections),
    ]


async def serve(
    config: GatewayConfig, backend: Backend | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run one worker until SIGTERM/SIGINT (or until ``stop`` is set); return the exit status.

    With ``stop`` given, no signal handler is installed (signals can only be
    handled in the main thread; tests run a worker in another thread).
    """
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # The handler only sets a flag; the shutdown sequence runs below.
            loop.add_signal_handler(sig, stop.set)

    # Refuse bad tokens or TLS files and foreign ports before waiting for anything.
    auth = Authenticator(config.tokens_file) if config.tokens_file else None
    if own_signals:
        # SIGHUP re-reads the tokens file (and must not kill a worker without one).
        loop.add_signal_handler(signal.SIGHUP, _reload, auth)
    tls = None
    if config.tls_cert and config.tls_key:
        tls = load_server_tls(config.tls_cert, config.tls_key)
    claims = PortClaims(config.data_dir)
    try:
        claims.claim(config.http_port, "HTTP")
        claims.claim(config.grpc_port, "gRPC")
        if backend is None:
            backend = await _start_backend(config, stop)
            if backend is None:
                log.info("%s stopped before the writer was ready", config.name)
                return 0
            # A real worker process (the data directory exists now): its series go
            # where every process of the server keeps them, so that any worker's
            # /metrics shows them all.
            _metrics.start(config.name, _metrics.metrics_dir(config.data_dir))
        if auth is not None:
            log.info("%s: authentication on, %d tokens from %s", config.name, len(auth),
                     config.tokens_file)
        return await _serve(config, backend, stop, claims, auth, tls, settle=own_signals)
    finally:
        claims.release()


def _reload(auth: Authenticator | None) -> None:
    if auth is None:
        log.info("SIGHUP: no tokens file to reload")
    else:
        auth.reload()


async def _start_backend(config: GatewayConfig, stop: asyncio.Event) -> Backend | None:
    """The backend, or None when ``stop`` is set while waiting for the writer."""
    start = asyncio.ensure_future(ServerBackend.start(config))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if start.done():
        return start.result()
    start.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await start
    return None


async def _serve(config: GatewayConfig, backend: Backend, stop: asyncio.Event,
                 claims: PortClaims, auth: Authenticator | None, tls: ServerTls | None, *,
                 settle: bool) -> int:
    """Serve until ``stop``; ``settle``: this process is the worker's own (``_gc``)."""
    loop = asyncio.get_running_loop()
    subscriptions = Subscriptions(backend, heartbeat=config.sse_heartbeat,
                                  buffer=config.subscriber_buffer,
                                  stall_timeout=config.stall_timeout)
    try:
        http_sock = bind_reuseport(config.host, config.http_port)
    except BaseException:
        await backend.close()
        raise
    claims.claim(http_sock.getsockname()[1], "HTTP")  # the port the kernel chose for 0
    interceptors = [AuthInterceptor(auth)] if auth is not None else None
    grpc_server = grpc.aio.server(options=grpc_options(config), interceptors=interceptors)
    series = _metrics.series()
    http_backend, grpc_backend = backend, backend
    # Both APIs count into one tally, so that this gateway's /metrics (and its
    # shutdown) flushes all it counted.
    tally = Tally(series, config.metrics_flush) if series.on else None
    if tally is not None:
        http_backend = MeteredBackend(backend, "http", series, tally)  # type: ignore[assignment]
        grpc_backend = MeteredBackend(backend, "grpc", series, tally)  # type: ignore[assignment]
    health = add_services(grpc_server, grpc_backend, config.name, subscriptions)
    address = f"{_bracket(config.host)}:{config.grpc_port}"
    try:
        if tls is not None:
            grpc_port = grpc_server.add_secure_port(address, tls.grpc_credentials)
        else:
            grpc_port = grpc_server.add_insecure_port(address)
        claims.claim(grpc_port, "gRPC")
    except (RuntimeError, AddressInUse) as exc:
        http_sock.close()
        await backend.close()
        if isinstance(exc, AddressInUse):
            raise
        raise AddressInUse(f"cannot listen for gRPC on {address}: the port is in use by "
                           "another program or the address is not on this machine") from None
    await grpc_server.start()
    await set_serving(health, True)

    app = build_app(http_backend, config.max_request_size, config.name, subscriptions,
                    before_scrape=tally.flush if tally is not None else None)
    sampler = loop.create_task(sample(series, config.name, backend, subscriptions.hub),
                               name="hydra-metrics-sampler")
    uv_config = uvicorn.Config(
        AuthMiddleware(app, auth) if auth is not None else app,
        http=http_protocol(config.connections),  # httptools, with header limits and timeouts
        timeout_keep_alive=config.connections.idle_timeout,  # type: ignore[arg-type]
        lifespan="off",
        log_level=config.log_level,
        access_log=config.access_log,
        timeout_graceful_shutdown=int(config.shutdown_grace) or 1,
        server_header=False,
        log_config=None,  # the process logging set up in __main__ applies
        ssl_certfile=tls.cert_file if tls is not None else None,
        ssl_keyfile=tls.key_file if tls is not None else None,
    )
    http_server = _UvicornServer(uv_config)
    http_task = loop.create_task(http_server.serve(sockets=[http_sock]))
    log.info("%s serving HTTP%s on %s:%d and gRPC%s on %s", config.name,
             "S" if tls else "", config.host, http_sock.getsockname()[1],
             " over TLS" if tls else "", address)

    if settle:
        settle_gc()  # (hydra/_gc.py) everything of the start-up stays for good
    stop_task = loop.create_task(stop.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("%s shutting down", config.name)
    # Stop accepting and drain both servers at the same time. Subscriptions never
    # finish by themselves: end them, so their clients reconnect to another worker.
    await health.enter_graceful_shutdown()
    subscriptions.close()
    http_server.should_exit = True
    await asyncio.gather(grpc_server.stop(config.shutdown_grace), http_task,
                         return_exceptions=True)
    stop_task.cancel()
    sampler.cancel()
    if tally is not None:
        # What the drained requests counted, before the process ends (a failure
        # here must not keep the backend from closing).
        try:
            tally.flush()
        except Exception:
            log.exception("%s: could not write the last metrics", config.name)
    await backend.close()
    if http_task.done() and not http_task.cancelled() and http_task.exception() is not None:
        log.error("%s: the HTTP server failed: %s", config.name, http_task.exception())
        return 1
    log.info("%s stopped", config.name)
    return 0


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
