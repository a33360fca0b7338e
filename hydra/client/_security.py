"""A bearer token and TLS for the clients: how channels and HTTP clients are made.

``token`` is sent on every call (``authorization: Bearer TOKEN``, as HTTP header
or gRPC metadata); ``ca_file`` is a PEM file of the certificate authorities to
trust, and turns TLS on for gRPC (HTTP follows the ``https://`` address, and
uses the system's authorities when no file is given).

gRPC's own call credentials (``access_token_call_credentials``) would run a
Python plugin on a thread for every call and need TLS; an interceptor that adds
one metadata pair costs less and works on loopback without TLS too.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import grpc

from hydra.errors import InvalidArgument


def check_token(token: object) -> str | None:
    if token is None:
        return None
    if type(token) is not str or not token or any(c.isspace() for c in token):
        raise InvalidArgument("token must be a non-empty string without spaces")
    return token


def _read_ca(ca_file: str | None) -> bytes | None:
    if ca_file is None:
        return None
    try:
        with open(ca_file, "rb") as f:
            return f.read()
    except (OSError, TypeError) as exc:
        raise InvalidArgument(f"cannot read the CA file {ca_file!r}: {exc}") from None


# -- gRPC ------------------------------------------------------------------------


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, header: tuple[str, str]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = [*(base.metadata or ()), header]
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


class _SyncToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self._header), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self._header), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_Details(details, self._header), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_Details(details, self._header), requests)


def _aio_details(details: Any, header: tuple[str, str]) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), header)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._header), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._header), request)


def grpc_channel(target: str, options: Sequence[tuple[str, Any]], *, token: str | None,
                 ca_file: str | None, aio: bool) -> Any:
    """A channel to ``target``: TLS when ``ca_file`` is given, the token on every call."""
    ca = _read_ca(ca_file)
    creds = grpc.ssl_channel_credentials(root_certificates=ca) if ca is not None else None
    if aio:
        header = ("authorization", f"Bearer {token}")
        interceptors = ([_AioUnaryUnary(header), _AioUnaryStream(header)]
                        if token is not None else None)
        if creds is not None:
            return grpc.aio.secure_channel(target, creds, options, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, options, interceptors=interceptors)
    channel = (grpc.secure_channel(target, creds, options) if creds is not None
               else grpc.insecure_channel(target, options))
    return grpc.intercept_channel(channel, _SyncToken(token)) if token is not None else channel


# -- HTTP ------------------------------------------------------------------------


def http_options(token: str | None, ca_file: str | None) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
    options: dict[str, Any] = {}
    if token is not None:
        options["headers"] = {"authorization": f"Bearer {token}"}
    ca = _read_ca(ca_file)
    if ca is not None:
        options["verify"] = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
    return options
