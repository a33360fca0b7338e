"""The server answers as its OpenAPI document says, refusals included: schemathesis
generates valid and invalid requests from the document (a bounded run, fixed seed)
and checks every answer against it: status codes, content types, bodies against
their schemas, that schema-valid requests are accepted and schema-invalid ones
refused, and the Allow header of 405s. Subscriptions never end, so their events
are checked here against the document's SSE item schema instead.

A longer run: HYDRA_SCHEMATHESIS_EXAMPLES=300 HYDRA_SCHEMATHESIS_SEED=N (default 60, 17).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import orjson
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from hypothesis import HealthCheck, seed, settings

from hydra.gateway._openapi import openapi_document
from hydra.limits import DEFAULT_LIMITS

from ._cluster import Cluster

DOC = openapi_document()
# 503 is part of the contract (a min_position the gateway has not reached within
# its wait, documented on the read operations): not a server error. A 500 is.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}})
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG).exclude(
    path_regex="^/subscribe/")


def _over_in_bytes(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit < len(value.encode("utf-8", "replace"))


@schema.hook
def filter_case(context: Any, case: Any) -> bool:
    """Leave out the cases JSON Schema cannot describe, rules the document states in
    words: its maxLength counts characters where the limits count UTF-8 bytes, event
    IDs are unique within a batch, an integer is written as one (JSON Schema
    counts 5.0 as an integer; the server, like Go's encoding/json, refuses it), and
    the stream listing's `after` is a log position when there is no `prefix` (a rule
    across two parameters)."""
    limits = DEFAULT_LIMITS
    if _over_in_bytes((case.path_parameters or {}).get("streamId"), limits.max_stream_id):
        return False
    query = case.query if isinstance(case.query, dict) else {}
    if case.path == "/streams":
        after = query.get("after")
        if (isinstance(after, str) and after and not query.get("prefix")
                and not (after.isascii() and after.isdigit() and int(after) < 1 << 63)):
            return False
        if any(_over_in_bytes(query.get(k), limits.max_stream_id) for k in ("prefix", "after")):
            return False
    body = case.body if isinstance(case.body, dict) else {}
    if any(type(body.get(k)) is float
           for k in ("expectedVersion", "version", "maxCount", "maxAge", "truncateBefore")):
        return False
    if _over_in_bytes(body.get("snapshotType"), limits.max_event_type):
        return False
    if _over_in_bytes((case.path_parameters or {}).get("name"), limits.max_stream_id):
        return False
    if isinstance(body.get("appends"), list) or isinstance(body.get("tracking"), dict):
        return _multi_append_case(body)
    events = body.get("events") if isinstance(body.get("events"), list) else [body]
    ids = []
    for e in events:
        if not isinstance(e, dict):
            continue
        if (_over_in_bytes(e.get("eventId"), limits.max_event_id)
                or _over_in_bytes(e.get("eventType"), limits.max_event_type)):
            return False
        if isinstance(e.get("eventId"), str) and e["eventId"]:
            ids.append(e["eventId"])
    return len(ids) == len(set(ids))


def _multi_append_case(body: dict[str, Any]) -> bool:
    """POST /append: the same rules per part, and each stream at most once."""
    limits = DEFAULT_LIMITS
    tracking = body.get("tracking")
    if isinstance(tracking, dict) and (
            _over_in_bytes(tracking.get("applicationName"), limits.max_stream_id)
            or type(tracking.get("notificationId")) is float):
        return False
    parts = [p for p in body.get("appends") or [] if isinstance(p, dict)]
    streams = [p.get("streamId") for p in parts]
    if len(streams) != len(set(map(str, streams))):
        return False
    for p in parts:
        if type(p.get("expectedVersion")) is float:
            return False
        if _over_in_bytes(p.get("streamId"), limits.max_stream_id):
            return False
        ids = []
        for e in p.get("events") or []:
            if not isinstance(e, dict):
                continue
            if (_over_in_bytes(e.get("eventId"), limits.max_event_id)
                    or _over_in_bytes(e.get("eventType"), limits.max_event_type)):
                return False
            if isinstance(e.get("eventId"), str) and e["eventId"]:
                ids.append(e["eventId"])
        if len(ids) != len(set(ids)):
            return False
    return True


@schema.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the state-dependent refusals the document states in
    words: a batch of which only some event IDs are already in the stream (written
    by an earlier generated case) is a 400, since a batch is idempotent only whole;
    so is a snapshot of a version the stream does not hold (generated streams
    mostly have no events)."""
    return not (response.status_code == 400
                and ("a batch is idempotent only as a whole" in response.text
                     or "a snapshot must name an existing version" in response.text
                     or "is not a version of stream" in response.text))


@pytest.fixture(scope="module")
def conformance_server() -> Iterator[Cluster]:
    # min_position waits end quickly here: generated positions are mostly unreachable.
    c = Cluster(workers=1, HYDRA_READ_WAIT_TIMEOUT="0.05").start()
    try:
        yield c
    finally:
        c.stop()


@schema.parametrize()
@seed(int(os.environ.get("HYDRA_SCHEMATHESIS_SEED", "17")))
@settings(max_examples=int(os.environ.get("HYDRA_SCHEMATHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
def test_answers_match_the_document(case: Any, conformance_server: Cluster) -> None:
    case.call_and_validate(base_url=conformance_server.http_url, timeout=10)


def _sse_events(url: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of an SSE stream, as {field: value} (comments left out)."""
    events: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if fields:
                    events.append(fields)
                    fields = {}
                if len([e for e in events if "data" in e]) >= count:
                    break
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return events


@pytest.mark.parametrize("path, id_name", [("/subscribe/all", "position"),
                                           ("/subscribe/streams/{stream}", "version")])
def test_server_sent_events_match_the_document(conformance_server: Cluster, path: str,
                                               id_name: str) -> None:
    stream = "sse-conformance"
    with httpx.Client(base_url=conformance_server.http_url, timeout=10) as http:
        for n in range(3):
            r = http.post(f"/streams/{stream}", json={"eventId": f"e{n}", "data": "eA==",
                                                      "eventType": "T" if n else None,
                                                      "expectedVersion": -1})
            assert r.status_code == 201, r.text
    op = DOC["paths"][path.replace("{stream}", "{streamId}")]["get"]
    media = op["responses"]["200"]["content"]["text/event-stream"]
    components = {"components": DOC["components"]}
    item = jsonschema_rs.validator_for(media["itemSchema"] | components)
    data_schema = jsonschema_rs.validator_for(
        media["itemSchema"]["properties"]["data"]["contentSchema"] | components)
    url = conformance_server.http_url + path.format(stream=stream)
    if "all" in path:
        url += f"?stream_prefix={stream}"
    events = [e for e in _sse_events(url, 3) if "data" in e]
    assert len(events) == 3
    for e in events:
        if "retry" in e:
            e["retry"] = int(e["retry"])
        item.validate(e)
        doc = orjson.loads(e["data"])
        data_schema.validate(doc)
        assert e["id"] == str(doc[id_name])
        assert ("event" in e) == bool(doc["eventType"])
