"""Scavenging over HTTP and gRPC (embedded, server, secure): the result, the
progress in /health, reads unchanged, and the admin role it needs."""

from __future__ import annotations

import base64

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb

FIELDS = ("segmentsScanned", "segmentsRewritten", "eventsRemoved", "snapshotsRemoved",
          "bytesReclaimed", "duration")


def _append(http, stream: str, n: int) -> None:
    r = http.post(f"/streams/{stream}", json={
        "events": [{"data": base64.b64encode(b"e%d" % i).decode()} for i in range(n)],
        "expectedVersion": -1})
    assert r.status_code == 201, r.text


def test_http_and_grpc_scavenge(http, stub, stream, target):
    _append(http, stream, 3)
    _append(http, stream + "-gone", 3)
    assert http.delete(f"/streams/{stream}-gone").status_code in (200, 204)
    before = http.get(f"/streams/{stream}").text
    r = http.post("/admin/scavenge", timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == set(FIELDS)
    assert all(type(doc[k]) is int and doc[k] >= 0 for k in FIELDS[:-1])
    assert http.get(f"/streams/{stream}").text == before
    reply = stub.Scavenge(pb.ScavengeRequest(), timeout=60)
    assert reply.segments_rewritten >= 0 and reply.duration >= 0
    if target.kind != "embedded":
        state = http.get("/health").json()["writer"]["scavenge"]
        assert state["running"] is False and state["runs"] >= 2
        assert set(state["last"]) == set(FIELDS)


def test_http_scavenge_needs_post(http):
    assert http.get("/admin/scavenge").status_code == 405


def test_scavenge_needs_the_admin_role(secure_cluster):
    s = secure_cluster
    for role in ("read", "write"):
        with httpx.Client(base_url=s.http_url, verify=s.verify, headers={
                "authorization": f"Bearer {s.tokens[role]}"}) as client:
            assert client.post("/admin/scavenge").status_code == 403
    with open(s.certs.ca, "rb") as f:
        ca = f.read()
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=ca),
        grpc.access_token_call_credentials(s.tokens["write"]))
    with grpc.secure_channel(s.grpc_target, creds) as ch:
        from hydra._proto import eventstore_pb2_grpc as pb_grpc

        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.EventStoreStub(ch).Scavenge(pb.ScavengeRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
