"""The HTTP API through a real client (httpx), against the embedded and the real server."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def lines(response: httpx.Response) -> list[dict]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def append(http: httpx.Client, stream: str, **body: object) -> httpx.Response:
    return http.post(f"/streams/{stream}", json=body)


def assert_error(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert isinstance(doc["error"], str) and doc["error"]
    for word in words:
        assert word in doc["error"], doc
    return doc


# -- append ----------------------------------------------------------------------


def test_append_go_server_fields(http, stream):
    r = append(http, stream, eventId="e-1", eventType="Created", data=b64('{"a":1}'),
               expectedVersion=0)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["version"] == 0 and doc["duplicate"] is False
    assert doc["committedPosition"] > doc["position"] >= 0
    [event] = lines(http.get(f"/streams/{stream}"))
    assert event["position"] == doc["position"]
    assert event["streamId"] == event["stream_id"] == stream
    assert event["version"] == 0
    assert base64.b64decode(event["data"]) == b'{"a":1}'
    assert event["eventId"] == "e-1" and event["eventType"] == "Created"
    assert event["metadata"] == ""
    assert event["timestamp"].endswith("Z") and event["timestamp"][:2] == "20"


def test_append_readme_snake_case_fields(http, stream):
    r = append(http, stream, data=b64("x"), expected_version=0, event_id="a", event_type="T",
               metadata=b64("m"))
    assert r.status_code == 201, r.text
    [event] = lines(http.get(f"/streams/{stream}"))
    assert (event["eventId"], event["eventType"]) == ("a", "T")
    assert base64.b64decode(event["metadata"]) == b"m"


def test_append_field_names_ignore_case_like_go(http, stream):
    r = append(http, stream, EventID="a", Data=b64("x"), ExpectedVersion=0)
    assert r.status_code == 201, r.text
    assert lines(http.get(f"/streams/{stream}"))[0]["eventId"] == "a"


def test_missing_expected_version_means_no_stream_as_in_go(http, stream):
    assert append(http, stream, data=b64("1")).status_code == 201
    doc = assert_error(append(http, stream, data=b64("2")), 409, "exists")
    assert doc["currentVersion"] == 1


def test_expected_versions(http, stream):
    assert_error(append(http, stream, data=b64("x"), expectedVersion=-2), 404, "not found")
    assert append(http, stream, data=b64("x"), expectedVersion=-1).json()["version"] == 0
    assert append(http, stream, data=b64("x"), expectedVersion=-2).json()["version"] == 1
    assert append(http, stream, data=b64("x"), expectedVersion=2).json()["version"] == 2
    doc = assert_error(append(http, stream, data=b64("x"), expectedVersion=7), 409, "expected")
    assert doc["currentVersion"] == 3 and doc["expectedVersion"] == 7
    assert doc["type"] == "wrong_expected_version"
    assert_error(append(http, stream, data=b64("x"), expectedVersion=0), 409, "exists")


def test_append_is_idempotent_by_event_id(http, stream):
    first = append(http, stream, eventId="once", data=b64("x"), expectedVersion=-1).json()
    again = append(http, stream, eventId="once", data=b64("x"), expectedVersion=-1).json()
    assert again["duplicate"] is True
    assert (again["position"], again["version"]) == (first["position"], first["version"])
    assert len(lines(http.get(f"/streams/{stream}"))) == 1


def test_empty_data_and_null_fields(http, stream):
    r = append(http, stream, data=None, eventId=None, eventType=None, expectedVersion=0)
    assert r.status_code == 201, r.text
    [event] = lines(http.get(f"/streams/{stream}"))
    assert event["data"] == "" and event["eventId"] == ""


def test_append_sync_flag(http, stream):
    assert append(http, stream, data=b64("x"), sync=True).status_code == 201


def test_batch_append_is_atomic(http, stream):
    r = http.post(f"/streams/{stream}", json={
        "events": [{"eventId": f"b{i}", "eventType": "T", "data": b64(str(i))} for i in range(3)],
        "expectedVersion": 0,
    })
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    assert [e["version"] for e in lines(http.get(f"/streams/{stream}"))] == [0, 1, 2]
    # A conflicting batch writes nothing.
    r = http.post(f"/streams/{stream}", json={
        "events": [{"data": b64("x")}, {"data": b64("y")}], "expected_version": 1})
    assert_error(r, 409)
    assert len(lines(http.get(f"/streams/{stream}"))) == 3
    # The same batch again is a duplicate as a whole.
    r = http.post(f"/streams/{stream}", json={
        "events": [{"eventId": f"b{i}", "data": b64(str(i))} for i in range(3)],
        "expectedVersion": -1,
    })
    assert r.status_code == 201 and r.json()["duplicate"] is True


def test_batch_bad_input(http, stream):
    def post(body: object) -> httpx.Response:
        return http.post(f"/streams/{stream}", json=body)

    assert_error(post({"events": []}), 400, "at least one")
    assert_error(post({"events": {}}), 400, "array")
    assert_error(post({"events": [1]}), 400, "events[0]")
    assert_error(post({"events": [{"data": "!!"}]}), 400, "events[0].data", "base64")
    assert_error(post({"events": [{"data": b64("x"), "bogus": 1}]}), 400, "bogus")
    assert_error(post({"events": [{"eventId": "a"}, {"eventId": "a"}]}), 400, "twice")
    assert_error(post({"events": [{"data": b64("x")}], "data": b64("x")}), 400, "data")
    assert_error(post({"events": [{"data": b64("x")}], "expectedVersion": "0"}), 400,
                 "expectedVersion")
    assert http.get(f"/streams/{stream}").status_code == 404


# -- reads -----------------------------------------------------------------------


@pytest.fixture
def ten(http, stream) -> list[dict]:
    r = http.post(f"/streams/{stream}", json={
        "events": [{"data": b64(f"e{i}")} for i in range(10)], "expectedVersion": 0})
    assert r.status_code == 201, r.text
    return lines(http.get(f"/streams/{stream}"))


def test_read_stream_options(http, stream, ten):
    assert [e["version"] for e in ten] == list(range(10))
    get = lambda q: [e["version"] for e in lines(http.get(f"/streams/{stream}?{q}"))]
    assert get("from=4") == [4, 5, 6, 7, 8, 9]
    assert get("from=4&limit=2") == [4, 5]
    assert get("limit=0") == []
    assert get("direction=backward") == list(range(9, -1, -1))
    assert get("direction=backward&from=3") == [3, 2, 1, 0]
    assert get("direction=backward&limit=2") == [9, 8]
    assert get("direction=forward&from=100") == []


def test_read_all_options(http, stream, ten):
    first, last = ten[0]["position"], ten[-1]["position"]
    got = lines(http.get(f"/all?from={first}&limit=10"))
    assert [e["position"] for e in got] == [e["position"] for e in ten]
    back = lines(http.get(f"/all?from={last}&limit=3&direction=backward"))
    assert [e["position"] for e in back] == [e["position"] for e in ten[::-1][:3]]
    resumed = lines(http.get(f"/all?from={ten[4]['position'] + 1}&limit=2"))
    assert [e["version"] for e in resumed] == [5, 6]
    assert lines(http.get("/all?from=9223372036854775807")) == []
    everything = lines(http.get("/all"))
    assert {e["position"] for e in ten} <= {e["position"] for e in everything}


def test_read_with_min_position(http, stream):
    r = append(http, stream, data=b64("x"), expectedVersion=0).json()
    got = http.get(f"/streams/{stream}?min_position={r['committedPosition']}")
    assert len(lines(got)) == 1
    assert len(lines(http.get(f"/all?min_position={r['committedPosition']}&from={r['position']}"))) == 1


def test_read_unknown_stream_is_404(http, stream):
    doc = assert_error(http.get(f"/streams/{stream}"), 404, "not found")
    assert doc["type"] == "stream_not_found" and doc["streamId"] == stream


def test_large_read_streams_in_chunks(http, stream):
    body = {"events": [{"data": b64("x" * 1000)} for _ in range(600)], "expectedVersion": 0}
    assert http.post(f"/streams/{stream}", json=body).status_code == 201
    with http.stream("GET", f"/streams/{stream}") as r:
        assert r.status_code == 200
        got = [json.loads(line) for line in r.iter_lines() if line]
    assert [e["version"] for e in got] == list(range(600))


# -- delete ----------------------------------------------------------------------


def test_delete_stream(http, stream):
    assert_error(http.delete(f"/streams/{stream}"), 404, "not found")
    append(http, stream, data=b64("x"), expectedVersion=0)
    assert_error(http.delete(f"/streams/{stream}?expected_version=5"), 409)
    r = http.delete(f"/streams/{stream}?expectedVersion=1")
    assert r.status_code == 200, r.text
    assert r.json()["committedPosition"] > r.json()["position"]
    assert_error(http.get(f"/streams/{stream}"), 404)
    assert_error(http.delete(f"/streams/{stream}"), 404)
    # A deleted stream starts afresh at version 0.
    assert append(http, stream, data=b64("y"), expectedVersion=0).json()["version"] == 0
    [event] = lines(http.get(f"/streams/{stream}"))
    assert base64.b64decode(event["data"]) == b"y"


def test_delete_bad_input(http, stream):
    assert_error(http.delete(f"/streams/{stream}?expected_version=x"), 400, "integer")
    assert_error(http.delete(f"/streams/{stream}?expected_version=-3"), 400, "expected")
    assert_error(http.delete(f"/streams/{stream}?force=1"), 400, "force")


# -- service ---------------------------------------------------------------------


def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok"
    assert doc["writer"]["reachable"] is True
    assert isinstance(doc["committedPosition"], int)
    assert isinstance(doc["writer"]["committedPosition"], int)
    assert doc["writer"]["syncMode"] == "every-write"


def test_server_processes_freeze_their_start_up_out_of_the_collector(cluster):
    """hydra/_gc.py: a real gateway and the writer report what they froze after
    start-up and the raised threshold; the collector still runs (collections go
    on while requests are served)."""
    from hydra._gc import YOUNG
    from hydra._protocol import default_endpoints
    from hydra.writer.process import request_health

    with httpx.Client(base_url=cluster.http_url, timeout=10) as client:
        first = client.get("/health").json()
        probe = uuid.uuid4().hex
        for k in range(300):
            r = client.post(f"/streams/gc-probe-{probe}-{k}", json={
                "events": [{"eventId": f"gc-{k}", "eventType": "t", "data": b64(str(k))}]})
            assert r.status_code == 201, r.text
        later = client.get("/health").json()
    for doc in (first, later):
        gc = doc["gc"]
        assert gc["frozen"] > 10_000  # the modules, gRPC, Starlette, ... of a real worker
        assert gc["threshold"][0] == YOUNG
    # (Either worker may answer: compare one worker with itself.)
    if first["pid"] == later["pid"]:
        assert later["gc"]["collections"][0] >= first["gc"]["collections"][0]
    writer = request_health(default_endpoints(cluster.data)[0])
    assert writer["gc"]["frozen"] > 1000
    assert writer["gc"]["threshold"][0] == YOUNG


def test_openapi_document(http):
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/streams/{streamId}", "/streams/{streamId}/snapshot",
                                 "/streams/{streamId}/snapshots", "/streams",
                                 "/all", "/health", "/openapi.json",
                                 "/subscribe/all", "/subscribe/streams/{streamId}",
                                 "/append", "/tracking/{name}", "/metrics",
                                 "/streams/{streamId}/metadata", "/admin/scavenge"}


# -- bad input: 4xx with a message, never 500 -----------------------------------


@pytest.mark.parametrize("body, words", [
    (b"{", "not valid JSON"),
    (b"", "empty"),
    (b"[]", "JSON object"),
    (b'"x"', "JSON object"),
    (b"null", "JSON object"),
    (b'{"data": "not base64!"}', "base64"),
    (b'{"data": "YQ"}', "base64"),
    (b'{"data": 12}', "data"),
    (b'{"data": "", "expectedVersion": "1"}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": 1.5}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": 1e3}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": true}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": -3}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": 99999999999999999999999}', "expectedVersion"),
    (b'{"data": "", "expectedVersion": 9223372036854775807}', "expectedVersion"),
    (b'{"data": "", "eventId": 5}', "eventId"),
    (b'{"data": "", "eventType": ["a"]}', "eventType"),
    (b'{"data": "", "metadata": {}}', "metadata"),
    (b'{"data": "", "sync": "yes"}', "sync"),
    (b'{"data": "", "colour": "red"}', "colour"),
    (b'{"data": "", "eventId": "a", "event_id": "b"}', "twice"),
    (b'{"data": "", "eventId": "a\\u0000"}', "control"),
    (b'\xff\xfe', "JSON"),
])
def test_append_bad_body(http, stream, body, words):
    r = http.post(f"/streams/{stream}", content=body,
                  headers={"content-type": "application/json"})
    doc = assert_error(r, 400, words)
    assert doc["type"] == "invalid_argument"


@pytest.mark.parametrize("path, words", [
    ("/streams/" + "s" * 300, "stream ID"),
    ("/streams/a%01b", "forbidden character"),
    ("/streams/a%2Fb", "forbidden character"),
    ("/streams/a/b", "forbidden character"),
    ("/streams/", "empty"),
])
def test_bad_stream_ids(http, path, words):
    r = http.post(path, json={"data": ""})
    assert 400 <= r.status_code < 500, r.text
    assert words in r.json()["error"]
    r = http.get(path)
    assert 400 <= r.status_code < 500, r.text


def test_event_over_size_limit(http, stream):
    assert_error(append(http, stream, data=b64(b"x" * ((1 << 20) + 1))), 400, "limit")
    assert_error(append(http, stream, data=b64(b"x" * (1 << 19)), metadata=b64(b"y" * (1 << 19) + b"z")),
                 400, "limit")


def test_oversize_body_is_413(http, stream):
    size = (24 << 20) + 1
    r = http.post(f"/streams/{stream}", content=b" " * size)
    doc = assert_error(r, 413, "limit")
    assert doc["type"] == "payload_too_large"


def test_oversize_chunked_body_is_413(http, stream):
    def chunks():
        for _ in range(25):
            yield b" " * (1 << 20)

    r = http.post(f"/streams/{stream}", content=chunks())
    assert_error(r, 413, "limit")


@pytest.mark.parametrize("query, words", [
    ("from=-1", "from"),
    ("from=abc", "from"),
    ("from=1.5", "from"),
    ("from=99999999999999999999999", "from"),
    ("from=", "from"),
    ("limit=-1", "limit"),
    ("limit=99999999999", "limit"),
    ("direction=sideways", "direction"),
    ("min_position=-5", "min_position"),
    ("limit=1&limit=2", "twice"),
    ("bogus=1", "bogus"),
])
def test_read_bad_query(http, stream, query, words):
    assert_error(http.get(f"/all?{query}"), 400, words)
    assert_error(http.get(f"/streams/{stream}?{query}"), 400, words)


def test_unknown_endpoint_and_method(http, stream):
    assert_error(http.get("/nope"), 404, "no endpoint")
    assert_error(http.put(f"/streams/{stream}", json={}), 405, "PUT")
    assert_error(http.post("/all", json={}), 405)


def test_openapi_examples_are_accepted(http, stream):
    op = http.get("/openapi.json").json()["paths"]["/streams/{streamId}"]["post"]
    examples = op["requestBody"]["content"]["application/json"]["examples"]
    for name in ("one event", "batch"):
        r = http.post(f"/streams/{stream}", json=examples[name]["value"])
        assert r.status_code == 201, (name, r.text)
