"""GET /openapi.json describes exactly the app's endpoints, truthfully."""

from __future__ import annotations

import re

from starlette.routing import Route

from hydra.gateway._http import build_app
from hydra.gateway._openapi import openapi_document
from hydra.limits import Limits

from ._embedded import StoreBackend


def test_document_lists_exactly_the_routes(tmp_path):
    import hydra

    with hydra.open(str(tmp_path)) as store:
        app = build_app(StoreBackend(store, Limits()), 1 << 20)
        routes: dict[str, set[str]] = {}
        for route in app.routes:
            if route.path == "/ui":
                continue  # the web console's files (and its redirect) are not the API
            assert isinstance(route, Route)
            path = re.sub(r"\{stream_id(:path)?\}", "{streamId}", route.path)
            path = path.replace("{name:path}", "{name}")
            routes.setdefault(path, set()).update(m.lower() for m in route.methods or ())
    doc = openapi_document()
    documented = {path: {m for m in ops if m != "parameters"} for path, ops in doc["paths"].items()}
    for methods in routes.values():
        methods.discard("head")  # Starlette answers HEAD for every GET
    assert documented == routes


def test_every_reference_resolves_and_every_operation_has_responses():
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    text = str(doc)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            assert op["responses"] and op["operationId"] and op["summary"], (path, method)
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status)


def test_limits_in_the_document_follow_the_configuration():
    doc = openapi_document(Limits(max_read_limit=77, max_stream_id=12))
    text = str(doc)
    assert "'maximum': 77" in text and "1 to 12 bytes" in text
