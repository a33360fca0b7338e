"""Bearer-token authentication of both APIs: who may call what.

``Authenticator`` holds the tokens file (``hydra._tokens``) and decides; the
Starlette-level ASGI middleware ``AuthMiddleware`` and the grpc.aio server
interceptor ``AuthInterceptor`` only find the token and ask it. Both are
installed only when a tokens file is configured, so a server without one pays
nothing.

Each endpoint and RPC needs one role (``read`` < ``write`` < ``admin``); the
tables below name them all, and anything not named needs ``admin``, so a new
endpoint is closed until someone decides otherwise (a test checks that every
route and RPC the server has is named). ``/health``, ``/openapi.json``, the
EventStore ``Health`` RPC and ``grpc.health.v1`` stay open for load balancers.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc  # type: ignore[import-untyped]

from starlette.types import ASGIApp, Receive, Scope, Send

from hydra._tokens import RANK, Principal, Role, TokenFile
from hydra.errors import HydraError, PermissionDenied, Unauthenticated
from hydra.gateway._errors import grpc_error, http_error

log = logging.getLogger("hydra.gateway")

# -- what each call needs --------------------------------------------------------

OPEN = None  # no token needed

_SERVICE = "/eventstore.EventStore/"
GRPC_ROLES: dict[str, Role | None] = {
    _SERVICE + "Health": OPEN,
    _SERVICE + "ReadStream": "read",
    _SERVICE + "ReadAll": "read",
    _SERVICE + "SubscribeToAll": "read",
    _SERVICE + "SubscribeToStream": "read",
    _SERVICE + "SubscribeToAllBatched": "read",
    _SERVICE + "SubscribeToStreamBatched": "read",
    _SERVICE + "ReadStreamBatched": "read",
    _SERVICE + "ReadAllBatched": "read",
    _SERVICE + "Append": "write",
    _SERVICE + "AppendBatch": "write",
    _SERVICE + "AppendMany": "write",
    _SERVICE + "DeleteStream": "admin",
    _SERVICE + "SaveSnapshot": "write",
    _SERVICE + "LoadSnapshot": "read",
    _SERVICE + "DeleteSnapshot": "write",
    _SERVICE + "ListSnapshots": "read",
    # Multi-stream appends and tracking records.
    _SERVICE + "AppendMulti": "write",
    _SERVICE + "GetTracking": "read",
    _SERVICE + "ListStreams": "read",
    # Event ordinals (hydra.eventsourcing's notification IDs).
    _SERVICE + "ReadOrdinals": "read",
    _SERVICE + "GetOrdinal": "read",
    # Stream metadata: retention rules hide events for good once scavenged, as a
    # delete does, so setting them needs admin.
    _SERVICE + "SetStreamMetadata": "admin",
    _SERVICE + "GetStreamMetadata": "read",
    # Scavenging: an operator's job (rewrites segment files).
    _SERVICE + "Scavenge": "admin",
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    # The schema is no secret (it is in proto/), but who asks is worth knowing.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "read",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "read",
}

# (method, path prefix, "=exact path" or "*suffix") -> role; first match wins.
HTTP_ROLES: tuple[tuple[str, str, Role | None], ...] = (
    # Snapshots: a cache of state the stream's events already hold; a writer may
    # save and remove them.
    ("PUT", "*/snapshot", "write"),
    ("DELETE", "*/snapshot", "write"),
    # Stream metadata: retention rules hide events for good once scavenged, as a
    # delete does (GET falls under /streams/: read).
    ("PUT", "*/metadata", "admin"),
    ("GET", "=/health", OPEN),
    ("GET", "=/openapi.json", OPEN),
    # Operational detail (rates, positions, processes) for a scraper with a token.
    ("GET", "=/metrics", "read"),
    ("GET", "/streams/", "read"),
    ("GET", "=/all", "read"),
    ("GET", "/subscribe/", "read"),
    ("POST", "/streams/", "write"),
    ("DELETE", "/streams/", "admin"),
    # Multi-stream appends and tracking records.
    ("POST", "=/append", "write"),
    ("GET", "/tracking/", "read"),
    ("GET", "=/streams", "read"),
    # Scavenging: an operator's job (rewrites segment files).
    ("POST", "=/admin/scavenge", "admin"),
    # The web console's static files: public; what it shows comes from the API
    # calls it makes with the token the user gives it.
    ("GET", "=/ui", OPEN),
    ("GET", "/ui/", OPEN),
)


def grpc_role(method: str) -> Role | None:
    return GRPC_ROLES.get(method, "admin")


def http_role(method: str, path: str) -> Role | None:
    if method == "HEAD":
        method = "GET"
    for m, pattern, role in HTTP_ROLES:
        if m != method:
            continue
        if pattern.startswith("=") and path == pattern[1:]:
            return role
        if pattern.startswith("*"):
            if path.startswith("/streams/") and path.endswith(pattern[1:]):
                return role
        elif not pattern.startswith("=") and path.startswith(pattern):
            return role
    return "admin"


# -- the decision ----------------------------------------------------------------


class Authenticator:
    """The tokens of ``path``; ``reload()`` re-reads it (SIGHUP)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokens = TokenFile.load(path)  # raises InvalidArgument: refuse to start

    def __len__(self) -> int:
        return len(self._tokens)

    def reload(self) -> bool:
        """Re-read the file. A bad file keeps the tokens in force (and says why):
        a typo must not lock every client out, nor let anyone in."""
        try:
            tokens = TokenFile.load(self.path)
        except HydraError as exc:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            return False
        self._tokens = tokens
        log.info("tokens reloaded from %s: %d tokens", self.path, len(tokens))
        return True

    def check(self, authorization: str | None, need: Role, what: str) -> Principal:
        """The caller, if ``authorization`` (the header's value) allows ``what``.

        Raises Unauthenticated (no or unknown token) or PermissionDenied (the
        token's role is below ``need``).
        """
        if not authorization:
            raise Unauthenticated(
                f"{what} needs a bearer token (header 'authorization: Bearer TOKEN')"
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must be 'Bearer TOKEN'")
        principal = self._tokens.lookup(token.strip())
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        if RANK[principal.role] < RANK[need]:
            raise PermissionDenied(
                f"token {principal.name!r} has role {principal.role}; {what} needs {need}"
            )
        return principal


# -- HTTP ------------------------------------------------------------------------

class AuthMiddleware:
    """Pure ASGI middleware (no Request object per call): refuse before routing."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        need = http_role(method, path)
        if need is not None:
            header = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    header = value.decode("latin-1")
                    break
            try:
                self.auth.check(header, need, f"{method} {path}")
            except HydraError as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, exc: HydraError) -> None:
    status, body = http_error(exc)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="hydra"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- gRPC ------------------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks the ``authorization`` metadata before the RPC's handler runs."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        need = grpc_role(details.method)
        if need is None:
            return await continuation(details)
        header = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        try:
            self.auth.check(header, need, details.method.lstrip("/"))
        except HydraError as exc:
            handler = await continuation(details)
            return None if handler is None else _refusing(handler, exc)
        return await continuation(details)


def _refusing(handler: Any, exc: HydraError) -> Any:
    """A handler of the same shape as ``handler`` that fails with ``exc``'s status."""
    code, message, _ = grpc_error(exc)

    async def unary(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: Any) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(streaming if handler.response_streaming else unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

