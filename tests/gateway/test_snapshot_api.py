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


# -- the history: the newest kept versions, chosen by version and listed ------------

def _save(http, stream: str, version: int) -> dict:
    r = http.put(f"/streams/{stream}/snapshot",
                 json={"version": version, "state": _b64(b"s%d" % version)})
    assert r.status_code == 200 and r.json()["written"], r.text
    return r.json()


def test_http_history(http, stream):
    r = http.get(f"/streams/{stream}/snapshots")
    assert r.status_code == 200 and r.json() == {"streamId": stream, "snapshots": []}
    _fill(http, stream, 10)
    for v in range(1, 10, 2):
        saved = _save(http, stream, v)
    q = {"min_position": saved["committedPosition"]}
    r = http.get(f"/streams/{stream}/snapshots", params=q)
    assert r.status_code == 200, r.text
    docs = r.json()["snapshots"]
    assert [(d["version"], base64.b64decode(d["state"])) for d in docs] == [
        (3, b"s3"), (5, b"s5"), (7, b"s7"), (9, b"s9")]
    assert docs[-1]["position"] == saved["position"] and docs[-1]["streamId"] == stream
    assert http.get(f"/streams/{stream}/snapshot", params=q).json() == docs[-1]
    for top, expected in ((9, 9), (8, 7), (7, 7), (3, 3), (100, 9)):
        r = http.get(f"/streams/{stream}/snapshot", params={**q, "max_version": top})
        assert r.status_code == 200 and r.json()["version"] == expected, (top, r.text)
    for top in (2, 0):
        r = http.get(f"/streams/{stream}/snapshot", params={**q, "max_version": top})
        assert r.status_code == 404 and r.json()["type"] == "snapshot_not_found"
        assert f"at or below version {top}" in r.json()["error"]
    # A delete of the snapshots removes every kept one.
    assert http.delete(f"/streams/{stream}/snapshot").status_code == 200
    r = http.get(f"/streams/{stream}/snapshots")
    assert r.status_code == 200 and r.json()["snapshots"] == []


@pytest.mark.parametrize("path, query, words", [
    ("snapshot", "max_version=-1", "max_version must be between"),
    ("snapshot", "max_version=x", "max_version must be a decimal integer"),
    ("snapshot", "max_version=1.5", "max_version must be a decimal integer"),
    ("snapshot", "max_version=", "max_version must be a decimal integer"),
    ("snapshot", "max_version=99999999999999999999", "max_version must be between"),
    ("snapshot", "max_version=1&max_version=2", "given twice"),
    ("snapshot", "from=1", "unknown query parameter"),
    ("snapshots", "max_version=1", "unknown query parameter"),
    ("snapshots", "min_position=-1", "min_position must be between"),
])
def test_http_bad_snapshot_query(http, stream, path, query, words):
    _fill(http, stream, 3)
    _save(http, stream, 1)
    r = http.get(f"/streams/{stream}/{path}?{query}")
    assert r.status_code == 400, r.text
    assert words in r.json()["error"], r.json()


def test_http_snapshots_path_answers_only_get(http, stream):
    _fill(http, stream, 1)
    r = http.post(f"/streams/{stream}/snapshots", json={})
    assert r.status_code == 405
    assert len(http.get(f"/streams/{stream}").text.splitlines()) == 1


def test_grpc_history(stub, stream):
    stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, expected_version=-1,
                                           events=[pb.NewEvent(data=b"x")] * 10))
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(stream_id=stream))
    assert list(listed.snapshots) == []
    for v in range(1, 10, 2):
        saved = stub.SaveSnapshot(pb.SaveSnapshotRequest(stream_id=stream, version=v,
                                                         state=b"s%d" % v, snapshot_type="T"))
    at = saved.committed_position
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(stream_id=stream, min_position=at))
    assert [(s.found, s.version, s.state, s.snapshot_type) for s in listed.snapshots] == [
        (True, v, b"s%d" % v, "T") for v in (3, 5, 7, 9)]
    assert listed.snapshots[-1].position == saved.position
    # Without max_version (an older client's request): the newest.
    newest = stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream, min_position=at))
    assert newest == listed.snapshots[-1]

    def load(top: int) -> int | None:
        r = stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream, min_position=at,
                                                     max_version=top))
        return r.version if r.found else None

    assert [load(n) for n in (0, 2, 3, 4, 8, 9, 1 << 40)] == [None, None, 3, 3, 7, 9, 9]


@pytest.mark.parametrize("rpc, fields, words", [
    ("LoadSnapshot", {"max_version": -1}, "max_version must be between"),
    ("LoadSnapshot", {"min_position": -1}, "min_position must be between"),
    ("ListSnapshots", {"min_position": -1}, "min_position must be between"),
    ("ListSnapshots", {"stream_id": "a/b"}, "'/'"),
    ("ListSnapshots", {"stream_id": ""}, "empty"),
])
def test_grpc_bad_history_request(stub, stream, rpc, fields, words):
    stub.Append(pb.AppendRequest(stream_id=stream, data=b"x", expected_version=-1))
    request_ = getattr(pb, rpc + "Request")(**{"stream_id": stream, **fields})
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
