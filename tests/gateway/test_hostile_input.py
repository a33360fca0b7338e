"""Input that used to slip through: invalid UTF-8 in IDs (which mapped several
byte strings onto one stream), JSON keys given twice (the last one won, which
could skip the expectedVersion check), and clients that hang up mid-body."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import grpc
import httpx
import pytest

from ._cluster import Cluster

# Percent-encoded bytes that are not UTF-8: an overlong NUL, two bytes that never
# occur in UTF-8, a truncated surrogate.
BAD_UTF8 = ["%C0%80", "%FF%FE", "%ED%A0", "%ED%A0%80", "a%80b"]
REPLACEMENT_CHARS = "%EF%BF%BD%EF%BF%BD"  # valid UTF-8: the stream "\ufffd\ufffd"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _assert_400(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    doc = r.json()
    assert doc["type"] == "invalid_argument"
    for word in words:
        assert word in doc["error"], doc


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_in_the_path_is_refused(http: httpx.Client, stream: str, bad: str) -> None:
    path = f"/streams/{stream}{bad}"
    _assert_400(http.post(path, json={"data": _b64(b"x"), "expectedVersion": -1}), "UTF-8")
    _assert_400(http.get(path), "UTF-8")
    _assert_400(http.delete(path), "UTF-8")
    _assert_400(http.get(f"/subscribe/streams/{stream}{bad}"), "UTF-8")
    # Nothing was written under the replacement-character spelling either.
    assert http.get(f"/streams/{stream}{REPLACEMENT_CHARS}").status_code == 404


def test_replacement_characters_are_a_stream_of_their_own(http: httpx.Client, stream: str) -> None:
    path = f"/streams/{stream}{REPLACEMENT_CHARS}"
    r = http.post(path, json={"eventId": "e-1", "data": _b64(b"x"), "expectedVersion": 0})
    assert r.status_code == 201, r.text
    events = [line for line in http.get(path).text.splitlines() if line]
    assert len(events) == 1 and f'"streamId":"{stream}\ufffd\ufffd"' in events[0]
    for bad in BAD_UTF8:
        assert http.get(f"/streams/{stream}{bad}").status_code == 400


@pytest.mark.parametrize("query", ["stream_prefix=%FF", "event_type=a%C0%80"])
def test_invalid_utf8_in_subscription_filters_is_refused(http: httpx.Client, query: str) -> None:
    _assert_400(http.get(f"/subscribe/all?{query}"), "UTF-8")


@pytest.mark.parametrize("body", [
    b'{"eventId":"\xc0\x80","data":"eA==","expectedVersion":-1}',
    b'{"eventId":"\xff\xfe","data":"eA==","expectedVersion":-1}',
    b'{"events":[{"eventId":"ok","data":"eA=="},{"eventId":"\xed\xa0","data":"eA=="}]}',
    b'{"eventType":"\xed\xa0\x80","data":"eA=="}',
])
def test_invalid_utf8_in_json_bodies_is_refused(http: httpx.Client, stream: str,
                                               body: bytes) -> None:
    r = http.post(f"/streams/{stream}", content=body,
                  headers={"content-type": "application/json"})
    _assert_400(r, "UTF-8")
    assert http.get(f"/streams/{stream}").status_code == 404


@pytest.mark.parametrize("body", [
    b'{"eventId":"\\ud800","data":"eA=="}',  # a lone surrogate, escaped
    b'{"eventId":"\\udc00\\ud800","data":"eA=="}',
])
def test_lone_surrogates_in_json_are_refused(http: httpx.Client, stream: str, body: bytes) -> None:
    r = http.post(f"/streams/{stream}", content=body,
                  headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("body, field", [
    # The case that mattered: a second expectedVersion replaced the checked one.
    (b'{"data":"eA==","expectedVersion":5,"expectedVersion":-1}', "expectedVersion"),
    (b'{"data":"eA==", "data" : "eQ==", "expectedVersion":-1}', "data"),
    (b'{"eventType":"urn:a","eventType":"urn:b","data":"eA==","expectedVersion":-1}',
     "eventType"),
    (b'{"events":[{"eventId":"a","data":"eA==","eventId":"b"}],"expectedVersion":-1}',
     "eventId"),
    (b'{"events":[{"data":"eA=="}],"expectedVersion":-1,"events":[{"data":"eQ=="}]}',
     "events"),
])
def test_duplicate_json_keys_are_refused(http: httpx.Client, stream: str, body: bytes,
                                         field: str) -> None:
    r = http.post(f"/streams/{stream}", content=body,
                  headers={"content-type": "application/json"})
    _assert_400(r, f"'{field}' is given twice")
    assert http.get(f"/streams/{stream}").status_code == 404


def test_colons_and_escaped_quotes_in_values_are_not_duplicates(http: httpx.Client,
                                                                stream: str) -> None:
    # The duplicate check's cheap count sees these colons; the exact check must pass them.
    body = (b'{"eventId":"a\\":b","eventType":"urn:x:y","data":"eA==","expectedVersion":0,'
            b'"metadata" : "eA=="}')
    r = http.post(f"/streams/{stream}", content=body,
                  headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text


# -- gRPC: the same bytes in string fields -------------------------------------------


def _field(number: int, raw: bytes) -> bytes:
    return bytes([number << 3 | 2, len(raw)]) + raw


@pytest.mark.parametrize("raw", [b"\xc0\x80", b"\xff\xfe", b"\xed\xa0", b"\xed\xa0\x80"])
@pytest.mark.parametrize("method, request_bytes", [
    ("Append", lambda raw: _field(1, b"s-" + raw)),  # stream_id
    ("Append", lambda raw: _field(1, b"s") + _field(2, raw)),  # event_id
    ("AppendBatch", lambda raw: _field(1, b"s") + _field(2, _field(1, raw))),  # events[0].event_id
    ("ReadStream", lambda raw: _field(1, raw)),
    ("DeleteStream", lambda raw: _field(1, raw)),
])
def test_invalid_utf8_in_grpc_strings_is_refused(channel: grpc.Channel, raw: bytes,
                                                 method: str, request_bytes) -> None:
    streaming = method == "ReadStream"
    make = channel.unary_stream if streaming else channel.unary_unary
    call = make(f"/eventstore.EventStore/{method}", request_serializer=lambda b: b,
                response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        result = call(request_bytes(raw), timeout=10)
        if streaming:
            list(result)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in err.value.details()


# -- a client that hangs up mid-body ---------------------------------------------------


def _log_sizes(c: Cluster) -> dict[Path, int]:
    return {p: p.stat().st_size for p in Path(c.logs).glob("gateway*.log")}


def _logged_since(sizes: dict[Path, int]) -> str:
    text = ""
    for p, size in sizes.items():
        with open(p, "rb") as f:
            f.seek(size)
            text += f.read().decode(errors="replace")
    return text


def test_client_gone_mid_body_is_not_an_internal_error(cluster: Cluster) -> None:
    before = _log_sizes(cluster)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", cluster.http_port), timeout=5) as s:
            s.sendall(b"POST /streams/gone HTTP/1.1\r\nhost: x\r\n"
                      b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
                      b'{"data":"' + b"A" * 5000)
            time.sleep(0.01)
    time.sleep(0.5)
    assert httpx.get(cluster.http_url + "/health", timeout=5).status_code == 200
    added = _logged_since(before)
    assert "Traceback" not in added and "internal error" not in added, added[-3000:]
    assert httpx.get(cluster.http_url + "/streams/gone", timeout=5).status_code == 404
