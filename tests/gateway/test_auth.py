"""Authentication and TLS, against the real server (supervisord, writer, 2 gateways)
with a tokens file and a certificate made at test time: every role against every
endpoint and RPC, refusals, token reload on SIGHUP, TLS on both protocols."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb
from hydra._tokens import add_token, remove_token
from hydra.client import HttpClient, HydraClient
from hydra.errors import PermissionDenied, Unauthenticated, Unavailable
from hydra.gateway import _auth
from hydra.gateway._http import build_app
from hydra.limits import DEFAULT_LIMITS
from tests._server import SecureCluster

ROLE_ORDER = ["none", "bogus", "read", "write", "admin"]
RANK = {"read": 2, "write": 3, "admin": 4}


def _auth_headers(cluster: SecureCluster, who: str) -> dict[str, str]:
    if who == "none":
        return {}
    if who == "bogus":
        return {"authorization": "Bearer hydra_not-a-real-token"}
    return {"authorization": f"Bearer {cluster.tokens[who]}"}


def _expect(need: str | None, who: str) -> str:
    """'ok', 'unauthenticated' or 'denied' for a caller ``who`` at an endpoint needing ``need``."""
    if need is None:
        return "ok"
    if who in ("none", "bogus"):
        return "unauthenticated"
    return "ok" if RANK[who] >= RANK[need] else "denied"


# -- HTTP ---------------------------------------------------------------------------

HTTP_CASES = [
    # (method, path, body, role needed)
    ("GET", "/health", None, None),
    ("GET", "/openapi.json", None, None),
    ("GET", "/streams/{s}", None, "read"),
    ("GET", "/all?limit=1", None, "read"),
    ("GET", "/subscribe/all?from=0", None, "read"),
    ("GET", "/subscribe/streams/{s}", None, "read"),
    ("POST", "/streams/{s}", b'{"data": "eA==", "expectedVersion": -1}', "write"),
    ("DELETE", "/streams/{s}", None, "admin"),
    ("GET", "/streams/{s}/snapshot", None, "read"),
    ("PUT", "/streams/{s}/snapshot", b'{"version": 0, "state": "eA=="}', "write"),
    ("DELETE", "/streams/{s}/snapshot", None, "write"),
    ("GET", "/streams/{s}/metadata", None, "read"),
    ("PUT", "/streams/{s}/metadata", b'{"maxCount": 5}', "admin"),
    ("GET", "/metrics", None, "read"),
    ("GET", "/streams?limit=1", None, "read"),
    ("GET", "/ui/", None, None),
    ("GET", "/ui/console.js", None, None),
]


def test_every_route_and_rpc_has_a_role() -> None:
    """A new endpoint or RPC must be classified on purpose (unnamed ones need admin)."""
    class Unused:  # build_app only needs something to hand the routes; none is called
        committed_position = 0
        limits = DEFAULT_LIMITS

    app = build_app(Unused(), 1024)  # type: ignore[arg-type]
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method == "HEAD":
                continue
            path = route.path.replace("{stream_id:path}", "s")  # type: ignore[attr-defined]
            assert any(m == method and (p == "=" + path or
                                        (p.startswith("*") and path.endswith(p[1:])) or
                                        (p[:1] not in "=*" and path.startswith(p)))
                       for m, p, _ in _auth.HTTP_ROLES), f"{method} {path} has no role"
    service = pb.DESCRIPTOR.services_by_name["EventStore"]
    for method in service.methods:
        name = f"/eventstore.EventStore/{method.name}"
        assert name in _auth.GRPC_ROLES, f"{name} has no role"
    assert _auth.grpc_role("/eventstore.EventStore/SomethingNew") == "admin"
    assert _auth.http_role("PUT", "/anything") == "admin"


@pytest.mark.parametrize("who", ROLE_ORDER)
@pytest.mark.parametrize("method, path, body, need", HTTP_CASES)
def test_http_roles(secure_cluster: SecureCluster, method: str, path: str, body: bytes | None,
                    need: str | None, who: str) -> None:
    stream = f"auth-{uuid.uuid4().hex[:10]}"
    url = path.replace("{s}", stream)
    with httpx.Client(base_url=secure_cluster.http_url, verify=secure_cluster.verify,
                      timeout=10, headers=_auth_headers(secure_cluster, who)) as c:
        with c.stream(method, url, content=body) as r:
            status = r.status_code
            doc = r.read() if status >= 400 else b""
    expected = _expect(need, who)
    if expected == "ok":
        # Allowed: whatever the operation itself answers (a missing stream is 404).
        assert status not in (401, 403), (status, doc)
        assert status < 500
    elif expected == "unauthenticated":
        assert status == 401, (status, doc)
        assert b'"type":"unauthenticated"' in doc
        assert (b"bearer token" in doc) if who == "none" else (b"unknown or revoked" in doc)
    else:
        assert status == 403, (status, doc)
        assert b'"type":"permission_denied"' in doc
        assert f"role {who}".encode() in doc and f"needs {need}".encode() in doc


def test_http_refusal_has_www_authenticate(secure_cluster: SecureCluster) -> None:
    with httpx.Client(base_url=secure_cluster.http_url, verify=secure_cluster.verify) as c:
        r = c.get("/all")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = c.get("/all", headers={"authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401 and "Bearer TOKEN" in r.json()["error"]


# -- gRPC ---------------------------------------------------------------------------

_SERVICE = pb.DESCRIPTOR.services_by_name["EventStore"]


def _request(method_name: str, stream: str) -> Any:
    method = _SERVICE.methods_by_name[method_name]
    cls = getattr(pb, method.input_type.name)
    fields = {f.name for f in method.input_type.fields}
    kwargs: dict[str, Any] = {}
    if "stream_id" in fields:
        kwargs["stream_id"] = stream
    if method_name == "Append":
        kwargs.update(data=b"x", expected_version=-1)
    if method_name == "AppendBatch":
        kwargs.update(events=[pb.NewEvent(data=b"x")], expected_version=-1)
    if method_name == "DeleteStream":
        kwargs.update(expected_version=-1)
    return cls(**kwargs)


def _call(channel: grpc.Channel, method_name: str, stream: str,
          metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    method = _SERVICE.methods_by_name[method_name]
    path = f"/eventstore.EventStore/{method_name}"
    response_cls = getattr(pb, method.output_type.name)
    request = _request(method_name, stream)
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                        response_deserializer=response_cls.FromString)
            for _ in call(request, metadata=metadata, timeout=1.0):
                break
        else:
            call = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                       response_deserializer=response_cls.FromString)
            call(request, metadata=metadata, timeout=5.0)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tls_channel(secure_cluster: SecureCluster) -> Any:
    with open(secure_cluster.certs.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(secure_cluster.grpc_target, creds) as channel:
        yield channel


@pytest.mark.parametrize("who", ROLE_ORDER)
@pytest.mark.parametrize("method_name", [m.name for m in _SERVICE.methods])
def test_grpc_roles(secure_cluster: SecureCluster, tls_channel: grpc.Channel,
                    method_name: str, who: str) -> None:
    stream = f"auth-{uuid.uuid4().hex[:10]}"
    need = _auth.grpc_role(f"/eventstore.EventStore/{method_name}")
    metadata = list(_auth_headers(secure_cluster, who).items())
    code = _call(tls_channel, method_name, stream, metadata)
    expected = _expect(need, who)
    if expected == "ok":
        assert code not in (grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNIMPLEMENTED), code
    elif expected == "unauthenticated":
        assert code == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_grpc_refusal_messages_and_open_services(secure_cluster: SecureCluster,
                                                 tls_channel: grpc.Channel) -> None:
    read = [("authorization", f"Bearer {secure_cluster.tokens['read']}")]
    call = tls_channel.unary_unary("/eventstore.EventStore/DeleteStream",
                                   request_serializer=pb.DeleteStreamRequest.SerializeToString,
                                   response_deserializer=pb.DeleteStreamResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(pb.DeleteStreamRequest(stream_id="x"), metadata=read, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "token 'test-read' has role read" in info.value.details()
    assert "needs admin" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        call(pb.DeleteStreamRequest(stream_id="x"), timeout=5)
    assert "needs a bearer token" in info.value.details()
    # The standard health service stays open, as /health does.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(tls_channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- the clients ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_clients_raise_the_refusals(secure_cluster: SecureCluster, kind: str) -> None:
    def client(token: str | None) -> Any:
        if kind == "grpc":
            return HydraClient(secure_cluster.grpc_target, token=token,
                               ca_file=secure_cluster.certs.ca, retry=None)
        return HttpClient(secure_cluster.http_url, token=token,
                          ca_file=secure_cluster.certs.ca, retry=None)

    stream = f"auth-{uuid.uuid4().hex[:10]}"
    with client(None) as c:
        with pytest.raises(Unauthenticated):
            list(c.read_stream(stream))
        assert c.health().status  # open
    with client(secure_cluster.tokens["read"]) as c:
        assert list(c.read_stream(stream)) == []
        with pytest.raises(PermissionDenied, match="needs write"):
            c.append(stream, "e1", b"x", -1)
    with client(secure_cluster.tokens["write"]) as c:
        c.append(stream, "e1", b"x", -1)
        with pytest.raises(PermissionDenied, match="needs admin"):
            c.delete_stream(stream)
    with client(secure_cluster.tokens["admin"]) as c:
        c.delete_stream(stream)


# -- reload --------------------------------------------------------------------------


def _status_on_every_gateway(cluster: SecureCluster, token: str, tries: int = 20) -> set[int]:
    statuses = set()
    for _ in range(tries):  # fresh connections land on both gateways
        with httpx.Client(base_url=cluster.http_url, verify=cluster.verify, timeout=5) as c:
            statuses.add(c.get("/all?limit=1",
                               headers={"authorization": f"Bearer {token}"}).status_code)
    return statuses


def _hup(cluster: SecureCluster) -> None:
    cluster.ctl("signal", "HUP", "gateway:*")
    time.sleep(0.5)


def test_tokens_reload_on_sighup(secure_cluster: SecureCluster) -> None:
    path = secure_cluster.tokens_file
    saved = path + ".saved"
    shutil.copy(path, saved)
    try:
        token = add_token(path, "reload-test", "read")
        assert _status_on_every_gateway(secure_cluster, token) == {401}  # not loaded yet
        _hup(secure_cluster)
        assert _status_on_every_gateway(secure_cluster, token) == {200}
        # A broken file is refused and the tokens in force stay.
        with open(path, "a") as f:
            f.write("garbage line\n")
        _hup(secure_cluster)
        assert _status_on_every_gateway(secure_cluster, token) == {200}
        log = open(os.path.join(secure_cluster.logs, "gateway-0.log")).read()
        assert "tokens file not reloaded" in log and "line" in log
        shutil.copy(saved, path)
        os.chmod(path, 0o600)
        add_token(path, "other", "read")
        _hup(secure_cluster)
        assert _status_on_every_gateway(secure_cluster, token) == {401}  # revoked
        assert _status_on_every_gateway(secure_cluster, secure_cluster.tokens["read"]) == {200}
        remove_token(path, "other")
    finally:
        shutil.copy(saved, path)
        os.chmod(path, 0o600)
        os.unlink(saved)
        _hup(secure_cluster)


# -- TLS -----------------------------------------------------------------------------


def test_tls_is_required_and_verified(secure_cluster: SecureCluster, tmp_path: Any) -> None:
    port = secure_cluster.http_port
    with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(httpx.HTTPError):  # a CA that did not sign the certificate
        httpx.get(f"https://127.0.0.1:{port}/health", timeout=5)
    r = httpx.get(f"https://127.0.0.1:{port}/health", verify=secure_cluster.verify, timeout=5)
    assert r.status_code == 200
    with grpc.insecure_channel(secure_cluster.grpc_target) as plain:
        code = _call(plain, "Health", "x", [])
    assert code == grpc.StatusCode.UNAVAILABLE
    from tests._certs import make_certs

    other = make_certs(str(tmp_path))
    with HydraClient(secure_cluster.grpc_target, ca_file=other.ca, retry=None,
                     timeout=3) as c:
        with pytest.raises(Unavailable):
            c.health()
    with HydraClient(secure_cluster.grpc_target, ca_file=secure_cluster.certs.ca) as c:
        assert c.health().status == "ok"


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_async_clients_subscribe_with_a_token(secure_cluster: SecureCluster, kind: str) -> None:
    import asyncio

    from hydra.client import AsyncHttpClient, AsyncHydraClient

    stream = f"auth-{uuid.uuid4().hex[:10]}"

    async def main() -> list[bytes]:
        cls: Any = AsyncHydraClient if kind == "grpc" else AsyncHttpClient
        address = secure_cluster.grpc_target if kind == "grpc" else secure_cluster.http_url
        async with cls(address, token=secure_cluster.tokens["write"],
                       ca_file=secure_cluster.certs.ca) as c:
            await c.append(stream, "e1", b"one", -1)
            got = []
            async with asyncio.timeout(10):
                async for event in c.subscribe_to_stream(stream):
                    got.append(event.data)
                    if len(got) == 1:
                        await c.append(stream, "e2", b"two", -1)  # arrives live
                    if len(got) == 2:
                        break
            return got

    assert asyncio.run(main()) == [b"one", b"two"]
