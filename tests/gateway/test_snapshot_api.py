"""Snapshots over HTTP and gRPC, against the embedded and the real server (writer +
gateways): save, load, replace, delete, incarnations, bad input of every field,
and never in reads."""

from __future__ import annotations

import base64

import grpc
import pytest

from hydra._proto import eventstore_pb2 as pb


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _fill(http, stream: str, n: int) -> dict:
    r = http.post(f"/streams/{stream}", json={
        "events": [{"data": _b64(b"e%d" % i), "eventType": "T"} for i in range(n)],
        "expectedVersion": -1})
    assert r.status_code == 201, r.text
    return r.json()


def test_http_save_load_delete(http, stream):
    assert http.get(f"/streams/{stream}/snapshot").status_code == 404
    appended = _fill(http, stream, 5)
    r = http.put(f"/streams/{stream}/snapshot",
                 json={"version": 3, "state": _b64(b"\x00state"), "snapshotType": "Acc"})
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["written"] is True and saved["version"] == 3
    assert saved["position"] > appended["position"]
    r = http.get(f"/streams/{stream}/snapshot")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["streamId"], doc["version"], base64.b64decode(doc["state"]),
            doc["snapshotType"], doc["position"]) == (stream, 3, b"\x00state", "Acc",
                                                       saved["position"])
    # snake_case fields; an older version writes nothing (newest version wins).
    r = http.put(f"/streams/{stream}/snapshot", json={"version": 1, "state": _b64(b"old"),
                                                      "snapshot_type": ""})
    assert {k: v for k, v in r.json().items() if k != "committedPosition"} == {
        "position": saved["position"], "version": 3, "written": False}
    assert r.json()["committedPosition"] > saved["position"]
    # Never in reads.
    assert len(http.get(f"/streams/{stream}").text.splitlines()) == 5
    r = http.delete(f"/streams/{stream}/snapshot")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert r.json()["committedPosition"] > saved["position"]
    r = http.get(f"/streams/{stream}/snapshot")
    assert r.status_code == 404 and r.json()["type"] == "snapshot_not_found"
    assert http.delete(f"/streams/{stream}/snapshot").status_code == 404


def test_http_snapshot_ends_with_its_incarnation(http, stream):
    _fill(http, stream, 2)
    assert http.put(f"/streams/{stream}/snapshot",
                    json={"version": 1, "state": _b64(b"s")}).status_code == 200
    assert http.delete(f"/streams/{stream}").status_code == 200
    assert http.get(f"/streams/{stream}/snapshot").status_code == 404
    _fill(http, stream, 1)
    assert http.get(f"/streams/{stream}/snapshot").status_code == 404


@pytest.mark.parametrize("body, words", [
    (b"", ("empty",)),
    (b"[1]", ("JSON object",)),
    (b"{", ("not valid JSON",)),
    (b'{"state": "eA=="}', ("version is required",)),
    (b'{"version": 0}', ("state is required",)),
    (b'{"version": "0", "state": "eA=="}', ("version must be an integer",)),
    (b'{"version": -1, "state": "eA=="}', ("version must be between",)),
    (b'{"version": 7, "state": "eA=="}', ("is not a version",)),
    (b'{"version": 0, "state": "%%%"}', ("not valid base64",)),
    (b'{"version": 0, "state": 5}', ("base64 string",)),
    (b'{"version": 0, "state": "eA==", "snapshotType": 3}', ("snapshotType",)),
    (b'{"version": 0, "state": "eA==", "extra": 1}', ("unknown field",)),
    (b'{"version": 0, "version": 1, "state": "eA=="}', ("twice",)),
])
def test_http_bad_input(http, stream, body, words):
    _fill(http, stream, 2)
    r = http.put(f"/streams/{stream}/snapshot", content=body)
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["error"], r.json()
    assert http.get(f"/streams/{stream}/snapshot").status_code == 404


def test_http_missing_stream_and_bad_id(http, stream):
    r = http.put(f"/streams/{stream}/snapshot", json={"version": 0, "state": ""})
    assert r.status_code == 400 and "no events" in r.json()["error"]
    assert http.get("/streams/a%00b/snapshot").status_code == 400


def test_grpc_save_load_delete(stub, stream):
    stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, expected_version=-1,
                                           events=[pb.NewEvent(data=b"x")] * 4))
    assert not stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream)).found
    saved = stub.SaveSnapshot(pb.SaveSnapshotRequest(stream_id=stream, version=2,
                                                     state=b"two", snapshot_type="T"))
    assert saved.written and saved.version == 2 and saved.committed_position > saved.position
    snap = stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream,
                                                    min_position=saved.committed_position))
    assert (snap.found, snap.stream_id, snap.version, snap.state, snap.snapshot_type,
            snap.position) == (True, stream, 2, b"two", "T", saved.position)
    assert snap.timestamp_us > 1_600_000_000_000_000
    assert len(list(stub.ReadStream(pb.ReadStreamRequest(stream_id=stream)))) == 4
    assert stub.DeleteSnapshot(pb.DeleteSnapshotRequest(stream_id=stream)).deleted
    assert not stub.DeleteSnapshot(pb.DeleteSnapshotRequest(stream_id=stream)).deleted
    assert not stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream)).found


@pytest.mark.parametrize("request_, words", [
    (dict(stream_id="", version=0), "empty"),
    (dict(version=-1), "version must be between"),
    (dict(version=9), "is not a version"),
    (dict(version=0, snapshot_type="a\x01"), "control character"),
    (dict(version=0, state=b"x" * (2 << 20)), "limit"),
])
def test_grpc_bad_input(stub, stream, request_, words):
    stub.Append(pb.AppendRequest(stream_id=stream, data=b"x", expected_version=-1))
    request_ = {"stream_id": stream, **request_}
    with pytest.raises(grpc.RpcError) as info:
        stub.SaveSnapshot(pb.SaveSnapshotRequest(**request_))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


def test_a_snapshot_saved_through_the_writer_is_seen_by_every_process(cluster, stream):
    """Saved over HTTP (gateway -> writer), loaded by a ReadOnlyView of this process
    and by fresh connections (spread over both gateways)."""
    import httpx

    import hydra

    with httpx.Client(base_url=cluster.http_url, timeout=10) as http:
        _fill(http, stream, 3)
        r = http.put(f"/streams/{stream}/snapshot", json={"version": 2, "state": _b64(b"s2")})
        assert r.status_code == 200
    with hydra.open(cluster.data, read_only=True) as view:
        snap = view.load_snapshot(stream)
        assert snap is not None and snap.state == b"s2" and snap.version == 2
    for _ in range(6):
        with httpx.Client(base_url=cluster.http_url, timeout=10) as http:
            r = http.get(f"/streams/{stream}/snapshot",
                         params={"min_position": snap.position + 1})
            assert r.status_code == 200 and r.json()["version"] == 2
