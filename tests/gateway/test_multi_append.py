"""POST /append, GET /tracking/{name}, AppendMulti and GetTracking on every target."""

from __future__ import annotations

import base64
import uuid

import grpc
import pytest

from hydra._proto import eventstore_pb2 as pb


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def part(stream: str, *datas: bytes, expected: int | None = None, event_id: str = "") -> dict:
    doc: dict = {"streamId": stream,
                 "events": [{"data": b64(d), "eventId": event_id if n == 0 else ""}
                            for n, d in enumerate(datas)]}
    if expected is not None:
        doc["expectedVersion"] = expected
    return doc


@pytest.fixture
def app() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def test_http_append_multi_and_tracking(http, stream, app):
    a, b = stream + "-a", stream + "-b"
    r = http.post("/append", json={"appends": [part(a, b"1", event_id="x"),
                                               part(b, b"2", b"3")],
                                   "tracking": {"applicationName": app, "notificationId": 7}})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert [x["version"] for x in doc["results"]] == [0, 1]
    # The parts' last events' ordinals: a's one event, then b's two.
    first, last = (x["ordinal"] for x in doc["results"])
    assert last == first + 2
    committed = doc["committedPosition"]
    assert committed > doc["results"][1]["position"]
    t = http.get(f"/tracking/{app}", params={"min_position": committed})
    assert t.json() == {"applicationName": app, "notificationId": 7}
    positions = [e["position"] for e in map(_json_line, http.get(
        "/all", params={"from": doc["results"][0]["position"], "limit": 3}).text.splitlines())]
    assert positions[0] == doc["results"][0]["position"]
    # A failing stream writes nothing and is named.
    r = http.post("/append", json={"appends": [part(a, b"z", expected=1),
                                               part(b, b"z", expected=5)]})
    assert r.status_code == 409 and r.json()["streamId"] == b
    assert r.json()["currentVersion"] == 2
    assert len(http.get(f"/streams/{a}").text.splitlines()) == 1
    # Tracking conflict.
    r = http.post("/append", json={"appends": [part(a, b"z", expected=1)],
                                   "tracking": {"applicationName": app, "notificationId": 7}})
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "tracking_conflict"
    assert r.json()["currentNotificationId"] == 7
    # Idempotent repeat per stream.
    r = http.post("/append", json={"appends": [part(a, b"1", event_id="x", expected=0)]})
    assert r.status_code == 201 and r.json()["results"][0]["duplicate"] is True
    assert http.get(f"/tracking/{app}-none").json()["notificationId"] is None


def _json_line(line: str) -> dict:
    import json

    return json.loads(line)


@pytest.mark.parametrize("body, fragment", [
    ({}, "at least one stream"),
    ({"appends": "x"}, "must be a JSON array"),
    ({"appends": [{"events": []}]}, "streamId is required"),
    ({"appends": [{"streamId": "s", "events": []}]}, "at least one event"),
    ({"appends": [{"streamId": "s", "events": [{"data": "AA=="}], "bogus": 1}]},
     "unknown field"),
    ({"appends": [], "tracking": {"applicationName": "a", "notificationId": -1}},
     "notificationId"),
    ({"appends": [], "tracking": {"applicationName": "", "notificationId": 1}},
     "applicationName"),
    ({"appends": [], "tracking": 3}, "tracking must be"),
])
def test_http_bad_multi_append(http, body, fragment):
    r = http.post("/append", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_grpc_append_multi_and_tracking(stub, stream, app):
    req = pb.AppendMultiRequest(
        appends=[pb.StreamAppend(stream_id=stream + "-a", events=[pb.NewEvent(data=b"1")],
                                 expected_version=0),
                 pb.StreamAppend(stream_id=stream + "-b",
                                 events=[pb.NewEvent(data=b"2"), pb.NewEvent(data=b"3")],
                                 expected_version=0)],
        tracking=pb.Tracking(application_name=app, notification_id=3))
    r = stub.AppendMulti(req)
    assert [x.version for x in r.results] == [0, 1]
    assert len(r.ordinals) == 2 and r.ordinals[1] == r.ordinals[0] + 2
    o = stub.GetOrdinal(pb.GetOrdinalRequest(position=r.results[1].position,
                                             min_position=r.committed_position))
    assert (o.found, o.ordinal) == (True, r.ordinals[1])
    t = stub.GetTracking(pb.GetTrackingRequest(application_name=app,
                                               min_position=r.committed_position))
    assert (t.found, t.notification_id) == (True, 3)
    assert not stub.GetTracking(pb.GetTrackingRequest(application_name=app + "x")).found
    with pytest.raises(grpc.RpcError) as info:
        stub.AppendMulti(req)  # same expected versions again: the first stream fails
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert stream + "-a" in info.value.details()
    req2 = pb.AppendMultiRequest(
        appends=[pb.StreamAppend(stream_id=stream + "-a", events=[pb.NewEvent(data=b"x")],
                                 expected_version=1)],
        tracking=pb.Tracking(application_name=app, notification_id=2))
    with pytest.raises(grpc.RpcError) as info:
        stub.AppendMulti(req2)
    assert info.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as info:
        stub.AppendMulti(pb.AppendMultiRequest(
            appends=[pb.StreamAppend(stream_id="", events=[pb.NewEvent(data=b"x")])]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_subscribers_see_a_multi_stream_append_contiguously(stub, http, stream):
    """Single appends race with multi-stream appends; no event lands inside a batch."""
    import threading

    start = http.get("/health").json()["committedPosition"]
    call = stub.SubscribeToAll(pb.SubscribeToAllRequest(from_position=start,
                                                        stream_prefix=stream), timeout=60)
    stop = threading.Event()
    noise: list[int] = []

    def racer() -> None:
        while not stop.is_set():
            r = stub.AppendBatch(pb.AppendBatchRequest(
                stream_id=stream + "-noise", events=[pb.NewEvent(data=b"n")],
                expected_version=-1))
            noise.append(r.position)

    thread = threading.Thread(target=racer)
    thread.start()
    batches = 15
    try:
        for n in range(batches):
            stub.AppendMulti(pb.AppendMultiRequest(appends=[
                pb.StreamAppend(stream_id=f"{stream}-{k}", expected_version=-1,
                                events=[pb.NewEvent(data=b"%d" % n) for _ in range(2)])
                for k in range(3)]))
    finally:
        stop.set()
        thread.join()
    try:
        got = []
        while sum(1 for e in got if not e.stream_id.endswith("-noise")) < batches * 6:
            got.append(next(call))
    finally:
        call.cancel()
    assert noise, "the racing appender never ran"
    runs = []
    for e in got:
        key = None if e.stream_id.endswith("-noise") else e.data
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    batch_runs = [r for r in runs if r[0] is not None]
    assert [r[1] for r in batch_runs] == [6] * batches, batch_runs
