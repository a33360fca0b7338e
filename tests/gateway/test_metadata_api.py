"""Stream metadata (retention) over HTTP and gRPC, against the embedded and the real
server (writer + gateways): set, get, the reads it shapes, bad input of every field
(400 / INVALID_ARGUMENT and nothing written), and every process sees it."""

from __future__ import annotations

import json

import grpc
import pytest

from hydra._proto import eventstore_pb2 as pb

from .test_snapshot_api import _b64, _fill


def _versions(http, path: str, **params) -> list[int]:
    r = http.get(path, params={k.rstrip("_"): v for k, v in params.items()})
    assert r.status_code == 200, r.text
    return [json.loads(line)["version"] for line in r.text.splitlines()]


def test_http_set_get_and_reads(http, stream):
    r = http.get(f"/streams/{stream}/metadata")
    assert r.status_code == 200, r.text
    assert r.json() == {"streamId": stream, "maxCount": None, "maxAge": None,
                        "truncateBefore": None, "custom": "", "position": None}
    appended = _fill(http, stream, 6)
    r = http.put(f"/streams/{stream}/metadata",
                 json={"maxCount": 4, "truncate_before": 3, "custom": _b64(b"\x01c")})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["position"] > appended["position"]
    assert doc["committedPosition"] > doc["position"]
    r = http.get(f"/streams/{stream}/metadata",
                 params={"min_position": doc["committedPosition"]})
    assert r.json() == {"streamId": stream, "maxCount": 4, "maxAge": None,
                        "truncateBefore": 3, "custom": _b64(b"\x01c"),
                        "position": doc["position"]}
    assert _versions(http, f"/streams/{stream}") == [3, 4, 5]
    assert _versions(http, f"/streams/{stream}", from_=0) == [3, 4, 5]
    assert _versions(http, f"/streams/{stream}", direction="backward") == [5, 4, 3]
    assert [v for v in _versions(http, "/all")][-3:] == [3, 4, 5]
    # Expected versions still count every event.
    r = http.post(f"/streams/{stream}", json={"data": _b64(b"x"), "expectedVersion": 6})
    assert r.status_code == 201 and r.json()["version"] == 6
    assert _versions(http, f"/streams/{stream}") == [3, 4, 5, 6]
    # A stream that does not exist yet may get metadata.
    r = http.put(f"/streams/{stream}-new/metadata", json={"maxAge": 3600})
    assert r.status_code == 200
    assert http.get(f"/streams/{stream}-new/metadata").json()["maxAge"] == 3600


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"[1]", "JSON object"),
    (b'{"maxCount": 0}', "maxCount must be between 1"),
    (b'{"maxCount": -5}', "maxCount must be between 1"),
    (b'{"maxAge": 0}', "maxAge must be between 1"),
    (b'{"truncateBefore": -1}', "truncateBefore must be between 0"),
    (b'{"maxCount": true}', "maxCount must be an integer"),
    (b'{"maxAge": 1.5}', "maxAge must be an integer"),
    (b'{"maxAge": 10.0}', "maxAge must be an integer"),
    (b'{"truncateBefore": "3"}', "truncateBefore must be an integer"),
    (b'{"maxCount": 9223372036854775808}', "maxCount must be between"),
    (b'{"custom": "%%%"}', "not valid base64"),
    (b'{"custom": 5}', "base64 string"),
    (b'{"maxcount": 1, "max_count": 2}', "twice"),
    (b'{"maxCount": 1, "retention": 2}', "unknown field"),
])
def test_http_bad_input_writes_nothing(http, stream, body, words):
    _fill(http, stream, 2)
    r = http.put(f"/streams/{stream}/metadata", content=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"], r.json()
    assert http.get(f"/streams/{stream}/metadata").json()["position"] is None
    assert _versions(http, f"/streams/{stream}") == [0, 1]


def test_http_other_methods_and_bad_ids(http, stream):
    assert http.post(f"/streams/{stream}/metadata", json={}).status_code == 405
    assert http.delete(f"/streams/{stream}/metadata").status_code == 405
    assert http.get("/streams/a%00b/metadata").status_code == 400
    r = http.get(f"/streams/{stream}/metadata", params={"from": 3})
    assert r.status_code == 400 and "only min_position" in r.json()["error"]


def test_grpc_set_get_and_reads(stub, stream):
    stub.AppendBatch(pb.AppendBatchRequest(stream_id=stream, expected_version=-1,
                                           events=[pb.NewEvent(data=b"x")] * 5))
    got = stub.GetStreamMetadata(pb.GetStreamMetadataRequest(stream_id=stream))
    assert not got.HasField("max_count") and not got.HasField("position")
    r = stub.SetStreamMetadata(pb.SetStreamMetadataRequest(stream_id=stream, max_count=2,
                                                           custom=b"c"))
    assert r.committed_position > r.position
    got = stub.GetStreamMetadata(pb.GetStreamMetadataRequest(
        stream_id=stream, min_position=r.committed_position))
    assert (got.stream_id, got.max_count, got.HasField("max_age"),
            got.HasField("truncate_before"), got.custom, got.position) == (
        stream, 2, False, False, b"c", r.position)
    assert [e.version for e in stub.ReadStream(pb.ReadStreamRequest(stream_id=stream))] == [3, 4]
    # truncate_before=0 is a rule (that hides nothing), distinct from unset.
    r = stub.SetStreamMetadata(pb.SetStreamMetadataRequest(stream_id=stream, truncate_before=0))
    got = stub.GetStreamMetadata(pb.GetStreamMetadataRequest(
        stream_id=stream, min_position=r.committed_position))
    assert got.HasField("truncate_before") and got.truncate_before == 0
    assert len(list(stub.ReadStream(pb.ReadStreamRequest(stream_id=stream)))) == 5


@pytest.mark.parametrize("request_, words", [
    (dict(stream_id=""), "empty"),
    (dict(max_count=0), "max_count must be between 1"),
    (dict(max_count=-1), "max_count must be between 1"),
    (dict(max_age=0), "max_age must be between 1"),
    (dict(truncate_before=-3), "truncate_before must be between 0"),
    (dict(custom=b"x" * (2 << 20)), "limit"),
])
def test_grpc_bad_input_writes_nothing(stub, stream, request_, words):
    stub.Append(pb.AppendRequest(stream_id=stream, data=b"x", expected_version=-1))
    with pytest.raises(grpc.RpcError) as info:
        stub.SetStreamMetadata(pb.SetStreamMetadataRequest(**{"stream_id": stream, **request_}))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    got = stub.GetStreamMetadata(pb.GetStreamMetadataRequest(stream_id=stream))
    assert not got.HasField("position")


def test_metadata_set_through_the_writer_is_seen_by_every_process(cluster, stream):
    """Set over HTTP (gateway -> writer), read by a ReadOnlyView of this process and
    through fresh connections (spread over both gateways), also across the SSE
    catch-up of a stream subscription."""
    import httpx

    import hydra

    with httpx.Client(base_url=cluster.http_url, timeout=10) as http:
        _fill(http, stream, 5)
        r = http.put(f"/streams/{stream}/metadata", json={"maxCount": 2})
        committed = r.json()["committedPosition"]
    with hydra.open(cluster.data, read_only=True) as view:
        assert view.get_stream_metadata(stream).max_count == 2
        assert [e.version for e in view.read_stream(stream)] == [3, 4]
        assert view.first_visible_version(stream) == 3
    for _ in range(4):
        with httpx.Client(base_url=cluster.http_url, timeout=10) as http:
            assert _versions(http, f"/streams/{stream}", min_position=committed) == [3, 4]
    with httpx.Client(base_url=cluster.http_url, timeout=10) as http:
        with http.stream("GET", f"/subscribe/streams/{stream}",
                         params={"from": 0}) as sse:
            ids = []
            for line in sse.iter_lines():
                if line.startswith("id:"):
                    ids.append(int(line[3:]))
                    if len(ids) == 2:
                        break
    assert ids == [3, 4]
