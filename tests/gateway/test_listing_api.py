"""GET /streams and ListStreams: paging newest first and by prefix, over both APIs,
against the embedded gateway and the real server (plain and with tokens and TLS)."""

from __future__ import annotations

import grpc
import pytest

from hydra._proto import eventstore_pb2 as pb


def _append(http, stream: str, n: int) -> int:
    body = {"events": [{"data": "eA=="} for _ in range(n)], "expectedVersion": -1}
    r = http.post(f"/streams/{stream}", json=body)
    assert r.status_code == 201, r.text
    return r.json()["committedPosition"]


def _http_pages(http, **params) -> list[list[dict]]:
    pages = []
    after = None
    while True:
        q = dict(params) | ({"after": after} if after is not None else {})
        r = http.get("/streams", params=q)
        assert r.status_code == 200, r.text
        doc = r.json()
        pages.append(doc["streams"])
        after = doc["next"]
        if after is None:
            return pages


def test_http_listing(http, stream):
    names = [f"{stream}-{i}" for i in range(5)]
    for i, name in enumerate(names):
        committed = _append(http, name, i + 1)
    _append(http, names[1], 1)  # now the newest
    r = http.get("/streams", params={"limit": 3, "min_position": committed})
    doc = r.json()
    newest = [s["streamId"] for s in doc["streams"]]
    assert newest == [names[1], names[4], names[3]]
    first = doc["streams"][0]
    assert first["eventCount"] == 3 and first["version"] == 2
    assert first["lastPosition"] < doc["committedPosition"]
    r = http.get("/streams", params={"limit": 2, "after": doc["next"]})
    assert [s["streamId"] for s in r.json()["streams"]] == [names[2], names[0]]

    pages = _http_pages(http, prefix=stream + "-", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [s["streamId"] for p in pages for s in p]
    assert listed == sorted(names)
    assert [s["eventCount"] for p in pages for s in p] == [1, 3, 3, 4, 5]

    assert http.delete(f"/streams/{names[0]}").status_code == 200
    r = http.get("/streams", params={"prefix": stream})
    assert [s["streamId"] for s in r.json()["streams"]] == names[1:]
    assert r.json()["next"] is None


@pytest.mark.parametrize("query, message", [
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=x", "limit must be a decimal integer"),
    ("after=abc", "after must be a log position"),
    ("prefix=%00", "NUL"),
    ("prefix=" + "a" * 300, "longer than the longest stream ID"),
    ("prefix=%FF", "not valid UTF-8"),
    ("sort=name", "unknown query parameter"),
    ("limit=1&limit=2", "given twice"),
])
def test_http_listing_bad_input(http, query, message):
    r = http.get(f"/streams?{query}")
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_grpc_listing(http, stub, stream):
    names = [f"{stream}-{i}" for i in range(3)]
    for name in names:
        committed = _append(http, name, 2)
    page = stub.ListStreams(pb.ListStreamsRequest(limit=2, min_position=committed))
    assert [s.stream_id for s in page.streams] == [names[2], names[1]]
    assert page.streams[0].event_count == 2 and page.streams[0].version == 1
    assert page.next == str(page.streams[1].last_position)
    page = stub.ListStreams(pb.ListStreamsRequest(prefix=stream, after=names[0]))
    assert [s.stream_id for s in page.streams] == names[1:]
    assert page.next == "" and page.committed_position >= committed
    with pytest.raises(grpc.RpcError) as info:
        stub.ListStreams(pb.ListStreamsRequest(limit=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.ListStreams(pb.ListStreamsRequest(after="x"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
