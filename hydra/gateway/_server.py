"""One gateway worker process: uvicorn (HTTP) and grpc.aio (gRPC) on one event loop.

Any number of workers listen on the same two ports: both listening sockets set
SO_REUSEPORT, and the kernel spreads new connections over the workers.

Shutdown on SIGTERM or SIGINT, in order: the gRPC health service reports
NOT_SERVING, both servers stop accepting, in-flight requests get
``shutdown_grace`` seconds to finish, then the writer client, tailer and view
are closed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator

import grpc  # type: ignore[import-untyped]
import uvicorn

from hydra.gateway._backend import Backend, ServerBackend
from hydra.gateway._grpc import add_services, set_serving
from hydra.gateway._http import build_app
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
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def grpc_options(max_request_size: int) -> list[tuple[str, int]]:
    """The gRPC server's options (also used by the benchmark's bare floor server)."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", max_request_size),
        ("grpc.max_send_message_length", -1),
        # Appends are small and many: let one connection carry many at once.
        ("grpc.max_concurrent_streams", 1024),
    ]


async def serve(
    config: GatewayConfig, backend: Backend | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run one worker until SIGTERM/SIGINT (or until ``stop`` is set); return the exit status.

    With ``stop`` given, no signal handler is installed (signals can only be
    handled in the main thread; tests run a worker in another thread).
    """
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # The handler only sets a flag; the shutdown sequence runs below.
            loop.add_signal_handler(sig, stop.set)

    if backend is None:
        backend = await ServerBackend.start(config)
    subscriptions = Subscriptions(backend, heartbeat=config.sse_heartbeat,
                                  buffer=config.subscriber_buffer)
    http_sock = bind_reuseport(config.host, config.http_port)
    grpc_server = grpc.aio.server(options=grpc_options(config.max_request_size))
    health = add_services(grpc_server, backend, config.name, subscriptions)
    address = f"{_bracket(config.host)}:{config.grpc_port}"
    try:
        grpc_server.add_insecure_port(address)
    except RuntimeError as exc:
        http_sock.close()
        await backend.close()
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    await grpc_server.start()
    await set_serving(health, True)

    uv_config = uvicorn.Config(
        build_app(backend, config.max_request_size, config.name, subscriptions),
        http="httptools",
        lifespan="off",
        log_level=config.log_level,
        access_log=config.access_log,
        timeout_graceful_shutdown=int(config.shutdown_grace) or 1,
        server_header=False,
        log_config=None,  # the process logging set up in __main__ applies
    )
    http_server = _UvicornServer(uv_config)
    http_task = loop.create_task(http_server.serve(sockets=[http_sock]))
    log.info("%s serving HTTP on %s:%d and gRPC on %s", config.name, config.host,
             http_sock.getsockname()[1], address)

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
    await backend.close()
    if http_task.done() and not http_task.cancelled() and http_task.exception() is not None:
        log.error("%s: the HTTP server failed: %s", config.name, http_task.exception())
        return 1
    log.info("%s stopped", config.name)
    return 0


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
